"""The simulated endpoint: plausible labels, recognisable answers, the provider's own faults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from zbatch.answers.schema import FIELD_KINDS
from zbatch.client import Client
from zbatch.job import Job
from zbatch.outcome import Failure, Scope, Success
from zbatch.providers import OPENAI, ZAI, Provider
from zbatch.simulate import SimulatedEndpoint, SimulationSpec, plausible_label

SENTIMENT = ("positive", "negative", "neutral")
JOBS = Path(__file__).resolve().parent.parent / "jobs"


def sentiment_prompt(review: str) -> str:
    """The user message jobs/sentiment.toml renders: it names every label once."""
    return f"Review: {review}\n\nSentiment (positive, negative or neutral):"


@pytest.mark.parametrize(
    ("review", "label"),
    [
        ("Really happy with this. No regrets at all.", "positive"),
        ("Great sound, I love it and would recommend it.", "positive"),
        ("It leaked ink in my shirt pocket twice. Terrible.", "negative"),
        ("Broken after a week; I want a refund.", "negative"),
        ("It arrived on Tuesday.", "neutral"),
        ("Good screen, bad battery.", "neutral"),  # a tie is undecided
    ],
)
def test_a_sentiment_label_follows_the_words_of_the_review(review, label):
    assert plausible_label(sentiment_prompt(review), SENTIMENT) == label


def test_a_label_the_row_names_wins_and_the_first_choice_is_the_fallback():
    topics = ("business", "sports", "science")
    prompt = "Topic (business, sports or science)?\nHeadline: {}"
    assert plausible_label(prompt.format("Local sports club wins"), topics) == "sports"
    assert plausible_label(prompt.format("Rain expected"), topics) == "business"
    assert plausible_label("Shipping was slow", ("billing", "other")) == "other"


def ask(spec: SimulationSpec, prompt: str, provider: Provider = ZAI, **request: Any) -> Any:
    """One request through a Client over the simulated endpoint."""

    async def main() -> Any:
        client = Client(
            base_url="https://sim.test/v1",
            api_key=None,
            timeout=5,
            max_connections=1,
            provider=provider,
            transport=SimulatedEndpoint(spec, seed=1),
        )
        payload = {"model": "glm-4.6", "messages": [{"role": "user", "content": prompt}]}
        try:
            return await client.send(json.dumps({**payload, **request}).encode())
        finally:
            await client.aclose()

    return anyio.run(main)


QUIET = {"latency": 0.0, "rate_limited": 0.0, "server_error": 0.0}


def test_a_simulated_answer_says_it_is_simulated_and_keeps_the_label_clean():
    spec = SimulationSpec(**QUIET, choices=SENTIMENT)
    outcome = ask(spec, sentiment_prompt("I love it"))
    assert isinstance(outcome, Success)
    assert outcome.content == "positive"
    assert outcome.model == "glm-4.6-simulated"
    assert outcome.request_id is not None and outcome.request_id.startswith("sim-")
    assert outcome.prompt_tokens is not None and outcome.prompt_tokens >= 1


def test_a_simulated_text_answer_says_so():
    outcome = ask(SimulationSpec(**QUIET), "Summarise this")
    assert isinstance(outcome, Success)
    assert outcome.content.startswith("Simulated answer")


def test_a_simulated_json_answer_has_each_field_with_its_type():
    fields = {"sentiment": "string", "stars": "int", "score": "float", "ok": "bool"}
    properties = {name: FIELD_KINDS[kind] for name, kind in fields.items()}
    spec = SimulationSpec(**QUIET, schema={"type": "object", "properties": properties})
    outcome = ask(spec, "Extract")
    assert isinstance(outcome, Success)
    obj = json.loads(outcome.content)
    assert obj["sentiment"] == "simulated sentiment"
    assert type(obj["stars"]) is int and type(obj["ok"]) is bool
    assert 0.0 <= obj["score"] <= 1.0


def test_reasoning_is_simulated_only_when_thinking_is_enabled():
    spec = SimulationSpec(**QUIET)
    with_thinking = ask(spec, "Hi", thinking={"type": "enabled"})
    without = ask(spec, "Hi", thinking={"type": "disabled"})
    assert isinstance(with_thinking, Success) and isinstance(without, Success)
    assert with_thinking.reasoning_content == "Simulated reasoning."
    assert without.reasoning_content is None


@pytest.mark.parametrize("provider", [ZAI, OPENAI], ids=lambda p: p.name)
@pytest.mark.parametrize(
    ("rates", "kind", "scope"),
    [
        ({"rate_limited": 1.0}, "rate_limited", Scope.SLOW_DOWN),
        ({"rate_limited": 0.0, "server_error": 1.0}, "server_error", Scope.RETRY),
        (
            {"rate_limited": 0.0, "server_error": 0.0, "content_filter": 1.0},
            "content_filter",
            Scope.ROW,
        ),
    ],
)
def test_simulated_faults_are_worded_like_the_provider_and_classified_alike(
    provider, rates, kind, scope
):
    spec = SimulationSpec(latency=0.0, provider=provider, **rates)
    outcome = ask(spec, "Hi", provider=provider)
    assert isinstance(outcome, Failure)
    assert (outcome.error_type, outcome.scope) == (kind, scope)
    if kind == "rate_limited":
        assert outcome.error_code == provider.simulated.rate_limited[1]


def test_the_spec_of_a_job_holds_its_rates_labels_fields_and_provider():
    job = Job.from_toml(JOBS / "sentiment.toml", simulate_latency=0.2)
    spec = SimulationSpec.from_job(job)
    assert spec.latency == 0.2
    assert spec.choices == SENTIMENT
    assert spec.provider is ZAI
    extract = SimulationSpec.from_job(Job.from_toml(JOBS / "extract_json.toml"))
    assert extract.schema == {
        "type": "object",
        "properties": {"sentiment": {"type": "string"}, "aspects": {}},
    }
    local_job = Job.from_toml(JOBS / "sentiment.toml", base_url="http://localhost:8080/v1")
    assert SimulationSpec.from_job(local_job).provider is OPENAI


def rendered(job: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(user message, row) of every row of a sample file as a job file's template renders it."""
    import tomllib

    import pyarrow.parquet as pq

    template = tomllib.loads((JOBS / job).read_text())["request"]["template"]
    if path.suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [(template.format_map(row), row) for row in rows]


def test_simulated_topics_spread_over_every_label():
    """jobs/topics.toml --simulate gives every topic to a fair share of the news items (it
    used to label them all `business`), mostly the topic the item was written for."""
    from collections import Counter

    from zbatch.simulate import simulated_label

    choices = ("business", "sports", "science", "politics", "entertainment", "technology")
    sample = JOBS.parent / "sample_data" / "news.parquet"
    labels = Counter(simulated_label(text, choices) for text, _ in rendered("topics.toml", sample))
    assert set(labels) == set(choices)
    assert max(labels.values()) < 0.4 * sum(labels.values()), labels
    assert min(labels.values()) > 0.05 * sum(labels.values()), labels


def test_simulated_ticket_labels_make_a_report_against_gold_meaningful():
    """On the labelled tickets, simulated labels agree with gold often but not always (the
    ambiguous ones and the noise), and the second prompt changes some of them."""
    from zbatch.simulate import simulated_label

    choices = ("billing", "shipping", "account", "bug", "other")
    sample = JOBS.parent / "sample_data" / "tickets_labelled.jsonl"
    first = [simulated_label(t, choices) for t, _ in rendered("triage.toml", sample)]
    second = [simulated_label(t, choices) for t, _ in rendered("triage_v2.toml", sample)]
    gold = [row["category"] for _, row in rendered("triage.toml", sample)]
    agreed = sum(a == g for a, g in zip(first, gold, strict=True)) / len(gold)
    assert 0.6 < agreed < 0.9, agreed
    differ = sum(a != b for a, b in zip(first, second, strict=True)) / len(gold)
    assert 0.05 < differ < 0.3, differ


def test_simulated_noise_is_a_deterministic_share_of_prompts():
    """About 8 % of prompts get a label drawn by their hash: the same prompt always gets
    the same label, and every label is one of the choices."""
    from zbatch.simulate import simulated_label

    choices = ("yes", "no", "maybe")
    texts = [f"Is {i} a yes? yes yes" for i in range(4000)]  # the keyword rule says yes
    labels = [simulated_label(text, choices) for text in texts]
    assert labels == [simulated_label(text, choices) for text in texts]
    assert set(labels) <= set(choices)
    noisy = sum(label != "yes" for label in labels) / len(texts)
    # 8 % drawn at random, a third of which land on "yes" again: ~5.3 % differ.
    assert 0.035 < noisy < 0.075, noisy
    assert {simulated_label(text, choices, noise=0.0) for text in texts} == {"yes"}
