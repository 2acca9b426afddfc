// The review desk's few lines of script: the title counter, the privacy options of the chosen account,
// what the creator turned off, the disclosure notes. The server checks everything again.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var title = document.getElementById("title");
  var count = document.getElementById("title-count");
  if (title && count) {
    var max = parseInt(title.getAttribute("maxlength") || "2200", 10);
    var update = function () {
      count.textContent = String(title.value.length);
      count.parentNode.classList.toggle("over", title.value.length > max);
    };
    title.addEventListener("input", update);
    update();
  }

  var account = document.getElementById("account");
  var privacy = document.getElementById("privacy_level");
  var brandContent = document.getElementById("brand_content_toggle");
  var creatorNote = document.getElementById("creator-note");
  var brandedPolicy = document.getElementById("branded-policy");
  if (!account || !privacy) { return; }
  var toggles = Array.prototype.slice.call(document.querySelectorAll("input[data-creator]"));
  toggles.forEach(function (box) { box.dataset.chosen = box.checked ? "1" : "0"; });
  toggles.forEach(function (box) {
    box.addEventListener("change", function () { if (!box.disabled) { box.dataset.chosen = box.checked ? "1" : "0"; } });
  });

  function chosenOption() { return account.options[account.selectedIndex]; }

  function syncPrivacy() {
    var name = account.value;
    var groups = privacy.querySelectorAll("optgroup");
    var keep = false;
    groups.forEach(function (group) {
      var mine = group.dataset.account === name;
      group.hidden = !mine;
      group.disabled = !mine;
      group.querySelectorAll("option").forEach(function (opt) {
        var privateBranded = brandContent && brandContent.checked && opt.value === "SELF_ONLY";
        opt.disabled = !mine || privateBranded;
        if (opt.selected && mine && !privateBranded) { keep = true; }
      });
    });
    if (!keep) { privacy.value = ""; privacy.selectedIndex = 0; }
    privacy.disabled = !name;
  }

  function syncToggles() {
    var opt = chosenOption();
    var forced = false;
    toggles.forEach(function (box) {
      var off = !!(opt && opt.value && opt.getAttribute("data-" + box.dataset.creator) === "true");
      if (off) { box.checked = true; forced = true; } else { box.checked = box.dataset.chosen === "1"; }
      box.disabled = off;
    });
    if (creatorNote) { creatorNote.hidden = !forced; }
  }

  function syncBrand() {
    if (brandedPolicy) { brandedPolicy.hidden = !(brandContent && brandContent.checked); }
    syncPrivacy();
  }

  account.addEventListener("change", function () { syncPrivacy(); syncToggles(); });
  if (brandContent) { brandContent.addEventListener("change", syncBrand); }
  syncPrivacy();
  syncToggles();
  syncBrand();
});
