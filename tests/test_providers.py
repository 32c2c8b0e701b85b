"""The provider profiles: Z.AI's error table (shared/reference/ZAI.md), hints and quota clock;
the OpenAI-compatible profile; and the choice of a profile for a base URL."""

from __future__ import annotations

import datetime as dt

import pytest

from zbatch.errors import JobError
from zbatch.job import Job
from zbatch.outcome import Failure, Scope
from zbatch.providers import OPENAI, ZAI, provider_for

classify = ZAI.classify
fatal_hint = ZAI.fatal_hint
quota_reset = ZAI.quota_reset

# (codes, the HTTP status Z.AI sends them with, expected error_type, expected scope)
TABLE = [
    # 1000-1004: authentication failed / missing / invalid / expired key -> stop the run
    (["1000", "1001", "1002", "1003", "1004"], 401, "fatal", Scope.FATAL),
    # 1110-1113, 1121: account inactive, missing, locked, in arrears -> stop the run
    (["1110", "1111", "1112", "1121"], 403, "fatal", Scope.FATAL),
    (["1113"], 429, "fatal", Scope.FATAL),
    # 1220-1222, 1309: no permission, API offline, plan expired -> stop the run
    (["1220", "1221", "1222", "1309"], 403, "fatal", Scope.FATAL),
    # 1210-1215 bad parameters, 1261 prompt too long -> this row only
    (["1210", "1211", "1212", "1213", "1214", "1215", "1261"], 400, "bad_request", Scope.ROW),
    # 1231 repeated request_id -> this row only
    (["1231"], 400, "bad_request", Scope.ROW),
    # 1301 content filter -> this row only, no retry
    (["1301"], 400, "content_filter", Scope.ROW),
    # 1302 concurrency too high -> retry and lower the concurrency
    (["1302"], 429, "rate_limited", Scope.SLOW_DOWN),
    # 1303 / 1305 frequency too high -> retry with backoff
    (["1303", "1305"], 429, "rate_limited", Scope.RETRY),
    # 1304 / 1308 / 1310 quota reached -> stop dispatching until the reset
    (["1304", "1308", "1310"], 429, "rate_limited", Scope.QUOTA),
    # 500, 1230, 1234, 1120 internal / network errors -> retry
    (["500", "1230", "1234", "1120"], 500, "server_error", Scope.RETRY),
]

CASES = [
    pytest.param(code, status, kind, scope, id=f"{code}-http{status}")
    for codes, status, kind, scope in TABLE
    for code in codes
]


@pytest.mark.parametrize(("code", "status", "kind", "scope"), CASES)
def test_each_code_of_the_zai_error_table_is_classified_as_documented(code, status, kind, scope):
    failure = classify(status, code, "provider says no")
    assert failure.error_type == kind
    assert failure.scope is scope
    # The failure keeps what the provider said, for the error log.
    assert failure.error_code == code
    assert failure.status_code == status
    assert failure.message == "provider says no"


def test_1113_no_balance_under_429_is_fatal_not_a_slow_down():
    """The same 429 status means "slow down" for 1302 and "no balance" for 1113."""
    no_balance = classify(429, "1113", "Insufficient balance")
    slow_down = classify(429, "1302", "High concurrency")
    assert no_balance.scope is Scope.FATAL
    assert not no_balance.retryable
    assert slow_down.scope is Scope.SLOW_DOWN
    assert slow_down.retryable


@pytest.mark.parametrize(
    ("status", "code", "scope"),
    [
        (500, "1302", Scope.SLOW_DOWN),  # a concurrency code under a 5xx still lowers concurrency
        (503, "1301", Scope.ROW),  # a content-filter code under a 5xx is not retried
        (502, "1210", Scope.ROW),
        (500, "1001", Scope.FATAL),
        (200, "1304", Scope.QUOTA),
        (400, "1234", Scope.RETRY),  # a server code under a 4xx is still retried
    ],
)
def test_the_body_code_wins_over_the_http_status(status, code, scope):
    assert classify(status, code, "m").scope is scope


@pytest.mark.parametrize("status", [500, 501, 502, 503, 504, 520, 599])
def test_any_5xx_without_a_code_is_a_retryable_server_error(status):
    failure = classify(status, None, "Bad Gateway")
    assert (failure.error_type, failure.scope) == ("server_error", Scope.RETRY)
    assert failure.retryable


@pytest.mark.parametrize("profile", [ZAI, OPENAI])
@pytest.mark.parametrize("status", [400, 422, 500])
def test_a_refused_response_format_fails_the_row_whatever_the_status(profile, status):
    """llama-cpp-python answers 500 to a response_format it does not take: sent again, it is
    refused again, so it is not retried."""
    message = "1 validation error: ('body', 'response_format', 'type') Input should be 'text'"
    failure = profile.classify(status, None, message)
    assert (failure.error_type, failure.scope) == ("bad_request", Scope.ROW)
    assert failure.status_code == status


@pytest.mark.parametrize("status", [500, 503])
def test_an_unknown_code_under_a_5xx_is_retried(status):
    assert classify(status, "9999", "m").scope is Scope.RETRY


def test_429_without_a_code_is_a_slow_down():
    failure = classify(429, None, "Too Many Requests")
    assert (failure.error_type, failure.scope) == ("rate_limited", Scope.SLOW_DOWN)
    assert failure.error_code is None


def test_429_with_an_unknown_code_is_a_slow_down():
    assert classify(429, "4242", "m").scope is Scope.SLOW_DOWN


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_without_a_code_are_fatal(status):
    assert classify(status, None, "Unauthorized").scope is Scope.FATAL


@pytest.mark.parametrize("status", [408, 409, 425])
def test_request_timeout_conflict_and_too_early_are_retried(status):
    failure = classify(status, None, "m")
    assert failure.scope is Scope.RETRY
    assert failure.error_type == "server_error"


@pytest.mark.parametrize("status", [400, 413, 422])
def test_other_4xx_without_a_code_fail_the_row_only(status):
    failure = classify(status, None, "m")
    assert (failure.error_type, failure.scope) == ("bad_request", Scope.ROW)
    assert not failure.retryable


@pytest.mark.parametrize(
    ("scope", "retryable"),
    [
        (Scope.RETRY, True),
        (Scope.SLOW_DOWN, True),
        (Scope.ROW, False),
        (Scope.FATAL, False),
        (Scope.QUOTA, False),
    ],
)
def test_failure_is_retryable_only_for_retry_and_slow_down(scope, retryable):
    assert Failure("x", scope, "m").retryable is retryable


def test_fatal_hint_tells_the_user_to_top_up_after_1113_and_to_resume():
    hint = fatal_hint(classify(429, "1113", "arrears"))
    assert "top up" in hint
    assert "run the same command to resume" in hint


def test_fatal_hint_points_at_the_api_key_for_auth_failures():
    assert "API key" in fatal_hint(classify(401, "1002", "invalid"))
    assert "API key" in fatal_hint(classify(401, None, "invalid"))


def test_fatal_hint_points_at_the_plan_for_permission_failures():
    assert "access" in fatal_hint(classify(403, "1220", "no permission"))


def test_quota_reset_reads_the_time_in_the_message_as_beijing_time():
    when = quota_reset("Daily quota reached; it resets at 2026-03-01 00:00:00")
    assert when == dt.datetime(2026, 3, 1, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert when.astimezone(dt.UTC) == dt.datetime(2026, 2, 28, 16, 0, tzinfo=dt.UTC)


def test_quota_reset_is_none_without_a_time():
    assert quota_reset("quota reached, try tomorrow") is None


@pytest.mark.parametrize("status", [404, 405])
def test_a_missing_endpoint_stops_the_run_with_a_base_url_hint(status):
    """A 404/405 without a business code means a wrong base_url: fatal, not a row error each."""
    failure = classify(status, None, "Not Found")
    assert failure.scope is Scope.FATAL
    assert "check base_url" in fatal_hint(failure)


def test_the_status_table_is_shared_and_only_the_code_table_differs():
    """The same 429 + 1113 is fatal on Z.AI; an OpenAI-compatible server has no such code."""
    assert ZAI.classify(429, "1113", "m").scope is Scope.FATAL
    assert OPENAI.classify(429, "1113", "m").scope is Scope.SLOW_DOWN
    assert OPENAI.classify(400, "1301", "m").scope is Scope.ROW  # by status, not as a filter
    assert OPENAI.classify(400, "1301", "m").error_type == "bad_request"
    for status in (401, 403, 404, 408, 429, 500, 503, 400):
        assert OPENAI.classify(status, None, "m") == ZAI.classify(status, None, "m")


@pytest.mark.parametrize("code", ["insufficient_quota", "invalid_api_key"])
def test_openai_codes_a_status_would_misread_are_fatal(code):
    """OpenAI's "no credits left" arrives as a 429, which alone would mean "slow down"."""
    failure = OPENAI.classify(429 if code == "insufficient_quota" else 401, code, "m")
    assert failure.scope is Scope.FATAL
    hint = OPENAI.fatal_hint(failure)
    assert ("add credits" if code == "insufficient_quota" else "API key") in hint
    assert "run the same command to resume" in hint


def test_the_endpoint_hint_names_the_chat_path_of_the_provider():
    failure = OPENAI.classify(404, None, "Not Found")
    assert f"the part before {OPENAI.chat_path}" in OPENAI.fatal_hint(failure)


def test_an_openai_reset_time_without_a_zone_is_read_as_utc():
    when = OPENAI.quota_reset("resets at 2026-03-01 00:00")
    assert when == dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def test_an_impossible_reset_time_is_no_reset_time():
    assert ZAI.quota_reset("it resets at 2026-13-45 99:99:99") is None


@pytest.mark.parametrize(
    ("base_url", "name"),
    [
        ("https://api.z.ai/api/paas/v4", "zai"),
        ("https://api.z.ai/api/coding/paas/v4/", "zai"),
        ("https://open.bigmodel.cn/api/paas/v4", "zai"),
        ("HTTPS://API.Z.AI/api/paas/v4", "zai"),
        ("http://127.0.0.1:8123/api/paas/v4", "zai"),  # a gateway or test server keeps the path
        ("https://api.openai.com/v1", "openai"),
        ("http://localhost:8080/v1", "openai"),
        ("https://notz.ai.example.com/v1", "openai"),
        ("https://evil-z.ai.example/v1", "openai"),
        ("", "openai"),
    ],
)
def test_the_profile_is_chosen_from_the_base_url(base_url, name):
    assert provider_for(base_url).name == name


def test_an_explicit_provider_name_wins_over_the_url():
    assert provider_for("https://api.z.ai/api/paas/v4", "openai") is OPENAI
    assert provider_for("http://localhost:8080/v1", "zai") is ZAI


def test_an_unknown_provider_name_is_a_job_error_naming_the_choices():
    with pytest.raises(JobError, match="provider must be 'zai' or 'openai', not 'anthropic'"):
        provider_for("https://api.z.ai/api/paas/v4", "anthropic")


def test_a_base_url_that_is_no_url_is_a_job_error():
    with pytest.raises(JobError, match="base_url"):
        provider_for("http://[::1")


def test_the_profiles_expose_their_defaults_and_batch_endpoint():
    assert (ZAI.default_model, ZAI.default_base_url) == ("glm-4.6", "https://api.z.ai/api/paas/v4")
    assert ZAI.batch_endpoint == "/v4/chat/completions"
    assert OPENAI.batch_endpoint == "/v1/chat/completions"
    assert provider_for(ZAI.default_base_url) is ZAI
    assert provider_for(OPENAI.default_base_url) is OPENAI


def test_z_ai_prices_are_in_its_table_and_openai_compatible_servers_have_none():
    assert ZAI.prices["glm-4.6"].output == 2.2
    assert ZAI.prices["glm-4.7-flash"].input == 0.0
    assert dict(OPENAI.prices) == {}


def test_a_job_chooses_its_profile_by_endpoint_provider_or_its_base_url(tmp_path):
    job_file = tmp_path / "job.toml"
    job_file.write_text(
        '[input]\npath = "in.jsonl"\n[output]\ndir = "out"\n'
        '[endpoint]\nbase_url = "https://gateway.example/api/paas/v4"\nprovider = "openai"\n',
        encoding="utf-8",
    )
    assert Job.from_toml(job_file).profile is OPENAI
    job_file.write_text(job_file.read_text(encoding="utf-8").replace("provider", "# provider"))
    assert Job.from_toml(job_file).profile is ZAI  # by its /paas/v4 path
    local = Job(input_path="in.jsonl", output_dir="out", base_url="http://localhost:8080/v1")
    assert local.profile is OPENAI
    assert Job(input_path="in.jsonl", output_dir="out").profile is ZAI


def test_a_job_with_a_provider_zbatch_has_no_profile_for_is_refused():
    with pytest.raises(JobError, match=r"endpoint\.provider must be 'zai' or 'openai'"):
        Job(input_path="in.jsonl", output_dir="out", provider="anthropic")
