# Copyright 2026 The llm2vec-hf authors. Apache-2.0.
"""Tokenizers as the reference loads them (transformers 4.44's AutoTokenizer on the same files).

transformers 5 picks model-specific tokenizer classes that rebuild the normalizer and pre-tokenizer from
scratch (Qwen2Tokenizer adds NFC and Qwen's split pattern, and `<|endoftext|>` as pad even when the
vocabulary lacks it), whatever tokenizer.json says; 4.44 read tokenizer.json as written. So the tokenizer
is built from tokenizer.json here, applying only what 4.44's classes added on top (docs/architecture.md,
"Tokenizers"). Part of the remote code."""

from __future__ import annotations

import json
import os
from typing import Any

import torch
import transformers
from transformers.utils import cached_file, logging

logger = logging.get_logger(__name__)

#: 4.44's class when tokenizer_config.json names none (its AutoTokenizer mapping by model_type).
_REFERENCE_TOKENIZER_CLASS = {
    "llama": "LlamaTokenizer",
    "mistral": "LlamaTokenizer",
    "gemma": "GemmaTokenizer",
    "gemma2": "GemmaTokenizer",
    "qwen2": "Qwen2Tokenizer",
    "qwen3": "Qwen2Tokenizer",
}
#: Special tokens 4.44's classes assume when the files declare none (used only if the vocabulary has them).
_REFERENCE_CLASS_DEFAULTS = {
    "LlamaTokenizer": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "CodeLlamaTokenizer": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "GemmaTokenizer": {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"},
    "Qwen2Tokenizer": {"eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
}
#: 4.44 classes whose constructor rebuilds the post-processor from add_bos_token (default True) and
#: add_eos_token (default False), ignoring the one in tokenizer.json.
_REFERENCE_REBUILDS_POST_PROCESSOR = ("LlamaTokenizer", "CodeLlamaTokenizer", "GemmaTokenizer")
_NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "cls_token", "mask_token", "pad_token")
#: tokenizer_config.json keys that decide how a tokenizer is read; `export` writes them as the source had them.
TOKENIZER_SOURCE_KEYS = ("tokenizer_class", "add_bos_token", "add_eos_token", "pad_token")
_GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")  # read tokenizer.json as written


class TokenizerEmbeddingError(ValueError):
    """A special or added token whose id lies outside the model's embedding matrix."""


def _token_text(value: Any) -> Any:
    return value.get("content") if isinstance(value, dict) else value


def load_reference_tokenizer(folder: str, model_type: str | None = None):
    """The tokenizer of ``folder`` as llm2vec 0.2.3 uses it: the ids, special tokens and BOS/EOS adding of
    transformers 4.44's ``AutoTokenizer``, with left padding, and EOS as pad token when none is declared (as the
    official scripts set it). Returns None when the folder has no tokenizer.json (SentencePiece-only folders:
    use ``AutoTokenizer``).

    Special tokens that the vocabulary lacks are not added, declared or class defaults: 4.44 would add them
    beyond the embedding, where any use fails; a pad token missing from it becomes EOS. Batches are padded
    with the EOS id whatever the pad token (`collate`), as the reference pads.
    """
    tokenizer_file = os.path.join(folder, "tokenizer.json")
    if not os.path.isfile(tokenizer_file):
        return None
    config: dict[str, Any] = {}
    declared: dict[str, Any] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # the map wins, as in 4.44
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            if name == "tokenizer_config.json":
                config = data
            declared.update({k: data[k] for k in _NAMED_SPECIAL_TOKENS + ("additional_special_tokens",) if k in data})
    class_name = config.get("tokenizer_class") or _REFERENCE_TOKENIZER_CLASS.get(model_type) or "PreTrainedTokenizerFast"
    class_name = class_name[: -len("Fast")] if class_name.endswith("Fast") else class_name
    with open(tokenizer_file, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"{tokenizer_file} is not a tokenizers file: its 'model' is not a JSON object")
    vocab = data["model"].get("vocab") or {}
    known = set(vocab) if isinstance(vocab, dict) else {entry[0] for entry in vocab}
    known |= {token["content"] for token in data.get("added_tokens", [])}
    for key, value in _REFERENCE_CLASS_DEFAULTS.get(class_name, {}).items():
        if key not in declared and value in known:
            declared[key] = value
    if _token_text(declared.get("pad_token")) not in known:
        declared.pop("pad_token", None)
    kwargs = {k: _token_text(v) for k, v in declared.items() if k != "additional_special_tokens" and v is not None}
    extra = [_token_text(t) for t in declared.get("additional_special_tokens") or []]
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=tokenizer_file,
        name_or_path=folder,
        model_max_length=config.get("model_max_length", int(1e30)),
        clean_up_tokenization_spaces=config.get("clean_up_tokenization_spaces", False),
        model_input_names=["input_ids", "attention_mask"],
        **kwargs,
    )
    if extra:
        tokenizer.add_special_tokens({"additional_special_tokens": extra})
    if class_name in _REFERENCE_REBUILDS_POST_PROCESSOR:
        tokenizer.add_bos_token = bool(config.get("add_bos_token", True)) and tokenizer.bos_token is not None
        tokenizer.add_eos_token = bool(config.get("add_eos_token", False)) and tokenizer.eos_token is not None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    # what `export` restores in the tokenizer_config.json it writes, so that 4.44 reads the export as the source
    tokenizer.llm2vec_source_config = {k: config[k] for k in TOKENIZER_SOURCE_KEYS if k in config}
    return tokenizer


def check_tokenizer_fits(tokenizer, num_embeddings: int) -> None:
    """Raises `TokenizerEmbeddingError` naming the first special or added token whose id has no embedding row,
    else the highest id of the whole vocabulary when it has none."""
    named = [(f"{k[:-6]} token", getattr(tokenizer, k, None)) for k in _NAMED_SPECIAL_TOKENS + ("pad_token",)]
    added = [("added token", token) for token in tokenizer.get_added_vocab()]
    for role, token in named + added:
        if token is None:
            continue
        token_id = tokenizer.convert_tokens_to_ids(str(token))
        if token_id is not None and token_id >= num_embeddings:
            raise TokenizerEmbeddingError(
                f"The tokenizer's {role} {str(token)!r} has id {token_id}, but the model's embedding has only "
                f"{num_embeddings} rows: the tokenizer does not belong to this model (or lacks a resize)"
            )
    # every other token too: a text that uses a high id would fail only when it is encoded
    token, token_id = max(tokenizer.get_vocab().items(), key=lambda item: item[1], default=(None, -1))
    if token_id >= num_embeddings:
        beyond = sum(1 for index in tokenizer.get_vocab().values() if index >= num_embeddings)
        raise TokenizerEmbeddingError(
            f"The tokenizer has {beyond} token(s) with ids beyond the model's embedding of {num_embeddings} rows "
            f"(e.g. {token!r}, id {token_id}): the tokenizer does not belong to this model (or lacks a resize)"
        )


def reference_tokenizer_for(tokenizer, model: torch.nn.Module):
    """The same tokenizer files loaded with `load_reference_tokenizer` (found through ``tokenizer.name_or_path``,
    cached on ``model``), in place of a tokenizer that transformers 5 loaded its own way; checked against the
    model's embedding. A tokenizer without files (built in memory) is used as it is."""
    if getattr(tokenizer, "llm2vec_source_config", None) is None:
        cache = model.__dict__.setdefault("_llm2vec_reference_tokenizers", {})
        source = str(getattr(tokenizer, "name_or_path", "") or "")
        if source not in cache:
            folder = source if os.path.isdir(source) else None
            if folder is None and source:
                try:  # a hub id: the tokenizer files are in the local cache already (no network)
                    found = cached_file(source, "tokenizer.json", local_files_only=True)
                    folder = os.path.dirname(found) if found else None
                except (OSError, ValueError):
                    folder = None
            loaded = load_reference_tokenizer(folder, getattr(model.config, "model_type", None)) if folder else None
            cache[source] = loaded
            if loaded is None and type(tokenizer).__name__ not in _GENERIC_TOKENIZER_CLASSES:
                logger.warning(
                    "Could not find the tokenizer files of %r: encoding with %s as transformers loaded it, which "
                    "may tokenize differently from llm2vec 0.2.3", source, type(tokenizer).__name__
                )
        tokenizer = cache[source] or tokenizer
    checked = model.__dict__.setdefault("_llm2vec_checked_tokenizers", set())
    if id(tokenizer) not in checked:  # sentence-transformers asks once per batch
        check_tokenizer_fits(tokenizer, model.get_input_embeddings().num_embeddings)
        checked.add(id(tokenizer))
    return tokenizer
