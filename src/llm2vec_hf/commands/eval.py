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
from pathlib import Path
from typing import Any

from ..evaluation import word_probes

HELP = "evaluate a checkpoint on MTEB tasks and word-level probes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model", metavar="DIR", help="checkpoint folder or Hub repo id (an llm2vec-hf export)")
    parser.add_argument("--tasks", nargs="+", required=True, metavar="TASK",
                        help="MTEB task names, 'llm2vec-mteb', local task folders, word:pos word:chunk word:ner")
    parser.add_argument("--output", default="eval-results", metavar="DIR",
                        help="results folder (default: ./eval-results)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing results folder")
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


def format_table(rows: list[dict[str, Any]]) -> str:
    """The summary table: task, type, split, subset, metric, score."""
    header = ("task", "type", "split", "subset", "metric", "score")
    body = [(r["task"], r["type"], r["split"], r["subset"], r["metric"], f"{r['score']:.4f}") for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in body])


def main(args) -> int:
    from ..evaluation.evaluate import evaluate_checkpoint
    from ..evaluation.instructions import instruction_table

    summary = evaluate_checkpoint(
        args.model,
        args.tasks,
        args.output,
        batch_size=args.batch_size,
        device=args.device,
        use_instructions=not args.no_instructions,
        instructions_file=args.instructions,
        all_languages=args.all_languages,
        model_card=args.model_card,
        word_data=args.word_data,
        mntp_shift=args.mntp_shift,
        causal=args.causal,
        max_train_sentences=args.max_train_sentences,
        max_test_sentences=args.max_test_sentences,
        probe_max_length=args.probe_max_length,
        probe=args.probe,
        overwrite=args.overwrite,
    )
    print()
    if summary.get("instructions"):
        print("instructions (task, side, source, instruction):")
        print(instruction_table(summary["instructions"]))
        print()
    print(format_table(summary["rows"]))
    print(f"\nresults: {Path(args.output).resolve()}")
    return 0
