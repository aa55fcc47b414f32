"""The vLLM step of benchmarks/gpu.sh: vLLM (the ``vllm`` GPU package) with the exact LLM2Vec pooling
(``llm2vec_hf.serving.vllm.LLM2VecVLLM``), on the GPU.

    python gpu_vllm.py --work DIR --scratch DIR [--shapes mistral-7b] [--deadline EPOCH] [--dry-run --device cpu]

Needs the tokenizer and texts that ``gpu_bench.py prepare`` wrote to the scratch folder, and a Python in which
``import vllm`` and ``import llm2vec_hf`` both work. Writes DIR/vllm.json:
- check: a small random Llama exported by llm2vec-hf (float32 weights), vLLM's vectors against
  ``LLM2Vec.encode``'s (max |Δ| in float32; min cosine in bfloat16);
- timing: each shape (Mistral-7B by default) with random weights (vLLM's ``load_format="dummy"``: no 14 GB file),
  bfloat16, every text truncated to 512 tokens, ``LLM2VecVLLM.encode`` end to end, as tokens/s and as the fraction
  of the bf16 matmul rate measured in the same process (FLOPs counted as gpu_bench.py counts them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_bench  # noqa: E402  (shapes, FLOP count, matmul rate: one definition for both steps)

LENGTH = 512


def write_model_folder(folder: Path, shape: dict, tokenizer_dir: Path, weights: bool) -> Path:
    """An llm2vec-hf checkpoint of ``shape``: exported with real random weights (``weights``), or only its
    config and tokenizer for vLLM's dummy weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from llm2vec_hf.checkpoint.export import export_checkpoint

    family = shape["family"]
    config = AutoConfig.for_model(family, vocab_size=len(json.loads((tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"]),
                                  max_position_embeddings=4096, tie_word_embeddings=False,
                                  **{k: v for k, v in shape.items() if k != "family"})
    base = folder / "base"
    if weights:
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(base, safe_serialization=True)
        for name in os.listdir(tokenizer_dir):
            (base / name).write_bytes((tokenizer_dir / name).read_bytes())
        return Path(export_checkpoint(str(base), str(folder / "exported"), max_length=LENGTH, doc_max_length=LENGTH,
                                      overwrite=True))
    # No weights: write what export writes into config.json, through the same functions.
    from llm2vec_hf.modeling import modeling_llm2vec as m
    from llm2vec_hf.modeling.encoding_settings import DEFAULT_ENCODING, REFERENCE_EOS_TEXT

    exported = folder / "exported"
    exported.mkdir(parents=True, exist_ok=True)
    m.make_config_bidirectional(config)
    config.architectures = [m.FAMILIES[family].native_model_name]
    config.llm2vec = dict(DEFAULT_ENCODING, max_length=LENGTH, doc_max_length=LENGTH, text_template="",
                          eos_text=REFERENCE_EOS_TEXT[family])
    config.save_pretrained(exported)
    for name in os.listdir(tokenizer_dir):
        (exported / name).write_bytes((tokenizer_dir / name).read_bytes())
    return exported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True)
    parser.add_argument("--scratch")
    parser.add_argument("--shapes", default="mistral-7b")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--deadline", type=float, default=float("inf"))
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes (checks the script, no GPU)")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    work, scratch = Path(args.work), Path(args.scratch or args.work)
    gpu_bench.DEVICE = args.device
    if args.dry_run:
        for shape in gpu_bench.SHAPES.values():
            shape.update(gpu_bench.TINY, head_dim=32)  # vLLM's CPU attention needs head_dim >= 32
        gpu_bench.CHECK_SHAPE.update(gpu_bench.TINY, head_dim=32)
        args.texts = 16
    import numpy as np
    import torch
    import vllm

    from llm2vec_hf import LLM2Vec
    from llm2vec_hf.serving.vllm import LLM2VecVLLM

    texts = json.loads((scratch / "texts.json").read_text())
    result = {"vllm": vllm.__version__, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name() if args.device == "cuda" else f"none ({args.device} dry run)"}

    def save() -> None:
        gpu_bench.write(work, "vllm", result, echo=True)

    engine = {"gpu_memory_utilization": 0.85} if args.device == "cuda" else {"enforce_eager": True}
    check_inputs = [" ".join(t.split()[: 5 + (i * 37) % 200]) for i, t in enumerate(texts[:16])]
    check_inputs[1::3] = [["Given a web search query, retrieve relevant passages", t] for t in check_inputs[1::3]]
    folder = write_model_folder(scratch / "vllm-check", dict(gpu_bench.CHECK_SHAPE, family="llama"),
                                scratch / "tokenizer", weights=True)
    expected = LLM2Vec.from_pretrained(str(folder)).encode(check_inputs, show_progress_bar=False)
    result["check"] = {}
    for dtype in ("float32", "bfloat16"):
        try:
            model = LLM2VecVLLM.from_pretrained(folder, dtype=dtype, **{**engine, "enforce_eager": True})  # quick start
            vectors = model.encode(check_inputs)
            del model
            cosine = torch.nn.functional.cosine_similarity(vectors, expected).min().item()
            result["check"][dtype] = {"max_abs_delta": (vectors - expected).abs().max().item(), "min_cosine": cosine,
                                      "ok": cosine >= 0.995 and (dtype != "float32" or (vectors - expected).abs().max().item() < 1e-3)}
        except Exception as error:  # a dtype this GPU's attention backend refuses: recorded, not fatal
            result["check"][dtype] = {"error": f"{type(error).__name__}: {error}"[:500]}
        save()
    result["rows"] = []
    rate = gpu_bench.bf16_matmul_tflops()
    result["bf16_matmul_tflops"] = round(rate, 1)
    inputs = texts[: args.texts]
    for name in args.shapes.split(","):
        shape = gpu_bench.SHAPES[name]
        row = {"shape": name, "length": LENGTH, "texts": len(inputs)}
        if time.time() > args.deadline - 60:
            result["rows"].append({**row, "skipped": "out of time"})
            continue
        try:
            start = time.perf_counter()
            folder = write_model_folder(scratch / f"vllm-{name}", shape, scratch / "tokenizer", weights=False)
            model = LLM2VecVLLM.from_pretrained(folder, dtype="bfloat16", load_format="dummy", **engine)
            row["start_s"] = round(time.perf_counter() - start, 1)
            input_ids, _ = model.pooler.prompts(inputs)
            tokens = sum(len(ids) for ids in input_ids)
            model.encode(inputs[: max(1, len(inputs) // 8)])  # warm-up
            if args.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            vectors = model.encode(inputs)
            seconds = time.perf_counter() - start
            flops = sum(gpu_bench.flops_per_sequence(shape, len(ids)) for ids in input_ids)
            row.update(tokens=tokens, seconds=round(seconds, 3), tokens_per_s=round(tokens / seconds),
                       fraction_of_bf16_matmul=round(flops / seconds / 1e12 / rate, 3),
                       finite=bool(np.isfinite(vectors.numpy()).all()))
            del model
        except Exception as error:
            row["error"] = f"{type(error).__name__}: {error}"[:500]
        result["rows"].append(row)
        save()
    print("\n== vLLM (LLM2VecVLLM: exact LLM2Vec pooling of vLLM's token states) ==")
    for dtype, check in result["check"].items():
        print(f"  check {dtype}: {json.dumps(check)}")
    for row in result["rows"]:
        print(f"  {json.dumps(row)}")


if __name__ == "__main__":
    main()
