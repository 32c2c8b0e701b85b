"""Pure checks on an answer: normalising labels, parsing JSON objects."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from typing import Any

_PREFIX = re.compile(
    r"^\s*(?:the\s+)?(?:label|answer|category|class|sentiment|topic|标签|答案|类别|分类|情感)"
    r"\s*(?:is|是)?\s*[:=\-\uff1a]?\s*",
    re.IGNORECASE,
)
# ASCII punctuation plus the quotes, brackets and CJK punctuation models put around a label.
_EDGES = (
    string.punctuation
    + string.whitespace
    + "\u201c\u201d\u2018\u2019\u00ab\u00bb\u3002\uff0c\uff01\uff1f\uff1a\uff1b\u3001"
    + "\u300c\u300d\u300e\u300f\u300a\u300b\u3008\u3009\u3010\u3011\uff08\uff09\u3000"
)


def _fold(text: str) -> str:
    return " ".join(text.strip(_EDGES).casefold().split())


def normalize_label(answer: str, choices: Sequence[str]) -> str | None:
    """The choice an answer names, ignoring case, whitespace, edge punctuation and "Label:".

    Returns None when the answer is not exactly one of the choices.
    """
    folded = {_fold(choice): choice for choice in choices}
    text = answer.strip()
    for candidate in (text, _PREFIX.sub("", text, count=1), text.splitlines()[0] if text else ""):
        found = folded.get(_fold(candidate))
        if found is not None:
            return found
    return None


class NotJson(ValueError):
    """The answer is not a JSON object."""


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL | re.IGNORECASE)


def parse_json_object(answer: str) -> dict[str, Any]:
    """The JSON object in an answer (a ```json fence around it is accepted)."""
    fenced = _FENCE.match(answer)
    text = fenced.group(1) if fenced else answer
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise NotJson(f"the answer is not JSON: {str(exc)[:120]}") from None
    if not isinstance(value, dict):
        raise NotJson(f"the answer is a JSON {type(value).__name__}, not an object")
    return value
