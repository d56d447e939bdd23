"""The `<think>` and `<answer>` tags of a model's output, found in one pass over the tags.

`re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)` gives the same spans, but retries from every opening tag
that has no closing one, scanning to the end each time: quadratic on an output of repeated unclosed tags.
"""

from __future__ import annotations

import functools
import re


@functools.cache
def _tag_pattern(tag: str, ignore_case: bool) -> re.Pattern[str]:
    return re.compile(rf"<(/?){re.escape(tag)}>", flags=re.IGNORECASE if ignore_case else 0)


def tag_pairs(text: str, tag: str, ignore_case: bool = True) -> list[tuple[re.Match[str], re.Match[str]]]:
    """(opening, closing) tag matches of each `<tag>...</tag>` span, as the lazy regex finds them: left to right,
    each opening tag up to the first closing tag after it, the spans never overlapping."""
    pairs, opening = [], None
    for match in _tag_pattern(tag, ignore_case).finditer(text):
        if not match.group(1):
            opening = opening or match  # an opening tag inside an open span is part of its text
        elif opening is not None:
            pairs.append((opening, match))
            opening = None
    return pairs


def remove_tagged(text: str, tag: str, ignore_case: bool = True) -> str:
    """`text` without its `<tag>...</tag>` spans (an unclosed opening tag and what follows it stay)."""
    pieces, kept_from = [], 0
    for opening, closing in tag_pairs(text, tag, ignore_case):
        pieces.append(text[kept_from:opening.start()])
        kept_from = closing.end()
    return "".join(pieces) + text[kept_from:]


def last_tagged(text: str, tag: str, ignore_case: bool = True) -> str | None:
    """The text inside the last `<tag>...</tag>` span, or None where there is none."""
    pairs = tag_pairs(text, tag, ignore_case)
    return text[pairs[-1][0].end():pairs[-1][1].start()] if pairs else None


def after_last_closing_tag(text: str, tag: str) -> str | None:
    """What follows the last `</tag>` (in any case), or None where there is none."""
    last = None
    for match in _tag_pattern(tag, True).finditer(text):
        if match.group(1):
            last = match
    return text[last.end():] if last else None
