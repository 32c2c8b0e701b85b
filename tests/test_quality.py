"""`zbatch report`: every figure equals scikit-learn's (or numpy's) on the same rows.

The runs go to the loopback Z.AI server, whose answer to each row is the label its prompt
names (LABEL=...), so the predicted label of every id is known before the run; the gold
labels are a column of the input. The figures of the report are then compared with
scikit-learn's on those (gold, predicted) pairs.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TEST_KEY, read_table, run_against, run_zbatch, write_jsonl, zbatch_env
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from zai_server import ZaiServer

import zbatch

CHOICES = ["cat", "dog", "bird", "fish"]


def quality_scores(pairs):
    from zbatch.results.labels import Scores

    return Scores.of(pairs)


def labelled_rows(seed: int, count: int) -> tuple[list[dict[str, object]], dict[str, str]]:
    """Rows whose answer will be LABEL=<predicted>, with a gold column that agrees ~70 % of
    the time; a few rows have no gold label, a few answer a word that is no label."""
    rng = random.Random(seed)
    rows, predicted = [], {}
    for i in range(count):
        gold = rng.choice(CHOICES)
        guess = gold if rng.random() < 0.7 else rng.choice(CHOICES)
        if i % 37 == 5:
            guess = "banana"  # not a choice: an invalid_label error row, no answer
        row_id = f"x{i:03d}"
        rows.append(
            {
                "id": row_id,
                "prompt": f"Which animal is row {i}? LABEL={guess}",
                # Gold labels as people write them: case and spacing vary.
                "gold": None if i % 23 == 0 else (gold.upper() if i % 5 == 0 else f" {gold}"),
            }
        )
        if guess != "banana":
            predicted[row_id] = guess
    return rows, predicted


def run_job(server: ZaiServer, tmp_path: Path, name: str, rows: list[dict[str, object]]) -> Path:
    source = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    outdir = tmp_path / name
    run_against(
        server,
        "-i",
        str(source),
        "-o",
        str(outdir),
        "--choices",
        ",".join(CHOICES),
        "--max-retries",
        "0",
        "--quiet",
        expect=1,  # the banana rows fail
    )
    return outdir


def sklearn_figures(truth: list[str], predicted: list[str]) -> dict[str, object]:
    labels = sorted(set(truth) | set(predicted))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    return {
        "labels": labels,
        "accuracy": accuracy_score(truth, predicted),
        "kappa": cohen_kappa_score(truth, predicted),
        "confusion": confusion_matrix(truth, predicted, labels=labels).tolist(),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.tolist(),
        "macro_f1": f1_score(truth, predicted, average="macro", zero_division=0),
        "weighted_f1": f1_score(truth, predicted, average="weighted", zero_division=0),
    }


def assert_scores_equal(scores: dict[str, object], expected: dict[str, object]) -> None:
    assert scores["labels"] == expected["labels"]
    assert scores["confusion"] == expected["confusion"]
    assert scores["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert scores["kappa"] == pytest.approx(expected["kappa"], abs=1e-12)
    assert scores["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-12)
    assert scores["weighted_f1"] == pytest.approx(expected["weighted_f1"], abs=1e-12)
    per_class = scores["per_class"]
    assert [c["label"] for c in per_class] == expected["labels"]
    for key in ("precision", "recall", "f1", "support"):
        assert [c[key] for c in per_class] == pytest.approx(expected[key], abs=1e-12), key


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scores_of_pairs_equal_scikit_learn(seed: int) -> None:
    """Accuracy, kappa, per-class precision/recall/F1, macro and weighted F1 and the
    confusion matrix of random pairs equal scikit-learn's, including a label only the
    prediction uses and one the prediction never uses."""
    rng = random.Random(seed)
    truth = [rng.choice("abcd") for _ in range(500)]
    predicted = [t if rng.random() < 0.6 else rng.choice("abce") for t in truth]
    pairs: dict[tuple[str, str], int] = {}
    for pair in zip(truth, predicted, strict=True):
        pairs[pair] = pairs.get(pair, 0) + 1
    scores = quality_scores(pairs)
    figures = {**scores.__dict__, "per_class": [c.__dict__ for c in scores.per_class]}
    assert_scores_equal(figures, sklearn_figures(truth, predicted))


def test_kappa_is_undefined_when_both_sides_use_one_label() -> None:
    """scikit-learn gives nan (and warns) where kappa divides by zero; the report says None."""
    assert quality_scores({("a", "a"): 5}).kappa is None
    assert quality_scores({}).accuracy is None


def test_report_against_gold_equals_scikit_learn(server: ZaiServer, tmp_path: Path) -> None:
    """The label scores of `zbatch report --gold --json` equal scikit-learn's on the rows
    that have both a gold label and an answer; the gold labels are normalised like answers;
    latency percentiles and histogram equal numpy's; the throughput buckets hold every answer."""
    rows, predicted = labelled_rows(7, 300)
    outdir = run_job(server, tmp_path, "a", rows)
    proc = run_zbatch("report", str(outdir), "--gold", "gold", "--json", env=zbatch_env())
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    gold = {r["id"]: str(r["gold"]).strip().lower() for r in rows if r["gold"] is not None}
    both = sorted(set(gold) & set(predicted))
    (label,) = figures["labels"]
    assert label["field"] == "label" and label["gold_column"] == "gold"
    assert label["gold_rows"] == len(gold)
    assert label["unanswered"] == len(set(gold) - set(predicted)) > 0
    assert label["distribution"] == {
        name: count
        for name, count in sorted(
            ((n, list(predicted.values()).count(n)) for n in set(predicted.values())),
            key=lambda item: (-item[1], item[0]),
        )
    }
    expected = sklearn_figures([gold[i] for i in both], [predicted[i] for i in both])
    assert_scores_equal(label["scores"], expected)
    assert label["scores"]["rows"] == len(both)

    latency = read_table(outdir / "results").column("latency_ms").to_numpy().astype(float)
    got = figures["latency"]
    for name, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        assert got["percentiles"][name] == pytest.approx(np.percentile(latency, q))
    counts, edges = np.histogram(latency, bins=20)
    assert got["counts"] == counts.tolist()
    assert got["edges"] == pytest.approx(edges.tolist())
    assert sum(bucket["rows"] for bucket in figures["throughput"]) == len(predicted)
    status = figures["status"]
    assert (status["done"], status["failed"]) == (len(predicted), len(rows) - len(predicted))
    assert status["errors"] == {"invalid_label": len(rows) - len(predicted)}


def test_report_against_another_run_equals_scikit_learn(server: ZaiServer, tmp_path: Path):
    """--against: agreement and kappa between two runs equal scikit-learn's on the ids both
    answered, and the differing rows are the ones whose labels differ."""
    rows_a, predicted_a = labelled_rows(11, 200)
    rows_b, predicted_b = labelled_rows(12, 200)
    a = run_job(server, tmp_path, "a", rows_a)
    b = run_job(server, tmp_path, "b", rows_b)
    report = zbatch.report(a, against=b)
    (comparison,) = report.against
    both = sorted(set(predicted_a) & set(predicted_b))
    expected = sklearn_figures([predicted_a[i] for i in both], [predicted_b[i] for i in both])
    figures = report.to_dict()["against"][0]
    assert_scores_equal(figures["scores"], expected)
    differing = [i for i in both if predicted_a[i] != predicted_b[i]]
    assert comparison.differing == len(differing)
    committed = read_table(a / "results").column("id").to_pylist()
    in_commit_order = [i for i in committed if i in differing]
    assert [e["id"] for e in comparison.examples] == in_commit_order[:20]
    for example in comparison.examples:
        assert (example["this"], example["other"]) == (
            predicted_a[example["id"]],
            predicted_b[example["id"]],
        )


def test_report_reads_cache_and_samples_columns_when_present(tmp_path: Path) -> None:
    """An OUTDIR whose results hold `cached`, `votes` and `agreement` (response cache and
    samples = K) and whose summary says what the cache saved: the report counts cached rows,
    leaves their tokens out of the spend over time, and sums up the samples' agreement."""
    outdir, part, table = answered_yes(
        tmp_path, [{"id": f"r{i}", "prompt": f"p{i}"} for i in range(4)]
    )
    cached = pa.array([True, False, False, True])  # zbatch writes the column: set it
    table = table.set_column(table.column_names.index("cached"), "cached", cached)
    table = table.append_column(
        "votes", pa.array([["yes"] * 3, ["yes", "yes", "no"], ["yes"] * 3, ["no", "yes", "yes"]])
    )
    table = table.append_column("agreement", pa.array([1.0, 2 / 3, 1.0, 2 / 3]))
    pq.write_table(table, part)
    summary = json.loads((outdir / "summary.json").read_text())
    (outdir / "summary.json").write_text(
        json.dumps({**summary, "cache": {"hits": 2, "saved_usd": 0.25}})
    )
    report = zbatch.report(outdir)
    assert report.cache is not None
    assert (report.cache.rows, report.cache.hits, report.cache.saved_usd) == (2, 2, 0.25)
    assert report.samples is not None
    assert (report.samples.rows, report.samples.unanimous, report.samples.split) == (4, 2, 2)
    assert report.samples.mean_agreement == pytest.approx((1 + 2 / 3) / 2)
    tokens = sum(bucket.tokens for bucket in report.throughput)
    paid = [r for r in table.to_pylist() if not r["cached"]]
    assert tokens == sum(r["prompt_tokens"] + r["completion_tokens"] for r in paid)


def answered_yes(tmp_path: Path, rows: list[dict[str, object]]) -> tuple[Path, Path, pa.Table]:
    """A run of ``rows`` whose every answer is "yes": its OUTDIR, its one result part, and
    that part's table (for a test to add the columns of newer zbatch features to)."""
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    outdir = tmp_path / "out"
    job = zbatch.Job(input_path=str(source), output_dir=str(outdir), choices=("yes", "no"))
    zbatch.run(job, transport=_yes_transport())
    part = next((outdir / "results").glob("part-*.parquet"))
    return outdir, part, pq.read_table(part)


def _yes_transport():
    import httpx

    from zbatch.testing import chat_completion

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json=chat_completion(
                json.loads(request.content), "yes", model="m", answer_id="a", request_id="r"
            ),
        )

    return httpx.MockTransport(answer)


def test_report_cli_says_what_is_wrong_in_one_line(server: ZaiServer, tmp_path: Path) -> None:
    """A gold column the input lacks, and an --against folder that is no OUTDIR, are exit 2
    with one line naming them; the text report shows the scores table."""
    rows, _ = labelled_rows(3, 40)
    outdir = run_job(server, tmp_path, "a", rows)
    proc = run_zbatch("report", str(outdir), "--gold", "truth", env=zbatch_env())
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"Error: --gold truth: the input {tmp_path / 'a.jsonl'} has no column 'truth'"
    ]
    proc = run_zbatch("report", str(outdir), "--against", str(tmp_path), env=zbatch_env())
    assert proc.returncode == 2 and "is not a zbatch output directory" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = run_zbatch("report", str(outdir), "--gold", "gold", env=zbatch_env())
    assert proc.returncode == 0, proc.stderr
    assert "against gold column 'gold'" in proc.stdout
    assert "Cohen's kappa" in proc.stdout and "confusion (gold down, answer across)" in proc.stdout


def test_reports_never_hold_the_api_key(server: ZaiServer, tmp_path: Path) -> None:
    """report.html (written at the run's end), --json and a review hold no trace of the key."""
    rows, _ = labelled_rows(5, 30)
    outdir = run_job(server, tmp_path, "a", rows)
    assert (outdir / "report.html").is_file()
    env = zbatch_env(ZAI_API_KEY=TEST_KEY)
    proc = run_zbatch("report", str(outdir), "--gold", "gold", "--json", env=env)
    review = tmp_path / "review.jsonl"
    done = run_zbatch("review", str(outdir), "--gold", "gold", "-o", str(review), env=env)
    assert done.returncode == 0, done.stderr
    for text in (proc.stdout, (outdir / "report.html").read_text(), review.read_text()):
        assert TEST_KEY not in text


def test_enum_fields_of_a_schema_are_label_columns_too(tmp_path: Path) -> None:
    """With an [output] schema whose top-level properties have an enum, each such column is
    a label column: its distribution is reported, and a gold column named like it scores it
    (equal to scikit-learn's), not `label`."""
    rows = [
        {"id": f"r{i}", "prompt": f"p{i}", "tone": ["calm", "angry", "sad"][i % 3]}
        for i in range(12)
    ]
    outdir, part, table = answered_yes(tmp_path, rows)
    answers = {r: ["calm", "angry", "sad"][(int(r[1:]) * 2) % 3] for r in table["id"].to_pylist()}
    table = table.append_column("tone", pa.array([answers[r] for r in table["id"].to_pylist()]))
    pq.write_table(table, part)
    job_json = json.loads((outdir / "job.json").read_text())
    job_json["settings"]["schema"] = {
        "type": "object",
        "properties": {"tone": {"enum": ["calm", "angry", "sad"]}, "note": {"type": "string"}},
    }
    (outdir / "job.json").write_text(json.dumps(job_json))
    report = zbatch.report(outdir, gold="tone")
    by_field = {quality.field: quality for quality in report.labels}
    assert set(by_field) == {"label", "tone"}
    assert by_field["label"].scores is None  # the gold column is tone's
    scores = by_field["tone"].scores
    assert scores is not None
    truth = [r["tone"] for r in rows]
    predicted = [answers[r["id"]] for r in rows]
    figures = report.to_dict()["labels"][1]["scores"]
    assert_scores_equal(figures, sklearn_figures(truth, predicted))


def test_latency_and_throughput_read_a_batch_at_a_time_equal_whole_column_figures(
    tmp_path: Path,
) -> None:
    """The report gathers latency counts and per-second sums a batch at a time (no column of
    every answer is held): over several parts, its percentiles and histogram equal numpy's on
    the whole column, and each time bucket holds the answers and paid tokens that fall in it."""
    from zbatch.results.quality import _latency, _throughput, _timing
    from zbatch.schema import RESULT_FIELDS
    from zbatch.store import LocalStorage, Parts

    rng = random.Random(11)
    (tmp_path / "results").mkdir()
    start_ms = 1_760_000_123_456
    rows = []
    for part in range(3):
        chunk = [
            {
                "latency_ms": None if rng.random() < 0.02 else rng.randrange(1, 5000),
                "completed_at": start_ms + rng.randrange(7_200_000),  # two hours: 300 s buckets
                "attempts": rng.choice([0, 1, 1, 2]),
                "prompt_tokens": rng.randrange(100),
                "cached_tokens": rng.randrange(10),
                "completion_tokens": rng.randrange(50),
                "cached": rng.random() < 0.1,
            }
            for _ in range(40_000)  # more than one 32k-row batch per part
        ]
        rows += chunk
        schema = pa.schema(RESULT_FIELDS)
        columns = {f.name: [r.get(f.name) for r in chunk] for f in schema}
        columns["id"] = [f"p{part}-{n}" for n in range(len(chunk))]
        table = pa.table(columns, schema=schema)
        pq.write_table(table, tmp_path / "results" / f"part-x-{part:05d}.parquet")
    timing = _timing(Parts(LocalStorage(tmp_path), "results"))

    latency = np.array([r["latency_ms"] for r in rows if r["latency_ms"] is not None], float)
    got = _latency(timing.latencies)
    assert got.rows == len(latency) and got.max == int(latency.max())
    assert got.mean == pytest.approx(latency.mean())
    for q in (50, 90, 95, 99):
        assert got.percentiles[f"p{q}"] == pytest.approx(np.percentile(latency, q))
    counts, edges = np.histogram(latency, bins=20)
    assert got.counts == counts.tolist() and got.edges == pytest.approx(edges.tolist())

    width, buckets = _throughput(timing, {"base_url": "https://api.z.ai/api/paas/v4"})
    assert width == 300
    first = start_ms + min(r["completed_at"] - start_ms for r in rows)
    origin = first - first % 300_000
    expected_rows = [0] * len(buckets)
    expected_tokens = [0] * len(buckets)
    for r in rows:
        at = (r["completed_at"] - origin) // 300_000
        expected_rows[at] += 1
        if r["attempts"] > 0 and not r["cached"]:
            expected_tokens[at] += r["prompt_tokens"] + r["completion_tokens"]
    assert [b.rows for b in buckets] == expected_rows
    assert [b.tokens for b in buckets] == expected_tokens
