"""The main job: LLM2Vec end to end, offline, on the embedded default model.

    llm2vec-hf demo [--output DIR] [--seed N] [--overwrite]

Starting from a small causal LM that this project pretrained (``default_model/``), the demo evaluates, on a
held-out retrieval task built from WordNet (a word and one of its definitions → the sentence that uses the word
in that sense; nDCG@10 through mteb):

1. the causal model with weighted-mean pooling (the paper's best causal baseline);
2. the same weights with bidirectional attention and no training (mean pooling);
3. + MNTP (masked next-token prediction, a LoRA adapter);
4. + MNTP + SimCSE (unsupervised contrastive learning, a second adapter);
5. + MNTP + supervised contrastive learning on WordNet pairs with hard negatives.

Each trained stage is exported like any llm2vec-hf checkpoint and evaluated through sentence-transformers. The
last one is the demo's checkpoint, whose model card carries the results. Writes ``results.json``,
``results.png`` and ``checkpoint/`` into the output folder.

Every score comes with a 95% interval from a bootstrap over the task's queries, and every row after the baseline
with its paired difference to the baseline (the same resamples for every row), so that an ordering within noise
shows as such. ``docs/demo.md`` has the measured results for three seeds.
"""

from __future__ import annotations

HELP = "the main job, offline, on the embedded default model"


def add_arguments(parser) -> None:
    from ..demo.pipeline import DEFAULT_SEED

    parser.add_argument("--output", default="llm2vec-demo", help="folder for the demo's outputs (default: llm2vec-demo)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"seed of the training stages and of the bootstrap (default: {DEFAULT_SEED})")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo's output folder")


def main(args) -> int:
    from ..demo.pipeline import run_demo

    run_demo(args.output, seed=args.seed, overwrite=args.overwrite)
    return 0
