"""The ``llm2vec-hf`` command line: one console script, one sub-command per step of the pipeline.

Each sub-command lives in the module that does the work; that module exposes ``add_arguments(parser)`` and
``main(args) -> int``. Errors that llm2vec-hf raises for bad input are printed as one line (exit code 2).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from .errors import LLM2VecError

#: name -> (module, one-line help), in pipeline order.
COMMANDS = {
    "train": ("llm2vec_hf.training.cli", "train a stage (mntp | simcse | supervised) from a YAML recipe"),
    "export": ("llm2vec_hf.export", "merge adapters into a base and write a checkpoint that loads everywhere"),
    "encode": ("llm2vec_hf.encode_file", "embed a .txt or .jsonl file into a .npy file"),
    "eval": ("llm2vec_hf.evaluation.cli", "evaluate a checkpoint on MTEB tasks and word-level probes"),
    "push": ("llm2vec_hf.hub", "upload a checkpoint folder to the Hugging Face Hub"),
    "demo": ("llm2vec_hf.demo", "the main job, offline, on the embedded default model"),
}


def available_commands() -> dict[str, object]:
    """Imports the command modules; a command whose module is not installed is left out of the CLI."""
    modules = {}
    for name, (module_name, _) in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name and not module_name.startswith(f"{error.name}."):
                raise
    return modules


def build_parser(modules: dict[str, object]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm2vec-hf", description="LLM2Vec text encoders, Hugging Face-native.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in modules.items():
        sub = commands.add_parser(name, help=COMMANDS[name][1], description=module.__doc__)
        module.add_arguments(sub)
    return parser


# Deprecation notices that dependencies raise about their *own* calls into renamed APIs (mteb 2.26 calls
# sentence-transformers' get_sentence_embedding_dimension; PEFT 0.21 reads transformers'
# is_gradient_checkpointing). A user of these commands cannot act on them, and they bury the output. They are
# silenced only while a command runs, not with --verbose, and never for the Python API.
FOREIGN_DEPRECATIONS = (
    r"The `get_sentence_embedding_dimension` method has been renamed",
    r"`is_gradient_checkpointing` is deprecated",
)


def main(argv: list[str] | None = None) -> int:
    modules = available_commands()
    args = build_parser(modules).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    with warnings.catch_warnings():
        if not args.verbose:
            for message in FOREIGN_DEPRECATIONS:
                warnings.filterwarnings("ignore", message=message, category=FutureWarning)
        return _run(modules, args)


def _run(modules, args) -> int:
    try:
        return modules[args.command].main(args) or 0
    except (LLM2VecError, ValueError, TypeError, OSError) as error:
        if args.verbose:
            raise
        print(f"llm2vec-hf {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"llm2vec-hf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
