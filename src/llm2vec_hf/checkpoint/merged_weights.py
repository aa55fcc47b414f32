"""Export's weights, streamed: the base is read tensor by tensor (safetensors ``safe_open``), each LoRA adapter's
update is added to the one tensor it changes, and the result is written shard by shard, tensor by tensor, so that
memory holds one tensor and the adapters at a time whatever the model's size (docs/architecture.md, "Export at
scale").

The model object export works with is a skeleton on the ``meta`` device: it carries the config, the parameter
names and shapes, and the output dtype, never weights. Adapters are checked by the same PEFT path as
``loading.apply_adapter`` (on the skeleton, with ``low_cpu_mem_usage``), so an adapter that does not fit fails
with the same error either way.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from safetensors import SafetensorError, safe_open

from ..errors import CheckpointError, one_line
from ..loading.adapters import ADAPTER_WEIGHTS, as_peft_keys, attach_adapter, normalize_adapter_keys
from ..loading.models import check_loading_info, text_tower

logger = logging.getLogger(__name__)

#: safetensors' dtype names (the format's header), for the dtypes a checkpoint holds.
SAFETENSORS_DTYPES = {
    torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
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


@dataclass
class LoraUpdate:
    """One adapter's low-rank update of one weight: ``transpose(B @ A) * scaling``, as PEFT computes it."""

    A: torch.Tensor
    B: torch.Tensor
    scaling: float
    fan_in_fan_out: bool

    def delta(self) -> torch.Tensor:
        # float32, as PEFT's merge computes it on CPU (adapters are cast up for a 16-bit base); scaled in place
        product = self.B.float() @ self.A.float()
        return (product.T if self.fan_in_fan_out else product).mul_(self.scaling)


class UnsupportedForStreaming(Exception):
    """A base or adapter that a streamed merge does not handle (checkpoints converted on load; adapters with
    DoRA, LoRA biases, modules_to_save, non-Linear layers): export then merges through PEFT on a loaded model."""


def check_streamable(config) -> None:
    """Raises `UnsupportedForStreaming` for a model whose checkpoint tensors transformers converts on load
    (mixture-of-experts families fuse the per-expert matrices): their names and shapes are not the model's."""
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    if get_checkpoint_conversion_mapping(config.model_type) is not None:
        raise UnsupportedForStreaming(f"transformers converts {config.model_type} checkpoints on load")


def skeleton(family, config, dtype: torch.dtype):
    """The encoder class on the meta device, in ``dtype``: names, shapes and config without weights."""
    with torch.device("meta"):
        model = family.model._from_config(config, dtype=dtype)
    if hasattr(model, "generation_config"):
        model.generation_config = None
    return model


def lora_updates(model, adapter_path: str) -> dict[str, LoraUpdate]:
    """{weight name in ``model``'s state dict: update} of the adapter in ``adapter_path``, checked against the
    skeleton ``model`` by `loading.adapters.attach_adapter` (same errors as a loaded merge). ``model`` is left as it was."""
    from peft.tuners.lora import LoraLayer
    from peft.tuners.lora.layer import Linear as LoraLinear
    from safetensors.torch import load_file

    peft_model = attach_adapter(model, adapter_path, low_cpu_mem_usage=True)
    # PEFT moves the loaded adapter to the base layer's device (meta): the tensors are read from the file, by
    # the names PEFT gave them
    stored = normalize_adapter_keys(load_file(os.path.join(adapter_path, ADAPTER_WEIGHTS)))
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
            if type(module) is not LoraLinear or module.lora_variant.get("default") is not None \
                    or module.lora_bias.get("default"):
                raise UnsupportedForStreaming(f"{type(module).__name__} at {name}")
            A, B = tensors.get(f"{name}.lora_A.default.weight"), tensors.get(f"{name}.lora_B.default.weight")
            if A is None or B is None:  # attach_adapter refuses missing tensors; this guards the invariant
                raise CheckpointError(f"Adapter {adapter_path}: {name} has no lora_A/lora_B")
            updates[name.removeprefix(prefix) + ".weight"] = LoraUpdate(
                A, B, float(module.scaling["default"]), bool(module.fan_in_fan_out))
    finally:
        peft_model.unload()
    return updates


@dataclass
class BaseWeights:
    """The base's tensors mapped onto the skeleton's state-dict names, read lazily; refuses missing, unexpected
    and mismatched tensors as `loading.models.check_loading_info` does for a loaded model."""

    folder: str
    name: str
    model: Any
    sources: dict[str, tuple[str, str]] = field(default_factory=dict)  # our name: (file, name in the file)

    def __post_init__(self):
        expected = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        prefix = getattr(self.model, "base_model_prefix", "") + "."
        tower = text_tower(self.folder)
        unexpected, mismatched = [], []
        for path in weight_files(self.folder):
            try:
                with safe_open(path, "pt") as handle:
                    for key in handle.keys():
                        name = key if tower is None else tower.text_name(key)
                        if name is None:  # a multimodal checkpoint's vision part: never read
                            continue
                        ours = name if name in expected else name.removeprefix(prefix)
                        if ours not in expected:
                            unexpected.append(key)
                            continue
                        shape = tuple(handle.get_slice(key).get_shape())
                        if shape != expected[ours]:
                            mismatched.append((ours, shape, expected[ours]))
                        self.sources[ours] = (path, key)
            except (OSError, SafetensorError) as error:
                raise CheckpointError(f"Could not load the weights of {self.name}: {one_line(error)}") from None
        missing = sorted(set(expected) - set(self.sources))
        check_loading_info(self.name, {"missing_keys": missing, "unexpected_keys": unexpected,
                                       "mismatched_keys": mismatched})

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


def merged(tensor: torch.Tensor, updates: list[LoraUpdate], dtype: torch.dtype, rounding: str | None = None):
    """``tensor`` with ``updates`` added in order, in ``dtype`` (``rounding``: see `MERGE_ROUNDING`)."""
    rounding = rounding or MERGE_ROUNDING
    if not updates or not tensor.is_floating_point():
        return tensor.to(dtype) if tensor.is_floating_point() else tensor
    if rounding == "per_adapter":
        weight = tensor.to(dtype)
        for update in updates:
            # delta + weight in float32 (in place, one float32 matrix at a time), rounded to ``dtype``
            weight = update.delta().add_(weight).to(dtype)
        return weight
    if rounding != "float32":
        raise ValueError(f"Unknown merge rounding {rounding!r}")
    weight = tensor.float()
    for update in updates:
        weight += update.delta()
    return weight.to(dtype)


def write_merged_weights(
    folder: str,
    base: BaseWeights,
    adapters: list[dict[str, LoraUpdate]],
    dtype: torch.dtype,
    max_shard_size: str | int | None = None,
    rounding: str | None = None,
) -> list[str]:
    """Writes the skeleton's weights (base + adapters, in ``dtype``) into ``folder`` as transformers'
    ``save_pretrained`` lays them out: model.safetensors, or shards of at most ``max_shard_size`` (transformers'
    default) with model.safetensors.index.json. Returns the files written."""
    from huggingface_hub import split_torch_state_dict_into_shards

    updates: dict[str, list[LoraUpdate]] = {}
    for adapter in adapters:
        for name, update in adapter.items():
            updates.setdefault(name, []).append(update)
    layout = {name: torch.empty(tensor.shape, dtype=dtype if tensor.is_floating_point() else tensor.dtype,
                                device="meta")
              for name, tensor in base.model.state_dict().items()}
    split = split_torch_state_dict_into_shards(
        layout, filename_pattern="model{suffix}.safetensors",
        max_shard_size=default_max_shard_size() if max_shard_size is None else max_shard_size)
    written = []
    for filename, names in split.filename_to_tensors.items():
        path = os.path.join(folder, filename)
        tensors = ((name, merged(tensor, updates.get(name, []), dtype, rounding)) for name, tensor in base.tensors(names))
        write_safetensors(path, {name: layout[name] for name in names}, tensors)
        written.append(filename)
    if split.is_sharded:
        index = {"metadata": {"total_parameters": sum(t.numel() for t in layout.values()), **split.metadata},
                 "weight_map": split.tensor_to_filename}
        with open(os.path.join(folder, "model.safetensors.index.json"), "w", encoding="utf-8") as handle:
            handle.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
        written.append("model.safetensors.index.json")
    return written


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
