"""OpenAI and OpenAI-compatible servers (vLLM, llama.cpp, SGLang, Ollama, gateways).

Such servers share no business codes, so errors are classified by HTTP status, except the
two OpenAI codes that a status alone would misread: a 429 that means "no credits left" and a
key that is wrong. No price table: costs need the job's ``[prices]``.
"""

from __future__ import annotations

from ..outcome import Scope
from .base import AUTH_HINT, FATAL, RESUME, Provider, SimulatedFaults

OPENAI = Provider(
    name="openai",
    default_model="gpt-4o-mini",
    default_base_url="https://api.openai.com/v1",
    batch_endpoint="/v1/chat/completions",
    batch_window="24h",  # required
    schema_form="json_schema",  # OpenAI, vLLM, llama.cpp's llama-server, SGLang
    n=True,
    codes={"insufficient_quota": FATAL, "invalid_api_key": FATAL},
    hints={
        "insufficient_quota": f"the account has no credits left: add credits, {RESUME}",
        "invalid_api_key": AUTH_HINT,
    },
    finish_reasons={
        "content_filter": ("content_filter", Scope.ROW, "blocked by the content filter")
    },
    simulated=SimulatedFaults(
        rate_limited=(429, "rate_limit_exceeded", "Rate limit reached (simulated)"),
        server_error=(500, None, "The server had an error (simulated)"),
        filtered_finish_reason="content_filter",
    ),
)
