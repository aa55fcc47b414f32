"""``llm2vec-hf demo``: the offline end-to-end run of LLM2Vec on a small model.

- ``pipeline``: train MNTP, SimCSE and supervised adapters, export, evaluate, and report with confidence
  intervals;
- ``assets``: the embedded default model (``default_model/``) and the demo data (``data/``);
- ``recipes/``: the training recipes of the demo's stages (also the CPU try-out of docs/training.md).
"""
