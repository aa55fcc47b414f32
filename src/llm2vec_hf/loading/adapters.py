"""PEFT LoRA adapters: one check that an adapter fits its base, and one loader of its weights."""

from __future__ import annotations

import os
import re
import warnings

import torch
from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file

from ..errors import AdapterMismatchError, CheckpointError, name_some, one_line
from ..modeling.modeling_llm2vec import FAMILIES
from .json_files import read_json
from .paths import PICKLE_SUFFIXES

ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: safetensors' dtype names (the format's header), for the dtypes a checkpoint holds.
SAFETENSORS_DTYPES = {
    torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
#: where a ``…ForCausalLM``/``…ForMNTP`` holds the encoder's modules: an adapter trained on one names every module
#: (in its weights and in its config) this much deeper than the encoder does
TRAINED_PREFIX = "model."


def trained_on_wrapper(weights: dict[str, torch.Tensor]) -> bool:
    """Whether the adapter ``weights`` were trained on a model that holds the encoder under `TRAINED_PREFIX`."""
    return any(key.startswith("base_model.model." + TRAINED_PREFIX) for key in weights)


def normalize_adapter_keys(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adapters trained on a ``…ForCausalLM``/``…ForMNTP`` carry one more ``model.`` than on the bare encoder."""
    if trained_on_wrapper(weights):
        return {key.replace("base_model.model." + TRAINED_PREFIX, "base_model.model.", 1): value
                for key, value in weights.items()}
    return weights


def encoder_config(peft_config, model, prefix: str = TRAINED_PREFIX):
    """``peft_config`` (changed in place and returned) of an adapter trained on a model that held ``model`` under
    ``prefix`` (a ``…ForCausalLM``), naming ``model``'s own modules and parameters: exactly those PEFT chose in
    training, with the ranks and alphas it gave them.

    PEFT chooses by module path, and on the encoder every path is ``prefix`` shorter. A config that names full
    paths then attaches nothing, or only part, or another rank or scaling: ``target_modules="all-linear"`` is
    saved as the full paths PEFT found (it shortens them to leaf names only from 20 modules on, so a small model
    keeps them), and ``target_modules``, ``target_parameters``,
    ``exclude_modules``, ``rank_pattern`` and ``alpha_pattern`` may name full paths. So PEFT's own matchers
    (``check_target_module_exists``, ``get_pattern_key``; ``target_parameters`` by the rule of PEFT's
    ``_inject_parameters``) decide each of ``model``'s modules under the path it had in training, and the
    config names the chosen ones by their full paths (which no other module's path ends with: the encoder's
    paths all start at its own top-level modules), the patterns by regular expressions anchored at the start.
    A set of paths, not one regular expression: PEFT (0.22) turns a ``target_modules`` string into the leaf
    names it matches for mixture-of-experts families, which would widen it to every layer.

    ``modules_to_save`` and ``trainable_token_indices`` are left as they are: weights they fail to place are
    refused by `load_adapter_state`, never dropped."""
    from peft.tuners.tuners_utils import check_target_module_exists
    from peft.utils.other import get_pattern_key

    targets = peft_config.target_modules
    chosen = []
    if targets is not None and not (isinstance(targets, str) and targets.lower() == "all-linear"):
        # falsy for an unmatched or excluded module (PEFT's _ExcludedModule is falsy)
        chosen = [name for name, _ in model.named_modules()
                  if name and check_target_module_exists(peft_config, prefix + name)]
        if chosen:
            peft_config.target_modules = set(chosen)
            # already applied by check_target_module_exists, on the training paths
            peft_config.exclude_modules = peft_config.layers_to_transform = peft_config.layers_pattern = None
    parameters = list(getattr(peft_config, "target_parameters", None) or ())
    if parameters:
        found = [f"{owner}.{name}" for owner, module in model.named_modules() if owner
                 for name, _ in module.named_parameters(recurse=False)
                 if any(f"{prefix}{owner}.{name}" == p or f"{prefix}{owner}.{name}".endswith(f".{p}")
                        for p in parameters)]
        if found:
            peft_config.target_parameters = found
            chosen += found
    for field_name in ("rank_pattern", "alpha_pattern"):
        patterns = getattr(peft_config, field_name, None) or {}
        if patterns:
            # get_pattern_key returns the key it was given where no pattern matches
            picked = {name: get_pattern_key(list(patterns), prefix + name) for name in chosen}
            # ``(?<!\.)``: PEFT matches a pattern after any ``….`` prefix; this one only at the start of the path
            setattr(peft_config, field_name, {rf"(?<!\.){re.escape(name)}": patterns[key]
                                              for name, key in picked.items() if key in patterns})
    return peft_config


def adapter_keys(peft_model, adapter_name: str = "default") -> set[str]:
    """State-dict keys of the adapter's own tensors (PEFT puts the adapter name in each of them)."""
    marker = f".{adapter_name}."
    return {k for k in peft_model.state_dict() if marker in k or k.endswith(f".{adapter_name}")}

def as_peft_keys(weights: dict[str, torch.Tensor], adapter_name: str = "default") -> dict[str, str]:
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
    name = class_name.removeprefix("Bidirectional")
    prefixes = {}
    for model_type, family in FAMILIES.items():
        native = family.native_model_name
        prefixes[native[: -len("Model")] if native.endswith("Model") else native] = model_type
    matches = [prefix for prefix in prefixes if name.startswith(prefix)]
    return prefixes[max(matches, key=len)] if matches else None

def check_adapter_family(adapter_path: str, base_type: str | None, base: str = "the base") -> None:
    """Refuses an adapter trained on a model of another family than the base's (``base_type``): the one check,
    run by `attach_adapter` on a loaded model and by training before its base loads. A folder without
    adapter_config.json passes here; `attach_adapter` names that problem.

    Shape checks alone miss this when two bases have the same sizes (a Qwen2 adapter on a Llama of the same
    width has the same module names and shapes). PEFT records the class it was trained on in ``auto_mapping``,
    and ``base_model_name_or_path`` names the base; either one of another family is refused.
    """
    if base_type is None or not os.path.isfile(os.path.join(adapter_path, "adapter_config.json")):
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
            f"but {base} is a {base_type} model"
        )

def adapter_shape_mismatches(peft_model, weights: dict[str, torch.Tensor]) -> list[tuple[str, list, list]]:
    """``(key, stored shape, expected shape)`` of each adapter tensor in ``weights`` that does not fit ``peft_model``:
    PEFT would raise a multi-line size error (or, for some layers, load nothing) where one line naming a tensor
    says which base or ``lora_r`` the adapter was made for."""
    shapes = {k: list(v.shape) for k, v in peft_model.state_dict().items()}
    return [(key, list(weights[source].shape), shapes[key]) for key, source in as_peft_keys(weights).items()
            if key in shapes and list(weights[source].shape) != shapes[key]]


def load_adapter_state(peft_model, weights: dict[str, torch.Tensor],
                       low_cpu_mem_usage: bool = False) -> tuple[str, str] | None:
    """Loads ``weights`` into ``peft_model``'s adapter, as PEFT does, and finds what PEFT only warns about or
    reports tensor by tensor: the one loader of adapter weights, for `apply_adapter` and for resuming training.

    Returns None when every tensor fits and every adapter tensor was given, else ``(kind, detail)``: ``"shape"``
    (tensors of another shape: another base or another ``lora_r``; nothing is loaded), ``"unexpected"`` (weights
    that match no module) or ``"missing"`` (adapter tensors the weights lack); the caller says what it means.
    """
    wrong = adapter_shape_mismatches(peft_model, weights)
    if wrong:
        key, stored, needed = wrong[0]
        return "shape", (f"{len(wrong)} of its tensors have another shape (e.g. {key}: {stored}, this model's is "
                         f"{needed})")
    try:
        result = set_peft_model_state_dict(peft_model, weights, low_cpu_mem_usage=low_cpu_mem_usage)
    except RuntimeError as error:
        return "shape", one_line(error)
    if result.unexpected_keys:
        return "unexpected", (f"{len(result.unexpected_keys)} of its weights match no module (e.g. "
                              f"{result.unexpected_keys[0]})")
    expected = adapter_keys(peft_model)
    missing = sorted(set(result.missing_keys) & expected)
    if missing:
        return "missing", (f"{len(missing)} of the {len(expected)} tensors its config asks for are missing "
                           f"({name_some(missing)})")
    return None


def apply_adapter(model, adapter_path: str, merge: bool = True):
    """Applies a PEFT LoRA adapter to ``model`` (an encoder) and merges it; refuses adapters that do not fit."""
    peft_model = attach_adapter(model, adapter_path)
    return peft_model.merge_and_unload() if merge else peft_model


def stored_layout(path: str) -> dict[str, torch.Tensor]:
    """{name: meta tensor of its stored shape and dtype} of a safetensors file, from its header."""
    dtypes = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}
    with safe_open(path, "pt") as handle:
        layout = {}
        for key in handle.keys():
            stored = handle.get_slice(key)
            if stored.get_dtype() not in dtypes:
                raise ValueError(f"{key} is stored as {stored.get_dtype()}, not a dtype of LoRA weights")
            layout[key] = torch.empty(stored.get_shape(), dtype=dtypes[stored.get_dtype()], device="meta")
    return layout


def attach_adapter(model, adapter_path: str, low_cpu_mem_usage: bool = False):
    """Wraps ``model`` in a PEFT model holding the LoRA adapter of ``adapter_path``; refuses adapters that do not
    fit. ``low_cpu_mem_usage``, for a skeleton ``model`` on the meta device (`checkpoint.merged_weights`): PEFT
    creates the adapter's layers on the meta device and the stored tensors are checked and placed by their shapes
    and dtypes alone, without reading their values (a mixture of experts' adapter holds gigabytes; the merge reads
    each tensor when it needs it).

    We load the state dict ourselves instead of ``PeftModel.from_pretrained`` because PEFT only warns about
    keys that match nothing, which would leave an adapter for another base silently unapplied.
    """
    weights_file = os.path.join(adapter_path, ADAPTER_WEIGHTS)
    if not os.path.isfile(os.path.join(adapter_path, "adapter_config.json")):
        raise CheckpointError(f"{adapter_path} is not a PEFT adapter folder (no adapter_config.json)")
    if not os.path.isfile(weights_file):
        pickled = [f for f in os.listdir(adapter_path) if f.endswith(PICKLE_SUFFIXES)]
        hint = " (it holds only pickle files, which llm2vec-hf never loads)" if pickled else ""
        raise CheckpointError(f"{adapter_path} has no {ADAPTER_WEIGHTS}{hint}")
    try:
        peft_config = PeftConfig.from_pretrained(adapter_path)
        weights = stored_layout(weights_file) if low_cpu_mem_usage else load_file(weights_file)
    except Exception as error:
        raise CheckpointError(f"Could not read the adapter in {adapter_path}: {one_line(error)}") from None
    check_adapter_family(adapter_path, getattr(getattr(model, "config", None), "model_type", None))
    rewritten = trained_on_wrapper(weights)
    if rewritten:
        # its config names modules by the paths they had in training, one level deeper than the encoder's
        peft_config = encoder_config(peft_config, model)
    weights = normalize_adapter_keys(weights)
    head = sorted(key for key in weights if key.startswith("base_model.model.lm_head."))
    if head:
        # merging the rest would give an encoder other than the one trained (and the MNTP head is not an encoder's)
        raise AdapterMismatchError(
            f"Adapter {adapter_path} also adapts the language-model head (lm_head) of the model it was trained on, "
            f"which the encoder does not have ({name_some(head)}); it cannot be applied in part: train it without "
            "lm_head in target_modules or modules_to_save")
    peft_config.inference_mode = True
    # The task type only picks PEFT's wrapper class (CAUSAL_LM's needs a generation head, which an encoder has
    # not); the LoRA tensors and their merge are the same under the plain PeftModel.
    peft_config.task_type = None
    try:
        with warnings.catch_warnings():
            if rewritten:
                # PEFT checks the patterns against the modules it wrapped, not the parameters; every rewritten key
                # names a module or parameter that was chosen, so the warning would only name parameter keys
                warnings.filterwarnings("ignore", message=r"The following (rank|alpha)_pattern keys did not match")
            peft_model = get_peft_model(model, peft_config, low_cpu_mem_usage=low_cpu_mem_usage)
    except ValueError as error:
        raise AdapterMismatchError(f"Adapter {adapter_path} does not fit this base model: {one_line(error)}") from None
    problem = load_adapter_state(peft_model, weights, low_cpu_mem_usage=low_cpu_mem_usage)
    if problem is not None:
        kind, detail = problem
        if kind == "missing":
            raise CheckpointError(f"Adapter {adapter_path} is incomplete: {detail} from {ADAPTER_WEIGHTS}; they would "
                                  "be randomly initialised")
        raise AdapterMismatchError(f"Adapter {adapter_path} was made for another base model: {detail}")
    return peft_model
