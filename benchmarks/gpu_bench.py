"""The worker of benchmarks/gpu.sh: correctness checks and timings on one CUDA GPU.

Run by gpu.sh in two environments:

    python gpu_bench.py prepare --work DIR             # llm2vec-hf env: tokenizer + texts for both sides
    python gpu_bench.py correctness --work DIR         # llm2vec-hf env: bidirectional per backend, bf16 vs fp32
    python gpu_bench.py timing --side llm2vec-hf ...   # llm2vec-hf env (transformers 5.x)
    python gpu_bench.py timing --side official ...     # official env (llm2vec 0.2.3, transformers 4.44.2)
    python gpu_bench.py training --work DIR            # llm2vec-hf env: supervised steps, packed and padded
    python gpu_bench.py report --work DIR              # merges the JSON parts into one table

Each step writes DIR/<step>.json. Timing uses random weights (bf16, built on the GPU; speed does not depend on
the values), texts long enough that every row is exactly `length` tokens (no padding), and reports:
- forward: the model alone on pre-tokenized (batch, length) ids, the number that the hardware bounds;
- encode: ``LLM2Vec.encode`` end to end (tokenizing, doc_max_length cut, pooling) on 4 batches of texts;
as tokens/s and as the fraction of the bf16 matmul rate measured in the same step (FLOPs per sequence =
2 × non-embedding parameters × length + 4 × layers × hidden × length², as benchmarks/encode.py counts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

SHAPES = {
    # Sheared-LLaMA-1.3B (the paper's smallest model)
    "llama-1.3b": dict(family="llama", hidden_size=2048, num_hidden_layers=24, intermediate_size=5504,
                       num_attention_heads=16, num_key_value_heads=16),
    # Mistral-7B-Instruct-v0.2
    "mistral-7b": dict(family="mistral", hidden_size=4096, num_hidden_layers=32, intermediate_size=14336,
                       num_attention_heads=32, num_key_value_heads=8),
}
SWEEP = {  # (batch, length) per shape; length 512 is the target length of the throughput figures
    "llama-1.3b": [(64, 128), (32, 512), (128, 512)],
    "mistral-7b": [(64, 128), (16, 512), (64, 512)],
}
DEVICE = "cuda"  # --device cpu with --dry-run checks the script's logic on a machine without a GPU
TINY = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)
CHECK_SHAPE = dict(hidden_size=256, num_hidden_layers=4, intermediate_size=688, num_attention_heads=8,
                   num_key_value_heads=4)


def deadline_left(args) -> float:
    return args.deadline - time.time()


def write(work: Path, name: str, data: dict, echo: bool = False) -> None:
    (work / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    if echo:
        print(json.dumps(data)[:4000], flush=True)


def synchronize() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def bf16_matmul_tflops(size: int = 8192, reps: int = 10) -> float:
    import torch

    if DEVICE != "cuda":
        size, reps = 256, 3

    a = torch.randn(size, size, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=DEVICE, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    synchronize()
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e12


def flash_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except Exception:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# prepare: a tokenizer both transformers 4.44 and 5.x read, and texts
# ---------------------------------------------------------------------------------------------------------------


def prepare(args) -> None:
    from llm2vec_hf.checkpoint.export import make_tokenizer_portable
    from llm2vec_hf.training.tiny_model import english_corpus, train_tokenizer

    work, scratch = Path(args.work), Path(args.scratch or args.work)
    scratch.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer("llama", vocab_size=4096)
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    tokenizer.save_pretrained(scratch / "tokenizer")
    make_tokenizer_portable(scratch / "tokenizer")
    config_path = scratch / "tokenizer" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["model_input_names"] = ["input_ids", "attention_mask"]
    config_path.write_text(json.dumps(config))
    words = " ".join(english_corpus()).split()
    # 900 words is more than 512 tokens with this tokenizer: every row is truncated to exactly `length` tokens.
    texts = [" ".join(words[(i * 977) % (len(words) - 900):][:900]) for i in range(4 * 128)]
    (scratch / "texts.json").write_text(json.dumps(texts))
    write(work, "prepare", {"tokenizer_vocab": len(tokenizer), "texts": len(texts)})


def load_tokenizer(work: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(work / "tokenizer")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # as the reference does
    return tokenizer


# ---------------------------------------------------------------------------------------------------------------
# correctness (llm2vec-hf): bidirectional under every backend; vectors in bf16 against fp32
# ---------------------------------------------------------------------------------------------------------------


def hf_model(shape: dict, family: str, attn: str, dtype, vocab: int, bidirectional: bool = True):
    import torch
    from transformers import LlamaConfig, LlamaModel, MistralConfig, MistralModel

    from llm2vec_hf.modeling import modeling_llm2vec as m

    spec = {k: v for k, v in shape.items() if k != "family"}
    if bidirectional:
        config_cls, model_cls = {"llama": (m.BidirectionalLlamaConfig, m.BidirectionalLlamaModel),
                                 "mistral": (m.BidirectionalMistralConfig, m.BidirectionalMistralModel)}[family]
    else:
        config_cls, model_cls = {"llama": (LlamaConfig, LlamaModel), "mistral": (MistralConfig, MistralModel)}[family]
    config = config_cls(vocab_size=vocab, max_position_embeddings=4096, **spec)
    config._attn_implementation = attn
    if not bidirectional:
        config.is_causal = True
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(0)
        with torch.device(DEVICE):
            model = model_cls(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def first_token_moves(model, vocab: int, padded: bool) -> float:
    """How much the first real token's output changes when only the last token changes."""
    import torch

    torch.manual_seed(1)
    ids = torch.randint(5, vocab, (2, 24), device=DEVICE)
    mask = torch.ones_like(ids)
    first = 0
    if padded:  # row 0 left-padded by 6
        mask[0, :6] = 0
        first = 6
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 7) % vocab
    with torch.inference_mode():
        a = model(input_ids=ids, attention_mask=mask).last_hidden_state[0, first].float()
        b = model(input_ids=changed, attention_mask=mask).last_hidden_state[0, first].float()
    return float((a - b).abs().max())


def correctness(args) -> None:
    import numpy as np
    import torch

    from llm2vec_hf import LLM2Vec

    try:  # flex_attention recompiles per shape; past the default limit it falls back to a slow path
        torch._dynamo.config.recompile_limit = 64
    except AttributeError:
        pass
    work, scratch = Path(args.work), Path(args.scratch or args.work)
    tokenizer = load_tokenizer(scratch)
    vocab = len(tokenizer)
    # Mixed lengths (so rows are padded), one batch: flex_attention compiles once per shape, keep shapes few.
    texts = json.loads((scratch / "texts.json").read_text())[:32]
    texts = [" ".join(t.split()[: 5 + (i * 37) % 200]) for i, t in enumerate(texts)]
    backends = ["eager", "sdpa", "flex_attention"] + (["flash_attention_2"] if flash_available() else [])
    results = {"backends": backends, "flash_attn_installed": flash_available(), "checks": [], "failures": [],
               "complete": False}
    reference = None
    for family in ("llama", "mistral"):
        for attn in backends:
            dtypes = [torch.bfloat16] if attn == "flash_attention_2" else [torch.float32, torch.bfloat16]
            for dtype in dtypes:
                row = {"family": family, "attn": attn, "dtype": str(dtype).replace("torch.", "")}
                model = None
                try:
                    model = hf_model(CHECK_SHAPE, family, attn, dtype, vocab)
                    row["first_token_delta_unpadded"] = first_token_moves(model, vocab, padded=False)
                    row["first_token_delta_padded"] = first_token_moves(model, vocab, padded=True)
                    encoder = LLM2Vec(model, tokenizer, pooling_mode="mean", max_length=256, doc_max_length=256)
                    vectors = encoder.encode(texts, batch_size=32, show_progress_bar=False).numpy()
                    if attn == "eager" and dtype == torch.float32:
                        reference = vectors
                    delta = np.abs(vectors - reference).max() / np.abs(reference).max()
                    cos = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
                    row.update(max_rel_delta_vs_eager_fp32=float(delta), min_cosine_vs_eager_fp32=float(cos.min()))
                    bidirectional = row["first_token_delta_unpadded"] > 1e-3 and row["first_token_delta_padded"] > 1e-3
                    close = delta <= 1e-4 if dtype == torch.float32 else cos.min() >= 0.995
                    row["ok"] = bool(bidirectional and close)
                except Exception as error:  # a backend that cannot run here is a finding, not a crash
                    row.update(ok=False, error=f"{type(error).__name__}: {error}"[:500])
                if not row["ok"]:
                    results["failures"].append(row)
                results["checks"].append(row)
                print(row, flush=True)
                write(work, "correctness", results)  # so far: a step stopped by its time limit keeps its rows
                del model
                empty_cache()
        reference = None  # each family has its own weights
        # Control: the causal model must NOT move the first token (proves the check can fail).
        causal = hf_model(CHECK_SHAPE, family, "sdpa", torch.float32, vocab, bidirectional=False)
        control = first_token_moves(causal, vocab, padded=False)
        results["checks"].append({"family": family, "attn": "sdpa", "causal_control_first_token_delta": control,
                                  "ok": control < 1e-5})
        if control >= 1e-5:
            results["failures"].append({"family": family, "causal_control": control})
    results["complete"] = True
    write(work, "correctness", results)


# ---------------------------------------------------------------------------------------------------------------
# timing: the same shapes and texts in either environment
# ---------------------------------------------------------------------------------------------------------------


def official_model(shape: dict, family: str, attn: str, vocab: int):
    import torch
    from llm2vec.models import LlamaBiModel, MistralBiModel
    from transformers import LlamaConfig, MistralConfig

    spec = {k: v for k, v in shape.items() if k != "family"}
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaBiModel), "mistral": (MistralConfig, MistralBiModel)}[family]
    config = config_cls(vocab_size=vocab, max_position_embeddings=4096, attn_implementation=attn, **spec)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(DEVICE):
            model = model_cls(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def empty_cache() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def flops_per_sequence(shape: dict, length: int) -> float:
    h, n_layers, inter = shape["hidden_size"], shape["num_hidden_layers"], shape["intermediate_size"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    params = n_layers * (2 * h * h + 2 * h * kv + 3 * h * inter)
    return 2 * params * length + 4 * n_layers * h * length * length


def timed(fn, reps: int) -> float:

    fn()
    synchronize()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def timing(args) -> None:
    import torch

    work, scratch = Path(args.work), Path(args.scratch or args.work)
    side = args.side
    if side == "official":
        from llm2vec import LLM2Vec
    else:
        from llm2vec_hf import LLM2Vec
    tokenizer = load_tokenizer(scratch)
    vocab = len(tokenizer)
    texts = json.loads((scratch / "texts.json").read_text())
    rate = bf16_matmul_tflops()
    backends = ["sdpa"] + (["flash_attention_2"] if flash_available() else [])
    rows = []
    import transformers

    def save() -> None:  # after every row: a step stopped by its time limit keeps what it measured
        write(work, f"timing-{side}", {
            "side": side, "transformers": transformers.__version__, "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else f"none ({DEVICE} dry run)",
            "bf16_matmul_tflops": round(rate, 1), "flash_attn_installed": flash_available(), "rows": rows,
        })

    for shape_name in args.shapes.split(","):
        shape = SHAPES[shape_name]
        for attn in backends:
            if deadline_left(args) < 20:
                rows.append({"shape": shape_name, "attn": attn, "skipped": "out of time"})
                continue
            start = time.perf_counter()
            if side == "official":
                model = official_model(shape, shape["family"], attn, vocab)
            else:
                model = hf_model(shape, shape["family"], attn, torch.bfloat16, vocab)
            build_s = time.perf_counter() - start
            for batch, length in SWEEP[shape_name]:
                row = {"side": side, "shape": shape_name, "attn": attn, "batch": batch, "length": length,
                       "build_s": round(build_s, 1)}
                if deadline_left(args) < 15:
                    rows.append({**row, "skipped": "out of time"})
                    continue
                try:
                    ids = torch.randint(5, vocab, (batch, length), device=DEVICE)
                    mask = torch.ones_like(ids)

                    def forward():
                        with torch.inference_mode():
                            model(input_ids=ids, attention_mask=mask)

                    seconds = timed(forward, reps=3)
                    flops = flops_per_sequence(shape, length) * batch
                    row.update(forward_tokens_per_s=round(batch * length / seconds),
                               forward_fraction_of_bf16_matmul=round(flops / seconds / 1e12 / rate, 3))
                    encoder = LLM2Vec(model, tokenizer, pooling_mode="mean", max_length=length, doc_max_length=length)
                    inputs = texts[: 4 * batch]
                    # The same batch shape for both sides: llm2vec-hf's token budget would otherwise split it.
                    budget = {} if side == "official" else {"max_batch_tokens": batch * length}

                    def encode():
                        encoder.encode(inputs, batch_size=batch, show_progress_bar=False, **budget)

                    seconds = timed(encode, reps=2)
                    row.update(encode_tokens_per_s=round(len(inputs) * length / seconds),
                               encode_fraction_of_bf16_matmul=round(flops * 4 / seconds / 1e12 / rate, 3))
                    if side != "official":
                        row.update(mixed_lengths(encoder, tokenizer, inputs, shape, batch, length, rate))
                except torch.OutOfMemoryError as error:
                    row["error"] = f"out of memory: {str(error)[:200]}"
                except Exception as error:
                    row["error"] = f"{type(error).__name__}: {error}"[:500]
                rows.append(row)
                print(row, flush=True)
                save()
                empty_cache()
            del model
            empty_cache()
    save()


def mixed_lengths(encoder, tokenizer, inputs: list[str], shape: dict, batch: int, length: int, rate: float) -> dict:
    """The packed path: texts of mixed lengths (8 words to past ``length`` tokens), encoded with packed rows (the
    default; where the backend cannot pack, e.g. flash_attention_2, it pads) and with one text per row. Tokens/s
    and the fraction of the bf16 matmul rate count real tokens only."""
    mixed = [" ".join(text.split()[: 8 + (i * 53) % 600]) for i, text in enumerate(inputs)]
    lengths = [min(length, len(ids)) for ids in tokenizer(mixed)["input_ids"]]
    flops = sum(flops_per_sequence(shape, n) for n in lengths)
    result = {"mixed_tokens": sum(lengths)}
    for label, packing in (("packed", None), ("unpacked", False)):
        def encode():
            encoder.encode(mixed, batch_size=batch, show_progress_bar=False, max_batch_tokens=batch * length,
                           packing=packing)

        seconds = timed(encode, reps=2)
        result[f"mixed_{label}_tokens_per_s"] = round(sum(lengths) / seconds)
        result[f"mixed_{label}_fraction_of_bf16_matmul"] = round(flops / seconds / 1e12 / rate, 3)
    return result


# ---------------------------------------------------------------------------------------------------------------
# training (llm2vec-hf): supervised contrastive steps at the recipes' settings, padding-free and padded
# ---------------------------------------------------------------------------------------------------------------
#: The supervised recipes' settings: LoRA r 16 on every projection, gradient checkpointing, bf16, sdpa,
#: max_seq_length 512, loss scale 50, mean pooling; per-device batch (records of query, positive, negative).
TRAINING = {"shape": "mistral-7b", "batch": 16, "max_seq_length": 512, "steps": 6, "lora_r": 16}


def e5_like_records(texts: list[str], count: int, seed: int = 0) -> list[tuple[list[str], str, str]]:
    """``count`` (``[instruction, query]``, positive, negative): queries of 6-30 words beside passages of
    60-400 words, as in the E5 mix (benchmarks/train_data.py draws them per dataset)."""
    import random

    rng = random.Random(seed)
    words = " ".join(texts).split()

    def draw(median: int, cap: int) -> str:
        length = min(cap, max(3, int(rng.lognormvariate(0, 0.6) * median)))
        start = rng.randrange(0, len(words) - length)
        return " ".join(words[start : start + length])

    instruction = "Given a web search query, retrieve relevant passages that answer the query"
    return [([instruction, draw(12, 40)], draw(120, 450), draw(120, 450)) for _ in range(count)]


def training_flops(shape: dict, lengths: list[int]) -> float:
    """FLOPs of one step on texts of ``lengths``: forward, backward (twice the forward) and the forward that
    gradient checkpointing recomputes, so 4 forwards (LoRA's own FLOPs left out: under 1 % at r 16)."""
    return 4 * sum(flops_per_sequence(shape, n) for n in lengths)


def training(args) -> None:
    import statistics

    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from llm2vec_hf.modeling.packing import use_varlen_attention
    from llm2vec_hf.training.arguments import ModelArguments
    from llm2vec_hf.training.contrastive import sentence_transformer_for
    from llm2vec_hf.training.lora import add_lora, enable_gradient_checkpointing

    work, scratch = Path(args.work), Path(args.scratch or args.work)
    tokenizer = load_tokenizer(scratch)
    tokenizer.padding_side = "right"
    shape = SHAPES[TRAINING["shape"]]
    batch, steps = (4, 3) if args.dry_run else (TRAINING["batch"], TRAINING["steps"])
    texts = json.loads((scratch / "texts.json").read_text())
    records = e5_like_records(texts, batch * steps)
    rate = bf16_matmul_tflops()
    base = scratch / "training-base"  # config and tokenizer only: the module reads them, the weights are built here
    results = {"shape": TRAINING["shape"], "settings": {**TRAINING, "batch": batch, "steps": steps},
               "bf16_matmul_tflops": round(rate, 1), "flash_attn_installed": flash_available(), "rows": []}
    import transformers

    results.update(transformers=transformers.__version__, torch=torch.__version__,
                   gpu=torch.cuda.get_device_name() if DEVICE == "cuda" else f"none ({DEVICE} dry run)")
    for padding_free in (True, False):
        row = {"padding_free": padding_free}
        if deadline_left(args) < 60:
            results["rows"].append({**row, "skipped": "out of time"})
            continue
        try:
            model = hf_model(shape, shape["family"], "sdpa", torch.bfloat16, len(tokenizer)).train()
            model.config.save_pretrained(base)
            tokenizer.save_pretrained(base)
            if padding_free:
                use_varlen_attention(model)
            torch.manual_seed(0)
            peft_model = add_lora(model, ModelArguments("supervised", str(base), lora_r=TRAINING["lora_r"],
                                                        lora_dropout=0.0))
            enable_gradient_checkpointing(peft_model)
            encoder = sentence_transformer_for(peft_model, tokenizer, str(base), TRAINING["max_seq_length"], "mean",
                                               padding_free=padding_free)
            loss = MultipleNegativesRankingLoss(encoder, scale=50.0)
            optimizer = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=1e-5)
            seconds, losses, peaks, flops, real = [], [], [], [], []
            for step in range(steps):
                chunk = records[step * batch : (step + 1) * batch]
                columns = [encoder[0].preprocess([r[i] for r in chunk]) for i in range(3)]
                columns = [{k: v.to(DEVICE) for k, v in c.items()} for c in columns]
                lengths = [int(n) for c in columns for n in c["attention_mask"].sum(1)]
                if DEVICE == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                synchronize()
                start = time.perf_counter()
                value = loss(columns, None)
                value.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                synchronize()
                seconds.append(time.perf_counter() - start)
                losses.append(float(value.detach()))
                peaks.append(torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else 0.0)
                flops.append(training_flops(shape, lengths))
                real.append(sum(lengths))
            timed = slice(1, None)  # the first step warms up kernels and the allocator
            step_s = statistics.median(seconds[timed])
            row.update(step_s=round(step_s, 3), real_tokens_per_step=round(statistics.mean(real[timed])),
                       real_tokens_per_s=round(sum(real[timed]) / sum(seconds[timed])),
                       mfu_of_bf16_matmul=round(sum(flops[timed]) / sum(seconds[timed]) / 1e12 / rate, 3),
                       peak_memory_gib=round(max(peaks), 2), losses=losses)
            del model, peft_model, encoder, optimizer
        except torch.OutOfMemoryError as error:
            row["error"] = f"out of memory: {str(error)[:200]}"
        except Exception as error:
            row["error"] = f"{type(error).__name__}: {error}"[:500]
        results["rows"].append(row)
        print(row, flush=True)
        write(work, "training", results)
        empty_cache()
    rows = {r["padding_free"]: r for r in results["rows"] if "losses" in r}
    if len(rows) == 2:  # same weights, LoRA and batches: the first loss agrees within bf16 rounding
        results["first_loss_relative_delta"] = abs(rows[True]["losses"][0] - rows[False]["losses"][0]) / max(
            abs(rows[False]["losses"][0]), 1e-9)
    write(work, "training", results)


# ---------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------


def report(args) -> None:
    work = Path(args.work)
    parts = {}
    for name in ("prepare", "correctness", "timing-llm2vec-hf", "timing-official", "training"):
        path = work / f"{name}.json"
        parts[name] = json.loads(path.read_text()) if path.is_file() else None
    correctness_part = parts["correctness"] or {}
    print("\n== correctness (llm2vec-hf) ==")
    for row in correctness_part.get("checks", []):
        print("  " + ("ok  " if row.get("ok") else "FAIL") + " " + json.dumps(row))
    print("\n== timing (bf16; tokens/s and fraction of the measured bf16 matmul rate) ==")
    official = {(r["shape"], r["attn"], r.get("batch"), r.get("length")): r
                for r in (parts["timing-official"] or {}).get("rows", [])}
    print(f"{'side':<11} {'shape':<11} {'attn':<18} {'batch':>5} {'len':>4} {'fwd tok/s':>10} {'fwd %mm':>7} "
          f"{'enc tok/s':>10} {'enc %mm':>7} {'enc vs official':>15}")
    for side in ("timing-llm2vec-hf", "timing-official"):
        part = parts[side]
        if not part:
            print(f"  ({side}: not run)")
            continue
        print(f"  [{side}: {part['gpu']}, torch {part['torch']}, transformers {part['transformers']}, "
              f"bf16 matmul {part['bf16_matmul_tflops']} TFLOP/s]")
        for row in part["rows"]:
            if "forward_tokens_per_s" not in row or "encode_tokens_per_s" not in row:
                print(f"{row.get('side', side):<11} {row['shape']:<11} {row['attn']:<18} "
                      f"{row.get('skipped') or row.get('error')}")
                continue
            other = official.get((row["shape"], row["attn"], row["batch"], row["length"]))
            ratio = (f"{row['encode_tokens_per_s'] / other['encode_tokens_per_s']:.2f}x"
                     if side == "timing-llm2vec-hf" and other and other.get("encode_tokens_per_s") else "")
            print(f"{row['side']:<11} {row['shape']:<11} {row['attn']:<18} {row['batch']:>5} {row['length']:>4} "
                  f"{row['forward_tokens_per_s']:>10} {100 * row['forward_fraction_of_bf16_matmul']:>6.0f}% "
                  f"{row['encode_tokens_per_s']:>10} {100 * row['encode_fraction_of_bf16_matmul']:>6.0f}% {ratio:>15}")
            if "mixed_packed_tokens_per_s" in row:
                print(f"{'':<11} {'':<11} mixed lengths ({row['mixed_tokens']} tokens): packed "
                      f"{row['mixed_packed_tokens_per_s']} tok/s ({100 * row['mixed_packed_fraction_of_bf16_matmul']:.0f}%), "
                      f"one text per row {row['mixed_unpacked_tokens_per_s']} tok/s "
                      f"({100 * row['mixed_unpacked_fraction_of_bf16_matmul']:.0f}%)")
    train = parts["training"]
    if train:
        print(f"\n== training: supervised, {train['shape']}, LoRA r {train['settings']['lora_r']}, bf16, gradient "
              f"checkpointing, batch {train['settings']['batch']} records x 3 texts, max {train['settings']['max_seq_length']} "
              f"tokens ({train['gpu']}; MFU = model FLOPs of the real tokens / time / measured bf16 matmul rate) ==")
        for row in train["rows"]:
            label = "padding-free" if row["padding_free"] else "padded"
            if "step_s" not in row:
                print(f"  {label:<13} {row.get('skipped') or row.get('error')}")
                continue
            print(f"  {label:<13} step {row['step_s']:.3f} s, {row['real_tokens_per_s']} real tokens/s, MFU "
                  f"{100 * row['mfu_of_bf16_matmul']:.0f}%, peak {row['peak_memory_gib']} GiB")
        if "first_loss_relative_delta" in train:
            print(f"  first-step loss, padding-free vs padded: relative delta {train['first_loss_relative_delta']:.2e}")
    merged = {"parts": parts}
    (work / "gpu_results.json").write_text(json.dumps(merged, indent=2) + "\n")
    if not correctness_part.get("complete") or correctness_part.get("failures"):
        print("\ncorrectness: FAILED or not run", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["prepare", "correctness", "timing", "training", "report"])
    parser.add_argument("--work", required=True, help="where the JSON results go")
    parser.add_argument("--scratch", help="where the tokenizer and texts go (default: --work)")
    parser.add_argument("--side", choices=["llm2vec-hf", "official"], default="llm2vec-hf")
    parser.add_argument("--shapes", default="llama-1.3b,mistral-7b")
    parser.add_argument("--deadline", type=float, default=time.time() + 3600, help="unix time to stop timing by")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on --device (checks the logic, no GPU)")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if args.dry_run:
        for name in SHAPES:
            SHAPES[name] = {"family": SHAPES[name]["family"], **TINY}
            SWEEP[name] = [(4, 32), (2, 64)]
        CHECK_SHAPE.update(TINY)
    {"prepare": prepare, "correctness": correctness, "timing": timing, "training": training,
     "report": report}[args.step](args)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
