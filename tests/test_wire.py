"""A 200 answer is untrusted input (issue 11): each class of hostile answer, with several
triggers, becomes a Success whose every field fits the result schema, or a classified Failure.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from zbatch.outcome import Failure, Scope, Success
from zbatch.providers import OPENAI, ZAI, Provider
from zbatch.providers.wire import MAX_TOKENS

GOOD_USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 3,
    "total_tokens": 15,
    "prompt_tokens_details": {"cached_tokens": 4},
}


def body(
    content: Any = "ok", *, usage: Any = GOOD_USAGE, message: Any = None, **top: Any
) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": "chatcmpl-1",
        "request_id": "req-1",
        "model": "glm-4.6",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": message or {"role": "assistant", "content": content},
            }
        ],
        "usage": usage,
    }
    answer.update(top)
    return answer


def parse(payload: Any, provider: Provider = ZAI) -> Any:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return provider.parse_answer(raw, 7)


def storable(value: Any) -> bool:
    """What a string or int64 column accepts."""
    if value is None:
        return True
    if isinstance(value, str):
        value.encode("utf-8")  # raises on a lone surrogate
        return True
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def assert_fits_the_schema(outcome: Success) -> None:
    for name in Success.__slots__:
        value = getattr(outcome, name)
        if name == "usage_malformed":
            assert isinstance(value, bool)
        elif name == "alternatives":  # the other choices' contents, of a request with "n"
            assert isinstance(value, tuple) and all(isinstance(v, str) for v in value)
            assert all(storable(v) for v in value), (name, value)
        else:
            assert storable(value), (name, value)


def test_the_other_choices_of_an_n_answer_are_its_alternatives():
    """A request with "n" answers several choices: the first is the content, the others'
    contents are kept in order; a choice without usable content counts as an empty answer."""
    payload = body("red")
    first = payload["choices"][0]
    payload["choices"] += [
        {**first, "index": 1, "message": {"role": "assistant", "content": "blue"}},
        {**first, "index": 2, "message": None},
        {**first, "index": 3, "message": {"role": "assistant", "content": "gr\ud800een"}},
    ]
    outcome = parse(payload)
    assert isinstance(outcome, Success)
    assert outcome.content == "red"
    assert outcome.alternatives == ("blue", "", "gr\ufffdeen")
    assert_fits_the_schema(outcome)
    assert parse(body("one")).alternatives == ()


# --- fields of the wrong type are converted or left out, never passed on -------------------


@pytest.mark.parametrize(
    ("top", "field", "expected"),
    [
        ({"request_id": 12345}, "request_id", "12345"),
        ({"request_id": 1.5}, "request_id", "1.5"),
        ({"request_id": {"a": 1}, "id": "chatcmpl-9"}, "request_id", "chatcmpl-9"),
        ({"request_id": None, "id": 99}, "request_id", "99"),
        ({"request_id": True, "id": ["x"]}, "request_id", None),
        ({"model": 4.6}, "model", "4.6"),
        ({"model": ["glm"]}, "model", None),
        ({"model": False}, "model", None),
    ],
)
def test_a_top_level_field_of_the_wrong_type_becomes_text_or_null(top, field, expected):
    outcome = parse(body("ok", **top))
    assert isinstance(outcome, Success)
    assert getattr(outcome, field) == expected
    assert outcome.content == "ok"
    assert_fits_the_schema(outcome)


@pytest.mark.parametrize(
    ("choice", "field", "expected"),
    [
        ({"finish_reason": 7}, "finish_reason", "7"),
        ({"finish_reason": {"why": "stop"}}, "finish_reason", None),
        ({"message": {"content": "ok", "reasoning_content": {"steps": 3}}}, "reasoning", None),
        ({"message": {"content": "ok", "reasoning_content": 42}}, "reasoning", "42"),
    ],
)
def test_a_choice_field_of_the_wrong_type_becomes_text_or_null(choice, field, expected):
    payload = body("ok")
    payload["choices"][0].update(choice)
    outcome = parse(payload)
    assert isinstance(outcome, Success)
    name = "reasoning_content" if field == "reasoning" else field
    assert getattr(outcome, name) == expected
    assert_fits_the_schema(outcome)


# --- malformed usage: null and counted --------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({**GOOD_USAGE, "prompt_tokens": "12"}, (None, 3, 15, 4)),
        ({**GOOD_USAGE, "completion_tokens": -1}, (12, None, 15, 4)),
        ({**GOOD_USAGE, "total_tokens": True}, (12, 3, None, 4)),
        ({**GOOD_USAGE, "total_tokens": 1e30}, (12, 3, None, 4)),
        ({**GOOD_USAGE, "total_tokens": MAX_TOKENS + 1}, (12, 3, None, 4)),
        ({**GOOD_USAGE, "completion_tokens": 2.5}, (12, None, 15, 4)),
        ({**GOOD_USAGE, "prompt_tokens_details": {"cached_tokens": [4]}}, (12, 3, 15, None)),
        ({**GOOD_USAGE, "prompt_tokens_details": 4}, (12, 3, 15, None)),
        ("lots", (None, None, None, None)),
        ([12, 3], (None, None, None, None)),
    ],
)
def test_malformed_usage_becomes_null_and_is_flagged_for_counting(usage, expected):
    outcome = parse(body("ok", usage=usage))
    assert isinstance(outcome, Success)
    counts = (
        outcome.prompt_tokens,
        outcome.completion_tokens,
        outcome.total_tokens,
        outcome.cached_tokens,
    )
    assert counts == expected
    assert outcome.usage_malformed
    assert outcome.content == "ok"
    assert_fits_the_schema(outcome)


def test_nan_and_infinite_token_counts_are_malformed():
    """Python's json reads the non-standard NaN and Infinity literals."""
    raw = json.dumps(body("ok")).replace('"prompt_tokens": 12', '"prompt_tokens": NaN')
    raw = raw.replace('"completion_tokens": 3', '"completion_tokens": -Infinity')
    outcome = parse(raw.encode())
    assert isinstance(outcome, Success)
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (None, None)
    assert outcome.usage_malformed


@pytest.mark.parametrize(
    "usage",
    [
        GOOD_USAGE,
        None,  # no usage at all is not malformed, only unknown
        {"prompt_tokens": 5},
        {**GOOD_USAGE, "prompt_tokens_details": None},
        {**GOOD_USAGE, "completion_tokens": 3.0},  # an integral float is a count
    ],
)
def test_well_formed_or_absent_usage_is_not_flagged(usage):
    outcome = parse(body("ok", usage=usage))
    assert isinstance(outcome, Success)
    assert not outcome.usage_malformed
    if usage is GOOD_USAGE:
        assert (outcome.prompt_tokens, outcome.cached_tokens) == (12, 4)


# --- no content is a retryable invalid_response, not an empty success ----------------------


@pytest.mark.parametrize(
    "choice",
    [
        {"finish_reason": "stop", "message": None},
        {"finish_reason": "stop"},
        {"finish_reason": "stop", "message": "Positive"},
        {"finish_reason": "stop", "message": {"role": "assistant"}},
        {"finish_reason": "stop", "message": {"role": "assistant", "content": None}},
    ],
)
def test_an_answer_without_content_is_a_retryable_invalid_response(choice):
    payload = body()
    payload["choices"] = [choice]
    outcome = parse(payload)
    assert isinstance(outcome, Failure)
    assert (outcome.error_type, outcome.scope, outcome.status_code) == (
        "invalid_response",
        Scope.RETRY,
        200,
    )


def test_a_refusal_without_content_fails_the_row_without_retrying():
    outcome = parse(body(message={"role": "assistant", "content": None, "refusal": "I can't."}))
    assert isinstance(outcome, Failure)
    assert (outcome.error_type, outcome.scope) == ("content_filter", Scope.ROW)
    assert outcome.message == "the model refused: I can't."


def test_a_tool_call_without_content_keeps_the_call_as_the_answer():
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    outcome = parse(body(message={"role": "assistant", "content": None, "tool_calls": calls}))
    assert isinstance(outcome, Success)
    assert json.loads(outcome.content) == calls


def test_a_list_of_content_parts_is_kept_as_json_text():
    parts = [{"type": "text", "text": "Positive"}]
    outcome = parse(body(parts))
    assert isinstance(outcome, Success)
    assert json.loads(outcome.content) == parts


# --- an error object sent with status 200 is classified by its code -----------------------


@pytest.mark.parametrize(
    ("payload", "kind", "scope", "code"),
    [
        ({"error": {"code": "1113", "message": "in arrears"}}, "fatal", Scope.FATAL, "1113"),
        ({"code": 1001, "msg": "no auth header"}, "fatal", Scope.FATAL, "1001"),
        ({"error": {"code": 1302, "message": "busy"}}, "rate_limited", Scope.SLOW_DOWN, "1302"),
        ({"code": "1304", "msg": "daily quota"}, "rate_limited", Scope.QUOTA, "1304"),
        ({"error": {"code": 1301.0, "message": "unsafe"}}, "content_filter", Scope.ROW, "1301"),
    ],
)
def test_an_error_object_in_a_200_is_classified_by_its_code(payload, kind, scope, code):
    outcome = parse(payload)
    assert isinstance(outcome, Failure)
    assert (outcome.error_type, outcome.scope, outcome.error_code) == (kind, scope, code)
    assert outcome.status_code == 200


@pytest.mark.parametrize(
    "payload",
    [
        {"error": {"code": "9999", "message": "something odd"}},
        {"error": {"message": "upstream overloaded"}},
        {"code": 0, "msg": "success", "data": None},
    ],
)
def test_an_error_object_with_an_unknown_code_in_a_200_is_retried(payload):
    outcome = parse(payload)
    assert isinstance(outcome, Failure)
    assert (outcome.error_type, outcome.scope) == ("invalid_response", Scope.RETRY)
    assert "error object in a 200 answer" in outcome.message


def test_openai_names_a_quota_error_by_type_and_it_is_fatal():
    payload = {
        "error": {"message": "You exceeded your current quota", "type": "insufficient_quota"}
    }
    outcome = parse(payload, OPENAI)
    assert isinstance(outcome, Failure)
    assert (outcome.scope, outcome.error_code) == (Scope.FATAL, "insufficient_quota")


def test_z_ai_codes_mean_nothing_to_an_openai_compatible_server():
    outcome = parse({"error": {"code": "1113", "message": "in arrears"}}, OPENAI)
    assert isinstance(outcome, Failure)
    assert (outcome.error_type, outcome.scope) == ("invalid_response", Scope.RETRY)


# --- strings and bodies that no output file or parser could hold ----------------------------


@pytest.mark.parametrize("field", ["content", "model", "request_id", "reasoning_content"])
def test_a_lone_surrogate_in_any_string_is_replaced_so_the_row_can_be_stored(field):
    payload = body("ok")
    if field in ("content", "reasoning_content"):
        payload["choices"][0]["message"][field] = "bad \ud800 text"
    else:
        payload[field] = "bad \udfff text"
    raw = json.dumps(payload).encode()  # json.dumps escapes the surrogate as \\udXXX
    outcome = parse(raw)
    assert isinstance(outcome, Success)
    assert getattr(outcome, field) == "bad \ufffd text"
    assert_fits_the_schema(outcome)


def test_a_lone_surrogate_in_an_error_message_is_replaced():
    code, message = ZAI.error_details(json.dumps({"error": {"message": "x\ud800"}}).encode())
    assert (code, message) == (None, "x\ufffd")
    message.encode("utf-8")


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 200_000 + b"]" * 200_000,  # nesting deeper than the parser's stack
        b'{"choices": [{"message": {"content": ' + b"9" * 5000 + b"}}]}",  # int too long
        b"\xff\xfe not utf-8",
        b"",
    ],
)
def test_a_body_that_breaks_the_parser_is_a_retryable_invalid_response(raw):
    outcome = parse(raw)
    assert isinstance(outcome, Failure)
    assert (outcome.error_type, outcome.scope) == ("invalid_response", Scope.RETRY)
    assert len(outcome.message) < 300


def test_a_well_formed_answer_is_read_whole():
    outcome = parse(body("Positive"))
    assert isinstance(outcome, Success)
    assert outcome == Success(
        content="Positive",
        reasoning_content=None,
        finish_reason="stop",
        model="glm-4.6",
        prompt_tokens=12,
        completion_tokens=3,
        total_tokens=15,
        cached_tokens=4,
        request_id="req-1",
        latency_ms=7,
        usage_malformed=False,
    )
