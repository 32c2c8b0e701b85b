"""The job file's keys: which TOML table and key each Job field is written as.

A leaf: the loader (file.py) reads files with it, and the rules (rules.py) name a setting in
their messages the way a job file writes it ("limits.concurrency").
"""

from __future__ import annotations

# TOML table -> {key in the file: Job field}
SECTIONS: dict[str, dict[str, str]] = {
    "input": {"path": "input_path", "id_column": "id_column", "keep_columns": "keep_columns"},
    "request": {
        "model": "model",
        "system": "system",
        "template": "template",
        "defaults": "defaults",
        "prompt_column": "prompt_column",
        "messages_column": "messages_column",
        "temperature": "temperature",
        "top_p": "top_p",
        "max_tokens": "max_tokens",
        "thinking": "thinking",
        "response_format": "response_format",
        "json_fields": "json_fields",
        "samples": "samples",
        "extra": "extra",
    },
    "endpoint": {
        "base_url": "base_url",
        "provider": "provider",
        "api_key_env": "api_key_env",
        "schema_form": "schema_form",
        "n_choices": "n_choices",
        "timeout": "timeout",
    },
    "limits": {
        "concurrency": "concurrency",
        "rpm": "rpm",
        "tpm": "tpm",
        "max_retries": "max_retries",
        "max_attempt_seconds": "max_attempt_seconds",
        "backoff_base": "backoff_base",
        "backoff_cap": "backoff_cap",
        "wait_for_quota": "wait_for_quota",
        "down_after": "down_after",
        "max_cost": "max_cost",
        "hedge": "hedge",
        "quota_wait_seconds": "quota_wait_seconds",
    },
    "labels": {"choices": "choices", "retries": "label_retries", "gold_column": "gold_column"},
    "output": {
        "dir": "output_dir",
        "part_rows": "part_rows",
        "part_seconds": "part_seconds",
        "journal": "journal",
        "schema": "output_schema",
        "repair_attempts": "repair_attempts",
        "report": "report",
    },
    "run": {
        "log_every": "log_every",
        "grace_seconds": "grace_seconds",
        "dedupe": "dedupe",
        "cache": "cache",
        "cache_path": "cache_path",
        "mode": "mode",
        "poll_seconds": "poll_seconds",
        "batch_max_rows": "batch_max_rows",
        "batch_max_bytes": "batch_max_bytes",
        "batch_discount": "batch_discount",
        "finish_online": "finish_online",
        "metrics_file": "metrics_file",
        "pushgateway": "pushgateway",
        "metrics_every": "metrics_every",
        "ping": "ping",
        "log_format": "log_format",
    },
    "prices": {},  # model -> { input, cached, output }: checked by Job
    "simulate": {
        "latency": "simulate_latency",
        "rate_limited": "simulate_rate_limited",
        "server_error": "simulate_server_error",
        "content_filter": "simulate_content_filter",
    },
}


def key_for(name: str) -> str:
    """A field's name as a job file writes it ("limits.concurrency")."""
    for section, keys in SECTIONS.items():
        for key, field_name in keys.items():
            if field_name == name:
                return f"{section}.{key}"
    return name
