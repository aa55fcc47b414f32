"""Vectors through sentence-transformers, the way a user encodes an exported checkpoint."""

from __future__ import annotations

import numpy as np
from sentence_transformers import SentenceTransformer


def sentence_transformers_vectors(folder, inputs) -> np.ndarray:
    """Encodes through SentenceTransformer, one call per instruction (the prompt is the instruction)."""
    model = SentenceTransformer(str(folder), trust_remote_code=True)
    rows = []
    for item in inputs:
        if isinstance(item, list):
            rows.append(model.encode([item[1]], prompt=item[0] + " ", convert_to_numpy=True)[0])
        else:
            rows.append(model.encode([item], convert_to_numpy=True)[0])
    return np.stack(rows)
