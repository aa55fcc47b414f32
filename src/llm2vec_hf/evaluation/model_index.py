"""Evaluation results as the model card's ``model-index`` entries (``huggingface_hub.EvalResult`` keyword dicts).

Written here rather than by mteb: mteb's ``TaskResult.get_hf_eval_results`` is deprecated (the Hub moved to
benchmark result files, which mteb builds only for tasks in its registry, so not for local tasks), and the
word-probe rows are not mteb results.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

from ..checkpoint.model_card import add_evaluation_results


def model_index_entries(rows: Iterable[dict[str, Any]], tasks: Sequence = ()) -> list[dict[str, Any]]:
    """``huggingface_hub.EvalResult`` keyword dicts for the model card's ``model-index``, one per summary row.

    MTEB rows name the dataset as mteb does (``dataset_type`` = the dataset's Hub path, name ``MTEB <Task>``);
    word-probe rows (``type`` "WordProbe") are token-classification results.
    """
    datasets = {task.metadata.name: task.metadata.dataset for task in tasks}
    entries = []
    for row in rows:
        if row.get("type") == "WordProbe":
            probe = row["task"].split(":", 1)[-1]
            dataset = row.get("dataset", "conll2003")
            entries.append(
                {
                    "task_type": "token-classification",
                    "task_name": f"Word-level probe ({row['task']})",
                    "dataset_type": dataset,
                    # the probe is part of the name: cards merge results by (task, dataset, split, metric)
                    "dataset_name": f"{dataset} ({probe})",
                    "dataset_config": probe,
                    "dataset_split": row["split"],
                    "metric_type": row["metric"],
                    "metric_name": row["metric"],
                    "metric_value": round(float(row["score"]), 6),
                }
            )
            continue
        dataset = datasets.get(row["task"], {})
        entry = {
            "task_type": row["type"],
            "task_name": row["type"],
            "dataset_type": dataset.get("path", row["task"]),
            "dataset_name": f"MTEB {row['task']}",
            "dataset_config": row["subset"],
            "dataset_split": row["split"],
            "metric_type": row["metric"],
            "metric_name": row["metric"],
            "metric_value": round(float(row["score"]), 6),
            "source_name": "MTEB",
            "source_url": "https://github.com/embeddings-benchmark/mteb",
        }
        if dataset.get("revision"):
            entry["dataset_revision"] = dataset["revision"]
        entries.append(entry)
    return entries


def write_model_card_results(model_dir: str, entries: list[dict[str, Any]]) -> bool:
    """Adds ``entries`` to the checkpoint's model card (``model_card.add_evaluation_results``); False where the
    checkpoint has no README.md."""
    if not os.path.isfile(os.path.join(model_dir, "README.md")):
        return False
    add_evaluation_results(model_dir, entries)
    return True
