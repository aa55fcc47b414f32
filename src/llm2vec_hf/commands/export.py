"""``llm2vec-hf export``: merge adapters into a base and write one folder that is at once a transformers and a
sentence-transformers model (layout: docs/architecture.md, "Checkpoint layout").

The folder is written under a temporary name next to the target and renamed into place at the end, so an
interrupted export never leaves a folder that looks complete.
"""

from __future__ import annotations

import argparse

HELP = "merge adapters into a base and write a checkpoint that loads everywhere"


def add_arguments(parser) -> None:
    from ..checkpoint.st_layout import ST_LAYOUTS
    from ..modeling.encoding_settings import POOLING_MODES

    parser.add_argument("base", help="decoder checkpoint: local folder or Hub repo id")
    parser.add_argument("--output", required=True, help="folder to write")
    parser.add_argument("--adapter", action="append", default=[], help="PEFT LoRA adapter, merged in the order given")
    parser.add_argument("--pooling", choices=POOLING_MODES, help="pooling mode (default: the checkpoint's, or mean)")
    parser.add_argument("--max-length", type=int, help="max tokens per input (default 512)")
    parser.add_argument("--doc-max-length", type=int, help="cut texts word-wise to this many tokens (default 400)")
    parser.add_argument("--no-skip-instruction", action="store_true", help="pool instruction and BOS tokens too")
    parser.add_argument("--prompt", action="append", type=_named_prompt, default=[], metavar="NAME=TEXT",
                        help="named prompt (instruction) stored for sentence-transformers; repeatable")
    parser.add_argument("--text-template", help='wrapper applied to each input, e.g. "[INST] {text} [/INST]"')
    parser.add_argument("--eos-text", help='text appended for eos_token pooling (default: what llm2vec 0.2.3 appends, '
                        'e.g. " </s>" for Llama/Mistral; "" appends nothing)')
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="dtype of the written weights (default: the base's own, from its config or its files)")
    parser.add_argument("--max-shard-size", help='largest weight file, e.g. "5GB" (default: transformers\' default)')
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--st-modules", choices=ST_LAYOUTS, default="auto",
                        help="sentence-transformers layout: the exact LLM2Vec module (remote, needs trust_remote_code), "
                        "stock Transformer + Pooling (no remote code; the deviation from the exact vectors is measured "
                        "and printed), or auto: stock where it is exact, else remote (default)")


def _named_prompt(value: str) -> tuple[str, str]:
    name, sep, text = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=TEXT, got {value!r}")
    return name, text


def main(args) -> int:
    from transformers.utils import logging as transformers_logging

    from ..checkpoint.export import export_checkpoint

    transformers_logging.disable_progress_bar()  # loading and writing bars; the command reports what it wrote

    path = export_checkpoint(
        args.base,
        args.output,
        adapters=args.adapter,
        prompts=dict(args.prompt),
        dtype=args.dtype,
        overwrite=args.overwrite,
        st_modules=args.st_modules,
        max_shard_size=args.max_shard_size,
        pooling_mode=args.pooling,
        max_length=args.max_length,
        doc_max_length=args.doc_max_length,
        skip_instruction=False if args.no_skip_instruction else None,
        text_template=args.text_template,
        eos_text=args.eos_text,
    )
    print(f"Exported {path}")
    return 0
