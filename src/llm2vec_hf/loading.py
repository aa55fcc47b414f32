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

from .errors import AdapterMismatchError, CheckpointError, TokenizerError, one_line
from .json_files import read_json
from .modeling.modeling_llm2vec import (
    TokenizerEmbeddingError,
    check_tokenizer_fits,
    check_unambiguous_weights,
    family_for,
    load_reference_tokenizer,
    read_encoding_settings,
    reference_name,
    resolve_encoding,
)

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def looks_like_local_path(name: str) -> bool:
    """A name that can only mean a local folder: not a repo id, an explicit path (./x, /x, ~/x), or ORG/NAME
    where a local folder ORG exists (``runs/model`` when ``runs/`` is here)."""
    if name.startswith((".", "/", "~")) or os.path.isabs(name) or os.sep != "/" and os.sep in name:
        return True
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is None:
        return True
    return "/" in name and os.path.isdir(name.split("/", 1)[0])


def refuse_missing_local(name_or_path: str | os.PathLike) -> None:
    """Raises the "No such model folder" error for a path that does not exist, instead of letting a loader try
    the Hub and blame the network."""
    name = os.fspath(name_or_path)
    if not os.path.isdir(name) and looks_like_local_path(name):
        what = "is a file, not a model folder" if os.path.exists(name) else "does not exist"
        raise CheckpointError(f"No such model folder: {name} ({what})")


def resolve_local(name_or_path: str | os.PathLike) -> str:
    """Returns a local folder for a folder or a Hub repo id (from the cache or the Hub)."""
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        return name
    refuse_missing_local(name)
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.py", "*.model", "*.txt", "*.md"])
    except Exception as error:  # huggingface_hub raises a family of errors; all mean "not available"
        raise CheckpointError(
            f"Could not find {name!r} as a local folder or a Hub repo id ({type(error).__name__}: {error})"
        ) from None


def text_tower(path: str):
    """The `TextTower` of a multimodal checkpoint folder whose text tower llm2vec-hf loads (Gemma 3), else None."""
    from .modeling.modeling_llm2vec import TEXT_TOWERS

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
        from .modeling.modeling_llm2vec import UNAVAILABLE_FAMILIES

        raw = None if isinstance(error, json.JSONDecodeError) else read_json(os.path.join(path, "config.json"))
        model_type = raw.get("model_type") if isinstance(raw, dict) else None
        if model_type in UNAVAILABLE_FAMILIES:  # a family newer than this transformers: say which version it needs
            raise CheckpointError(f"{name_or_path}: architecture {UNAVAILABLE_FAMILIES[model_type]}") from None
        raise CheckpointError(f"Could not read the config of {name_or_path}: {one_line(error)}") from None


def encoding_settings(
    model, tokenizer, folders: Iterable[str | None], name_or_path: str | None = None, **explicit: Any
) -> dict[str, Any]:
    """Encoding settings of a loaded checkpoint, resolved once (`resolve_encoding`; docs/architecture.md,
    "Encoding settings"), later sources winning: defaults, the model's config.json ``llm2vec`` block, what each
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
    return resolve_encoding(getattr(model, "config", None), tokenizer, name_or_path=name, stored=stored, **explicit)


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


def _name_some(keys: Iterable[str], count: int = 3) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:count])
    return shown + (f" and {len(keys) - count} more" if len(keys) > count else "")


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
            f"({_name_some(missing)}); they would be randomly initialised"
        )
    if mismatched:
        raise CheckpointError(f"{name_or_path}: tensors whose shape does not match the config: {_name_some(mismatched)}")
    if unexpected:
        raise CheckpointError(
            f"{name_or_path} does not match its config: {len(unexpected)} tensors of its weights fit no parameter "
            f"({_name_some(unexpected)})"
        )


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


def _adapter_keys(peft_model, adapter_name: str = "default") -> set[str]:
    """State-dict keys of the adapter's own tensors (PEFT puts the adapter name in each of them)."""
    marker = f".{adapter_name}."
    return {k for k in peft_model.state_dict() if marker in k or k.endswith(f".{adapter_name}")}


def _as_peft_keys(weights: dict[str, torch.Tensor], adapter_name: str = "default") -> dict[str, str]:
    """{key in the PEFT model's state dict: key in the adapter file}, as set_peft_model_state_dict maps them."""
    mapped = {}
    for key in weights:
        for part in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"):
            if f".{part}." in key or key.endswith(f".{part}"):
                head, _, tail = key.partition(f".{part}")
                mapped[f"{head}.{part}.{adapter_name}{tail}"] = key
                break
    return mapped


def _family_of_class(class_name: str) -> str | None:
    """The model_type a class name belongs to (``BidirectionalLlamaModel``, ``LlamaBiForMNTP``,
    ``Qwen2ForCausalLM``…): the longest native prefix among the supported families."""
    from .modeling.modeling_llm2vec import FAMILIES

    name = class_name.removeprefix("Bidirectional")
    prefixes = {}
    for model_type, family in FAMILIES.items():
        native = family.native_model_name
        prefixes[native[: -len("Model")] if native.endswith("Model") else native] = model_type
    matches = [prefix for prefix in prefixes if name.startswith(prefix)]
    return prefixes[max(matches, key=len)] if matches else None


def check_adapter_family(adapter_path: str, model) -> None:
    """Refuses an adapter trained on a model of another family than ``model``.

    Shape checks alone miss this when two bases have the same sizes (a Qwen2 adapter on a Llama of the same
    width has the same module names and shapes). PEFT records the class it was trained on in ``auto_mapping``,
    and ``base_model_name_or_path`` names the base; either one of another family is refused.
    """
    base_type = getattr(getattr(model, "config", None), "model_type", None)
    if base_type is None:
        return
    try:
        adapter_config = read_json(os.path.join(adapter_path, "adapter_config.json"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"Could not read {adapter_path}/adapter_config.json: {one_line(error)}") from None
    if not isinstance(adapter_config, dict):
        raise CheckpointError(f"{adapter_path}/adapter_config.json is not a JSON object")
    trained_on = str((adapter_config.get("auto_mapping") or {}).get("base_model_class") or "")
    family = _family_of_class(trained_on) if trained_on else None
    what = f"a {trained_on}"
    base_name = adapter_config.get("base_model_name_or_path")
    if family is None and isinstance(base_name, str) and os.path.isfile(os.path.join(base_name, "config.json")):
        try:
            family, what = read_json(os.path.join(base_name, "config.json")).get("model_type"), f"{base_name}"
        except (OSError, ValueError):
            family = None
    if family and family != base_type:
        raise AdapterMismatchError(
            f"Adapter {adapter_path} was made for another base model: it was trained on {what} ({family}), "
            f"but the base is a {base_type} model"
        )


def adapter_shape_mismatches(peft_model, weights: dict[str, torch.Tensor]) -> list[tuple[str, list, list]]:
    """``(key, stored shape, expected shape)`` of each adapter tensor in ``weights`` that does not fit ``peft_model``:
    PEFT would raise a multi-line size error (or, for some layers, load nothing) where one line naming a tensor
    says which base or ``lora_r`` the adapter was made for."""
    shapes = {k: list(v.shape) for k, v in peft_model.state_dict().items()}
    return [(key, list(weights[source].shape), shapes[key]) for key, source in _as_peft_keys(weights).items()
            if key in shapes and list(weights[source].shape) != shapes[key]]


def apply_adapter(model, adapter_path: str, merge: bool = True):
    """Applies a PEFT LoRA adapter to ``model`` (an encoder) and merges it; refuses adapters that do not fit."""
    peft_model = attach_adapter(model, adapter_path)
    return peft_model.merge_and_unload() if merge else peft_model


def attach_adapter(model, adapter_path: str, low_cpu_mem_usage: bool = False):
    """Wraps ``model`` in a PEFT model holding the LoRA adapter of ``adapter_path``; refuses adapters that do not
    fit. ``low_cpu_mem_usage``: PEFT creates the adapter's layers on the meta device and assigns the stored
    tensors to them (for a skeleton ``model`` on the meta device: `merged_weights`).

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
        raise CheckpointError(f"Could not read the adapter in {adapter_path}: {one_line(error)}") from None
    check_adapter_family(adapter_path, model)
    peft_config.inference_mode = True
    # The task type only picks PEFT's wrapper class (CAUSAL_LM's needs a generation head, which an encoder has
    # not); the LoRA tensors and their merge are the same under the plain PeftModel.
    peft_config.task_type = None
    try:
        peft_model = get_peft_model(model, peft_config, low_cpu_mem_usage=low_cpu_mem_usage)
    except ValueError as error:
        raise AdapterMismatchError(f"Adapter {adapter_path} does not fit this base model: {one_line(error)}") from None
    expected = _adapter_keys(peft_model)
    wrong = adapter_shape_mismatches(peft_model, weights)
    if wrong:
        key, stored, needed = wrong[0]
        raise AdapterMismatchError(
            f"Adapter {adapter_path} was made for another base model: {len(wrong)} of its tensors have the wrong "
            f"shape (e.g. {key}: {stored}, this base needs {needed})"
        )
    try:
        result = set_peft_model_state_dict(peft_model, weights, low_cpu_mem_usage=low_cpu_mem_usage)
    except RuntimeError as error:
        raise AdapterMismatchError(f"Adapter {adapter_path} was made for another base model: {one_line(error)}") from None
    if result.unexpected_keys:
        raise AdapterMismatchError(
            f"Adapter {adapter_path} was made for another base model: {len(result.unexpected_keys)} of its "
            f"weights match no module (e.g. {result.unexpected_keys[0]})"
        )
    missing = sorted(set(result.missing_keys) & expected)
    if missing:
        raise CheckpointError(
            f"Adapter {adapter_path} is incomplete: {len(missing)} of the {len(expected)} tensors its config asks "
            f"for are not in {ADAPTER_WEIGHTS} ({_name_some(missing)}); they would be randomly initialised"
        )
    return peft_model
