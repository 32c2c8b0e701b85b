"""Pure functions: an input row becomes a request body.

The first rule that applies wins:
1. a batch-format line ``{"custom_id", "body": {...}}``: the body is the request;
2. ``messages_column``: a list of ``{role, content}``;
3. ``template``: a Python format string over the row's columns;
4. ``prompt_column``: one user message.
``system`` is prepended in cases 2-4; job settings fill what a batch body lacks.
"""

from __future__ import annotations

import functools
import json
import math
import string
from collections.abc import Iterable
from typing import Any

from .answers.schema import response_format, system_note
from .errors import JobError
from .job.settings import Job
from .source import InputFiles, is_batch_line


class RenderError(ValueError):
    """This row cannot become a request; it goes to the error log."""


def row_id(data: dict[str, Any], id_column: str | None) -> str | None:
    """The row's id as a string, or None when it has no usable one."""
    value = data.get(id_column_for(id_column, batch_line=is_batch_line(data)))
    if value is None or isinstance(value, dict | list | bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN, inf (1e400 in JSON): no id two runs would agree on
    text = str(value).strip()
    return text or None


def id_column_for(id_column: str | None, *, batch_line: bool) -> str:
    """The column holding a row's id: the job's id_column, else "custom_id" on a batch-format
    line and "id" on any other."""
    return id_column or ("custom_id" if batch_line else "id")


@functools.cache
def template_fields(template: str) -> frozenset[str]:
    """The top-level column names a template refers to ("{a.b}" and "{a[0]}" refer to "a")."""
    fields = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name:
            fields.add(name.split(".", 1)[0].split("[", 1)[0])
    return frozenset(fields)


def check_input(job: Job, inputs: InputFiles) -> None:
    """Stop before sending when the input lacks a column the job needs."""
    if inputs.columns is None:
        return
    missing = missing_columns(job, inputs.columns, batch_lines=inputs.first_is_batch_line)
    if missing:
        names = ", ".join(f"'{m}'" for m in missing)
        have = ", ".join(sorted(inputs.columns)) or "none"
        raise JobError(
            f"{inputs.paths[0]}: the job needs column(s) {names} that the input lacks "
            f"(it has: {have}). Fix the template/columns or the input; nothing was sent"
        )
    id_column = id_column_for(job.id_column, batch_line=inputs.first_is_batch_line)
    if id_column not in inputs.columns:
        raise JobError(
            f"{inputs.paths[0]}: no id column '{id_column}' (columns: "
            f"{', '.join(sorted(inputs.columns))}). Set [input] id_column; nothing was sent"
        )


def missing_columns(job: Job, columns: Iterable[str], *, batch_lines: bool) -> list[str]:
    """Columns the job needs that the input lacks (checked before anything is sent)."""
    if batch_lines:
        return []
    have = set(columns)
    if job.template is not None:
        need = set(template_fields(job.template)) - set(job.defaults)
    elif job.messages_column is not None:
        need = {job.messages_column}
    else:
        need = {job.prompt_column}
    need.update(job.keep_columns)
    return sorted(need - have)


def render(data: dict[str, Any], job: Job) -> dict[str, Any]:
    """The request body for one row; raises RenderError when the row cannot be used."""
    if is_batch_line(data):
        return _from_batch_line(data["body"], job)
    if job.messages_column is not None:
        messages = _messages(data.get(job.messages_column), job.messages_column)
    elif job.template is not None:
        values = {**job.defaults, **{k: v for k, v in data.items() if v is not None}}
        messages = [{"role": "user", "content": _format(job.template, values)}]
    else:
        prompt = data.get(job.prompt_column)
        if not isinstance(prompt, str) or not prompt.strip():
            raise RenderError(f"column '{job.prompt_column}' is missing or empty")
        messages = [{"role": "user", "content": prompt}]
    system = system_text(job)
    if system:
        messages.insert(0, {"role": "system", "content": system})
    body: dict[str, Any] = {"model": job.effective_model, "messages": messages}
    body.update(request_params(job))
    return body


def request_params(job: Job) -> dict[str, Any]:
    """The optional body fields the job sets (everything but model and messages)."""
    params: dict[str, Any] = {}
    if job.temperature is not None:
        params["temperature"] = job.temperature
    if job.top_p is not None:
        params["top_p"] = job.top_p
    if job.max_tokens is not None:
        params["max_tokens"] = job.max_tokens
    if job.thinking is not None:
        params["thinking"] = {"type": "enabled" if job.thinking else "disabled"}
    if job.output_schema is not None:
        params["response_format"] = response_format(job.output_schema, job.effective_schema_form)
    elif job.response_format is not None:
        params["response_format"] = {"type": job.response_format}
    if job.samples_in_one_request:
        params["n"] = job.samples
    params.update(job.extra)
    return params


def system_text(job: Job) -> str | None:
    """The system message: ``system``, and on a JSON-mode-only endpoint the output schema."""
    if job.output_schema is None or job.effective_schema_form != "system":
        return job.system
    note = system_note(job.output_schema)
    return f"{job.system}\n\n{note}" if job.system else note


def _from_batch_line(body: dict[str, Any], job: Job) -> dict[str, Any]:
    request = dict(body)
    if job.force_model or "model" not in request:
        request["model"] = job.effective_model
    request["messages"] = _messages(request.get("messages"), "body.messages")
    if job.output_schema is not None and job.effective_schema_form == "system":
        request["messages"].insert(0, {"role": "system", "content": system_note(job.output_schema)})
    for key, value in request_params(job).items():
        request.setdefault(key, value)
    request.pop("stream", None)
    return request


def _messages(value: Any, column: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise RenderError(f"'{column}' must be a non-empty list of {{role, content}} objects")
    for message in value:
        if not isinstance(message, dict) or "role" not in message:
            raise RenderError(f"'{column}' holds an item that is not a {{role, content}} object")
    if all(m["role"] in ("system", "assistant") for m in value):
        raise RenderError(f"'{column}' has no user message")
    return list(value)


class _JsonFormatter(string.Formatter):
    """str.format, except that objects, lists and booleans render as JSON (``{"a": 1}``,
    ``true``): what a model reads best, not Python's repr (``!r`` still asks for that)."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        if isinstance(value, dict | list | bool):
            value = json.dumps(value, ensure_ascii=False)
        return super().format_field(value, format_spec)


_FORMATTER = _JsonFormatter()


def _format(template: str, data: dict[str, Any]) -> str:
    for name in template_fields(template):
        if data.get(name) is None:
            raise RenderError(f"template field '{name}' is missing or null in this row")
    try:
        return _FORMATTER.vformat(template, (), data)
    except KeyError as exc:
        raise RenderError(f"template field {exc} is missing from this row") from None
    except (IndexError, AttributeError, ValueError, TypeError) as exc:
        raise RenderError(f"template cannot be rendered for this row: {exc}") from None


def estimate_tokens(body: dict[str, Any]) -> int:
    """A cheap prompt-token estimate: characters / 4 over every message's content."""
    chars = 0
    for message in body.get("messages", ()):
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif content is not None:
            chars += len(str(content))
    return max(1, chars // 4)
