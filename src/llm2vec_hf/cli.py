"""The ``llm2vec-hf`` command line: one console script, a sub-command per step of the pipeline."""

from __future__ import annotations

import argparse
import logging
import sys

from .errors import LLM2VecError

logger = logging.getLogger("llm2vec_hf")


def _prompt(value: str) -> tuple[str, str]:
    name, sep, text = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=TEXT, got {value!r}")
    return name, text


def build_parser() -> argparse.ArgumentParser:
    from .modeling.modeling_llm2vec import POOLING_MODES

    parser = argparse.ArgumentParser(prog="llm2vec-hf", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="merge adapters into a base and write a checkpoint (DESIGN §5)")
    export.add_argument("base", help="decoder checkpoint: local folder or Hub repo id")
    export.add_argument("--output", required=True, help="folder to write")
    export.add_argument("--adapter", action="append", default=[], help="PEFT LoRA adapter, merged in the order given")
    export.add_argument("--pooling", choices=POOLING_MODES, help="pooling mode (default: from the checkpoint, or mean)")
    export.add_argument("--max-length", type=int, help="max tokens per input (default 512)")
    export.add_argument("--doc-max-length", type=int, help="texts are cut word-wise to this many tokens (default 400)")
    export.add_argument("--no-skip-instruction", action="store_true", help="pool instruction and BOS tokens too")
    export.add_argument("--prompt", action="append", type=_prompt, default=[], metavar="NAME=TEXT", help="named prompt")
    export.add_argument("--text-template", help='wrapper applied to each input, e.g. "[INST] {text} [/INST]"')
    export.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output folder")

    encode = commands.add_parser("encode", help="embed a .txt (a text per line) or .jsonl file into a .npy file")
    encode.add_argument("model", help="exported checkpoint: folder or Hub repo id")
    encode.add_argument("--input", required=True, help=".txt or .jsonl (fields: text, optional instruction)")
    encode.add_argument("--output", required=True, help=".npy file to write")
    encode.add_argument("--prompt-name", help="named prompt of the checkpoint to use as instruction")
    encode.add_argument("--batch-size", type=int, default=32)
    encode.add_argument("--device", help="torch device (default: the model's)")

    demo = commands.add_parser("demo", help="the main job, offline, on the embedded default model")
    demo.add_argument("--output", default="llm2vec-demo", help="folder for the demo's outputs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return COMMANDS[args.command](args) or 0
    except (LLM2VecError, ValueError, TypeError, OSError) as error:
        print(f"llm2vec-hf {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"llm2vec-hf {args.command}: interrupted", file=sys.stderr)
        return 130


def run_export(args) -> int:
    from .export import export_checkpoint

    path = export_checkpoint(
        args.base,
        args.output,
        adapters=args.adapter,
        prompts=dict(args.prompt),
        dtype=args.dtype,
        overwrite=args.overwrite,
        pooling_mode=args.pooling,
        max_length=args.max_length,
        doc_max_length=args.doc_max_length,
        skip_instruction=False if args.no_skip_instruction else None,
        text_template=args.text_template,
    )
    print(f"Exported {path}")
    return 0


def run_encode(args) -> int:
    from .encode_file import encode_file

    count = encode_file(args.model, args.input, args.output, args.prompt_name, args.batch_size, args.device)
    print(f"Wrote {count} vectors to {args.output}")
    return 0


def run_demo(args) -> int:
    from .demo import run_demo as demo

    demo(args.output)
    return 0


COMMANDS = {"export": run_export, "encode": run_encode, "demo": run_demo}

if __name__ == "__main__":
    sys.exit(main())
