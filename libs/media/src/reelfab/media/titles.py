"""Titles and hashtags for a post, by rules: deterministic (same input, same output), within the
platform's limits, always with an AI-disclosure hashtag, and a subject's display name only where
the caller says it may appear. ``llm_title`` asks an OpenAI-compatible endpoint for a title and
falls back to the rules' title on any error."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class PlatformLimits:
    caption_chars: int  # the whole post text: title, space, hashtags
    hashtags: int


PLATFORMS = {"tiktok": PlatformLimits(caption_chars=2200, hashtags=10)}


@dataclass(frozen=True)
class TitleRules:
    max_title_chars: int = 150
    max_hashtag_chars: int = 40  # longer tags read as spam; they are dropped, not cut
    disclosure_tag: str = "aigenerated"  # always first
    # tags that would contradict the disclosure are never used
    blocked_tags: tuple[str, ...] = ("noai", "notai", "real", "nofilter", "unedited", "nofake")
    title_format: str = "{topic}"
    title_format_with_name: str = "{topic} ft. {name}"
    fallback_topic: str = "New clip"
    max_name_chars: int = 40


def title_and_hashtags(
    template_tags: Sequence[str],
    trend_tags: Sequence[str],
    display_name: str | None,
    *,
    platform: str = "tiktok",
    rules: TitleRules = TitleRules(),
    name_allowed: bool = False,
) -> tuple[str, list[str]]:
    """(title, hashtags without '#'). The name shows only when ``name_allowed`` (the subject's
    consent says so) and something of it survives cleaning."""
    limits = _limits(platform)
    name = clean_display_name(display_name, rules.max_name_chars) if name_allowed and display_name else ""
    title = make_title(_topic(template_tags, trend_tags, rules), name, rules)
    tags = hashtags(template_tags, trend_tags, rules, min(limits.hashtags, 10))
    while len(caption(title, tags)) > limits.caption_chars and len(tags) > 1:
        tags.pop()  # never the disclosure tag, which is first
    return title, tags


def caption(title: str, tags: Iterable[str]) -> str:
    """The post text as TikTok takes it: the title, then the hashtags."""
    return " ".join([title, *(f"#{t}" for t in tags)]).strip()


def make_title(topic: str, name: str, rules: TitleRules) -> str:
    title = (rules.title_format_with_name if name else rules.title_format).format(topic=topic, name=name)
    return _shorten(" ".join(title.split()), rules.max_title_chars)


def hashtags(
    template_tags: Sequence[str], trend_tags: Sequence[str], rules: TitleRules, limit: int
) -> list[str]:
    """The disclosure tag, then the template's tags, then the trends: normalised, deduplicated, capped."""
    chosen = [rules.disclosure_tag]
    seen = {rules.disclosure_tag.replace("_", "")}  # dance_challenge and DanceChallenge are one tag
    for raw in [*template_tags, *trend_tags]:
        tag = normalise_tag(raw)
        key = tag.replace("_", "")
        if tag and key not in seen and tag not in rules.blocked_tags and len(tag) <= rules.max_hashtag_chars:
            chosen.append(tag)
            seen.add(key)
    return chosen[:limit]


def normalise_tag(raw: str) -> str:
    """'#Dance Challenge' → 'dancechallenge': lowercase ASCII letters, digits and underscores."""
    ascii_text = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode().lower()
    tag = re.sub(r"[^a-z0-9_]", "", ascii_text)
    return tag if tag.strip("_") else ""


def clean_display_name(name: str, max_chars: int = 40) -> str:
    """Letters, digits and spaces only (any script), whitespace collapsed, at most ``max_chars``."""
    kept = "".join(
        c if c.isalnum() else " " if c.isspace() else "" for c in unicodedata.normalize("NFC", name)
    )
    return _shorten(" ".join(kept.split()), max_chars)


def _topic(template_tags: Sequence[str], trend_tags: Sequence[str], rules: TitleRules) -> str:
    for raw in [*template_tags, *trend_tags]:
        words = re.sub(r"[_#\-]+", " ", raw)
        words = " ".join(re.sub(r"[^\w\s]", "", words).split())
        if words and normalise_tag(raw) not in rules.blocked_tags:
            return words[0].upper() + words[1:]
    return rules.fallback_topic


def _shorten(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a word boundary where there is one."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,.;:-") + "…"


def _limits(platform: str) -> PlatformLimits:
    try:
        return PLATFORMS[platform]
    except KeyError:
        raise ValueError(f"platform {platform!r}: one of {', '.join(PLATFORMS)}") from None


# --------------------------------------------------------------------------------------------- LLM


def llm_title(
    endpoint: str,
    model: str,
    prompt: str,
    timeout_s: float = 5.0,
    *,
    fallback: str,
    max_chars: int = 150,
    forbidden: Sequence[str] = (),
    transport: httpx.BaseTransport | None = None,
) -> str:
    """A title from an OpenAI-compatible chat endpoint (``endpoint`` is its base URL, with or
    without /v1); ``fallback`` (the rules' title) on any error, timeout or unusable answer, or when
    the answer contains a ``forbidden`` word (a display name not allowed to appear)."""
    body = {
        "model": model,
        "messages": [
            {
                "role": "system",
                "content": "Write one short, catchy title for a short vertical video. "
                "Reply with the title only: no quotes, no hashtags.",
            },  # fmt: skip
            {"role": "user", "content": prompt},
        ],
        "temperature": 0,  # as repeatable as the endpoint allows
        "max_tokens": 64,
    }
    try:
        with httpx.Client(timeout=timeout_s, transport=transport) as client:
            response = client.post(_chat_url(endpoint), json=body)
            response.raise_for_status()
            text = response.json()["choices"][0]["message"]["content"]
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return fallback
    title = clean_llm_title(text, max_chars) if isinstance(text, str) else ""
    if not title or any(word.lower() in title.lower() for word in forbidden if word.strip()):
        return fallback
    return title


def clean_llm_title(text: str, max_chars: int) -> str:
    """First line, without quotes, hashtags or control characters, within ``max_chars``."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    line = "".join(c for c in line if unicodedata.category(c)[0] != "C")
    line = re.sub(r"#\w+", "", line)
    line = " ".join(line.split()).strip("\"'“”‘’ ")
    return _shorten(line, max_chars)


def _chat_url(endpoint: str) -> str:
    base = endpoint.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"
