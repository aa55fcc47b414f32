"""Train one LLM2Vec stage (mntp | simcse | supervised) from a YAML recipe.

    llm2vec-hf train CONFIG.yaml [--key value]...
    llm2vec-hf train CONFIG.yaml [--key value]... --print-config

``--print-config`` prints the resolved recipe as JSON (every field, overrides applied) with the learning-rate
schedule it resolves to (scheduler, warmup, the stop step and the number of steps the decay is computed over,
counted from the data), and exits without loading a model.

Every recipe key can be overridden on the command line (``--max_steps 10``, ``--output_dir runs/x``,
``--resume_from_checkpoint true``). Keys: the recipe fields in docs/training.md plus every
transformers ``TrainingArguments`` field. Unknown keys are an error. Multi-GPU: launch the same command with
``accelerate launch --config_file configs/accelerate/ddp.yaml -m llm2vec_hf.cli train CONFIG.yaml`` or ``torchrun``.
"""

from __future__ import annotations

import argparse
import logging

HELP = "train a stage (mntp | simcse | supervised) from a YAML recipe"
PRINT_FLAGS = ("--print-config", "--print_config")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the description's lines
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved recipe and learning-rate schedule as JSON, and exit")
    parser.add_argument("config", help="YAML recipe (configs/...)")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="--key value",
                        help="recipe fields to override, e.g. --max_steps 10 --output_dir runs/x")


def main(args) -> int:
    from ..training.arguments import parse_recipe
    from ..training.run import run_training

    overrides = list(args.overrides)
    print_config = args.print_config or any(item in PRINT_FLAGS for item in overrides)
    overrides = [item for item in overrides if item not in PRINT_FLAGS]  # the flag may come after the overrides
    if print_config:
        import json

        print(json.dumps(resolved_config_here(args.config, overrides), indent=2))
        return 0
    logging.getLogger("llm2vec_hf").setLevel(logging.INFO)
    recipe = parse_recipe(args.config, overrides)
    run_training(recipe)  # logs the one-line summary (adapter folder, next command)
    return 0


def resolved_config_here(config: str, overrides: list[str]) -> dict:
    """The ``--print-config`` output: the recipe as it will run, printed on any machine.

    TrainingArguments checks ``bf16``/``fp16`` against this machine's accelerator, so a GPU recipe would not
    even parse on a laptop. Printing describes the recipe, not this machine: where that check fails, the recipe
    is parsed again with ``use_cpu`` (which admits CPU autocast), the printed ``use_cpu`` is the recipe's own
    value, and ``notes`` says so.
    """
    from ..training.arguments import parse_recipe
    from ..training.schedule import resolved_config

    try:
        return resolved_config(parse_recipe(config, overrides))
    except ValueError as error:
        if "bf16" not in str(error) and "fp16" not in str(error):
            raise
        refusal = str(error)
        recipe = parse_recipe(config, [*overrides, "--use_cpu", "true"])
    resolved = resolved_config(recipe)
    resolved["training"]["use_cpu"] = False  # the first parse failed, so the recipe did not set it
    resolved["notes"] = [f"this machine cannot run the recipe's mixed precision ({refusal}); the recipe was "
                         "parsed as if use_cpu were set, and its schedule does not depend on it"]
    return resolved
