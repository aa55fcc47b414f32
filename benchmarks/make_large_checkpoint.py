"""Writes a random-weight decoder checkpoint of a real model's shape, with random LoRA adapters, for the scale
benchmarks (benchmarks/scale.py). Streams shard by shard, tensor by tensor: it never holds the model in memory,
so a 7B shape (14.5 GB of bf16) is written on a machine with a few GB free.

    python benchmarks/make_large_checkpoint.py --shape sheared-llama-1.3b --output benchmarks/.models/sheared-1.3b
    python benchmarks/make_large_checkpoint.py --shape Qwen/Qwen2.5-7B-Instruct --output benchmarks/.models/qwen-7b
    python benchmarks/make_large_checkpoint.py --shape path/to/config.json --layers 4 --output benchmarks/.models/x

``--shape`` is one of ``SHAPES``, a base of the shipped recipes (its repo id, from the memory plan's table of
known bases), or any decoder's config.json (the file, or the folder holding it; a multimodal config's text tower).

Writes OUTPUT/base (config.json, sharded safetensors with an index, a byte-level BPE tokenizer trained on the
spot), OUTPUT/mntp and OUTPUT/supervised (PEFT LoRA adapters, r=16, where a training stage puts LoRA: the family's
projections, and a mixture of experts' expert weights; laid out as the official McGill-NLP adapters are: trained on
the ``…ForCausalLM``/``…BiForMNTP``, keys ``base_model.model.model.…``). benchmarks/.models/ is git-ignored; delete the folders when done (a 7B shape
is 14.5 GB).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from encode import drop_token_type_ids  # noqa: E402  (a sibling script, not a package)

#: Public config.json values of the models whose shapes are measured (Hub pages of the repos named).
SHAPES = {
    # mistralai/Mistral-7B-Instruct-v0.2
    "mistral-7b": {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None,
        "vocab_size": 32000, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "initializer_range": 0.02,
        "tie_word_embeddings": False, "attention_dropout": 0.0, "torch_dtype": "bfloat16",
    },
    # the 26M-parameter Llama of benchmarks/encode.py and train.py (the first row of the scale table)
    "llama-26m": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 512,
        "intermediate_size": 1408, "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 8,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "vocab_size": 32000, "bos_token_id": 1,
        "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu", "initializer_range": 0.02,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    },
    # princeton-nlp/Sheared-LLaMA-1.3B (its config says float32; the benchmark writes bf16, as the 7B shape)
    "sheared-llama-1.3b": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
        "intermediate_size": 5504, "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "vocab_size": 32000, "bos_token_id": 1,
        "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu", "initializer_range": 0.02,
        "tie_word_embeddings": False, "pretraining_tp": 1, "torch_dtype": "bfloat16",
    },
}


def random_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=dtype)
    return (torch.randn(shape, generator=generator) * 0.02).to(dtype)


def shape_values(shape: str) -> dict:
    """The config.json values of ``shape`` (module docstring), with ``architectures`` set."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from llm2vec_hf.training.memory_plan import KNOWN_BASES

    if shape in SHAPES:
        return dict(SHAPES[shape])
    if shape in KNOWN_BASES:
        values = dict(KNOWN_BASES[shape])
    else:
        path = Path(shape)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise SystemExit(f"--shape {shape}: not one of {', '.join([*SHAPES, *KNOWN_BASES])}, and no config.json "
                             "there")
        values = json.loads(path.read_text())
        if "text_config" in values:  # a multimodal checkpoint: llm2vec-hf trains and loads its text tower only
            values = dict(values["text_config"])
        if "model_type" not in values:
            raise SystemExit(f"--shape {shape}: the config has no model_type")
        values = {k: v for k, v in values.items() if k not in ("architectures", "auto_map", "_name_or_path")}
    model_type = values["model_type"]
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise SystemExit(f"--shape {shape}: transformers has no causal LM for model_type {model_type!r}")
    # config.json keeps the shape's own values, so that transformers 4.44 (the official side) reads the same model;
    # what the table of known bases leaves out (rope settings, norms' epsilon) takes each version's defaults, which
    # change no tensor's shape
    return {**values, "architectures": [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]]}


def write_base(folder: Path, shape: str, dtype: torch.dtype, max_shard_size: str, seed: int, layers: int | None):
    """Writes the base; returns its causal LM on the meta device (the adapters' layout)."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.core_model_loading import revert_weight_conversion

    from llm2vec_hf.checkpoint.export import make_tokenizer_portable
    from llm2vec_hf.checkpoint.merged_weights import write_safetensors
    from llm2vec_hf.training.tiny_model import SPECIAL_TOKENS, train_tokenizer

    values = shape_values(shape)
    if layers:
        values["num_hidden_layers"] = layers
        for per_layer in ("layer_types", "mlp_only_layers"):  # lists as long as the layers
            if isinstance(values.get(per_layer), list) and len(values[per_layer]) > layers:
                values[per_layer] = values[per_layer][:layers]
    values["torch_dtype"] = str(dtype).removeprefix("torch.")
    values.pop("dtype", None)
    # a real vocabulary is not available offline: a byte-level BPE with the family's special tokens (Llama's for a
    # family the tiny models do not know), smaller than the embedding (as tokenizers with unused embedding rows are);
    # the config's special token ids are the tokenizer's
    family = values["model_type"] if values["model_type"] in SPECIAL_TOKENS else "llama"
    tokenizer = train_tokenizer(family, vocab_size=min(4096, values["vocab_size"]))
    for token in ("bos", "eos", "pad"):
        values[f"{token}_token_id"] = getattr(tokenizer, f"{token}_token_id")
    folder.mkdir(parents=True, exist_ok=True)
    config = AutoConfig.for_model(**{k: v for k, v in values.items() if k != "architectures"})
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, dtype=dtype)
    tied = getattr(skeleton, "all_tied_weights_keys", None) or {}  # a tied LM head is not stored, as save_pretrained
    layout = {name: torch.empty(t.shape, dtype=t.dtype if not t.is_floating_point() else dtype, device="meta")
              for name, t in skeleton.state_dict().items() if name not in tied}
    # the names and shapes save_pretrained writes, as the Hub's files hold them: transformers reverts its load-time
    # conversions (a mixture of experts' fused expert matrices become one tensor per expert)
    layout = dict(revert_weight_conversion(skeleton, layout))
    split = split_torch_state_dict_into_shards(layout, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=max_shard_size)
    generator = torch.Generator().manual_seed(seed)
    for filename, names in split.filename_to_tensors.items():
        tensors = ((n, random_tensor(n, tuple(layout[n].shape), layout[n].dtype, generator)) for n in names)
        write_safetensors(str(folder / filename), {n: layout[n] for n in names}, tensors)
        print(f"  {filename}: {len(names)} tensors", flush=True)
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (folder / "config.json").write_text(json.dumps(values, indent=2) + "\n")
    tokenizer.save_pretrained(folder)
    make_tokenizer_portable(folder)  # the official llm2vec (transformers 4.44) loads the same base
    drop_token_type_ids(folder)
    return skeleton


def write_adapter(folder: Path, base: Path, skeleton, rank: int, seed: int, trained_on: str) -> None:
    """A PEFT LoRA adapter with random A and B (B non-zero, so that merging changes the weights), on what a training
    stage puts LoRA on (`llm2vec_hf.training.lora.lora_config` with the recipes' defaults: the family's projections,
    and a mixture of experts' expert weights). Its tensors' names and shapes are PEFT's own, read from the adapter
    PEFT wraps around the meta-device skeleton (no weights are allocated)."""
    from peft import get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file

    from llm2vec_hf.modeling.modeling_llm2vec import family_for
    from llm2vec_hf.training.arguments import ModelArguments
    from llm2vec_hf.training.lora import lora_config

    folder.mkdir(parents=True, exist_ok=True)
    lora = lora_config(ModelArguments(stage="mntp", model_name_or_path=str(base), lora_r=rank),
                       family_for(skeleton.config))
    with torch.device("meta"):
        layout = get_peft_model_state_dict(get_peft_model(copy.deepcopy(skeleton), lora))
    if not layout:
        raise SystemExit(f"LoRA on {sorted(lora.target_modules)} finds no layer in this shape: no adapter to write")
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name, meta in layout.items():
        if ".lora_A." in name:  # scaled as nn.Linear's init, so that the update's size does not grow with the width
            weights[name] = torch.randn(meta.shape, generator=generator) / meta.shape[-1] ** 0.5
        else:
            weights[name] = torch.randn(meta.shape, generator=generator) * 1e-3
    save_file(weights, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    lora.base_model_name_or_path = str(base)
    lora.save_pretrained(str(folder))
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    adapter_config["auto_mapping"] = {"base_model_class": trained_on, "parent_library": "llm2vec"}
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", required=True, help=f"one of {', '.join(SHAPES)}; a recipe base's repo id "
                        "(llm2vec_hf.training.memory_plan.KNOWN_BASES); or a config.json (file or folder)")
    parser.add_argument("--output", required=True, help="folder to write (under benchmarks/.models/)")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    parser.add_argument("--max-shard-size", default="5GB", help="shard size of the base's files (the official "
                        "repos use about 5 GB)")
    parser.add_argument("--layers", type=int, help="fewer layers than the shape (for quick checks)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.exists() and any(output.iterdir()):
        print(f"{output} exists and is not empty", file=sys.stderr)
        return 2
    started = time.time()
    skeleton = write_base(output / "base", args.shape, getattr(torch, args.dtype), args.max_shard_size, args.seed,
                          args.layers)
    family = type(skeleton).__name__.removesuffix("ForCausalLM")
    write_adapter(output / "mntp", output / "base", skeleton, args.rank, args.seed + 1, f"{family}BiForMNTP")
    write_adapter(output / "supervised", output / "base", skeleton, args.rank, args.seed + 2, f"{family}BiModel")
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
    print(f"Wrote {output} ({size / 2**30:.2f} GiB) in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
