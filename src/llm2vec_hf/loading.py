"""Loading a decoder checkpoint as a bidirectional encoder, with PEFT LoRA adapters merged in order.

Every path (``LLM2Vec.from_pretrained``, ``export``, training) loads through here, so bad input fails the same
way everywhere: a missing folder, a corrupt weight file, an unsupported architecture or an adapter made for
another base each raise an error that names the problem.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Iterable

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig

from .errors import AdapterMismatchError, CheckpointError, TokenizerError
from .modeling.modeling_llm2vec import (
    DEFAULT_ENCODING,
    TokenizerEmbeddingError,
    check_tokenizer_fits,
    family_for,
    load_reference_tokenizer,
    reference_name,
    resolve_encoding,
)

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def resolve_local(name_or_path: str | os.PathLike) -> str:
    """Returns a local folder for a folder or a Hub repo id (from the cache or the Hub)."""
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        return name
    looks_like_repo_id = re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is not None and not name.startswith((".", "/"))
    if not looks_like_repo_id:
        raise CheckpointError(f"No such model folder: {name}")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.py", "*.model", "*.txt", "*.md"])
    except Exception as error:  # huggingface_hub raises a family of errors; all mean "not available"
        raise CheckpointError(
            f"Could not find {name!r} as a local folder or a Hub repo id ({type(error).__name__}: {error})"
        ) from None


def load_config(name_or_path: str, **hf_kwargs) -> PretrainedConfig:
    path = resolve_local(name_or_path)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise CheckpointError(f"{name_or_path} has no config.json: it is not a transformers model folder")
    try:
        return AutoConfig.from_pretrained(path, **hf_kwargs)
    except (ValueError, KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(f"Could not read the config of {name_or_path}: {error}") from None


def read_llm2vec_config(*folders: str | None) -> dict[str, Any]:
    """Merges ``llm2vec_config.json`` of the given folders (later wins), as the official loader reads them."""
    settings: dict[str, Any] = {}
    for folder in folders:
        if folder and os.path.isfile(os.path.join(folder, "llm2vec_config.json")):
            with open(os.path.join(folder, "llm2vec_config.json")) as handle:
                settings.update(json.load(handle))
    return settings


def encoding_settings(
    model, tokenizer, folders: Iterable[str | None], name_or_path: str | None = None, **explicit: Any
) -> dict[str, Any]:
    """Encoding settings of a loaded checkpoint, later sources winning: defaults, config.json's ``llm2vec``,
    ``llm2vec_config.json`` of ``folders`` in order (as the official loader reads it), then ``explicit`` values
    that are not None. ``name_or_path`` is what the user loaded (folder or hub id): the reference chooses the
    `eos_token` text by that name (`reference_name`)."""
    config = getattr(model, "config", None)
    settings = resolve_encoding(config)
    settings.update({k: v for k, v in read_llm2vec_config(*folders).items() if k in DEFAULT_ENCODING})
    settings.update({k: v for k, v in explicit.items() if v is not None})
    name = reference_name(name_or_path) if name_or_path is not None else None
    return resolve_encoding(config, tokenizer, name_or_path=name, **settings)


def load_bidirectional(
    name_or_path: str,
    adapters: Iterable[str] = (),
    *,
    for_mntp: bool = False,
    enable_bidirectional: bool = True,
    dtype: str | torch.dtype | None = None,
    merge: bool = True,
    **hf_kwargs,
):
    """Loads ``name_or_path`` as a bidirectional encoder (or MNTP model) and applies ``adapters`` in order.

    Returns ``(model, tokenizer, folders)`` where ``folders`` are the local folders of base and adapters.
    With ``enable_bidirectional=False`` the plain causal ``AutoModel`` is loaded (for baselines).
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
    try:
        model = model_class.from_pretrained(path, config=config, **hf_kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise CheckpointError(f"Could not load the weights of {name_or_path}: {error}") from None
    if hasattr(model, "generation_config"):
        model.generation_config = None
    folders = [path]
    for adapter in adapters:
        adapter_path = resolve_local(adapter)
        model = apply_adapter(model, adapter_path, merge=merge)
        folders.append(adapter_path)
    return model, load_tokenizer(tokenizer_folder(folders), model), folders


def tokenizer_folder(folders: list[str]) -> str:
    """The first adapter folder that carries a tokenizer, else the base's.

    Training may change the tokenizer (the official MNTP run makes "_" its mask token, a special token), and
    the official models are used with the adapter's tokenizer, so an adapter's tokenizer wins over the base's.
    With two stages it is the first adapter's: the official two-stage load,
    ``LLM2Vec.from_pretrained(MNTP_REPO, peft_model_name_or_path=SUPERVISED_REPO)``, tokenizes with the MNTP
    repo's tokenizer, and the later adapter's own copy may differ (tests/test_migration.py checks parity).
    """
    with_tokenizer = [f for f in folders[1:] if os.path.isfile(os.path.join(f, "tokenizer_config.json"))]
    return with_tokenizer[0] if with_tokenizer else folders[0]


def load_tokenizer(path: str, model=None):
    """The tokenizer of ``path`` as llm2vec 0.2.3 uses it (`load_reference_tokenizer`: tokenizer.json as written,
    pad = EOS, left padding), checked against ``model``'s embedding when given."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    try:
        tokenizer = load_reference_tokenizer(path, model_type)
        if tokenizer is None:  # no tokenizer.json (SentencePiece files only): transformers converts them
            tokenizer = AutoTokenizer.from_pretrained(path)
            if tokenizer.pad_token is None and tokenizer.eos_token is not None:
                tokenizer.pad_token = tokenizer.eos_token
            tokenizer.padding_side = "left"
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(f"Could not load the tokenizer of {path}: {error}") from None
    if model is not None:
        try:
            check_tokenizer_fits(tokenizer, model.get_input_embeddings().num_embeddings)
        except TokenizerEmbeddingError as error:
            raise TokenizerError(f"{path}: {error}") from None
    return tokenizer


def refuse_pickle_only(path: str) -> None:
    """Safetensors only: a folder whose weights exist only as pickle files is refused, never unpickled."""
    files = os.listdir(path)
    if not any(f.endswith(".safetensors") for f in files) and any(f.endswith(PICKLE_SUFFIXES) for f in files):
        raise CheckpointError(
            f"{path} holds weights only in pickle format; llm2vec-hf loads safetensors only. "
            "Convert them with transformers (save_pretrained(safe_serialization=True)) in a trusted environment."
        )


def _normalize_adapter_keys(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adapters trained on a ``…ForCausalLM``/``…ForMNTP`` carry one more ``model.`` than on the bare encoder."""
    if any(key.startswith("base_model.model.model.") for key in weights):
        return {key.replace("base_model.model.model.", "base_model.model.", 1): value for key, value in weights.items()}
    return weights


def apply_adapter(model, adapter_path: str, merge: bool = True):
    """Applies a PEFT LoRA adapter to ``model`` (an encoder) and merges it; refuses adapters that do not fit.

    We load the state dict ourselves instead of ``PeftModel.from_pretrained`` because PEFT only warns about
    keys that match nothing, which would leave an adapter for another base silently unapplied.
    """
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    weights_file = os.path.join(adapter_path, ADAPTER_WEIGHTS)
    if not os.path.isfile(os.path.join(adapter_path, "adapter_config.json")):
        raise CheckpointError(f"{adapter_path} is not a PEFT adapter folder (no adapter_config.json)")
    if not os.path.isfile(weights_file):
        pickled = [f for f in os.listdir(adapter_path) if f.endswith(PICKLE_SUFFIXES)]
        hint = " (it holds only pickle files, which llm2vec-hf never loads)" if pickled else ""
        raise CheckpointError(f"{adapter_path} has no {ADAPTER_WEIGHTS}{hint}")
    try:
        peft_config = PeftConfig.from_pretrained(adapter_path)
        weights = _normalize_adapter_keys(load_file(weights_file))
    except Exception as error:
        raise CheckpointError(f"Could not read the adapter in {adapter_path}: {error}") from None
    peft_config.inference_mode = True
    try:
        peft_model = get_peft_model(model, peft_config)
    except ValueError as error:
        raise AdapterMismatchError(f"Adapter {adapter_path} does not fit this base model: {error}") from None
    try:
        result = set_peft_model_state_dict(peft_model, weights)
    except RuntimeError as error:
        raise AdapterMismatchError(f"Adapter {adapter_path} was made for another base model: {error}") from None
    if result.unexpected_keys:
        raise AdapterMismatchError(
            f"Adapter {adapter_path} was made for another base model: {len(result.unexpected_keys)} of its "
            f"weights match no module (e.g. {result.unexpected_keys[0]})"
        )
    if not merge:
        return peft_model
    return peft_model.merge_and_unload()
