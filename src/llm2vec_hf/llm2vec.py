"""``LLM2Vec``: a drop-in for ``llm2vec.LLM2Vec`` (llm2vec 0.2.3) on today's transformers."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from .checkpoint.export import write_checkpoint
from .loading.adapters import apply_adapter
from .loading.models import encoding_settings, load_bidirectional, load_tokenizer, tokenizer_folder
from .loading.paths import resolve_local
from .modeling.encoding_settings import ENCODING_KEYS, EncodingSettings, resolve_encoding
from .modeling.input_formatting import tokenize_inputs
from .modeling.modeling_llm2vec import compile_for_inference, encode_with
from .modeling.pooling import pool


class LLM2Vec(torch.nn.Module):
    """A bidirectional encoder, its tokenizer and LLM2Vec's pooling settings.

    Same constructor, ``from_pretrained``, ``encode`` and ``save`` as the official class; vectors match it within
    float rounding for the same weights (see tests/modeling/test_reference_parity.py).
    """

    def __init__(
        self,
        model,
        tokenizer,
        pooling_mode: str = "mean",
        max_length: int = 512,
        doc_max_length: int = 400,
        skip_instruction: bool = True,
        text_template: str | None = None,
        eos_text: str | None = None,
        *,
        settings: EncodingSettings | None = None,
    ):
        """As the official constructor: the keyword settings override the model's ``config.llm2vec``. ``settings``,
        if given, are settings already resolved (`loading.encoding_settings`, as ``from_pretrained`` does) and are
        used as they are instead of the keywords (docs/architecture.md, "Encoding settings")."""
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        if settings is None:
            settings = resolve_encoding(
                getattr(model, "config", None),
                tokenizer,
                pooling_mode=pooling_mode,
                max_length=max_length,
                doc_max_length=doc_max_length,
                skip_instruction=skip_instruction,
                text_template=text_template,
                eos_text=eos_text,
            )
        if not isinstance(settings, EncodingSettings):
            raise TypeError(f"settings must be EncodingSettings (from loading.encoding_settings), got "
                            f"{type(settings).__name__}")
        self.settings = settings

    def __getattr__(self, name: str):
        if name in ENCODING_KEYS:  # the official class's attributes (``model.pooling_mode``…)
            return getattr(self.settings, name)
        return super().__getattr__(name)

    @classmethod
    def from_pretrained(
        cls,
        base_model_name_or_path: str,
        peft_model_name_or_path: str | list[str] | None = None,
        merge_peft: bool = False,
        enable_bidirectional: bool = True,
        **kwargs: Any,
    ) -> "LLM2Vec":
        """Loads a checkpoint (folder or repo id), optionally with PEFT adapters.

        Encoding settings are resolved once (`loading.encoding_settings`), later winning: defaults, the
        checkpoint's config.json (``llm2vec``), ``llm2vec_config.json`` of the base, then each adapter's
        config.json block and ``llm2vec_config.json`` in order (as `export` layers them), and the
        keyword arguments ``pooling_mode``, ``max_length``, ``doc_max_length``, ``skip_instruction``. Other
        keyword arguments go to ``from_pretrained`` of transformers (``dtype``/``torch_dtype``,
        ``attn_implementation``…). Unlike the official loader, a list of adapters is applied in order.
        """
        encoding_args = {key: kwargs.pop(key) for key in list(kwargs) if key in ENCODING_KEYS}
        if "torch_dtype" in kwargs:
            kwargs["dtype"] = kwargs.pop("torch_dtype")
        adapters = (
            [peft_model_name_or_path] if isinstance(peft_model_name_or_path, (str, os.PathLike)) else list(peft_model_name_or_path or [])
        )
        # Only the last adapter may stay unmerged: those before it must be merged to stack the next one.
        model, tokenizer, folders = load_bidirectional(
            base_model_name_or_path,
            adapters[:-1],
            enable_bidirectional=enable_bidirectional,
            **kwargs,
        )
        if adapters:
            last = resolve_local(adapters[-1])
            model = apply_adapter(model, last, merge=merge_peft)
            folders.append(last)
            tokenizer = load_tokenizer(tokenizer_folder(folders), model)
        settings = encoding_settings(model.config, tokenizer, folders, base_model_name_or_path, **encoding_args)
        return cls(model=model, tokenizer=tokenizer, settings=settings)

    def encode(
        self,
        sentences,
        batch_size: int = 32,
        show_progress_bar: bool = True,
        convert_to_numpy: bool = False,
        convert_to_tensor: bool = False,
        device: str | torch.device | None = None,
        max_batch_tokens: int | None = None,
        packing: bool | None = None,
    ) -> torch.Tensor | np.ndarray:
        """Embeds texts or ``[instruction, text]`` pairs; returns float32 vectors, one per input.

        A forward call holds at most ``batch_size`` texts and ``max_batch_tokens`` tokens, padding included
        (default 2048: long texts come in smaller batches, short ones in full ones; raise it on a GPU). Short
        texts share rows with a block-diagonal mask (``packing``, on where exact; ``packing=False`` pads each
        text instead); the vectors are the same either way.
        """
        if device is not None:
            self.model.to(device)
        vectors = encode_with(
            self.model, self.tokenizer, sentences, self.settings, batch_size, show_progress_bar, device,
            max_batch_tokens=max_batch_tokens, packing=packing,
        )
        if convert_to_numpy and not convert_to_tensor:
            return vectors.numpy()
        return vectors

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pools one tokenized batch (from ``tokenize``); kept for training code that needs gradients."""
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return pool(hidden, batch, self.settings.pooling_mode, self.tokenizer.bos_token_id)

    def tokenize(self, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
        return tokenize_inputs(self.tokenizer, pairs, self.settings)

    def compile_for_inference(self, **torch_compile_kwargs) -> "LLM2Vec":
        """Compiles the encoder in place for faster ``encode`` (see `compile_for_inference`); returns self."""
        compile_for_inference(self.model, **torch_compile_kwargs)
        return self

    def save(self, output_path: str, prompts: dict[str, str] | None = None, overwrite: bool = False) -> str:
        """Writes a complete llm2vec-hf checkpoint (docs/architecture.md, "Checkpoint layout"): loads in
        transformers, sentence-transformers and the official llm2vec. Adapters still attached are merged first."""
        model = self.model.merge_and_unload() if hasattr(self.model, "merge_and_unload") else self.model
        return write_checkpoint(model, self.tokenizer, self.settings, output_path, prompts=prompts, overwrite=overwrite)
