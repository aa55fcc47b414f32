"""The engine-independent half of exact serving: LLM2Vec's token ids in, LLM2Vec's pooling of token states out.

An engine that returns the final hidden state of every token of a prompt (vLLM's ``token_embed`` task) gives the
exact LLM2Vec vectors when it is fed the token ids LLM2Vec builds (`tokenize_for_encoding`: instruction, text
template, ``doc_max_length`` cut, BOS, truncation) and its states are pooled by `pool` over the text's own
tokens. Both come from ``modeling/``, the one definition every other path uses.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from ..errors import CheckpointError
from ..loading.models import encoding_settings, load_config, load_tokenizer
from ..loading.paths import resolve_local
from ..modeling.encoding_settings import EncodingSettings
from ..modeling.input_formatting import collate, tokenize_for_encoding
from ..modeling.pooling import pool
from ..modeling.tokenization_llm2vec import TokenizerEmbeddingError, check_tokenizer_fits


def checkpoint_dtype(config) -> str | None:
    """The dtype a checkpoint's config.json says its weights are stored in, as a name ("float32"…)."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return str(dtype).removeprefix("torch.") if dtype is not None else None


class TokenStatePooler:
    """A checkpoint's tokenizer and encoding settings, without its weights: builds the engine's prompts and pools
    the per-token states the engine returns for them."""

    def __init__(self, tokenizer, settings: EncodingSettings, model_type: str | None = None,
                 attn_logit_softcapping: float | None = None, dtype: str | None = None):
        self.tokenizer = tokenizer
        self.settings = settings
        self.model_type = model_type
        #: engines may not implement attention soft-capping (Gemma2) for bidirectional attention
        self.attn_logit_softcapping = attn_logit_softcapping
        #: the dtype the checkpoint's weights are stored in ("float32", "bfloat16"…), which the engine must run
        self.dtype = dtype

    def check_engine_dtype(self, engine_dtype: Any) -> None:
        """Refuses an engine that runs the weights in another dtype than the checkpoint stores: vLLM's default
        ``auto`` runs a float32 checkpoint in float16 (measured 4.7e-3 off the exact vectors)."""
        running = str(engine_dtype).removeprefix("torch.")
        if self.dtype is not None and running != self.dtype:
            raise ValueError(f"the engine runs this {self.dtype} checkpoint in {running}, which changes its vectors: "
                             f"start it with --dtype {self.dtype} (dtype=\"{self.dtype}\"), or export the checkpoint "
                             f"in {running} (llm2vec-hf export --dtype {running})")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **encoding: Any) -> "TokenStatePooler":
        """Reads the tokenizer and the encoding settings of a checkpoint folder (or a cached repo id) as
        ``LLM2Vec.from_pretrained`` does; ``encoding`` overrides settings (``pooling_mode=``, ``max_length=``…)."""
        folder = resolve_local(name_or_path)
        config = load_config(folder)
        tokenizer = load_tokenizer(folder)
        try:
            check_tokenizer_fits(tokenizer, config.vocab_size)
        except TokenizerEmbeddingError as error:
            raise CheckpointError(f"{name_or_path}: {error}") from None
        # encoding_settings reads only the model's config: the weights stay with the engine.
        settings = encoding_settings(config, tokenizer, [folder], str(name_or_path), **encoding)
        return cls(tokenizer, settings, config.model_type, getattr(config, "attn_logit_softcapping", None),
                   checkpoint_dtype(config))

    def prompts(self, inputs: Any) -> tuple[list[list[int]], list[int]]:
        """Token ids for the engine, one list per input (texts or ``[instruction, text]`` pairs), and how many
        of each row's last tokens are pooled."""
        input_ids, n_pooled = tokenize_for_encoding(self.tokenizer, inputs, self.settings)
        return [list(ids) for ids in input_ids], n_pooled

    def pool(self, token_states: Sequence[torch.Tensor], input_ids: Sequence[Sequence[int]],
             n_pooled: Sequence[int]) -> torch.Tensor:
        """Pools each row's token states (``(tokens, hidden)``, in prompt order) as LLM2Vec does; float32
        ``(rows, hidden)``. A row whose state count is not its token count is refused: the engine changed the
        prompt (truncated it, added tokens), and pooling it would give a wrong vector without a word."""
        vectors = []
        for row, (states, ids, n) in enumerate(zip(token_states, input_ids, n_pooled, strict=True)):
            states = torch.as_tensor(states)
            if states.ndim != 2 or states.shape[0] != len(ids):
                raise ValueError(
                    f"Input #{row}: the engine returned token states of shape {tuple(states.shape)} for {len(ids)} "
                    "prompt tokens; expected one state per token (is the engine's pooling task token_embed, "
                    "with no truncation?)"
                )
            batch = collate(self.tokenizer, [ids], [n])
            vectors.append(pool(states.unsqueeze(0), batch, self.settings.pooling_mode, self.tokenizer.bos_token_id)[0])
        return torch.stack(vectors)
