"""Writes a random-weight decoder checkpoint of a real model's shape, with random LoRA adapters, for the scale
benchmarks (benchmarks/scale.py). Streams shard by shard, tensor by tensor: it never holds the model in memory,
so a 7B shape (14.5 GB of bf16) is written on a machine with a few GB free.

    python benchmarks/make_large_checkpoint.py --shape sheared-llama-1.3b --output benchmarks/.models/sheared-1.3b

Writes OUTPUT/base (config.json, sharded safetensors with an index, a byte-level BPE tokenizer trained on the
spot), OUTPUT/mntp and OUTPUT/supervised (PEFT LoRA adapters, r=16, all seven projections, laid out as the
official McGill-NLP adapters are: trained on the ``…ForCausalLM``/``…BiForMNTP``, keys ``base_model.model.model.…``).
benchmarks/.models/ is git-ignored; delete the folders when done (a 7B shape is 14.5 GB).
"""

from __future__ import annotations

import argparse
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
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def random_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=dtype)
    return (torch.randn(shape, generator=generator) * 0.02).to(dtype)


def write_base(folder: Path, shape: str, dtype: torch.dtype, max_shard_size: str, seed: int, layers: int | None) -> None:
    from huggingface_hub import split_torch_state_dict_into_shards
    from transformers import AutoConfig, AutoModelForCausalLM

    from llm2vec_hf.checkpoint.export import make_tokenizer_portable
    from llm2vec_hf.checkpoint.merged_weights import write_safetensors
    from llm2vec_hf.training.tiny_model import train_tokenizer

    values = dict(SHAPES[shape])
    if layers:
        values["num_hidden_layers"] = layers
    values["torch_dtype"] = str(dtype).removeprefix("torch.")
    folder.mkdir(parents=True, exist_ok=True)
    config = AutoConfig.for_model(**{k: v for k, v in values.items() if k != "architectures"})
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, dtype=dtype)
    layout = {name: torch.empty(t.shape, dtype=dtype, device="meta") for name, t in skeleton.state_dict().items()}
    split = split_torch_state_dict_into_shards(layout, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=max_shard_size)
    generator = torch.Generator().manual_seed(seed)
    for filename, names in split.filename_to_tensors.items():
        tensors = ((n, random_tensor(n, tuple(layout[n].shape), dtype, generator)) for n in names)
        write_safetensors(str(folder / filename), {n: layout[n] for n in names}, tensors)
        print(f"  {filename}: {len(names)} tensors", flush=True)
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (folder / "config.json").write_text(json.dumps(values, indent=2) + "\n")
    # a real 32000-token vocabulary is not available offline: a byte-level BPE of the family's special tokens,
    # smaller than the embedding (as tokenizers with unused embedding rows are)
    tokenizer = train_tokenizer(values["model_type"], vocab_size=4096)
    tokenizer.save_pretrained(folder)
    make_tokenizer_portable(folder)  # the official llm2vec (transformers 4.44) loads the same base
    drop_token_type_ids(folder)


def write_adapter(folder: Path, base: Path, config: dict, rank: int, seed: int, trained_on: str) -> None:
    """A PEFT LoRA adapter with random A and B (B non-zero, so that merging changes the weights)."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    head_dim = hidden // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    shapes = {"q_proj": (hidden, hidden), "k_proj": (kv, hidden), "v_proj": (kv, hidden), "o_proj": (hidden, hidden),
              "gate_proj": (inter, hidden), "up_proj": (inter, hidden), "down_proj": (hidden, inter)}
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for layer in range(config["num_hidden_layers"]):
        for projection in PROJECTIONS:
            out_features, in_features = shapes[projection]
            block = "self_attn" if projection in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            key = f"base_model.model.model.layers.{layer}.{block}.{projection}"
            weights[f"{key}.lora_A.weight"] = torch.randn((rank, in_features), generator=generator) / in_features ** 0.5
            weights[f"{key}.lora_B.weight"] = torch.randn((out_features, rank), generator=generator) * 1e-3
    save_file(weights, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05, target_modules=PROJECTIONS, bias="none",
               task_type=None, base_model_name_or_path=str(base)).save_pretrained(str(folder))
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    adapter_config["auto_mapping"] = {"base_model_class": trained_on, "parent_library": "llm2vec"}
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
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
    write_base(output / "base", args.shape, getattr(torch, args.dtype), args.max_shard_size, args.seed, args.layers)
    config = json.loads((output / "base" / "config.json").read_text())
    family = config["architectures"][0].removesuffix("ForCausalLM")
    write_adapter(output / "mntp", output / "base", config, args.rank, args.seed + 1, f"{family}BiForMNTP")
    write_adapter(output / "supervised", output / "base", config, args.rank, args.seed + 2, f"{family}BiModel")
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
    print(f"Wrote {output} ({size / 2**30:.2f} GiB) in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
