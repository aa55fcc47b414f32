"""Export's weights, streamed: the base is read tensor by tensor (safetensors ``safe_open``), each LoRA adapter's
update is added to the one tensor it changes, and the result is written shard by shard, tensor by tensor, so that
memory holds one tensor and the adapters at a time whatever the model's size (docs/architecture.md, "Export at
scale").

The model object export works with is a skeleton on the ``meta`` device: it carries the config, the parameter
names and shapes, and the output dtype, never weights. Adapters are checked by the same PEFT path as
``loading.apply_adapter`` (on the skeleton, with ``low_cpu_mem_usage``), so an adapter that does not fit fails
with the same error either way.

The output keeps the base's own checkpoint layout: for the families whose checkpoints transformers converts on
load (mixture-of-experts: per-expert matrices fused into one 3-D parameter), each tensor is written under its
checkpoint name and transformers converts the export on load as it converts the base; `BaseWeights` works out,
with transformers' own key renaming, which model parameter each checkpoint tensor feeds.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from safetensors import SafetensorError, safe_open

from ..errors import CheckpointError, one_line
from ..loading.adapters import (
    ADAPTER_WEIGHTS,
    SAFETENSORS_DTYPES,
    as_peft_keys,
    attach_adapter,
    normalize_adapter_keys,
    stored_layout,
)
from ..loading.models import check_loading_info, text_tower

logger = logging.getLogger(__name__)

FLOAT_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}

#: How adapters are added to a weight stored in a 16-bit dtype: ``per_adapter`` rounds to the output dtype after
#: each adapter, which is what PEFT's ``merge_and_unload`` does on a model loaded in that dtype (the official
#: path; identical weights), ``float32`` keeps the sum in float32 and rounds once. Measured in
#: docs/architecture.md, "Export at scale"; with float32 output the two are the same.
MERGE_ROUNDING = "per_adapter"


def default_max_shard_size() -> str | int:
    """transformers' own default for ``save_pretrained`` (read from its signature, so it follows transformers)."""
    import inspect

    from transformers import PreTrainedModel

    return inspect.signature(PreTrainedModel.save_pretrained).parameters["max_shard_size"].default


def weight_files(folder: str) -> list[str]:
    """The safetensors files of a model folder: the shards its index names, else model.safetensors, else every
    ``*.safetensors`` file (adapter files excluded)."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as handle:
                weight_map = json.load(handle)["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"Could not read {index}: {one_line(error)}") from None
        return [os.path.join(folder, name) for name in dict.fromkeys(weight_map.values())]
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors") and not f.startswith("adapter_"))
    if not files:
        raise CheckpointError(f"{folder} has no safetensors weights")
    return [os.path.join(folder, name) for name in files]


def stored_dtype(folder: str, config=None) -> torch.dtype:
    """The base's own dtype: its config's ``dtype`` (``torch_dtype`` in older files), else the dtype of its first
    floating-point tensor on disk."""
    configured = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(configured, str) and configured not in ("auto", ""):
        configured = getattr(torch, configured, None)
    if isinstance(configured, torch.dtype) and configured in (torch.float32, torch.bfloat16, torch.float16):
        return configured
    for path in weight_files(folder):
        try:
            with safe_open(path, "pt") as handle:
                for key in handle.keys():
                    name = handle.get_slice(key).get_dtype()
                    if name in FLOAT_DTYPES:
                        return FLOAT_DTYPES[name]
        except (OSError, SafetensorError) as error:
            raise CheckpointError(f"Could not read {path}: {one_line(error)}") from None
    return torch.float32


@dataclass(frozen=True)
class StoredTensor:
    """A tensor of an adapter file, read when a merge needs it: a mixture of experts' adapters hold gigabytes
    (a rank-r factor per expert), which an export should not keep for the whole run."""

    path: str
    key: str
    shape: tuple[int, ...]

    def load(self) -> torch.Tensor:
        try:
            with safe_open(self.path, "pt") as handle:
                return handle.get_tensor(self.key)
        except (OSError, SafetensorError) as error:
            raise CheckpointError(f"Could not read {self.key} from {self.path}: {one_line(error)}") from None


@dataclass
class LoraUpdate:
    """One adapter's low-rank update of one weight: ``transpose(B @ A) * scaling``, as PEFT computes it.

    ``experts`` > 0: PEFT's ``ParamWrapper`` on a 3-D ``(experts, ·, ·)`` parameter (`target_parameters`, which
    ``all-linear`` resolves to for mixture-of-experts layers); ``A`` holds ``r`` rows per expert in expert order,
    ``B`` ``r`` columns per expert interleaved (PEFT's reshapes), and expert ``e``'s update is ``B_e @ A_e``,
    transposed where the parameter stores ``(experts, in, out)`` (``transposed``). ``round_delta``: PEFT adds a
    ``ParamWrapper``'s update rounded to the parameter's dtype."""

    A: torch.Tensor | StoredTensor  # a StoredTensor is read on first use and kept until `release`
    B: torch.Tensor | StoredTensor
    scaling: float
    fan_in_fan_out: bool
    experts: int = 0
    transposed: bool = False
    round_delta: bool = False
    _factors: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, B)`` as tensors."""
        if self._factors is None:
            self._factors = tuple(t.load() if isinstance(t, StoredTensor) else t for t in (self.A, self.B))
        return self._factors

    def release(self) -> None:
        """Drops the factors read from disk (the next use reads them again)."""
        self._factors = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the weight this update fits."""
        if self.experts:
            return (self.experts, *self.expert_shape())
        rows, cols = self.B.shape[0], self.A.shape[-1]
        return (cols, rows) if self.fan_in_fan_out else (rows, cols)

    def expert_shape(self) -> tuple[int, int]:
        rows, cols = self.B.shape[0], self.A.shape[-1]
        return (cols, rows) if self.transposed else (rows, cols)

    def delta(self) -> torch.Tensor:
        """The update of the whole weight (the stack of every expert's, for an experts update)."""
        if self.experts:
            return torch.stack([self.expert_delta(e) for e in range(self.experts)])
        A, B = self.factors()
        # float32, as PEFT's merge computes it on CPU (adapters are cast up for a 16-bit base); scaled in place
        product = B.float() @ A.float()
        return (product.T if self.fan_in_fan_out else product).mul_(self.scaling)

    def expert_delta(self, expert: int, dim: int | None = None, offset: int = 0, size: int = 0) -> torch.Tensor:
        """Expert ``expert``'s update, or only its ``size`` rows (``dim`` 0) or columns (``dim`` 1) from
        ``offset``: the low-rank factors are sliced before they are multiplied, so memory holds the part asked for."""
        A, B = self.factors()
        A = A.reshape(self.experts, -1, A.shape[-1])[expert].float()
        B = B.reshape(B.shape[0], -1, self.experts)[:, :, expert].float()
        if dim is not None:
            # rows of the stored layout are rows of B @ A, or its columns where the parameter is transposed
            if (dim == 0) != self.transposed:
                B = B[offset:offset + size]
            else:
                A = A[:, offset:offset + size]
        product = B @ A
        return (product.T if self.transposed else product).mul_(self.scaling)


@dataclass
class ExpertSlice:
    """The part of an experts `LoraUpdate` that one checkpoint tensor holds, where transformers stacks the
    checkpoint's per-expert matrices into one parameter (and concatenates several along ``dim``): expert
    ``expert``'s update, narrowed to ``size`` along ``dim`` from ``offset`` (all of it when ``dim`` is None)."""

    update: LoraUpdate
    expert: int
    dim: int | None = None
    offset: int = 0
    size: int = 0

    @property
    def round_delta(self) -> bool:
        return self.update.round_delta

    @property
    def shape(self) -> tuple[int, ...]:
        shape = list(self.update.expert_shape())
        if self.dim is not None:
            shape[self.dim] = self.size
        return tuple(shape)

    def delta(self) -> torch.Tensor:
        return self.update.expert_delta(self.expert, self.dim, self.offset, self.size)


class UnsupportedForStreaming(Exception):
    """A base or adapter that a streamed merge does not handle (quantized bases; checkpoint tensors that
    transformers splits on load; adapters with DoRA, LoRA biases, modules_to_save, non-Linear layers, or an update
    on a parameter transformers builds from several checkpoint tensors): export then merges through PEFT on a
    loaded model."""


def check_streamable(config) -> None:
    """Raises `UnsupportedForStreaming` for a quantized base: its quantizer adds conversions of its own on load
    (dequantization, packed blocks and scales) that a tensor-by-tensor merge does not replay."""
    if getattr(config, "quantization_config", None):
        raise UnsupportedForStreaming(f"{config.model_type} checkpoint is quantized")


def skeleton(family, config, dtype: torch.dtype):
    """The encoder class on the meta device, in ``dtype``: names, shapes and config without weights."""
    with torch.device("meta"):
        model = family.model._from_config(config, dtype=dtype)
    if hasattr(model, "generation_config"):
        model.generation_config = None
    return model


def lora_updates(model, adapter_path: str) -> dict[str, LoraUpdate]:
    """{parameter name in ``model``'s state dict: update} of the adapter in ``adapter_path``, checked against the
    skeleton ``model`` by `loading.adapters.attach_adapter` (same errors as a loaded merge): LoRA on Linear layers
    and on parameters (PEFT's ``target_parameters``, experts included). ``model`` is left as it was."""
    from peft.tuners.lora import LoraLayer
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.lora.layer import ParamWrapper

    peft_model = attach_adapter(model, adapter_path, low_cpu_mem_usage=True)
    # PEFT moves the loaded adapter to the base layer's device (meta): the tensors are read from the file when
    # the merge needs them, by the names PEFT gave them
    path = os.path.join(adapter_path, ADAPTER_WEIGHTS)
    # attach_adapter has read this header already (a file it could not read was refused there)
    stored = normalize_adapter_keys({key: StoredTensor(path, key, tuple(meta.shape))
                                     for key, meta in stored_layout(path).items()})
    tensors = {peft_key: stored[key] for peft_key, key in as_peft_keys(stored).items()}
    try:
        config = peft_model.peft_config["default"]
        if getattr(config, "modules_to_save", None) or getattr(config, "bias", "none") != "none" \
                or getattr(config, "trainable_token_indices", None):
            raise UnsupportedForStreaming("modules_to_save, biases or trainable tokens")
        prefix = "base_model.model."
        updates = {}
        for name, module in peft_model.named_modules():
            if not isinstance(module, LoraLayer) or "default" not in getattr(module, "lora_A", {}):
                continue
            if type(module) not in (LoraLinear, ParamWrapper) or module.lora_variant.get("default") is not None \
                    or module.lora_bias.get("default"):
                raise UnsupportedForStreaming(f"{type(module).__name__} at {name}")
            A, B = tensors.get(f"{name}.lora_A.default.weight"), tensors.get(f"{name}.lora_B.default.weight")
            if A is None or B is None:
                # attach_adapter refuses missing tensors, so PEFT found them under names it converted on load (an
                # adapter saved before transformers renamed the module): its own merge reads them right
                raise UnsupportedForStreaming(f"PEFT renamed the adapter tensors of {name} on load")
            scaling = float(module.scaling["default"])
            if type(module) is LoraLinear:
                updates[name.removeprefix(prefix) + ".weight"] = LoraUpdate(A, B, scaling, bool(module.fan_in_fan_out))
                continue
            # a ParamWrapper wraps the module that holds the parameter, or (several parameters of one module)
            # another ParamWrapper: its base_layer
            owner = name.removeprefix(prefix)
            while owner.endswith(".base_layer"):
                owner = owner.removesuffix(".base_layer")
            experts = int(getattr(module, "num_experts", 1))
            swapped = getattr(module, "_did_swap_in_out_features", None)
            if experts > 1 and swapped is None:  # PEFT's orientation flag, read from this PEFT's ParamWrapper
                raise UnsupportedForStreaming(f"this PEFT's ParamWrapper at {name}")
            updates[f"{owner}.{module.parameter_name}"] = LoraUpdate(
                A, B, scaling, False, experts=experts if experts > 1 else 0, transposed=experts > 1 and not swapped,
                round_delta=True)
    finally:
        peft_model.unload()
    return updates


@dataclass
class BaseWeights:
    """The base's tensors, read lazily, each under the name it is written under and mapped onto the skeleton
    parameter it loads into; refuses missing, unexpected and mismatched tensors as `loading.models.check_loading_info`
    does for a loaded model.

    A written name is the checkpoint's (the multimodal text tower's name, `loading.models.text_tower`; less the
    ``model.`` of a ``…ForCausalLM`` checkpoint, which the encoder lacks). `match_checkpoint` (transformers' own
    conversion mapping of the skeleton, the one its loader applies) names the parameter each one feeds: renames
    map one tensor onto one parameter, converters build one parameter from several (a mixture-of-experts layer's
    per-expert matrices stacked into ``experts.gate_up_proj``). The export keeps those names, and transformers
    converts it on load as it converts the base, so a streamed merge never reshapes a tensor."""

    folder: str
    name: str
    model: Any
    sources: dict[str, tuple[str, str]] = field(default_factory=dict)  # written name: (file, name in the file)
    targets: dict[str, str] = field(default_factory=dict)  # written name: skeleton parameter it feeds
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # written name: shape on disk
    # written name: (converter, index of its source pattern) of the tensors that a converter builds a parameter from
    converted: dict[str, tuple[Any, int]] = field(default_factory=dict)

    def __post_init__(self):
        tower = text_tower(self.folder)
        stored, files = {}, {}
        for path in weight_files(self.folder):
            try:
                with safe_open(path, "pt") as handle:
                    for key in handle.keys():
                        name = key if tower is None else tower.text_name(key)
                        if name is None:  # a multimodal checkpoint's vision part: never read
                            continue
                        stored[name] = tuple(handle.get_slice(key).get_shape())
                        files[name] = (path, key)
            except (OSError, SafetensorError) as error:
                raise CheckpointError(f"Could not load the weights of {self.name}: {one_line(error)}") from None
        match = match_checkpoint(self.model, stored)
        self.targets, self.converted, self.shapes = match.targets, match.converted, match.shapes
        self.sources = {written: files[name] for name, written in match.written.items()}
        check_loading_info(self.name, {"missing_keys": match.missing,
                                       "unexpected_keys": [files[name][1] for name in match.unexpected],
                                       "mismatched_keys": match.mismatched})

    def feeding(self, converted_only: bool = False) -> dict[str, list[str]]:
        """`feeding` of the base's tensors onto the skeleton's parameters."""
        return feeding(self.targets, self.converted, converted_only)

    def layout(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """{written name: meta tensor of its shape and output dtype}, in the skeleton's parameter order."""
        params = self.model.state_dict()
        fed = self.feeding()
        layout = {}
        for target, param in params.items():
            for name in fed.get(target, ()):
                layout[name] = torch.empty(self.shapes[name], device="meta",
                                           dtype=dtype if param.is_floating_point() else param.dtype)
        return layout

    def written_updates(self, updates: dict[str, LoraUpdate]) -> dict[str, LoraUpdate | ExpertSlice]:
        """`lora_updates`' updates (by skeleton parameter) by the name of the checkpoint tensor each changes: the
        one tensor that a parameter is renamed from, or, for an experts update of a parameter that transformers
        stacks from per-expert tensors, one `ExpertSlice` per tensor.

        Raises `UnsupportedForStreaming` where the parts cannot be told apart by the conversion's key renaming
        (a converter other than stacking experts, optionally concatenated along one dimension; a Linear weight
        built by a converter) or where an update does not fit its tensor: PEFT merges it on the loaded model
        instead. Never drops an update."""
        fed = self.feeding()
        placed: dict[str, LoraUpdate | ExpertSlice] = {}
        for target, update in updates.items():
            names = fed.get(target)
            if not names:  # every skeleton parameter has a source (or __post_init__ refused the base)
                raise CheckpointError(f"{self.name}: no checkpoint tensor holds {target}, which an adapter changes")
            if names[0] in self.converted:
                placed.update(self._expert_slices(target, names, update))
            else:
                placed[names[0]] = update
        for name, part in placed.items():
            if tuple(part.shape) != self.shapes[name]:
                raise UnsupportedForStreaming(f"the adapter's update of {self.targets[name]} has shape "
                                              f"{list(part.shape)}, its checkpoint tensor {name} "
                                              f"{list(self.shapes[name])}")
        return placed

    def _expert_slices(self, target: str, names: list[str], update: LoraUpdate) -> dict[str, ExpertSlice]:
        """Where each of ``names`` lies in ``target`` by the converter's operations, as transformers applies them:
        ``MergeModulelist(dim=0)`` stacks each source pattern's tensors (experts in `feeding` order), then
        ``Concatenate(dim=d)`` joins the patterns' stacks in pattern order."""
        from transformers.core_model_loading import Concatenate, MergeModulelist

        converter = self.converted[names[0]][0]
        operations = list(getattr(converter, "operations", None) or [])
        kinds = [type(op) for op in operations]
        if not update.experts or kinds not in ([MergeModulelist], [MergeModulelist, Concatenate]) \
                or operations[0].dim != 0 or (len(operations) == 2 and operations[1].dim < 1):
            raise UnsupportedForStreaming(f"the adapter changes {target}, which transformers builds from "
                                          f"{len(names)} checkpoint tensors by {operations or 'a conversion'}")
        by_pattern: dict[int, list[str]] = {}
        for name in names:
            by_pattern.setdefault(self.converted[name][1], []).append(name)
        if any(len(group) != update.experts for group in by_pattern.values()):
            raise UnsupportedForStreaming(f"the adapter changes {target} for {update.experts} experts, the checkpoint "
                                          f"holds {sorted(len(group) for group in by_pattern.values())}")
        dim = operations[1].dim - 1 if len(operations) == 2 else None  # in one expert's matrix
        slices, offset = {}, 0
        for index in sorted(by_pattern):
            size = self.shapes[by_pattern[index][0]][dim] if dim is not None else 0
            for expert, name in enumerate(by_pattern[index]):
                slices[name] = ExpertSlice(update, expert, dim, offset, size)
            offset += size
        return slices

    def tensors(self, names: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) for ``names``, in that order, each read from disk when it is reached.

        The file is opened (memory-mapped) for one tensor at a time: pages of a mapping that stays open count in
        the process's resident memory as they are read, so one open handle would grow to the whole file."""
        for name in names:
            path, key = self.sources[name]
            try:
                with safe_open(path, "pt") as handle:
                    tensor = handle.get_tensor(key)
            except (OSError, SafetensorError) as error:
                raise CheckpointError(f"Could not load the weights of {self.name}: {one_line(error)}") from None
            yield name, tensor


@dataclass
class CheckpointMatch:
    """A checkpoint's tensors matched to a model's parameters as transformers' loader matches them (`key_resolver`):
    what a streamed export reads (`BaseWeights`) and what push's check verifies (`checkpoint.validation`).

    ``missing`` names what the loader would leave at random: parameters that no tensor feeds, and, for a parameter
    built from several tensors, each tensor that the build lacks (an expert's matrix, by the name its siblings
    give it). ``mismatched`` holds ``(name, shape, the shape the config asks for)``, or one line for a parameter
    whose tensors do not assemble to its shape."""

    targets: dict[str, str] = field(default_factory=dict)  # written name: parameter it feeds
    converted: dict[str, tuple[Any, int]] = field(default_factory=dict)  # written name: (converter, pattern index)
    written: dict[str, str] = field(default_factory=dict)  # name as given: written name
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # written name: shape
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # names as given that feed no parameter
    mismatched: list[Any] = field(default_factory=list)
    expected: dict[str, tuple[int, ...]] = field(default_factory=dict)  # parameter: shape

    def feeding(self, converted_only: bool = False) -> dict[str, list[str]]:
        """`feeding` of these tensors."""
        return feeding(self.targets, self.converted, converted_only)


def feeding(targets: dict[str, str], converted: dict[str, Any], converted_only: bool = False) -> dict[str, list[str]]:
    """{parameter: the written names that feed it (``targets``: written name -> parameter), in the order in which
    transformers' loader collects them (``dot_natural_key``: ``experts.2`` before ``experts.10``), which is the
    order it stacks experts in}; ``converted_only``: only the parameters that a converter builds."""
    from transformers.core_model_loading import dot_natural_key

    fed: dict[str, list[str]] = {}
    for name in sorted(targets, key=dot_natural_key):
        if not converted_only or name in converted:
            fed.setdefault(targets[name], []).append(name)
    return fed


def match_checkpoint(model, stored: dict[str, tuple[int, ...]]) -> CheckpointMatch:
    """Matches ``stored`` ({tensor name in a checkpoint: shape}) to the parameters of ``model`` (a skeleton is
    enough) by `key_resolver`, and finds every tensor the loader would miss, not place, or not fit.

    A parameter that a converter stacks from per-expert tensors (``MergeModulelist``, then ``Concatenate`` of the
    source patterns' stacks, as transformers applies them) is checked tensor by tensor: each source pattern needs
    one tensor per expert, of one shape, and the stacks must assemble to the parameter's shape. A parameter built
    by another conversion is checked by its count of values (transformers' loader checks the built shape itself).
    Raises `UnsupportedForStreaming` where transformers splits a tensor into several parameters."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    resolve = key_resolver(model, expected, getattr(model, "base_model_prefix", "") + ".")
    match = CheckpointMatch(expected=expected)
    for name, shape in stored.items():
        resolved = resolve(name)
        if resolved is None:
            # the causal-LM head of a decoder checkpoint, which the encoder does not use (as check_loading_info)
            if not name.startswith("lm_head."):
                match.unexpected.append(name)
            continue
        written, target, conversion = resolved
        shape = tuple(shape)
        if conversion is not None:
            match.converted[written] = conversion
        elif shape != expected[target]:
            match.mismatched.append((written, shape, expected[target]))
        match.written[name] = written
        match.targets[written] = target
        match.shapes[written] = shape
    for target, names in match.feeding(converted_only=True).items():
        _check_converted(match, target, names)
    match.missing = sorted(set(match.missing) | (set(expected) - set(match.targets.values())))
    return match


def _check_converted(match: CheckpointMatch, target: str, names: list[str]) -> None:
    """Adds to ``match`` what keeps ``names`` from building ``target`` as its converter builds it."""
    from transformers.core_model_loading import Concatenate, MergeModulelist

    converter = match.converted[names[0]][0]
    operations = list(getattr(converter, "operations", None) or [])
    kinds = [type(op) for op in operations]
    shape = match.expected[target]
    stacked = kinds in ([MergeModulelist], [MergeModulelist, Concatenate]) and operations[0].dim == 0 \
        and (len(operations) == 1 or operations[1].dim >= 1) and len(shape) >= 2
    experts = {name: _expert_index(converter.source_patterns[match.converted[name][1]], name) for name in names}
    if not stacked or None in experts.values():
        # the converters stack and concatenate, which keeps every value: a missing tensor or another size
        # shows in the count
        values = sum(_numel(match.shapes[n]) for n in names)
        if values != _numel(shape):
            match.mismatched.append(f"{target} (built from {len(names)} tensors of {values} values; config: "
                                    f"{list(shape)}, {_numel(shape)} values)")
        return
    count, dim = shape[0], operations[1].dim - 1 if len(operations) == 2 else None  # dim: in one expert's matrix
    groups: dict[int, list[str]] = {index: [] for index in range(len(converter.source_patterns))}
    for name in names:
        groups[match.converted[name][1]].append(name)
    sibling, sibling_index = names[0], match.converted[names[0]][1]  # a present tensor, to name absent ones by
    sizes = []
    for index in range(len(converter.source_patterns)):
        present = {experts[name]: name for name in groups[index]}
        for expert in sorted(set(range(count)) - set(present)):
            match.missing.append(_sibling_name(converter.source_patterns, sibling, sibling_index, index, expert))
        for expert in sorted(e for e in present if e >= count):  # more experts than the config has
            _unplace(match, present.pop(expert))
        # one expert's matrix: the parameter's shape less the stacking dimension; along a concatenation dimension
        # this pattern's part, which the tensors of most experts show
        sized = [match.shapes[name] for name in present.values()]
        if not sized:
            sizes.append(0)
            continue
        part = max(sized, key=sized.count)  # ties: the lowest expert's
        wanted = list(shape[1:])
        if dim is not None:
            wanted[dim] = part[dim] if len(part) == len(wanted) else wanted[dim]
        for name in present.values():
            if list(match.shapes[name]) != wanted:
                match.mismatched.append((name, match.shapes[name], tuple(wanted)))
        sizes.append(wanted[dim] if dim is not None else 0)
    if dim is not None and all(sizes) and sum(sizes) != shape[dim + 1]:
        match.mismatched.append(f"{target} (its {len(sizes)} parts hold {' + '.join(map(str, sizes))} along "
                                f"dimension {dim + 1}; config: {list(shape)})")


def _unplace(match: CheckpointMatch, written: str) -> None:
    """Moves ``written`` from the placed tensors of ``match`` to its unexpected ones."""
    given = next(name for name, w in match.written.items() if w == written)
    match.unexpected.append(given)
    for table in (match.written, match.targets, match.shapes, match.converted):
        table.pop(given if table is match.written else written, None)


def _expert_index(pattern: str, name: str) -> int | None:
    """The expert index of ``name`` where ``pattern`` (a converter's source pattern) has its ``*``; None where the
    pattern is not a plain name with one ``*``."""
    found = _pattern_match(pattern, name)
    return int(found.group(1)) if found else None


def _pattern_match(pattern: str, name: str):
    if pattern.count("*") != 1 or not re.fullmatch(r"[\w.*]+", pattern):  # a regular expression: not followed
        return None
    found = None
    for found in re.finditer(re.escape(pattern).replace(r"\*", r"(\d+)"), name):
        pass  # the last occurrence: the one nearest the parameter
    return found


def _sibling_name(patterns: list[str], sibling: str, sibling_index: int, index: int, expert: int) -> str:
    """The checkpoint name of expert ``expert``'s tensor for source pattern ``index``, made from a present
    tensor (``sibling``, of pattern ``sibling_index``) by swapping its pattern part."""
    found = _pattern_match(patterns[sibling_index], sibling)
    return sibling[:found.start()] + patterns[index].replace("*", str(expert)) + sibling[found.end():]


def key_resolver(model, expected: dict[str, tuple[int, ...]], prefix: str):
    """``resolve(checkpoint name)`` -> ``(written name, skeleton parameter, conversion)`` or None (a tensor the
    model has no place for), renaming as transformers' loader does for ``model``: every renaming, then at most
    one converter; ``conversion`` is ``(converter, index of the source pattern that matched)`` when a converter
    builds the parameter, else None.

    Raises `UnsupportedForStreaming` for a converter that splits one checkpoint tensor into several parameters:
    which parameters it feeds is decided inside transformers' conversion, not by the key."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    mapping = get_model_conversion_mapping(model)
    renamings = [entry for entry in mapping if isinstance(entry, WeightRenaming)]
    converters = [entry for entry in mapping if isinstance(entry, WeightConverter)]
    patterns = {pattern: (converter, index) for converter in converters
                for index, pattern in enumerate(converter.source_patterns)}

    def resolve(name: str) -> tuple[str, str, tuple[Any, int] | None] | None:
        for written in (name, name.removeprefix(prefix)) if name.startswith(prefix) else (name,):
            target, pattern = rename_source_key(written, renamings, converters)
            if target in expected:
                conversion = None if pattern is None else patterns[pattern]
                if conversion is not None and len(conversion[0].target_patterns) > 1:
                    raise UnsupportedForStreaming(f"transformers splits {name} into several parameters on load")
                if conversion is not None and _keeps_values(conversion[0]):
                    conversion = None  # a one-to-one copy: the tensor is the parameter, as after a rename
                return written, target, conversion
        return None

    return resolve


#: conversion operations that hand the tensor on unchanged (transformers 5.2 copies GPT-OSS's fused experts to
#: 16-byte-aligned memory on load)
VALUE_PRESERVING_OPERATIONS = {"Force16BytesAlignment"}


def _keeps_values(converter) -> bool:
    operations = list(getattr(converter, "operations", None) or [])
    return len(converter.source_patterns) == 1 and bool(operations) \
        and all(type(op).__name__ in VALUE_PRESERVING_OPERATIONS for op in operations)


def _numel(shape) -> int:
    count = 1
    for size in shape:
        count *= int(size)
    return count


def merged(tensor: torch.Tensor, updates: list, dtype: torch.dtype, rounding: str | None = None):
    """``tensor`` with ``updates`` (`LoraUpdate`, `ExpertSlice`) added in order, in ``dtype`` (``rounding``: see
    `MERGE_ROUNDING`). An expert stack is updated in place: ``tensor`` is one read for this merge."""
    rounding = rounding or MERGE_ROUNDING
    if rounding not in ("per_adapter", "float32"):
        raise ValueError(f"Unknown merge rounding {rounding!r}")
    if not updates or not tensor.is_floating_point():
        return tensor.to(dtype) if tensor.is_floating_point() else tensor
    weight = tensor.to(dtype) if rounding == "per_adapter" else tensor.float()
    for update in updates:
        if isinstance(update, LoraUpdate) and update.experts:
            # a whole expert stack (a base that stores it fused) is updated one expert at a time, in place: one
            # float32 expert in memory besides the stack, never a second stack
            for expert in range(update.experts):
                weight[expert] = _added(weight[expert], update.expert_delta(expert), update, dtype, rounding)
        else:
            weight = _added(weight, update.delta(), update, dtype, rounding)
    return weight.to(dtype)


def _added(weight: torch.Tensor, delta: torch.Tensor, update, dtype: torch.dtype, rounding: str) -> torch.Tensor:
    if rounding == "float32":
        return delta.add_(weight)
    if update.round_delta:  # PEFT's ParamWrapper adds its update in the parameter's dtype
        delta = delta.to(dtype)
    # delta + weight in float32 (in place, one float32 matrix at a time), rounded to ``dtype``
    return delta.add_(weight).to(dtype)


def write_merged_weights(
    folder: str,
    base: BaseWeights,
    adapters: list[dict[str, LoraUpdate]],
    dtype: torch.dtype,
    max_shard_size: str | int | None = None,
    rounding: str | None = None,
) -> list[str]:
    """Writes the base's weights with the adapters added (in ``dtype``; ``adapters``: updates by written name,
    `BaseWeights.written_updates`) into ``folder`` as transformers' ``save_pretrained`` lays them out:
    model.safetensors, or shards of at most ``max_shard_size`` (transformers' default) with
    model.safetensors.index.json, under the base's checkpoint names (`BaseWeights`). Returns the files written."""
    from huggingface_hub import split_torch_state_dict_into_shards

    updates: dict[str, list[LoraUpdate]] = {}
    for adapter in adapters:
        for name, update in adapter.items():
            updates.setdefault(name, []).append(update)
    layout = base.layout(dtype)
    unplaced = sorted(set(updates) - set(layout))
    if unplaced:  # written_updates places every update; an update written nowhere would be a silent non-merge
        raise CheckpointError(f"Adapter updates of {', '.join(unplaced[:3])} match no tensor of {base.name}")
    split = split_torch_state_dict_into_shards(
        layout, filename_pattern="model{suffix}.safetensors",
        max_shard_size=default_max_shard_size() if max_shard_size is None else max_shard_size)
    # an adapter's factors are read at their first use and dropped after their last: the per-expert tensors of
    # one stacked parameter share one update
    uses: dict[int, int] = {}
    for parts in updates.values():
        for part in parts:
            uses[id(_update_of(part))] = uses.get(id(_update_of(part)), 0) + 1

    def merge(name: str, tensor: torch.Tensor) -> torch.Tensor:
        parts = updates.get(name, [])
        weight = merged(tensor, parts, dtype, rounding)
        for part in parts:
            update = _update_of(part)
            uses[id(update)] -= 1
            if not uses[id(update)]:
                update.release()
        return weight

    written = []
    for filename, names in split.filename_to_tensors.items():
        path = os.path.join(folder, filename)
        write_safetensors(path, {name: layout[name] for name in names},
                          ((name, merge(name, tensor)) for name, tensor in base.tensors(names)))
        written.append(filename)
    if split.is_sharded:
        index = {"metadata": {"total_parameters": sum(t.numel() for t in layout.values()), **split.metadata},
                 "weight_map": split.tensor_to_filename}
        with open(os.path.join(folder, "model.safetensors.index.json"), "w", encoding="utf-8") as handle:
            handle.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
        written.append("model.safetensors.index.json")
    return written


def _update_of(part: LoraUpdate | ExpertSlice) -> LoraUpdate:
    return part.update if isinstance(part, ExpertSlice) else part


def write_safetensors(path: str, layout: dict[str, torch.Tensor], tensors: Iterator[tuple[str, torch.Tensor]]) -> None:
    """Writes a safetensors file from tensors that arrive one at a time, in ``layout``'s order.

    Hand-written because safetensors' writers take every tensor of a file at once (a whole shard, up to 50 GB,
    in memory); the format is an 8-byte header length, a JSON header of dtypes, shapes and byte offsets (known
    from ``layout`` before any tensor is read), then the tensors' little-endian bytes.
    """
    if sys.byteorder != "little":
        raise CheckpointError("Writing safetensors needs a little-endian machine")
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, tensor in layout.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for (name, tensor), expected in zip(tensors, layout.items()):
            if name != expected[0] or tensor.dtype != expected[1].dtype or tensor.shape != expected[1].shape:
                raise RuntimeError(f"{path}: {name} {tensor.dtype} {list(tensor.shape)} does not match the header "
                                   f"({expected[0]} {expected[1].dtype} {list(expected[1].shape)})")
            handle.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
        if handle.tell() != 8 + len(encoded) + offset:
            raise RuntimeError(f"{path}: wrote {handle.tell()} bytes, the header describes {8 + len(encoded) + offset}")
