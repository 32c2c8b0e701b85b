"""The exception tree's exit codes (SPEC "Exit codes"), and redact()."""

from __future__ import annotations

import pytest

from zbatch.errors import (
    MAX_MESSAGE_CHARS,
    BatchPending,
    BudgetSpent,
    EndpointDown,
    FatalApiError,
    Interrupted,
    JobError,
    LockedError,
    QuotaReached,
    RunStopped,
    StoreError,
    redact,
)


def test_exit_codes_follow_the_spec():
    assert JobError("x").exit_code == 2
    assert FatalApiError("x").exit_code == 3
    assert QuotaReached("x").exit_code == 4
    assert LockedError("x").exit_code == 75
    assert StoreError("x").exit_code == 74
    assert Interrupted("x", exit_code=130).exit_code == 130
    assert Interrupted("x", exit_code=143).exit_code == 143
    assert BudgetSpent("x").exit_code == 5
    assert BatchPending("x").exit_code == 10
    assert EndpointDown("x").exit_code == 69


def test_every_stop_the_same_command_resumes_is_a_run_stopped():
    for stop in (FatalApiError, QuotaReached, BudgetSpent, BatchPending, EndpointDown):
        assert issubclass(stop, RunStopped)


# --- redact ---------------------------------------------------------------------------------


def test_redact_removes_a_given_secret_wherever_it_appears():
    secret = "zk-abc.DEF_123-xyz"
    message = f"key {secret} is invalid; you sent {secret}"
    cleaned = redact(message, secret)
    assert secret not in cleaned
    assert cleaned == "key [redacted] is invalid; you sent [redacted]"


def test_redact_removes_bearer_tokens_it_was_not_told_about():
    cleaned = redact("header was Authorization: Bearer abc.def-GHI_123 ok")
    assert "abc.def-GHI_123" not in cleaned
    assert cleaned == "header was Authorization: Bearer [redacted] ok"


@pytest.mark.parametrize(
    "message",
    ["token sk-proj-ABCdef123456 rejected", "api_key=ABCdef123456 rejected"],
)
def test_redact_removes_key_shaped_strings(message):
    assert "ABCdef123456" not in redact(message)
    assert "[redacted]" in redact(message)


def test_redact_ignores_an_empty_secret():
    """An unset key ("") must not be "replaced" between every character."""
    assert redact("all fine", "") == "all fine"


def test_redact_leaves_a_short_clean_message_unchanged():
    assert redact("model not found", "zk-secret") == "model not found"


def test_redact_truncates_long_messages_with_an_ellipsis():
    cleaned = redact("x" * 5000)
    assert len(cleaned) == MAX_MESSAGE_CHARS
    assert cleaned.endswith("…")
    assert cleaned[:-1] == "x" * (MAX_MESSAGE_CHARS - 1)


def test_redact_removes_a_secret_before_truncating_so_no_prefix_of_it_survives():
    secret = "zk-" + "s" * 40
    message = "y" * (MAX_MESSAGE_CHARS - 10) + secret
    cleaned = redact(message, secret)
    assert "zk-" not in cleaned
    assert "ssss" not in cleaned
    assert len(cleaned) <= MAX_MESSAGE_CHARS
