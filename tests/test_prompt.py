"""How a row becomes a request body, checked against Z.AI's own OpenAPI schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from helpers import job

from zbatch.job import DEFAULT_MODEL, Job
from zbatch.prompt import (
    RenderError,
    estimate_tokens,
    missing_columns,
    render,
    request_params,
    row_id,
    system_text,
    template_fields,
)

HERE = Path(__file__).resolve().parent
VENDORED_OPENAPI = HERE / "data" / "zai-openapi.json"
SHARED_OPENAPI = Path(__file__).resolve().parents[2] / "shared/reference/zai-openapi.json"


def openapi_path() -> Path:
    """The vendored copy in tests/data (self-contained), else shared/reference beside the repo."""
    for path in (VENDORED_OPENAPI, SHARED_OPENAPI):
        if path.is_file():
            return path
    pytest.fail(f"zai-openapi.json is in neither {VENDORED_OPENAPI} nor {SHARED_OPENAPI}")


@pytest.fixture(scope="module")
def request_validator() -> jsonschema.protocols.Validator:
    """A validator for ChatCompletionTextRequest, with $refs resolved against the whole document."""
    doc = json.loads(openapi_path().read_text(encoding="utf-8"))
    schema = {
        "$ref": "#/components/schemas/ChatCompletionTextRequest",
        "components": doc["components"],
    }
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def assert_valid_request(validator: jsonschema.protocols.Validator, body: dict[str, Any]) -> None:
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


# --- 1. batch-format lines ------------------------------------------------------------------


def batch_line(body: dict[str, Any], custom_id: str = "req-1") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v4/chat/completions", "body": body}


def test_a_batch_line_body_is_the_request():
    body = {
        "model": "glm-4.5-air",
        "messages": [{"role": "user", "content": "Classify: great product"}],
        "temperature": 0.2,
    }
    assert render(batch_line(body), job()) == body


def test_job_settings_fill_only_what_a_batch_body_lacks():
    body = {"model": "glm-4.5", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.1}
    settings = job(temperature=0.9, top_p=0.5, max_tokens=64, thinking=False)
    request = render(batch_line(body), settings)
    assert request["temperature"] == 0.1  # the body's own value wins
    assert request["top_p"] == 0.5  # filled from the job
    assert request["max_tokens"] == 64
    assert request["thinking"] == {"type": "disabled"}


def test_a_batch_body_without_a_model_gets_the_jobs_model():
    request = render(batch_line({"messages": [{"role": "user", "content": "hi"}]}), job())
    assert request["model"] == DEFAULT_MODEL
    request = render(
        batch_line({"messages": [{"role": "user", "content": "hi"}]}), job(model="glm-4.7")
    )
    assert request["model"] == "glm-4.7"


def test_a_job_file_model_does_not_override_the_batch_bodys_model():
    body = {"model": "glm-4.5", "messages": [{"role": "user", "content": "hi"}]}
    assert render(batch_line(body), job(model="glm-4.7"))["model"] == "glm-4.5"


def test_a_command_line_model_overrides_the_batch_bodys_model():
    body = {"model": "glm-4.5", "messages": [{"role": "user", "content": "hi"}]}
    request = render(batch_line(body), job(model="glm-4.7", force_model=True))
    assert request["model"] == "glm-4.7"


def test_system_is_not_prepended_to_a_batch_body():
    messages = [{"role": "user", "content": "hi"}]
    request = render(batch_line({"messages": messages}), job(system="Be terse."))
    assert request["messages"] == messages


def test_stream_is_removed_from_a_batch_body():
    """A batch runner reads whole answers; a streamed reply would not parse."""
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    assert "stream" not in render(batch_line(body), job())


def test_rendering_a_batch_line_does_not_modify_the_input_row():
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    row = batch_line(body)
    render(row, job(temperature=0.3))
    assert row["body"] == {"messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.mark.parametrize(
    "messages",
    [None, [], "hi", [{"content": "no role"}], [{"role": "system", "content": "only system"}]],
)
def test_a_batch_body_without_usable_messages_is_a_render_error(messages):
    body: dict[str, Any] = {"model": "glm-4.6"}
    if messages is not None:
        body["messages"] = messages
    with pytest.raises(RenderError, match=r"body\.messages"):
        render(batch_line(body), job())


# --- 2. messages_column ---------------------------------------------------------------------


def test_messages_column_is_sent_as_the_conversation():
    messages = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ]
    request = render({"id": "a", "conv": messages}, job(messages_column="conv"))
    assert request == {"model": DEFAULT_MODEL, "messages": messages}


def test_system_is_prepended_to_a_messages_column():
    messages = [{"role": "user", "content": "hi"}]
    request = render({"conv": messages}, job(messages_column="conv", system="Be terse."))
    assert request["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hi"},
    ]
    assert messages == [{"role": "user", "content": "hi"}]  # the row is not modified


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
        [{"role": "assistant", "content": "a"}],
    ],
)
def test_messages_without_a_user_role_are_a_render_error(messages):
    with pytest.raises(RenderError, match="no user message"):
        render({"conv": messages}, job(messages_column="conv"))


@pytest.mark.parametrize("value", [None, [], "a string", {"role": "user"}, ["not a dict"]])
def test_a_messages_column_that_is_not_a_list_of_messages_is_a_render_error(value):
    with pytest.raises(RenderError, match="'conv'"):
        render({"conv": value}, job(messages_column="conv"))


# --- 3. template ----------------------------------------------------------------------------


def test_a_template_is_rendered_with_the_rows_columns():
    settings = job(template="Review of {product}: {text}\nAnswer positive or negative.")
    request = render({"id": 1, "product": "kettle", "text": "Boils fast."}, settings)
    assert request["messages"] == [
        {
            "role": "user",
            "content": "Review of kettle: Boils fast.\nAnswer positive or negative.",
        }
    ]


def test_a_template_can_index_into_a_column_and_escape_braces():
    settings = job(template="{meta[title]} {{literal}}")
    request = render({"meta": {"title": "Hello"}}, settings)
    assert request["messages"][0]["content"] == "Hello {literal}"


def test_system_is_prepended_to_a_template_prompt():
    request = render({"text": "t"}, job(template="{text}", system="You label reviews."))
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert request["messages"][0]["content"] == "You label reviews."


@pytest.mark.parametrize("row", [{"id": 1}, {"id": 1, "text": None}])
def test_a_template_field_missing_or_null_in_the_row_is_a_render_error_naming_it(row):
    with pytest.raises(RenderError, match="'text'"):
        render(row, job(template="Review: {text}"))


def test_a_template_attribute_that_does_not_exist_is_a_render_error():
    with pytest.raises(RenderError, match="cannot be rendered"):
        render({"text": "x"}, job(template="{text.nope}"))


def test_template_fields_are_the_top_level_columns():
    assert template_fields("{a} {b.c} {d[0]} {{e}} {a}") == frozenset({"a", "b", "d"})


# --- 4. prompt_column -----------------------------------------------------------------------


def test_the_prompt_column_becomes_one_user_message():
    request = render({"id": "1", "prompt": "Translate 'chat' to English."}, job())
    assert request == {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": "Translate 'chat' to English."}],
    }


def test_a_custom_prompt_column_is_used():
    request = render({"question": "Why?"}, job(prompt_column="question"))
    assert request["messages"] == [{"role": "user", "content": "Why?"}]


def test_system_is_prepended_to_a_prompt_column():
    request = render({"prompt": "hi"}, job(system="Answer in French."))
    assert request["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "hi"},
    ]


@pytest.mark.parametrize("row", [{}, {"prompt": None}, {"prompt": ""}, {"prompt": "  \n "}])
def test_a_missing_or_empty_prompt_is_a_render_error(row):
    with pytest.raises(RenderError, match="'prompt' is missing or empty"):
        render(row, job())


def test_an_empty_system_prompt_is_not_sent():
    request = render({"prompt": "hi"}, job(system=""))
    assert [m["role"] for m in request["messages"]] == ["user"]


# --- which rule wins ------------------------------------------------------------------------


def test_a_batch_line_wins_over_the_jobs_prompt_settings():
    row = batch_line({"messages": [{"role": "user", "content": "from body"}]})
    row["prompt"] = "from column"
    request = render(row, job(template="{prompt}"))
    assert request["messages"] == [{"role": "user", "content": "from body"}]


def test_messages_column_wins_over_the_prompt_column():
    row = {"prompt": "from prompt", "conv": [{"role": "user", "content": "from conv"}]}
    assert render(row, job(messages_column="conv"))["messages"][0]["content"] == "from conv"


def test_a_template_wins_over_the_prompt_column():
    row = {"prompt": "from prompt", "text": "from text"}
    assert render(row, job(template="{text}"))["messages"][0]["content"] == "from text"


# --- params ---------------------------------------------------------------------------------


def test_no_params_are_sent_when_the_job_sets_none():
    assert request_params(job()) == {}
    assert set(render({"prompt": "hi"}, job())) == {"model", "messages"}


def test_sampling_params_are_sent_as_given():
    params = request_params(job(temperature=0.0, top_p=0.9, max_tokens=256))
    assert params == {"temperature": 0.0, "top_p": 0.9, "max_tokens": 256}


@pytest.mark.parametrize(("thinking", "kind"), [(True, "enabled"), (False, "disabled")])
def test_thinking_true_and_false_become_the_thinking_object(thinking, kind):
    assert request_params(job(thinking=thinking))["thinking"] == {"type": kind}


def test_response_format_json_object_becomes_the_response_format_object():
    params = request_params(job(response_format="json_object"))
    assert params["response_format"] == {"type": "json_object"}


SCHEMA = {"type": "object", "properties": {"kind": {"enum": ["a", "b"]}}, "required": ["kind"]}
OPENAI_URL = "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize(
    ("base_url", "schema_form", "response_format", "schema_in_system"),
    [
        # each provider's own form: Z.AI has JSON mode only, OpenAI structured outputs
        (None, None, {"type": "json_object"}, True),
        (
            OPENAI_URL,
            None,
            {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": SCHEMA, "strict": False},
            },
            False,
        ),
        # endpoint.schema_form overrides the profile's
        (OPENAI_URL, "json_object", {"type": "json_object", "schema": SCHEMA}, False),
        (OPENAI_URL, "system", {"type": "json_object"}, True),
    ],
)
def test_an_output_schema_is_sent_in_the_endpoints_form(
    base_url, schema_form, response_format, schema_in_system
):
    url = {"base_url": base_url} if base_url else {}
    asked = job(output_schema=SCHEMA, system="Sort.", schema_form=schema_form, **url)
    assert request_params(asked)["response_format"] == response_format
    system = system_text(asked)
    assert system is not None and system.startswith("Sort.")
    assert (json.dumps(SCHEMA) in system) is schema_in_system


@pytest.mark.parametrize(
    ("base_url", "n_choices", "n"),
    [(None, None, None), (OPENAI_URL, None, 3), (OPENAI_URL, False, None), (None, True, 3)],
)
def test_samples_ask_for_n_where_the_profile_or_n_choices_says_so(base_url, n_choices, n):
    url = {"base_url": base_url} if base_url else {}
    asked = job(samples=3, temperature=0.7, n_choices=n_choices, **url)
    assert request_params(asked).get("n") == n
    assert asked.samples_in_one_request is (n is not None)


def test_extra_fields_are_passed_through_and_may_override_params():
    params = request_params(
        job(temperature=0.5, extra={"do_sample": False, "stop": ["\n"], "temperature": 0.1})
    )
    assert params == {"temperature": 0.1, "do_sample": False, "stop": ["\n"]}


def test_params_are_added_to_a_rendered_body():
    request = render({"prompt": "hi"}, job(max_tokens=10, thinking=True))
    assert request["max_tokens"] == 10
    assert request["thinking"] == {"type": "enabled"}


# --- missing_columns ------------------------------------------------------------------------


def test_missing_columns_names_the_template_fields_the_input_lacks():
    settings = job(template="{title}: {text} ({lang})")
    assert missing_columns(settings, ["id", "text"], batch_lines=False) == ["lang", "title"]
    assert missing_columns(settings, ["id", "text", "title", "lang"], batch_lines=False) == []


def test_missing_columns_checks_the_prompt_column_by_default():
    assert missing_columns(job(), ["id", "text"], batch_lines=False) == ["prompt"]
    assert missing_columns(job(), ["id", "prompt"], batch_lines=False) == []


def test_missing_columns_checks_the_messages_column():
    settings = job(messages_column="conv")
    assert missing_columns(settings, ["id", "prompt"], batch_lines=False) == ["conv"]


def test_missing_columns_includes_keep_columns():
    settings = job(keep_columns=("source", "lang"))
    assert missing_columns(settings, ["prompt", "lang"], batch_lines=False) == ["source"]


def test_batch_lines_need_no_columns():
    assert missing_columns(job(template="{text}"), ["custom_id", "body"], batch_lines=True) == []


# --- row_id ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"id": "abc"}, "abc"),
        ({"id": "  abc  "}, "abc"),  # surrounding whitespace is not part of the id
        ({"id": 42}, "42"),  # numeric ids become strings
        ({"id": 7.5}, "7.5"),
        ({"id": 0}, "0"),  # zero is an id, not "missing"
        ({}, None),
        ({"id": None}, None),
        ({"id": ""}, None),
        ({"id": "   "}, None),
        ({"id": True}, None),  # a boolean is not an id
        ({"id": [1]}, None),
        ({"id": {"a": 1}}, None),
    ],
)
def test_row_id_is_a_nonblank_string_or_none(data, expected):
    assert row_id(data, None) == expected


def test_row_id_reads_the_configured_id_column():
    assert row_id({"id": "x", "doc_id": 17}, "doc_id") == "17"
    assert row_id({"id": "x"}, "doc_id") is None


def test_row_id_of_a_batch_line_is_its_custom_id():
    line = batch_line({"messages": []}, custom_id="request-7")
    assert row_id(line, None) == "request-7"


def test_estimate_tokens_is_characters_over_four_and_at_least_one():
    body = {"messages": [{"role": "user", "content": "x" * 400}, {"role": "system", "content": ""}]}
    assert estimate_tokens(body) == 100
    assert estimate_tokens({"messages": [{"role": "user", "content": ""}]}) == 1


# --- the rendered bodies satisfy Z.AI's OpenAPI schema --------------------------------------

ROWS_AND_JOBS = [
    pytest.param({"id": "1", "prompt": "Hello"}, job(), id="prompt-column"),
    pytest.param(
        {"id": "1", "prompt": "Hello"},
        job(
            system="Be terse.",
            temperature=0.0,
            top_p=0.9,
            max_tokens=512,
            thinking=False,
            response_format="json_object",
            extra={"do_sample": True, "stop": ["END"], "user_id": "user-123456"},
        ),
        id="prompt-column-all-params",
    ),
    pytest.param(
        {"id": "1", "text": "nice", "lang": "en"},
        job(template="[{lang}] {text}", system="Label it.", thinking=True, temperature=1.0),
        id="template",
    ),
    pytest.param(
        {
            "id": "1",
            "conv": [
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"},
                {"role": "user", "content": "3+3?"},
            ],
        },
        job(messages_column="conv", system="Math tutor.", model="glm-4.5-air"),
        id="messages-column",
    ),
    pytest.param(
        batch_line(
            {
                "model": "glm-4.5",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
            }
        ),
        job(temperature=0.3, max_tokens=100, thinking=True, model="glm-4.7", force_model=True),
        id="batch-line",
    ),
]


@pytest.mark.parametrize(("row", "settings"), ROWS_AND_JOBS)
def test_rendered_bodies_are_valid_chat_completion_text_requests(request_validator, row, settings):
    assert_valid_request(request_validator, render(row, settings))


@pytest.mark.parametrize(
    ("change", "broken_at"),
    [
        (lambda b: b.update(temperature=5), "temperature"),
        (lambda b: b.pop("messages"), "messages"),
        (lambda b: b.update(messages=[]), "messages"),
        (lambda b: b.update(thinking={"type": "on"}), "thinking"),
        (lambda b: b.update(response_format={"type": "json_schema"}), "response_format"),
        (lambda b: b.update(max_tokens=0), "max_tokens"),
        (lambda b: b.update(messages=[{"role": "robot", "content": "hi"}]), "messages"),
    ],
)
def test_the_schema_validator_rejects_bad_bodies(request_validator, change, broken_at):
    """The schema check above can fail: a body the API would refuse does not validate."""
    body = render({"prompt": "hi"}, job())
    assert_valid_request(request_validator, body)
    change(body)
    errors = list(request_validator.iter_errors(body))
    # Each error points at the broken field (a missing field is named in the message).
    where = [str(e.absolute_path[0]) if e.absolute_path else e.message for e in errors]
    assert where
    assert all(broken_at in w for w in where), where


def test_the_vendored_openapi_copy_matches_shared_reference():
    """tests/data/zai-openapi.json is a copy of shared/reference/zai-openapi.json."""
    if not SHARED_OPENAPI.is_file():
        pytest.skip(f"{SHARED_OPENAPI} is not beside the repo")
    assert VENDORED_OPENAPI.read_bytes() == SHARED_OPENAPI.read_bytes()


def test_a_template_default_fills_an_optional_column_missing_or_null():
    job = Job(
        input_path="in.jsonl",
        output_dir="out",
        template="{text} (note: {note})",
        defaults={"note": "none"},
    )
    assert missing_columns(job, ["id", "text"], batch_lines=False) == []
    assert render({"text": "Fine", "note": None}, job)["messages"][-1]["content"] == (
        "Fine (note: none)"
    )
    assert render({"text": "Fine", "note": "x"}, job)["messages"][-1]["content"] == "Fine (note: x)"
    assert render({"text": "Fine"}, job)["messages"][-1]["content"] == "Fine (note: none)"


def test_template_defaults_leave_fingerprints_of_jobs_without_them_unchanged():
    plain = Job(input_path="in.jsonl", output_dir="out", template="{text}")
    assert "defaults" not in plain.shaping()
    with_defaults = Job(
        input_path="in.jsonl", output_dir="out", template="{text}", defaults={"text": "?"}
    )
    assert with_defaults.fingerprint() != plain.fingerprint()
