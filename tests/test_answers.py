"""Label normalisation and JSON answers.

Decisions these tests pin down:
- a label answer may differ from the choice in case, surrounding whitespace and punctuation,
  inner runs of whitespace, and Markdown emphasis ("**positive**" is accepted: ``*`` is
  punctuation at the edges);
- a leading "Label:", "Answer:", "The answer is", "Sentiment:" ... is ignored;
- when the answer has several lines, its first line alone may be the label;
- anything else ("positive or negative", "not positive", a sentence) is not a choice: None.
  zbatch never guesses a label from a word inside a sentence.
- a JSON answer must be exactly one JSON object, optionally inside a ```json fence.
"""

from __future__ import annotations

import json

import pytest

from zbatch.answers.checks import NotJson, normalize_label, parse_json_object
from zbatch.answers.schema import FIELD_KINDS
from zbatch.schema import field_for, fit_value


def json_field_value(value, kind):
    """A json_fields value as its column holds it (json_fields are one-property schemas)."""
    return fit_value(value, field_for("f", FIELD_KINDS[kind], {}))


CHOICES = ["Positive", "Negative", "Not relevant"]


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("Positive", "Positive"),
        ("positive", "Positive"),  # case
        ("NEGATIVE", "Negative"),
        ("  positive \n", "Positive"),  # surrounding whitespace
        ("positive.", "Positive"),  # trailing punctuation
        ('"Positive"', "Positive"),  # quotes
        ("\u201cPositive\u201d", "Positive"),  # typographic quotes
        ("**positive**", "Positive"),  # Markdown bold
        ("`negative`", "Negative"),
        ("Positive!", "Positive"),
        ("not   RELEVANT", "Not relevant"),  # inner whitespace runs collapse
        ("Not relevant.", "Not relevant"),
        ("Label: Positive.", "Positive"),  # a "Label:" prefix
        ("label:negative", "Negative"),
        ("Answer: negative", "Negative"),
        ("The answer is negative.", "Negative"),
        ("Sentiment - positive", "Positive"),
        ("Category = Not relevant", "Not relevant"),
        ("Positive\nThe review praises the battery.", "Positive"),  # first line only
    ],
)
def test_normalize_label_accepts_the_choice_in_any_harmless_form(answer, label):
    assert normalize_label(answer, CHOICES) == label


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   ",
        "positive or negative",
        "not positive",
        "mostly positive",
        "positives",
        "The review is positive because the battery lasts.",
        "I think: positive",
        "neutral",
        "Reasoning first.\nPositive",  # the label is not on the first line
    ],
)
def test_normalize_label_returns_none_when_the_answer_is_not_exactly_a_choice(answer):
    assert normalize_label(answer, CHOICES) is None


def test_normalize_label_returns_the_choice_as_written_in_the_job():
    assert normalize_label("spam", ["SPAM", "ham"]) == "SPAM"
    assert normalize_label("HAM", ["SPAM", "ham"]) == "ham"


def test_normalize_label_handles_cjk_labels_and_punctuation():
    assert normalize_label("积极。", ["积极", "消极"]) == "积极"
    assert normalize_label("\u201c消极\u201d\uff01", ["积极", "消极"]) == "消极"
    assert normalize_label("【积极】", ["积极", "消极"]) == "积极"
    assert normalize_label("「消极」。", ["积极", "消极"]) == "消极"
    assert normalize_label("《positive》", ["positive", "negative"]) == "positive"
    assert normalize_label("标签\uff1a消极", ["积极", "消极"]) == "消极"
    assert normalize_label("情感是积极", ["积极", "消极"]) == "积极"
    assert normalize_label("非常积极", ["积极", "消极"]) is None


def test_normalize_label_with_no_choices_is_always_none():
    assert normalize_label("positive", []) is None


# --- parse_json_object ----------------------------------------------------------------------


def test_a_plain_json_object_is_parsed():
    assert parse_json_object('{"sentiment": "positive", "score": 4}') == {
        "sentiment": "positive",
        "score": 4,
    }


@pytest.mark.parametrize(
    "answer",
    [
        '```json\n{"a": 1}\n```',
        '```JSON\n{"a": 1}\n```',
        '```\n{"a": 1}\n```',
        '  ```json {"a": 1} ```  \n',
        '\n{"a": 1}\n',
    ],
)
def test_a_json_object_inside_a_code_fence_is_parsed(answer):
    assert parse_json_object(answer) == {"a": 1}


def test_a_fenced_object_keeps_its_inner_newlines_and_unicode():
    answer = '```json\n{\n  "text": "déjà vu",\n  "tags": ["a", "b"]\n}\n```'
    assert parse_json_object(answer) == {"text": "déjà vu", "tags": ["a", "b"]}


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("[1, 2]", "a JSON list, not an object"),
        ('"positive"', "a JSON str, not an object"),
        ("42", "a JSON int, not an object"),
        ("null", "a JSON NoneType, not an object"),
        ('```json\n["a"]\n```', "a JSON list, not an object"),
    ],
)
def test_json_that_is_not_an_object_is_not_json_for_zbatch(answer, reason):
    with pytest.raises(NotJson, match=reason):
        parse_json_object(answer)


@pytest.mark.parametrize(
    "answer",
    [
        "positive",
        "",
        '{"a": 1',
        "{'a': 1}",  # Python, not JSON
        'Here is the JSON: {"a": 1}',  # zbatch does not dig an object out of prose
        'Sure!\n```json\n{"a": 1}\n```',
        '{"a": 1} and {"b": 2}',
    ],
)
def test_an_answer_that_is_not_one_json_object_raises_not_json(answer):
    with pytest.raises(NotJson, match="not JSON"):
        parse_json_object(answer)


def test_a_deeply_nested_answer_raises_not_json_instead_of_crashing():
    with pytest.raises(NotJson):
        parse_json_object("[" * 100_000 + "]" * 100_000)


def test_not_json_is_a_value_error():
    assert issubclass(NotJson, ValueError)


# --- json_field_value -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        # string: strings as they are, anything else as compact JSON text
        ("déjà", "string", "déjà"),
        (3, "string", "3"),
        ({"k": "é"}, "string", '{"k": "é"}'),
        ([1, 2], "string", "[1, 2]"),
        # json: always JSON text, even for a string
        ("x", "json", '"x"'),
        ({"k": [1, None]}, "json", '{"k": [1, null]}'),
        # bool: only a real boolean
        (True, "bool", True),
        (False, "bool", False),
        ("true", "bool", None),
        (1, "bool", None),
        # int: integers, and floats that are whole numbers
        (7, "int", 7),
        (7.0, "int", 7),
        (7.5, "int", None),
        ("7", "int", None),
        (True, "int", None),  # a bool is not an int
        # float: any number
        (2.5, "float", 2.5),
        (2, "float", 2.0),
        ("2.5", "float", None),
        (False, "float", None),
    ],
)
def test_json_field_value_converts_to_the_column_type_or_none(value, kind, expected):
    result = json_field_value(value, kind)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("kind", ["string", "json", "bool", "int", "float"])
def test_a_null_field_is_null_in_every_column_type(kind):
    assert json_field_value(None, kind) is None


def test_a_json_field_value_in_json_form_round_trips():
    value = {"nested": {"list": [1, 2.5, "三"]}}
    assert json.loads(json_field_value(value, "json")) == value
