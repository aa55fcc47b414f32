# Copyright 2026 The llm2vec-hf authors. Apache-2.0.
"""sentence-transformers input module with LLM2Vec's encoding semantics.

This is the one file in ``modeling/`` that imports sentence_transformers: only sentence-transformers loads it
(listed in the checkpoint's modules.json), so that package is always present when it runs.

Why not the stock ``Transformer`` + ``Pooling(include_prompt=False)``: the stock prompt exclusion counts the
prompt tokenized on its own, BOS included. That pools BOS for texts without a prompt and, for prompts ending in
a space, drops the first text token (the tokenizer merges the space into it). Stock pooling also restarts no
weights for ``weighted_mean`` and cannot append EOS for ``eos_token``. LLM2Vec's rule (docs/architecture.md) counts the
text's own tokens from the end; this module applies it with the same code as the ``AutoModel`` path.
"""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers.base.modules import Transformer

from .modeling_llm2vec import (
    compile_for_inference,
    cut_to_doc_max_length,
    forward_in_length_groups,
    normalize_inputs,
    pool,
    reference_tokenizer_for,
    resolve_encoding,
    tokenize_inputs,
)


class LLM2VecTransformer(Transformer):
    """Loads the bidirectional encoder like ``Transformer`` and pools as LLM2Vec does.

    The prompt (``encode(texts, prompt=...)`` or a named prompt) is the instruction: the model reads
    ``prompt.strip() + " " + text`` and only the text's tokens are pooled (with ``skip_instruction``).
    Settings come from the checkpoint's ``config.llm2vec``; ``max_seq_length`` overrides ``max_length``.

    At inference, each batch runs in the forward calls `LLM2Vec.encode` would make for it (`forward_in_length_groups`):
    short texts share rows (packed, with a block-diagonal mask), the others in groups of similar token length;
    sentence-transformers sorts by characters and batches by count, so a batch as given can be mostly padding.
    ``max_batch_tokens`` caps a call's tokens, padding included, and ``packing=False`` turns packing off (both
    attributes, or ``encode(..., max_batch_tokens=N, packing=False)``). Training (gradients on) runs each batch
    as one call, as given.
    """

    max_batch_tokens: int | None = None
    packing: bool | None = None
    #: Compile the encoder (`compile_for_inference`) at the first inference batch; set before a multi-process
    #: pool starts, so that each worker compiles its own copy.
    compile_on_first_forward: bool = False
    forward_kwargs = {"max_batch_tokens", "packing"}

    def _encoding_settings(self) -> dict[str, Any]:
        overrides = {"max_length": self.max_seq_length} if self.max_seq_length else {}
        return resolve_encoding(self.auto_model.config, self.tokenizer, **overrides)

    def _can_flatten_inputs(self) -> bool:
        # sentence-transformers' padding-free path (flash-attention varlen, on GPUs) packs a batch into one row
        # without an attention mask, and then interleaves long and short texts in each batch since padding no
        # longer costs anything. `preprocess` here always pads, because LLM2Vec pooling needs each row's
        # pool_mask; saying so keeps batches length-sorted, and `forward_in_length_groups` cuts the padding.
        return False

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, Any]:
        # tokenize as llm2vec 0.2.3 does, whatever class transformers picked (see `reference_tokenizer_for`)
        tokenizer = reference_tokenizer_for(self.tokenizer, self.auto_model)
        if tokenizer is not self.tokenizer and self.processor is self.tokenizer:
            tokenizer.model_max_length = self.tokenizer.model_max_length  # sentence-transformers' max_seq_length
            self.processor = tokenizer
        settings = self._encoding_settings()
        if prompt:
            inputs = [[prompt, item] if isinstance(item, str) else item for item in inputs]
        pairs = normalize_inputs(list(inputs))
        texts = cut_to_doc_max_length(
            self.tokenizer, [text for _, text in pairs], settings["doc_max_length"], settings["max_length"]
        )
        batch = tokenize_inputs(
            self.tokenizer, [(instruction, text) for (instruction, _), text in zip(pairs, texts)], settings
        )
        return dict(batch)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        pool_mask = features.pop("pool_mask")
        max_batch_tokens = kwargs.pop("max_batch_tokens", None) or self.max_batch_tokens
        packing = kwargs.pop("packing", None)
        packing = self.packing if packing is None else packing
        if torch.is_grad_enabled() or kwargs:
            features = super().forward(features, **kwargs)
        else:
            if self.compile_on_first_forward:
                compile_for_inference(self.auto_model)
                self.compile_on_first_forward = False
            features["token_embeddings"] = forward_in_length_groups(
                self.auto_model, features["input_ids"], features["attention_mask"], max_batch_tokens, packing
            )
        features["pool_mask"] = pool_mask
        features["sentence_embedding"] = pool(
            features["token_embeddings"],
            features,
            self._encoding_settings()["pooling_mode"],
            self.tokenizer.bos_token_id,
        ).to(features["token_embeddings"].dtype)
        return features
