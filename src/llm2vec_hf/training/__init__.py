"""LLM2Vec training on the Hugging Face Trainer: MNTP, SimCSE and supervised contrastive learning.

A recipe (YAML, read by ``HfArgumentParser``) names the stage, the base, earlier adapters and the data; each stage
trains a LoRA adapter and saves it (PEFT, safetensors) for the next stage and ``llm2vec-hf export --adapter``.

    from llm2vec_hf.training import parse_recipe, run_training
    result = run_training(parse_recipe("src/llm2vec_hf/demo/recipes/mntp.yaml", ["--max_steps", "5"]))
"""

from .arguments import parse_recipe
from .run import TrainingResult, run_training

__all__ = ["parse_recipe", "run_training", "TrainingResult"]
