"""Titles and hashtags by rules (deterministic, within TikTok's limits, AI disclosure always there,
display names only when allowed) and the LLM title with its fallbacks."""

from __future__ import annotations

import json

import httpx
import pytest

from reelfab.media.titles import (
    TitleRules,
    caption,
    clean_display_name,
    llm_title,
    normalise_tag,
    title_and_hashtags,
)

TEMPLATE = ["dance_challenge", "Summer Vibes", "#POV"]
TRENDS = ["fyp", "Dance-Challenge", "NoFilter", "été 2025", "!!!", "x" * 60]


def test_same_input_same_output() -> None:
    first = title_and_hashtags(TEMPLATE, TRENDS, "Alex")
    assert all(title_and_hashtags(TEMPLATE, TRENDS, "Alex") == first for _ in range(5))
    assert first == (
        "Dance challenge",
        ["aigenerated", "dance_challenge", "summervibes", "pov", "fyp", "ete2025"],
    )


def test_hashtags_are_clean_deduplicated_capped_and_disclose_ai() -> None:
    many = [f"tag{i}" for i in range(30)] + ["TAG1", "tag 1"]
    title, tags = title_and_hashtags(many, ["AIGenerated", "notai", "real"], None)
    assert tags[0] == "aigenerated" and len(tags) == 10 and len(set(tags)) == 10
    assert all(t == normalise_tag(t) and t.replace("_", "").isalnum() and t.islower() for t in tags)
    assert not {"notai", "real"} & set(tags)  # tags that contradict the disclosure are dropped
    assert title == "Tag0" and len(caption(title, tags)) <= 2200


def test_titles_stay_short() -> None:
    long_tag = " ".join(["incredibly"] * 40)
    title, _ = title_and_hashtags([long_tag], [], "A" * 100, name_allowed=True)
    assert len(title) <= 150 and title.endswith("…")
    assert title_and_hashtags([], [], None)[0] == "New clip"


def test_display_name_only_when_allowed_and_cleaned() -> None:
    assert title_and_hashtags(TEMPLATE, [], "Alex")[0] == "Dance challenge"
    assert (
        title_and_hashtags(TEMPLATE, [], "Alex <script>!", name_allowed=True)[0]
        == "Dance challenge ft. Alex script"
    )
    assert clean_display_name("  José\t🙂 O'Neil #1  ") == "José ONeil 1"
    assert title_and_hashtags(TEMPLATE, [], "🙂🙂", name_allowed=True)[0] == "Dance challenge"


def test_custom_rules_and_unknown_platform() -> None:
    rules = TitleRules(disclosure_tag="madewithai", title_format_with_name="{name}: {topic}")
    title, tags = title_and_hashtags(["cooking"], [], "Sam", rules=rules, name_allowed=True)
    assert title == "Sam: Cooking" and tags == ["madewithai", "cooking"]
    with pytest.raises(ValueError, match="platform"):
        title_and_hashtags([], [], None, platform="myspace")


# ---------------------------------------------------------------------------------------------- LLM


def _transport(reply: object = None, *, status: int = 200, raw: bytes | None = None, error: Exception | None = None,
               seen: list[httpx.Request] | None = None) -> httpx.MockTransport:  # fmt: skip
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if error is not None:
            raise error
        if raw is not None:
            return httpx.Response(status, content=raw)
        return httpx.Response(
            status, json={"choices": [{"message": {"role": "assistant", "content": reply}}]}
        )

    return httpx.MockTransport(handle)


def test_llm_title_success() -> None:
    seen: list[httpx.Request] = []
    title = llm_title("http://llm.local:8000", "small-model", "dance clip", 2.0, fallback="Rules title",
                      transport=_transport('  "Summer Dance Energy #fyp"\nsecond line', seen=seen))  # fmt: skip
    assert title == "Summer Dance Energy"
    assert str(seen[0].url) == "http://llm.local:8000/v1/chat/completions"
    body = json.loads(seen[0].content)
    assert body["model"] == "small-model" and body["messages"][-1]["content"] == "dance clip"


@pytest.mark.parametrize(
    "transport",
    [
        _transport(error=httpx.ReadTimeout("slow")),
        _transport(error=httpx.ConnectError("refused")),
        _transport(raw=b"<html>not json</html>"),
        _transport(raw=b'{"choices": []}'),
        _transport(raw=b'{"unexpected": true}'),
        _transport(reply=None),
        _transport(reply="   "),
        _transport(reply="ok", status=500),
    ],
    ids=["timeout", "refused", "not-json", "no-choices", "no-field", "null", "blank", "http-500"],
)
def test_llm_title_falls_back_on_any_error(transport: httpx.MockTransport) -> None:
    assert (
        llm_title("http://llm.local/v1", "m", "p", 0.5, fallback="Rules title", transport=transport)
        == "Rules title"
    )


def test_llm_title_respects_forbidden_names_and_length() -> None:
    named = _transport("Alex does the summer dance")
    assert llm_title("http://x", "m", "p", fallback="F", forbidden=["alex"], transport=named) == "F"
    long = llm_title("http://x", "m", "p", fallback="F", max_chars=20, transport=_transport("word " * 30))
    assert len(long) <= 20
