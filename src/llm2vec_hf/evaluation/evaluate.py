"""Evaluates a checkpoint on what ``llm2vec-hf eval --tasks`` names: MTEB tasks (mteb 2.x, extra ``[eval]``)
and word-level probes; writes the summary that the command prints as a table."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..errors import LLM2VecError
from ..loading.json_files import read_json, write_json
from ..loading.paths import refuse_missing_local
from ..output_paths import refuse_existing, refuse_overlap
from . import word_probes
from .model_index import model_index_entries, write_model_card_results
from .runner import run_mteb

logger = logging.getLogger(__name__)


def split_tasks(names: list[str]) -> tuple[list[str], list[str]]:
    """(MTEB task names or folders, word probe names without the ``word:`` prefix)."""
    mteb_tasks, probes = [], []
    for name in names:
        if name.startswith(word_probes.PREFIX):
            probes.append(name[len(word_probes.PREFIX):])
        else:
            mteb_tasks.append(name)
    return mteb_tasks, probes


def evaluate_checkpoint(
    model: str,
    tasks: list[str],
    output: str | os.PathLike = "eval-results",
    *,
    batch_size: int = 32,
    device: str | None = None,
    use_instructions: bool = True,
    instructions_file: str | None = None,
    all_languages: bool = False,
    model_card: bool = False,
    word_data: str = word_probes.DEFAULT_DATASET,
    mntp_shift: bool = False,
    causal: bool = False,
    max_train_sentences: int | None = None,
    max_test_sentences: int | None = None,
    probe_max_length: int = 512,
    probe: str = "linear",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluates ``model`` on ``tasks`` (MTEB names or folders, ``word:*`` probes); returns the summary written
    to OUTPUT/summary.json. ``output`` may not overlap what is read, and is replaced only with ``overwrite``
    (`output_paths`)."""
    refuse_missing_local(model)  # a missing local folder is named, not blamed on the network
    refuse_overlap(output, [("model", model), *(("task folder", task) for task in tasks if os.path.isdir(task)),
                            ("word-probe data", word_data), ("instructions file", instructions_file)])
    refuse_existing(output, overwrite)
    mteb_names, probes = split_tasks(tasks)
    output = Path(output)
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"model": model, "rows": rows}
    ran_tasks = []
    if mteb_names:
        instructions = None
        if instructions_file:
            instructions = read_json(instructions_file)
            if not isinstance(instructions, dict):
                raise LLM2VecError(f"{instructions_file}: expected a JSON object {{task name: instruction}}")
        result = run_mteb(
            model,
            mteb_names,
            output,
            batch_size=batch_size,
            use_instructions=use_instructions,
            instructions=instructions,
            languages=None if all_languages else ("eng",),
            device=device,
        )
        rows.extend(result["rows"])
        ran_tasks = result["tasks"]
        summary["mteb_results_dir"] = str(result["results_dir"])
        summary["instructions"] = result["instructions"]
    if probes:
        rows.extend(
            word_probes.run_word_probes(
                model,
                probes,
                data=word_data,
                output_dir=output,
                shift=mntp_shift,
                causal=causal,
                max_length=probe_max_length,
                batch_size=max(1, batch_size // 2),
                max_train_sentences=max_train_sentences,
                max_test_sentences=max_test_sentences,
                device=device,
                probe=probe,
            )
        )
    output.mkdir(parents=True, exist_ok=True)
    if model_card:
        entries = model_index_entries(rows, ran_tasks)
        if not os.path.isdir(model):
            raise LLM2VecError("--model-card needs a local checkpoint folder")
        summary["model_card"] = write_model_card_results(model, entries)
        if not summary["model_card"]:
            logger.warning("no model card updated: %s has no README.md", model)
    write_json(output / "summary.json", summary, indent=2, default=str)
    return summary
