"""Model code shipped inside every llm2vec-hf checkpoint (Hub remote code).

Installed as ``llm2vec_hf.modeling``; ``llm2vec-hf export`` copies these files verbatim into checkpoints.
"""
