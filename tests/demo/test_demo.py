"""The demo's statistics (per-query nDCG, bootstrap intervals, paired differences, random ranking) on known
inputs, and a short demo run whose results.json is checked against its schema."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from llm2vec_hf.demo import pipeline as demo


def test_per_query_ndcg_matches_the_definition():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}, "q4": {"d4": 1, "d5": 1}}
    run = {
        "q1": {"d1": 0.9, "d2": 0.1},  # relevant first
        "q2": {"d1": 0.9, "d3": 0.5, "d2": 0.1},  # relevant third
        # q3 not ranked at all
        "q4": {"d4": 0.2, "d1": 0.9, "d5": 0.8},  # relevant at 2 and 3 of 2 relevant
    }
    scores = demo.per_query_ndcg(qrels, run)
    assert set(scores) == set(qrels)
    assert scores["q1"] == pytest.approx(1.0)
    assert scores["q2"] == pytest.approx(1 / math.log2(4))
    assert scores["q3"] == 0.0
    assert scores["q4"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))


def test_per_query_ndcg_cuts_at_k():
    qrels = {"q": {"d11": 1}}
    run = {"q": {f"d{i}": 1.0 - i / 100 for i in range(20)}}  # d11 is 12th
    assert demo.per_query_ndcg(qrels, run)["q"] == 0.0
    assert demo.per_query_ndcg(qrels, run, k=12)["q"] == pytest.approx(1 / math.log2(13))


def test_random_ranking_ndcg_is_the_expectation():
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(50)}
    expected = sum(1 / math.log2(r + 1) for r in range(1, 11)) / 50
    assert demo.random_ranking_ndcg(qrels, 50) == pytest.approx(expected)
    # matches a simulation of random rankings, with pytrec_eval scoring them
    rng = np.random.default_rng(0)
    docs = [f"d{i}" for i in range(50)]
    simulated = []
    for _ in range(200):
        run = {q: dict(zip(docs, rng.permutation(50).astype(float))) for q in qrels}
        simulated.append(np.mean(list(demo.per_query_ndcg(qrels, run).values())))
    assert np.mean(simulated) == pytest.approx(expected, abs=0.01)
    # every document relevant: any ranking is ideal
    assert demo.random_ranking_ndcg({"q": {"a": 1, "b": 1}}, 2) == pytest.approx(1.0)


def test_bootstrap_indices_are_seeded_and_in_range():
    first = demo.bootstrap_indices(30, resamples=100, seed=3)
    assert first.shape == (100, 30) and first.min() >= 0 and first.max() < 30
    assert np.array_equal(first, demo.bootstrap_indices(30, resamples=100, seed=3))
    assert not np.array_equal(first, demo.bootstrap_indices(30, resamples=100, seed=4))


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_more_queries():
    rng = np.random.default_rng(0)
    small, large = rng.random(50), rng.random(5000)
    low, high = demo.bootstrap_ci(small, demo.bootstrap_indices(50, 2000, seed=0))
    assert low < small.mean() < high
    # the interval of a mean of uniform(0, 1) values: about 2 * 1.96 * sqrt(1/12) / sqrt(n) wide
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(1 / 12 / 50), rel=0.2)
    low_l, high_l = demo.bootstrap_ci(large, demo.bootstrap_indices(5000, 2000, seed=0))
    assert high_l - low_l < (high - low) / 5
    # a constant has a zero-width interval
    assert demo.bootstrap_ci(np.full(40, 0.25), demo.bootstrap_indices(40, 100)) == [0.25, 0.25]


def test_paired_difference_on_known_inputs():
    rng = np.random.default_rng(1)
    values = rng.random(200)
    indices = demo.bootstrap_indices(200, 1000, seed=0)
    same = demo.paired_difference(values, values, indices)
    assert same == {"diff": 0.0, "ci95": [0.0, 0.0]}
    shifted = demo.paired_difference(values + 0.125, values, indices)
    assert shifted["diff"] == pytest.approx(0.125)
    assert shifted["ci95"] == pytest.approx([0.125, 0.125])
    # pairing matters: two noisy rows with a small constant gap are clearly apart when paired
    noisy = demo.paired_difference(values + 0.01, values, indices)
    assert noisy["ci95"][0] > 0
    with pytest.raises(ValueError, match="same queries"):
        demo.paired_difference(values[:10], values, indices)


def test_confidence_rows_share_resamples_and_keep_the_schema():
    rng = np.random.default_rng(2)
    queries = [f"q{i}" for i in range(100)]
    base = {q: float(v) for q, v in zip(queries, rng.random(100))}
    per_query = {
        "baseline": base,
        "same": dict(base),
        "better": {q: v + 0.05 for q, v in base.items()},
        "noise": {q: float(v) for q, v in zip(queries, rng.random(100))},
    }
    scores = {label: float(np.mean(list(values.values()))) for label, values in per_query.items()}
    indices = demo.bootstrap_indices(100, 500, seed=0)
    rows = demo.confidence_rows(per_query, scores, indices, baseline="baseline")
    assert [row["model"] for row in rows] == list(per_query)
    assert "vs_baseline" not in rows[0] and all("vs_baseline" in row for row in rows[1:])
    assert rows[1]["ci95"] == rows[0]["ci95"]  # same values, same resamples: same interval
    assert rows[1]["vs_baseline"] == {"diff": 0.0, "ci95": [0.0, 0.0]}
    assert rows[2]["vs_baseline"] == {"diff": 0.05, "ci95": [0.05, 0.05]}
    noise = rows[3]["vs_baseline"]
    assert noise["ci95"][0] < 0 < noise["ci95"][1]  # two independent draws of one distribution
    for row in rows:
        assert row["ci95"][0] <= row["score"] <= row["ci95"][1]
    per_query["other queries"] = {"x": 1.0}
    with pytest.raises(ValueError, match="other queries"):
        demo.confidence_rows(per_query, {**scores, "other queries": 1.0}, indices, baseline="baseline")


def test_machine_info_names_the_cpu():
    info = demo.machine_info()
    assert info["cores"] >= 1 and info["torch_threads"] >= 1 and info["cpu"]
    assert isinstance(info["isa"], list) and info["torch_cpu_capability"]


@pytest.mark.slow
def test_short_demo_run_writes_results_with_intervals(tmp_path, capsys):
    pytest.importorskip("mteb")
    pytest.importorskip("matplotlib")
    results = demo.run_demo(tmp_path / "demo", seed=7, max_steps=2, resamples=200, queries=100)
    written = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert written == results
    assert [row["model"] for row in written["rows"]] == [label for label, _ in demo.ROWS]
    assert written["seed"] == 7 and written["quick_check"] == {"max_steps": 2, "queries": 100}
    assert written["bootstrap"]["resamples"] == 200
    assert written["queries"] == written["documents"] == 100
    assert written["random_ranking"]["score"] == pytest.approx(demo.random_ranking_ndcg({"q": {"d": 1}}, 100), abs=1e-4)
    for number, row in enumerate(written["rows"]):
        assert 0 <= row["ci95"][0] <= row["score"] <= row["ci95"][1] <= 1
        if number:
            paired = row["vs_baseline"]
            assert paired["ci95"][0] <= paired["diff"] <= paired["ci95"][1]
        else:
            assert "vs_baseline" not in row
    assert {step["reference"] for step in written["steps"]} <= {row["model"] for row in written["rows"]}
    machine = written["machine"]
    assert machine["cores"] >= 1 and "cpu" in machine and "isa" in machine
    assert written["wall_seconds"] > 0 and written["cpu_seconds"] > 0
    assert (tmp_path / "demo" / "results.png").stat().st_size > 10_000
    assert (tmp_path / "demo" / "checkpoint" / "config.json").is_file()
    assert "vs causal baseline" in capsys.readouterr().out
