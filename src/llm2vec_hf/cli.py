"""The ``llm2vec-hf`` command line: one console script, one sub-command per step of the pipeline.

The sub-commands are the modules of ``llm2vec_hf.commands`` (one per verb, all of the argparse). Errors that
llm2vec-hf raises for bad input are printed as one line (exit code 2).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from .commands import COMMANDS
from .errors import LLM2VecError, one_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm2vec-hf", description="LLM2Vec text encoders, Hugging Face-native.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        sub = commands.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(sub)
    return parser


# Deprecation notices that dependencies raise about their *own* calls into each other's renamed APIs (e.g. mteb
# calling a renamed sentence-transformers method, PEFT reading a renamed transformers property). A user of these
# commands cannot act on them, and they bury the output. They are matched by the module the warning is attributed
# to, not by their wording, so that a new release's new notices are covered too; a notice attributed to llm2vec_hf
# itself (our own call into a renamed API) still shows. Silenced only while a command runs, not with --verbose,
# and never for the Python API.
FOREIGN_MODULES = r"(mteb|peft|sentence_transformers|transformers|accelerate|datasets|huggingface_hub|torch)(\.|$)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    with warnings.catch_warnings():
        if not args.verbose:
            for category in (FutureWarning, DeprecationWarning):
                warnings.filterwarnings("ignore", category=category, module=FOREIGN_MODULES)
        return run_command(args)


def run_command(args) -> int:
    try:
        return COMMANDS[args.command].main(args) or 0
    except (LLM2VecError, ValueError, TypeError, OSError) as error:
        if args.verbose:
            raise
        print(f"llm2vec-hf {args.command}: error: {one_line(error, limit=2000)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as error:
        if args.verbose or not _is_out_of_memory(error):
            raise
        print(f"llm2vec-hf {args.command}: error: out of memory ({one_line(error)}); use a smaller model, batch "
              "or lora_r", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"llm2vec-hf {args.command}: interrupted", file=sys.stderr)
        return 130


def _is_out_of_memory(error: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError (CUDA and others), and the CPU allocator's RuntimeError."""
    import torch

    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(error)


if __name__ == "__main__":
    sys.exit(main())
