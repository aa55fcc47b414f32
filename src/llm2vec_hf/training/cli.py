"""Train one LLM2Vec stage (mntp | simcse | supervised) from a YAML recipe.

    llm2vec-hf train CONFIG.yaml [--key value]...

Every recipe key can be overridden on the command line (``--max_steps 10``, ``--output_dir runs/x``,
``--resume_from_checkpoint true``). Keys: the recipe fields in docs/training.md plus every
transformers ``TrainingArguments`` field. Unknown keys are an error. Multi-GPU: launch the same command with
``accelerate launch --config_file configs/accelerate/ddp.yaml -m llm2vec_hf.cli train CONFIG.yaml`` or ``torchrun``.
"""

from __future__ import annotations

import argparse
import logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the description's lines
    parser.add_argument("config", help="YAML recipe (configs/...)")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="--key value",
                        help="recipe fields to override, e.g. --max_steps 10 --output_dir runs/x")


def main(args) -> int:
    from .arguments import parse_recipe
    from .run import run_training

    logging.getLogger("llm2vec_hf").setLevel(logging.INFO)
    recipe = parse_recipe(args.config, args.overrides)
    run_training(recipe)  # logs the one-line summary (adapter folder, next command)
    return 0
