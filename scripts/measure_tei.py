#!/usr/bin/env python
"""How far Text Embeddings Inference's vectors are from llm2vec-hf's, per family, pooling mode and setting.

TEI is a Rust server that cannot be built here, so this script computes what TEI computes, following its source
(huggingface/text-embeddings-inference: core/src/tokenization.rs, router/src/lib.rs, backends/candle/src/models/),
in torch on exported tiny checkpoints:

- the input is the stored prompt's text followed by the text (`prompt + text`), tokenized from tokenizer.json with
  special tokens (BOS included), truncated to sentence_bert_config.json's max_seq_length;
- the model is the native class loaded from config.json with no remote code (TEI reads `is_causal` for Qwen2 and
  `use_bidirectional_attention` for Llama, Mistral and Qwen3, which export sets), one sequence per call (TEI's
  flash path concatenates sequences without padding);
- pooling is over every token of the sequence: `mean`, `last-token` (the last token) or `cls` (the first);
  vectors are L2-normalised (TEI's default).

It compares those with `llm2vec_hf.LLM2Vec` on the same checkpoint and prints a markdown table (docs/serving.md):
cosine (mean, min over the inputs) and the largest |difference| of the normalised vectors. TEI runs Llama,
Mistral and Qwen2 on CUDA in float16 only; the `float16` rows run the same computation in float16 on the CPU,
which shows the size of half-precision rounding, not TEI's CUDA kernels bit for bit. The models are tiny and
random (hidden size 32): the figures say which settings are exact and roughly how far the others are, not how
far a trained 7B model's vectors move.

    HF_HUB_OFFLINE=1 python scripts/measure_tei.py            # ~1 min on 2 CPU cores
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import torch

from llm2vec_hf import LLM2Vec
from llm2vec_hf.checkpoint.export import export_checkpoint
from llm2vec_hf.training.tiny_model import build_tiny_decoder

INSTRUCTION = "Given a web search query, retrieve relevant passages"
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "a",
    "Ünïcödé naïve café — 日本語のテキスト 😀",
    "Transformers read every token at once; bidirectional attention lets each token see the whole text.",
]
LONG = " ".join(["Long documents are cut word-wise before they are truncated to max_length."] * 40)
PLAIN = TEXTS
PAIRS = [[INSTRUCTION, text] for text in TEXTS]


def tei_vectors(folder: Path, inputs: list, pooling: str, dtype: torch.dtype) -> torch.Tensor:
    """What TEI computes for ``inputs`` (texts, or [instruction, text] with the instruction as a stored prompt)."""
    from tokenizers import Tokenizer
    from transformers import AutoModel

    max_length = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    model = AutoModel.from_pretrained(folder, dtype=dtype).eval()  # native class, no remote code
    assert not type(model).__module__.startswith("transformers_modules")
    rows = []
    for item in inputs:
        instruction, text = item if isinstance(item, list) else ("", item)
        prompt = instruction.strip() + " " if instruction.strip() else ""  # how export stores a prompt
        ids = tokenizer.encode(prompt + text, add_special_tokens=True).ids
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0].float()
        rows.append({"mean": hidden.mean(0), "last-token": hidden[-1], "cls": hidden[0]}[pooling])
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def compare(folder: Path, inputs: list, pooling: str, dtype: torch.dtype = torch.float32) -> tuple[float, float, float]:
    exact = LLM2Vec.from_pretrained(str(folder)).encode(inputs, show_progress_bar=False)
    exact = torch.nn.functional.normalize(exact, dim=-1)
    tei = tei_vectors(folder, inputs, pooling, dtype)
    cosine = (exact * tei).sum(-1)
    return float(cosine.mean()), float(cosine.min()), float((exact - tei).abs().max())


#: (label, family, export settings, inputs, TEI --pooling, dtype)
CASES = [
    ("mean, plain texts (BOS pooled by TEI)", "llama", {"pooling_mode": "mean"}, PLAIN, "mean", torch.float32),
    ("mean, instruction pairs (instruction + BOS pooled)", "llama", {"pooling_mode": "mean"}, PAIRS, "mean",
     torch.float32),
    ("mean, skip_instruction=False, doc_max_length=max_length", "llama",
     {"pooling_mode": "mean", "skip_instruction": False, "doc_max_length": 512}, PLAIN + PAIRS, "mean", torch.float32),
    ("weighted_mean (TEI has none; nearest: mean)", "llama", {"pooling_mode": "weighted_mean"}, PLAIN + PAIRS, "mean",
     torch.float32),
    ("last_token, doc_max_length=max_length", "llama", {"pooling_mode": "last_token", "doc_max_length": 512},
     PLAIN + PAIRS, "last-token", torch.float32),
    ("last_token, doc_max_length=max_length (Qwen3: TEI on CPU too)", "qwen3",
     {"pooling_mode": "last_token", "doc_max_length": 512}, PLAIN + PAIRS, "last-token", torch.float32),
    ("last_token, default doc_max_length 400 < 512, one text over 512 tokens", "llama", {"pooling_mode": "last_token"},
     PLAIN + [LONG], "last-token", torch.float32),
    ('eos_token, eos_text " </s>" (not appended by TEI)', "llama",
     {"pooling_mode": "eos_token", "doc_max_length": 512}, PLAIN + PAIRS, "last-token", torch.float32),
    ('eos_token, eos_text ""', "llama", {"pooling_mode": "eos_token", "eos_text": "", "doc_max_length": 512},
     PLAIN + PAIRS, "last-token", torch.float32),
    ("bos_token, doc_max_length=max_length", "llama", {"pooling_mode": "bos_token", "doc_max_length": 512},
     PLAIN + PAIRS, "cls", torch.float32),
    ("last_token, exact settings, float16 (TEI's CUDA dtype)", "llama",
     {"pooling_mode": "last_token", "doc_max_length": 512}, PLAIN + PAIRS, "last-token", torch.float16),
    ("last_token, exact settings, float16", "mistral", {"pooling_mode": "last_token", "doc_max_length": 512},
     PLAIN + PAIRS, "last-token", torch.float16),
    ("last_token, exact settings, float16", "qwen2", {"pooling_mode": "last_token", "doc_max_length": 512},
     PLAIN + PAIRS, "last-token", torch.float16),
    ("mean, float16", "qwen2", {"pooling_mode": "mean"}, PLAIN + PAIRS, "mean", torch.float16),
]


def main() -> int:
    logging.disable(logging.WARNING)
    torch.manual_seed(0)
    root = Path(tempfile.mkdtemp(prefix="measure-tei-"))
    bases = {}
    print("| case | family | TEI `--pooling` | dtype | mean cosine | min cosine | max abs diff (normalised) |")
    print("|---|---|---|---|---|---|---|")
    for i, (label, family, settings, inputs, pooling, dtype) in enumerate(CASES):
        if family not in bases:
            bases[family] = build_tiny_decoder(root / "bases" / family, family)
        folder = Path(export_checkpoint(str(bases[family]), str(root / f"case{i}"), max_length=512, **settings))
        mean_cos, min_cos, max_abs = compare(folder, inputs, pooling, dtype)
        print(f"| {label} | {family} | `{pooling}` | {str(dtype).replace('torch.', '')} | {mean_cos:.6f} | "
              f"{min_cos:.6f} | {max_abs:.1e} |")
    print("| any | gemma, gemma2 | – | – | not served: TEI has no Gemma or Gemma2 architecture | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
