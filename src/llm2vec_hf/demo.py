"""The main job: LLM2Vec end to end, offline, on the embedded default model.

    llm2vec-hf demo [--output DIR]

Starting from a small causal LM that this project pretrained (``default_model/``), the demo evaluates, on a
held-out retrieval task built from WordNet (a definition → the sentence that uses the word; nDCG@10 through
mteb):

1. the causal model with weighted-mean pooling (the paper's best causal baseline);
2. the same weights with bidirectional attention and no training (mean pooling);
3. + MNTP (masked next-token prediction, a LoRA adapter);
4. + MNTP + SimCSE (unsupervised contrastive learning, a second adapter);
5. + MNTP + supervised contrastive learning on WordNet pairs with hard negatives.

Each trained stage is exported like any llm2vec-hf checkpoint and evaluated through sentence-transformers. The
last one is the demo's checkpoint, whose model card carries the results. Writes ``results.json``,
``results.png`` and ``checkpoint/`` into the output folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from importlib import resources
from pathlib import Path

logger = logging.getLogger(__name__)

MARKER = ".llm2vec-demo"
TASK_NAME = "WordNetDefinitionRetrieval"
METRIC = "ndcg_at_10"
ROWS = (
    ("causal + weighted mean", None),
    ("bidirectional, no training + mean", []),
    ("+ MNTP", ["mntp"]),
    ("+ MNTP + SimCSE", ["mntp", "simcse"]),
    ("+ MNTP + supervised", ["mntp", "supervised"]),
)


def add_arguments(parser) -> None:
    parser.add_argument("--output", default="llm2vec-demo", help="folder for the demo's outputs (default: llm2vec-demo)")


def main(args) -> int:
    run_demo(args.output)
    return 0


def require_extras() -> None:
    """The demo evaluates through mteb and draws with matplotlib: say so before any work starts."""
    import importlib.util

    from .errors import LLM2VecError

    missing = [name for name in ("mteb", "matplotlib") if importlib.util.find_spec(name) is None]
    if missing:
        raise LLM2VecError(
            f"the demo needs {' and '.join(missing)}: pip install 'llm2vec-hf[eval,train]' (from a checkout: "
            "pip install -e '.[dev,eval,train]')"
        )


def prepare_output(output: str | os.PathLike) -> Path:
    """The output folder: new, empty, or an earlier demo's (which is replaced)."""
    from .errors import LLM2VecError

    output = Path(output)
    if output.exists() and any(output.iterdir()):
        if not (output / MARKER).exists():
            raise LLM2VecError(f"{output} exists and was not written by the demo; choose another --output")
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / MARKER).write_text("written by llm2vec-hf demo; replaced on the next run\n")
    return output


def write_task(folder: Path) -> Path:
    """The held-out WordNet retrieval task as an mteb local task (see evaluation.mteb_tasks.LOCAL_TASK_FORMAT)."""
    from .default_assets import WORDNET_INSTRUCTION, load_eval_task

    queries, docs, qrels = load_eval_task()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.json").write_text(json.dumps({
        "name": TASK_NAME, "type": "Retrieval", "instruction": WORDNET_INSTRUCTION, "split": "test",
        "description": "WordNet 3.0: retrieve the example sentence of a held-out synset from its definition.",
    }, indent=2))
    with open(folder / "queries.jsonl", "w") as handle:
        handle.writelines(json.dumps({"id": k, "text": v}) + "\n" for k, v in queries.items())
    with open(folder / "corpus.jsonl", "w") as handle:
        handle.writelines(json.dumps({"id": k, "text": v}) + "\n" for k, v in docs.items())
    with open(folder / "qrels.tsv", "w") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        handle.writelines(f"{q}\t{d}\t{s}\n" for q, rel in qrels.items() for d, s in rel.items())
    return folder


def causal_baseline(base: Path):
    """The causal model (no flag, no remote code) with LLM2Vec's weighted-mean pooling, as a SentenceTransformer."""
    from sentence_transformers import SentenceTransformer

    from .modeling.sentence_transformers_llm2vec import LLM2VecTransformer

    module = LLM2VecTransformer(str(base))
    assert getattr(module.auto_model.config, "is_causal", True), "the baseline must stay causal"
    module.auto_model.config.llm2vec = {"pooling_mode": "weighted_mean", "max_length": 128}
    return SentenceTransformer(modules=[module], device="cpu")


def evaluate(model_dir: Path, task: Path, work: Path, model=None) -> float:
    from .evaluation.mteb_tasks import run_mteb

    result = run_mteb(str(model_dir), [str(task)], work, batch_size=64, model=model, show_progress_bar=False)
    (score,) = [row["score"] for row in result["rows"] if row["task"] == TASK_NAME]
    return score


def train(stage: str, base: Path, adapters: list[Path], data: Path, output: Path) -> Path:
    from .training.arguments import parse_recipe
    from .training.run import run_training

    recipe_file = resources.files("llm2vec_hf").joinpath("demo_recipes", f"{stage}.yaml")
    recipe = parse_recipe(
        str(recipe_file),
        model_name_or_path=str(base),
        peft_model_name_or_path=[str(a) for a in adapters] or None,
        train_file=str(data),
        output_dir=str(output),
    )
    return Path(run_training(recipe).adapter_dir)


def run_demo(output: str | os.PathLike = "llm2vec-demo") -> dict:
    from .default_assets import default_model_path, demo_data_path
    from .export import export_checkpoint
    from .model_card import add_evaluation_results

    require_extras()
    started = time.perf_counter()
    output = prepare_output(output)
    base = default_model_path()
    task = write_task(output / "task")
    work = output / "work"
    unlabeled, pairs = demo_data_path("unlabeled.txt"), demo_data_path("wordnet_train.jsonl")

    logger.info("[1/5] causal baseline (weighted mean)")
    scores = {ROWS[0][0]: evaluate(base, task, work / "mteb", model=causal_baseline(base))}
    adapters: dict[str, Path] = {}
    for label, stages in ROWS[1:]:
        step = ROWS.index((label, stages)) + 1
        for stage in stages:
            if stage not in adapters:
                logger.info("[%d/5] training %s", step, stage)
                earlier = [adapters["mntp"]] if stage != "mntp" else []
                data = pairs if stage == "supervised" else unlabeled
                adapters[stage] = train(stage, base, earlier, data, work / stage)
        folder = output / "checkpoint" if stages == ["mntp", "supervised"] else work / ("export-" + "-".join(stages or ["none"]))
        export_checkpoint(str(base), str(folder), adapters=[str(adapters[s]) for s in stages], max_length=128,
                          prompts={"query": "Given a word definition, retrieve a sentence that uses the word "},
                          overwrite=True)
        logger.info("[%d/5] evaluating: %s", step, label)
        scores[label] = evaluate(folder, task, work / "mteb")
    rows = [{"model": label, "score": round(scores[label], 4)} for label, _ in ROWS]
    results = {"metric": "nDCG@10", "task": TASK_NAME, "rows": rows, "wall_seconds": round(time.perf_counter() - started)}
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    draw_chart(rows, output / "results.png")
    add_evaluation_results(output / "checkpoint", [
        {"task_type": "retrieval", "task_name": "Retrieval", "dataset_type": "wordnet", "dataset_name": TASK_NAME,
         "dataset_split": "test",
         "metric_type": METRIC, "metric_value": scores[ROWS[-1][0]], "metric_name": "nDCG@10"}
    ])
    print_table(results)
    return results


def draw_chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4), dpi=100)
    labels = [row["model"] for row in rows]
    bars = axes.barh(labels[::-1], [row["score"] for row in rows][::-1], color="tab:blue")
    axes.bar_label(bars, fmt="%.3f", padding=3)
    axes.set_xlabel("nDCG@10 on held-out WordNet definition → sentence retrieval")
    axes.set_title("LLM2Vec on the embedded default model")
    axes.set_xlim(0, max(row["score"] for row in rows) * 1.25 or 1)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def print_table(results: dict) -> None:
    width = max(len(row["model"]) for row in results["rows"])
    print(f"\n{'model':<{width}}  {results['metric']}")
    for row in results["rows"]:
        print(f"{row['model']:<{width}}  {row['score']:.4f}")
    print(f"\n({results['wall_seconds']} s)")
