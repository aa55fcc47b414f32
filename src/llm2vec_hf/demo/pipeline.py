"""The demo's work: LLM2Vec end to end, offline, on the embedded default model (``llm2vec-hf demo``).

`run_demo` trains the three stages on the embedded WordNet data, exports each stage, and scores the causal
baseline and every stage on the held-out retrieval task with bootstrap intervals; `llm2vec_hf.commands.demo`
describes what it writes, and ``docs/demo.md`` has the measured results.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
from sentence_transformers import SentenceTransformer

from ..checkpoint.export import export_checkpoint
from ..checkpoint.model_card import add_evaluation_results
from ..errors import LLM2VecError
from ..evaluation.runner import run_mteb
from ..evaluation.tasks import read_qrels
from ..output_paths import refuse_existing, refuse_overlap
from ..loading.json_files import read_json, write_json, write_jsonl
from ..modeling.sentence_transformers_llm2vec import LLM2VecTransformer
from ..training.arguments import parse_recipe
from ..training.run import run_training
from .assets import WORDNET_INSTRUCTION, default_model_path, demo_data_path, load_eval_task

logger = logging.getLogger(__name__)

MARKER = ".llm2vec-demo"
TASK_NAME = "WordNetDefinitionRetrieval"
METRIC = "ndcg_at_10"
#: nDCG's cut-off, as in METRIC.
K = 10
#: The seed of the README's table (docs/demo.md has seeds 1, 2 and 3).
DEFAULT_SEED = 1
#: Bootstrap resamples: at 5,000 the Monte-Carlo error of a 2.5% percentile is well below the last digit shown.
RESAMPLES = 5000
ROWS = (
    ("causal + weighted mean", None),
    ("bidirectional, no training + mean", []),
    ("+ MNTP", ["mntp"]),
    ("+ MNTP + SimCSE", ["mntp", "simcse"]),
    ("+ MNTP + supervised", ["mntp", "supervised"]),
)


def require_extras() -> None:
    """The demo evaluates through mteb and draws with matplotlib: say so before any work starts."""
    import importlib.util

    missing = [name for name in ("mteb", "matplotlib") if importlib.util.find_spec(name) is None]
    if missing:
        raise LLM2VecError(
            f"the demo needs {' and '.join(missing)}: pip install 'llm2vec-hf[eval,train]' (from a checkout: "
            "pip install -e '.[dev,eval,train]')"
        )


def prepare_output(output: str | os.PathLike, overwrite: bool = False) -> Path:
    """The output folder: new, empty, or (with ``overwrite``) an earlier demo's, which is replaced. It may not
    overlap the packaged model and data the demo reads (`output_paths`)."""
    refuse_overlap(output, [("packaged default model", default_model_path()),
                            ("packaged demo data", os.path.dirname(demo_data_path("unlabeled.txt")))])
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        if not (output / MARKER).exists():
            raise LLM2VecError(f"{output} exists and was not written by the demo; choose another --output")
        refuse_existing(output, overwrite)
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / MARKER).write_text("written by llm2vec-hf demo; replaced by the next run with --overwrite\n")
    return output


def write_task(folder: Path, limit: int | None = None) -> Path:
    """The held-out WordNet retrieval task as an mteb local task (see evaluation.tasks.LOCAL_TASK_FORMAT);
    ``limit`` keeps the first queries and their documents."""
    queries, docs, qrels = load_eval_task()
    if limit is not None:
        queries = dict(list(queries.items())[:limit])
        qrels = {query: qrels[query] for query in queries}
        docs = {doc: text for doc, text in docs.items() if any(doc in qrels[q] for q in queries)}
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "task.json", {
        "name": TASK_NAME, "type": "Retrieval", "instruction": WORDNET_INSTRUCTION, "split": "test",
        "description": "WordNet 3.0: retrieve the example sentence of a held-out synset from its words and definition.",
    }, indent=2)
    write_jsonl(folder / "queries.jsonl", ({"id": k, "text": v} for k, v in queries.items()))
    write_jsonl(folder / "corpus.jsonl", ({"id": k, "text": v} for k, v in docs.items()))
    with open(folder / "qrels.tsv", "w") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        handle.writelines(f"{q}\t{d}\t{s}\n" for q, rel in qrels.items() for d, s in rel.items())
    return folder


def causal_baseline(base: Path):
    """The causal model (no flag, no remote code) with LLM2Vec's weighted-mean pooling, as a SentenceTransformer."""
    module = LLM2VecTransformer(str(base), encoding_overrides={"pooling_mode": "weighted_mean", "max_length": 128})
    assert getattr(module.auto_model.config, "is_causal", True), "the baseline must stay causal"
    return SentenceTransformer(modules=[module], device="cpu")


def evaluate(model_dir: Path, task: Path, work: Path, model=None) -> tuple[float, dict[str, float]]:
    """mteb's nDCG@10 of the model on the task, and the per-query nDCG@10 behind it (``{query id: score}``)."""
    predictions = work / "predictions" / Path(model_dir).name
    result = run_mteb(str(model_dir), [str(task)], work / "mteb", batch_size=64, model=model,
                      show_progress_bar=False, prediction_folder=predictions)
    (score,) = [row["score"] for row in result["rows"] if row["task"] == TASK_NAME]
    run = read_json(predictions / f"{TASK_NAME}_predictions.json")["default"]["test"]
    per_query = per_query_ndcg(read_qrels(task / "qrels.tsv"), run)
    if abs(float(np.mean(list(per_query.values()))) - score) > 1e-4:
        raise LLM2VecError(f"per-query nDCG@{K} of {model_dir} averages {np.mean(list(per_query.values())):.6f}, "
                           f"but mteb reports {score:.6f}")
    return score, per_query


def per_query_ndcg(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], k: int = K) -> dict[str, float]:
    """nDCG@k of each query of ``qrels`` on a retrieval ``run`` ({query: {doc: score}}), through pytrec_eval (what
    mteb scores with; mteb keeps only the mean). A query the run does not rank scores 0."""
    import pytrec_eval

    measure = f"ndcg_cut_{k}"
    scores = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{k}"}).evaluate(run)
    return {query: float(scores.get(query, {}).get(measure, 0.0)) for query in qrels}


def random_ranking_ndcg(qrels: dict[str, dict[str, int]], n_docs: int, k: int = K) -> float:
    """The expected nDCG@k of a uniformly random ranking of ``n_docs`` documents (binary relevance), exactly.

    Each rank holds a relevant document with probability R/N (R relevant of N), so the expected DCG@k is
    R/N * sum_{r<=min(k, N)} 1/log2(r+1); the ideal DCG puts the R relevant documents first.
    """
    discounts = 1.0 / np.log2(np.arange(2, min(k, n_docs) + 2))
    per_query = []
    for relevant in qrels.values():
        count = sum(1 for grade in relevant.values() if grade > 0)
        if count:
            per_query.append(count / n_docs * discounts.sum() / discounts[:count].sum())
    return float(np.mean(per_query))


def bootstrap_indices(n_queries: int, resamples: int = RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """``resamples`` x ``n_queries`` query indices drawn with replacement (numpy, seeded): one set shared by all
    rows, so that the differences between rows are paired."""
    return np.random.default_rng(seed).integers(0, n_queries, size=(resamples, n_queries))


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> list[float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_ci(values: Sequence[float], indices: np.ndarray) -> list[float]:
    """The 95% percentile interval of the mean of ``values`` (one per query) over the resamples ``indices``."""
    return percentile_interval(np.asarray(values, dtype=np.float64)[indices].mean(axis=1))


def paired_difference(values: Sequence[float], baseline: Sequence[float], indices: np.ndarray) -> dict:
    """Mean of ``values - baseline`` (per query) and its 95% percentile interval over the resamples ``indices``."""
    values, baseline = np.asarray(values, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if values.shape != baseline.shape:
        raise ValueError(f"paired rows need the same queries: {values.shape} vs {baseline.shape}")
    differences = values - baseline
    return {"diff": float(differences.mean()), "ci95": percentile_interval(differences[indices].mean(axis=1))}


def confidence_rows(per_query: dict[str, dict[str, float]], scores: dict[str, float], indices: np.ndarray,
                    baseline: str, digits: int = 4) -> list[dict]:
    """The results rows: ``model``, ``score`` and ``ci95``; every row but ``baseline`` also ``vs_baseline``
    (a paired bootstrap on the same ``indices``). ``per_query`` maps row -> {query id: nDCG@10}."""
    queries = sorted(per_query[baseline])
    base = [per_query[baseline][q] for q in queries]
    rows = []
    for label, by_query in per_query.items():
        if sorted(by_query) != queries:
            raise ValueError(f"{label!r} was scored on other queries than {baseline!r}")
        values = [by_query[q] for q in queries]
        row = {"model": label, "score": round(scores[label], digits),
               "ci95": [round(x, digits) for x in bootstrap_ci(values, indices)]}
        if label != baseline:
            paired = paired_difference(values, base, indices)
            row["vs_baseline"] = {"diff": round(paired["diff"], digits),
                                  "ci95": [round(x, digits) for x in paired["ci95"]]}
        rows.append(row)
    return rows


def machine_info() -> dict:
    """The CPU the demo ran on: model name, the vector ISA flags that matter to torch, cores, torch's threads."""
    import torch

    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:  # not Linux: the model name from platform is all there is
        pass
    isa = sorted(flag for flag in flags if flag.startswith(("avx", "amx")) or flag in ("fma", "f16c", "sse4_2"))
    return {
        "cpu": name,
        "isa": isa,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
    }


def train(stage: str, base: Path, adapters: list[Path], data: Path, output: Path, seed: int = DEFAULT_SEED,
          max_steps: int | None = None) -> Path:
    recipe_file = resources.files("llm2vec_hf.demo").joinpath("recipes", f"{stage}.yaml")
    overrides = {"max_steps": max_steps} if max_steps is not None else {}
    recipe = parse_recipe(
        str(recipe_file),
        model_name_or_path=str(base),
        peft_model_name_or_path=[str(a) for a in adapters] or None,
        train_file=str(data),
        output_dir=str(output),
        seed=seed,
        report_to="none",
        **overrides,
    )
    return Path(run_training(recipe).adapter_dir)


#: The steps of the paper that the demo's summary compares (row, reference row).
STEPS = (
    (ROWS[2][0], ROWS[1][0]),
    (ROWS[3][0], ROWS[1][0]),
    (ROWS[4][0], ROWS[1][0]),
    (ROWS[3][0], ROWS[2][0]),
)


def run_demo(output: str | os.PathLike = "llm2vec-demo", seed: int = DEFAULT_SEED, max_steps: int | None = None,
             resamples: int = RESAMPLES, queries: int | None = None, overwrite: bool = False) -> dict:
    """Runs the demo into ``output``; returns what it writes to ``results.json``.

    ``max_steps`` caps every training stage (the recipes' budgets otherwise) and ``queries`` keeps the task's first
    queries: both for quick checks of the pipeline, not for results (results.json records them).
    """
    require_extras()
    started, cpu_started = time.perf_counter(), time.process_time()
    output = prepare_output(output, overwrite)
    base = default_model_path()
    task = write_task(output / "task", limit=queries)
    work = output / "work"
    unlabeled, pairs = demo_data_path("unlabeled.txt"), demo_data_path("wordnet_train.jsonl")

    logger.info("[1/5] causal baseline (weighted mean)")
    scores, per_query = {}, {}
    scores[ROWS[0][0]], per_query[ROWS[0][0]] = evaluate(base, task, work, model=causal_baseline(base))
    adapters: dict[str, Path] = {}
    for label, stages in ROWS[1:]:
        step = ROWS.index((label, stages)) + 1
        for stage in stages:
            if stage not in adapters:
                logger.info("[%d/5] training %s", step, stage)
                earlier = [adapters["mntp"]] if stage != "mntp" else []
                data = pairs if stage == "supervised" else unlabeled
                adapters[stage] = train(stage, base, earlier, data, work / stage, seed=seed, max_steps=max_steps)
        folder = output / "checkpoint" if stages == ["mntp", "supervised"] else work / ("export-" + "-".join(stages or ["none"]))
        export_checkpoint(str(base), str(folder), adapters=[str(adapters[s]) for s in stages], max_length=128,
                          prompts={"query": WORDNET_INSTRUCTION + " "}, overwrite=True)
        logger.info("[%d/5] evaluating: %s", step, label)
        scores[label], per_query[label] = evaluate(folder, task, work)

    write_json(work / "per_query.json", {"scores": scores, "per_query": per_query})
    query_ids = sorted(per_query[ROWS[0][0]])
    indices = bootstrap_indices(len(query_ids), resamples, seed)
    rows = confidence_rows(per_query, scores, indices, baseline=ROWS[0][0])
    steps = []
    for label, reference in STEPS:
        paired = paired_difference([per_query[label][q] for q in query_ids],
                                   [per_query[reference][q] for q in query_ids], indices)
        steps.append({"model": label, "reference": reference, "diff": round(paired["diff"], 4),
                      "ci95": [round(x, 4) for x in paired["ci95"]]})
    qrels = read_qrels(task / "qrels.tsv")
    n_docs = sum(1 for _ in open(task / "corpus.jsonl", encoding="utf-8"))
    results = {
        "metric": "nDCG@10",
        "task": TASK_NAME,
        "queries": len(query_ids),
        "documents": n_docs,
        "seed": seed,
        "rows": rows,
        "steps": steps,
        "random_ranking": {"score": round(random_ranking_ndcg(qrels, n_docs), 4),
                           "how": "expected nDCG@10 of a uniformly random ranking, computed exactly"},
        "bootstrap": {"resamples": resamples, "seed": seed, "interval": "95% percentile",
                      "unit": "queries; paired (the same resamples for every row)"},
        "machine": machine_info(),
        "wall_seconds": round(time.perf_counter() - started),
        "cpu_seconds": round(time.process_time() - cpu_started),
    }
    if max_steps is not None or queries is not None:
        results["quick_check"] = {"max_steps": max_steps, "queries": queries}
    write_json(output / "results.json", results, indent=2)
    draw_chart(results, output / "results.png")
    add_evaluation_results(output / "checkpoint", [
        {"task_type": "retrieval", "task_name": "Retrieval", "dataset_type": "wordnet", "dataset_name": TASK_NAME,
         "dataset_split": "test",
         "metric_type": METRIC, "metric_value": scores[ROWS[-1][0]], "metric_name": "nDCG@10"}
    ])
    print_table(results)
    return results


def draw_chart(results: dict, path: Path) -> None:
    """Bars with their 95% intervals as error bars, and the random ranking's score as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"][::-1]
    figure, axes = plt.subplots(figsize=(8, 4), dpi=100)
    scores = np.array([row["score"] for row in rows])
    intervals = np.array([row["ci95"] for row in rows])
    errors = np.stack([scores - intervals[:, 0], intervals[:, 1] - scores])
    axes.barh([row["model"] for row in rows], scores, xerr=errors, capsize=4, color="tab:blue",
              error_kw={"ecolor": "black", "elinewidth": 1})
    for position, (score, high) in enumerate(zip(scores, intervals[:, 1])):
        axes.text(high, position, f"  {score:.3f}", va="center")
    random_score = results["random_ranking"]["score"]
    axes.axvline(random_score, color="tab:red", linestyle="--", label=f"random ranking ({random_score:.4f})")
    axes.legend(loc="upper right")
    axes.set_xlabel(f"nDCG@10, 95% bootstrap intervals ({results['queries']} held-out WordNet queries)")
    axes.set_title(f"LLM2Vec on the embedded default model (seed {results['seed']})")
    axes.set_xlim(0, max(float(intervals.max()), random_score) * 1.2 or 1)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def print_table(results: dict) -> None:
    width = max(len(row["model"]) for row in results["rows"])
    print(f"\n{'model':<{width}}  {results['metric']:>7}  {'95% CI':<16}  vs causal baseline [95% CI]")
    for row in results["rows"]:
        low, high = row["ci95"]
        line = f"{row['model']:<{width}}  {row['score']:>7.4f}  [{low:.4f}, {high:.4f}]"
        if "vs_baseline" in row:
            paired = row["vs_baseline"]
            line += f"  {paired['diff']:+.4f} [{paired['ci95'][0]:+.4f}, {paired['ci95'][1]:+.4f}]"
        print(line)
    print(f"\nrandom ranking: {results['random_ranking']['score']:.4f}; {results['queries']} queries, "
          f"{results['bootstrap']['resamples']} paired bootstrap resamples, seed {results['seed']}")
    print(f"({results['wall_seconds']} s wall, {results['cpu_seconds']} s CPU; {results['machine']['cpu']})")
