"""Helpers for testing code that talks to a chat completions API.

The chat-completion answer is built here once, for zbatch's simulated endpoint
(:mod:`zbatch.simulate`) and for the loopback test server in tests/zai_server.py, so the two
can never disagree on its shape:

    answer = chat_completion(
        {"model": "my-model", "messages": [{"role": "user", "content": "Hi"}]},
        "Hello!",
        model="my-model",
        answer_id="chatcmpl-1",
        request_id="req-1",
    )
    answer["choices"][0]["message"]["content"]   # "Hello!"
"""

from __future__ import annotations

import email.parser
import email.policy
import time
from collections.abc import Iterable
from typing import Any

from .prompt import estimate_tokens


def message_text(content: object) -> str:
    """Text of a message ``content``: a string, or the text parts of an OpenAI parts list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def last_user_content(messages: Iterable[Any]) -> str:
    """Text of the last ``user`` message: the row's own prompt, without the system prompt."""
    text = ""
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            text = message_text(message.get("content"))
    return text


def chat_completion(
    request: dict[str, Any],
    content: str,
    *,
    model: str,
    answer_id: str,
    request_id: str,
    finish_reason: str = "stop",
    reasoning: str | None = None,
) -> dict[str, Any]:
    """The answer to ``request`` carrying ``content``, with usage estimated at chars / 4.

    ``reasoning`` is sent as ``reasoning_content`` only when the request enabled thinking, as
    Z.AI does.
    """
    message: dict[str, Any] = {"role": "assistant", "content": content}
    thinking = request.get("thinking")
    if reasoning is not None and isinstance(thinking, dict) and thinking.get("type") == "enabled":
        message["reasoning_content"] = reasoning
    prompt_tokens = estimate_tokens(request)
    completion_tokens = max(1, len(content) // 4)
    return {
        "id": answer_id,
        "request_id": request_id,
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": finish_reason, "message": message}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


def multipart_fields(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body (a Batch API upload): name -> (filename,
    content). ValueError when it is not multipart (no boundary)."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("multipart body without a boundary")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str):
            fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields
