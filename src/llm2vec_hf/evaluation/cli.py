"""Evaluate a checkpoint on MTEB tasks (mteb 2.x, extra ``[eval]``) and word-level probes.

--tasks takes MTEB task names (e.g. SciFact STS12), ``llm2vec-mteb`` (the 56 English tasks LLM2Vec reported,
mteb's MTEB(eng, v1)),
local task folders (a folder with task.json; see docs/evaluation.md), and word probes ``word:pos``,
``word:chunk``, ``word:ner`` (CoNLL-2003 or a folder of CoNLL files, --word-data).

Per-task instructions: the checkpoint's named prompts keyed by task name, else LLM2Vec's instruction set for the
English MTEB tasks, else the task's own prompt; retrieval documents get none. MTEB results are written in mteb's
results-folder format under --output; word-probe results under OUTPUT/word_probes/; a summary in
OUTPUT/summary.json and as a table on the terminal. --model-card adds the scores to the checkpoint's README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import LLM2VecError
from . import word_probes
from .instructions import instruction_table

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model", metavar="DIR", help="checkpoint folder or Hub repo id (an llm2vec-hf export)")
    parser.add_argument("--tasks", nargs="+", required=True, metavar="TASK",
                        help="MTEB task names, 'llm2vec-mteb', local task folders, word:pos word:chunk word:ner")
    parser.add_argument("--output", default="eval-results", metavar="DIR",
                        help="results folder (default: ./eval-results)")
    parser.add_argument("--batch-size", type=int, default=32, help="encoding batch size (default 32)")
    parser.add_argument("--device", default=None, help="torch device (default: sentence-transformers' choice)")
    parser.add_argument("--no-instructions", action="store_true", help="encode every text without an instruction")
    parser.add_argument("--instructions", metavar="FILE.json", default=None,
                        help="a JSON {task name: instruction} that takes precedence over the checkpoint's prompts "
                             "and the shipped set (keys may also be TASK-query / TASK-document)")
    parser.add_argument("--all-languages", action="store_true",
                        help="run every subset of multilingual MTEB tasks (default: English subsets only)")
    parser.add_argument("--model-card", action="store_true",
                        help="also add the scores to the checkpoint's model card (model-index); local folders only")
    words = parser.add_argument_group("word-level probes")
    words.add_argument("--word-data", default=word_probes.DEFAULT_DATASET, metavar="PATH_OR_ID",
                       help="folder with CoNLL train.txt/test.txt, or a HF dataset id (default: %(default)s)")
    words.add_argument("--mntp-shift", action="store_true",
                       help="read the label of token i from position i-1 (for MNTP-trained models, as in the paper)")
    words.add_argument("--causal", action="store_true", help="probe with causal attention (uni-directional baseline)")
    words.add_argument("--max-train-sentences", type=int, default=None, metavar="N")
    words.add_argument("--max-test-sentences", type=int, default=None, metavar="N")
    words.add_argument("--probe-max-length", type=int, default=512, metavar="N",
                       help="tokens per sentence for the probes (default 512)")
    words.add_argument("--probe", choices=word_probes.PROBES, default="linear",
                       help="linear: the official probe (nn.Linear, dropout 0.1, AdamW 5e-4, 10 epochs capped at "
                            "4000 steps, 8 sentences per batch), comparable with the paper; logistic: scikit-learn "
                            "logistic regression, faster (default: %(default)s)")


def split_tasks(names: list[str]) -> tuple[list[str], list[str]]:
    """(MTEB task names or folders, word probe names without the ``word:`` prefix)."""
    mteb_tasks, probes = [], []
    for name in names:
        if name.startswith(word_probes.PREFIX):
            probes.append(name[len(word_probes.PREFIX):])
        else:
            mteb_tasks.append(name)
    return mteb_tasks, probes


def format_table(rows: list[dict[str, Any]]) -> str:
    """The summary table: task, type, split, subset, metric, score."""
    header = ("task", "type", "split", "subset", "metric", "score")
    body = [(r["task"], r["type"], r["split"], r["subset"], r["metric"], f"{r['score']:.4f}") for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in body])


def evaluate(args) -> dict[str, Any]:
    """Runs what ``args`` asks for; returns the summary written to OUTPUT/summary.json."""
    from ..loading import refuse_missing_local

    refuse_missing_local(args.model)  # a missing local folder is named, not blamed on the network
    mteb_names, probes = split_tasks(args.tasks)
    output = Path(args.output)
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"model": args.model, "rows": rows}
    tasks = []
    if mteb_names:
        from .runner import run_mteb

        instructions = None
        if args.instructions:
            with open(args.instructions, encoding="utf-8") as handle:
                instructions = json.load(handle)
            if not isinstance(instructions, dict):
                raise LLM2VecError(f"{args.instructions}: expected a JSON object {{task name: instruction}}")
        result = run_mteb(
            args.model,
            mteb_names,
            output,
            batch_size=args.batch_size,
            use_instructions=not args.no_instructions,
            instructions=instructions,
            languages=None if args.all_languages else ("eng",),
            device=args.device,
        )
        rows.extend(result["rows"])
        tasks = result["tasks"]
        summary["mteb_results_dir"] = str(result["results_dir"])
        summary["instructions"] = result["instructions"]
    if probes:
        rows.extend(
            word_probes.run_word_probes(
                args.model,
                probes,
                data=args.word_data,
                output_dir=output,
                shift=args.mntp_shift,
                causal=args.causal,
                max_length=args.probe_max_length,
                batch_size=max(1, args.batch_size // 2),
                max_train_sentences=args.max_train_sentences,
                max_test_sentences=args.max_test_sentences,
                device=args.device,
                probe=args.probe,
            )
        )
    output.mkdir(parents=True, exist_ok=True)
    if args.model_card:
        from .model_index import model_index_entries, write_model_card_results

        entries = model_index_entries(rows, tasks)
        if not os.path.isdir(args.model):
            raise LLM2VecError("--model-card needs a local checkpoint folder")
        summary["model_card"] = write_model_card_results(args.model, entries)
        if not summary["model_card"]:
            logger.warning("no model card updated: %s has no README.md", args.model)
    (output / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def main(args) -> int:
    summary = evaluate(args)
    print()
    if summary.get("instructions"):
        print("instructions (task, side, source, instruction):")
        print(instruction_table(summary["instructions"]))
        print()
    print(format_table(summary["rows"]))
    print(f"\nresults: {Path(args.output).resolve()}")
    return 0
