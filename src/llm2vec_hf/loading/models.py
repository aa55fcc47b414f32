"""Loading a decoder checkpoint as a bidirectional encoder, with PEFT LoRA adapters merged in order.

Every path (``LLM2Vec.from_pretrained``, ``export``, training) loads through here, so bad input fails the same
way everywhere: a missing folder, a corrupt weight file, an unsupported architecture or an adapter made for
another base each raise an error that names the problem.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterable

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig

from ..errors import CheckpointError, TokenizerError, name_some, one_line
from ..modeling.encoding_settings import (
    EncodingSettings,
    check_unambiguous_weights,
    read_encoding_settings,
    reference_name,
    resolve_encoding,
)
from ..modeling.modeling_llm2vec import TEXT_TOWERS, UNAVAILABLE_FAMILIES, family_for
from ..modeling.tokenization_llm2vec import TokenizerEmbeddingError, check_tokenizer_fits, load_reference_tokenizer
from .adapters import apply_adapter
from .json_files import read_json
from .paths import refuse_pickle_only, resolve_local

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def text_tower(path: str):
    """The `TextTower` of a multimodal checkpoint folder whose text tower llm2vec-hf loads (Gemma 3), else None."""
    raw = read_json(os.path.join(path, "config.json"))
    return TEXT_TOWERS.get(raw.get("model_type")) if isinstance(raw, dict) else None


def load_config(name_or_path: str, **hf_kwargs) -> PretrainedConfig:
    """The checkpoint's config; for a multimodal checkpoint with a text tower (`text_tower`), the tower's."""
    path = resolve_local(name_or_path)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise CheckpointError(f"{name_or_path} has no config.json: it is not a transformers model folder")
    try:
        config = AutoConfig.from_pretrained(path, **hf_kwargs)
        return config.text_config if text_tower(path) is not None else config
    except (ValueError, KeyError, json.JSONDecodeError) as error:
        raw = None if isinstance(error, json.JSONDecodeError) else read_json(os.path.join(path, "config.json"))
        model_type = raw.get("model_type") if isinstance(raw, dict) else None
        if model_type in UNAVAILABLE_FAMILIES:  # a family newer than this transformers: say which version it needs
            raise CheckpointError(f"{name_or_path}: architecture {UNAVAILABLE_FAMILIES[model_type]}") from None
        raise CheckpointError(f"Could not read the config of {name_or_path}: {one_line(error)}") from None


def encoding_settings(
    config, tokenizer, folders: Iterable[str | None], name_or_path: str | None = None, **explicit: Any
) -> EncodingSettings:
    """Encoding settings of a loaded checkpoint, resolved once (`resolve_encoding`; docs/architecture.md,
    "Encoding settings"), by the one rule of export, ``LLM2Vec.from_pretrained`` and the serving poolers, later
    sources winning: defaults, the model's ``config`` (config.json's ``llm2vec`` block), what each
    of ``folders`` stores after the base (the base's ``llm2vec_config.json``, then each adapter's config.json
    block and ``llm2vec_config.json``: `read_encoding_settings`, as the official loader reads that file), then
    ``explicit`` values that are not None. ``name_or_path`` is what the user loaded (folder or hub id): the
    reference chooses the `eos_token` text by that name (`reference_name`)."""
    stored = []
    for index, folder in enumerate(folders):
        if folder:
            try:
                stored.extend(read_encoding_settings(folder, with_config=index > 0))
            except ValueError as error:
                raise CheckpointError(one_line(error)) from None
    name = reference_name(name_or_path) if name_or_path is not None else None
    return resolve_encoding(config, tokenizer, name_or_path=name, stored=stored, **explicit)


def check_checkpoint_files(path: str) -> None:
    """Refuses, before anything loads, a folder that loaders would read in different ways: weights both single and
    sharded, or an llm2vec_config.json that disagrees with config.json's settings."""
    try:
        check_unambiguous_weights(path)
        read_encoding_settings(path)
    except ValueError as error:
        raise CheckpointError(one_line(error)) from None


def load_bidirectional(
    name_or_path: str,
    adapters: Iterable[str] = (),
    *,
    for_mntp: bool = False,
    enable_bidirectional: bool = True,
    dtype: str | torch.dtype | None = None,
    merge: bool = True,
    config_overrides: dict[str, Any] | None = None,
    **hf_kwargs,
):
    """Loads ``name_or_path`` as a bidirectional encoder (or MNTP model) and applies ``adapters`` in order.

    Returns ``(model, tokenizer, folders)`` where ``folders`` are the local folders of base and adapters.
    With ``enable_bidirectional=False`` the plain causal ``AutoModel`` is loaded (for baselines).
    ``config_overrides`` are set on the config before the model is built (a recipe's router settings).
    """
    path = resolve_local(name_or_path)
    config = load_config(path)
    family = family_for(config)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"Unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    if dtype is not None:
        hf_kwargs["dtype"] = dtype
    refuse_pickle_only(path)
    check_checkpoint_files(path)
    if enable_bidirectional:
        model_class = family.mntp if for_mntp else family.model
        config = family.config.from_pretrained(path)
    else:
        # An exported checkpoint says is_causal: false, which the native class honours too: switch it back on.
        model_class = AutoModel
        config.is_causal = True
        config.use_bidirectional_attention = False
        if hasattr(config, "auto_map"):
            del config.auto_map  # the native class, not our remote code
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    tower = text_tower(path)
    if tower is not None:  # the text tower's weights only (the config class reads its `text_config` itself)
        hf_kwargs["key_mapping"] = tower.key_mapping
    try:
        # Mismatched shapes are reported (and refused below, naming the tensors) instead of raised unnamed.
        hf_kwargs.setdefault("ignore_mismatched_sizes", True)
        model, info = model_class.from_pretrained(path, config=config, output_loading_info=True, **hf_kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError, KeyError) as error:
        raise CheckpointError(f"Could not load the weights of {name_or_path}: {one_line(error)}") from None
    if tower is not None:
        info["unexpected_keys"] = [k for k in info.get("unexpected_keys") or () if tower.text_name(k) is not None]
    check_loading_info(name_or_path, info)
    if hasattr(model, "generation_config"):
        model.generation_config = None
    folders = [path]
    for adapter in adapters:
        adapter_path = resolve_local(adapter)
        model = apply_adapter(model, adapter_path, merge=merge)
        folders.append(adapter_path)
    return model, load_tokenizer(tokenizer_folder(folders), model), folders


def check_loading_info(name_or_path: str, info: dict[str, Any]) -> None:
    """Refuses a load that left parameters randomly initialised or dropped weights of the checkpoint.

    transformers only logs its "MISSING"/"UNEXPECTED" report; a model with one layer at random init still
    encodes, wrongly, so any missing, unexpected or mismatched tensor is an error naming them. Weights that are
    legitimately absent (tied ``lm_head``, a causal-LM head the encoder does not use) never appear in these
    lists: transformers filters them through the class's tied-weights and ignore-on-load rules.
    """
    missing, unexpected = set(info.get("missing_keys") or ()), set(info.get("unexpected_keys") or ())
    # the causal-LM head of a decoder checkpoint, which an encoder (ours or the native AutoModel) does not use
    unexpected = {key for key in unexpected if not key.startswith("lm_head.")}
    mismatched = [
        f"{m[0]} {list(m[1])} (config: {list(m[2])})" if isinstance(m, (tuple, list)) and len(m) == 3 else str(m)
        for m in info.get("mismatched_keys") or ()
    ]
    if missing:
        raise CheckpointError(
            f"{name_or_path} is incomplete: {len(missing)} tensors the config asks for are not in its weights "
            f"({name_some(missing)}); they would be randomly initialised"
        )
    if mismatched:
        raise CheckpointError(f"{name_or_path}: tensors whose shape does not match the config: {name_some(mismatched)}")
    if unexpected:
        raise CheckpointError(
            f"{name_or_path} does not match its config: {len(unexpected)} tensors of its weights fit no parameter "
            f"({name_some(unexpected)})"
        )


def tokenizer_folder(folders: list[str]) -> str:
    """The first adapter folder that carries a tokenizer, else the base's.

    Training may change the tokenizer (the official MNTP run makes "_" its mask token, a special token), and
    the official models are used with the adapter's tokenizer, so an adapter's tokenizer wins over the base's.
    With two stages it is the first adapter's: the official two-stage load,
    ``LLM2Vec.from_pretrained(MNTP_REPO, peft_model_name_or_path=SUPERVISED_REPO)``, tokenizes with the MNTP
    repo's tokenizer, and the later adapter's own copy may differ (tests/loading/test_migration.py checks parity).
    """
    with_tokenizer = [f for f in folders[1:] if os.path.isfile(os.path.join(f, "tokenizer_config.json"))]
    return with_tokenizer[0] if with_tokenizer else folders[0]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


def load_tokenizer(path: str, model=None):
    """The tokenizer of ``path`` as llm2vec 0.2.3 uses it (`load_reference_tokenizer`: tokenizer.json as written,
    pad = EOS, left padding), checked against ``model``'s embedding when given."""
    if os.path.isdir(path) and not any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES):
        raise CheckpointError(f"{path} has no tokenizer files (tokenizer.json or tokenizer.model)")
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    try:
        tokenizer = load_reference_tokenizer(path, model_type)
        if tokenizer is None:  # no tokenizer.json (SentencePiece files only): transformers converts them
            tokenizer = AutoTokenizer.from_pretrained(path)
            if tokenizer.pad_token is None and tokenizer.eos_token is not None:
                tokenizer.pad_token = tokenizer.eos_token
            tokenizer.padding_side = "left"
    except (OSError, ValueError, ImportError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"Could not load the tokenizer of {path}: {one_line(error)}") from None
    if model is not None:
        try:
            check_tokenizer_fits(tokenizer, model.get_input_embeddings().num_embeddings)
        except TokenizerEmbeddingError as error:
            raise TokenizerError(f"{path}: {error}") from None
    return tokenizer


