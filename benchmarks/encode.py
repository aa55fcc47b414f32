"""Encoding throughput of llm2vec-hf against the official llm2vec 0.2.3, on the same weights and corpus.

    python benchmarks/encode.py                      # full run: 26M-parameter Llama + tiny, 2 threads
    python benchmarks/encode.py --quick              # a smaller corpus, for a smoke test

Paths: official (llm2vec 0.2.3 ``LLM2Vec.encode``), llm2vec-hf (``LLM2Vec.encode``), llm2vec-hf-encode (the
``llm2vec-hf encode`` command as a function call: .jsonl in, .npy out, loading the model every round),
sentence-transformers (``SentenceTransformer.encode`` of the exported checkpoint, instructions as prompts),
vllm (``llm2vec_hf.serving.vllm.LLM2VecVLLM``: vLLM's per-token states of the exported checkpoint, pooled as
LLM2Vec pools; vLLM runs in its own environment, ``--vllm-python``, see docs/serving.md; its engine processes'
threads are set by OMP_NUM_THREADS like the other paths, and it needs head_dim >= 32, so not llama-tiny).

The official library runs in its own virtual environment (created on first use in benchmarks/.venv-official,
or pass --official-python); it is never a dependency of llm2vec-hf. Paths are timed alternately, several
rounds, and the best round is reported, because this machine is shared and noisy.

A path may carry options: ``llm2vec-hf:max_batch_tokens=4096``, ``llm2vec-hf:compile=1`` (compile_for_inference;
its one-off compile time is in the JSON's warmup_seconds, not in the throughput), ``llm2vec-hf:packing=0`` (one
text per row instead of packed rows; also for sentence-transformers).

The CPU's instruction set is in the output: its flags, the kernels torch picked (``cpu_capability``, per worker)
and the env that capped it. To measure AVX2 code on an AVX-512 machine:
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/encode.py …``.

Reported per path: texts/s, tokens/s, achieved GFLOP/s as a fraction of the fp32 matmul rate measured in the
same run, peak RSS of the process, and max |Δ| of the vectors against the official ones. With --profile, each
path also encodes once under torch.profiler, and a second table splits its time into matmul, attention, other
torch ops and time outside torch ops (Python, tokenizer).
FLOPs per text = 2 × non-embedding parameters × tokens + 4 × layers × hidden × tokens² (attention scores and
weighted sum), counted on real (unpadded) tokens: padding is work that does not count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OFFICIAL_VENV = HERE / ".venv-official"
#: Every path must give the reference's vectors (float32) within this; a faster wrong answer is no result.
VECTOR_TOLERANCE = 1e-3
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"

SHAPES = {
    # ~26M non-embedding parameters: 8 × (4·512² + 3·512·1408) = 25.7M
    "llama-26m": dict(hidden_size=512, num_layers=8, intermediate_size=1408, num_attention_heads=8, num_key_value_heads=8),
    "llama-tiny": dict(hidden_size=64, num_layers=2, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2),
}


def make_corpus(n: int, seed: int = 0) -> list[str]:
    """Mixed-length English texts: median about 25 words, a long tail to 300 words."""
    from llm2vec_hf.training.tiny_model import english_corpus

    words = " ".join(english_corpus()).split()
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        length = min(300, max(3, int(rng.lognormvariate(3.2, 0.7))))
        start = rng.randrange(0, len(words) - length)
        texts.append(" ".join(words[start : start + length]))
    return texts


def drop_token_type_ids(folder: Path) -> None:
    """Saves a tokenizer's inputs as input_ids and attention_mask only: the official scripts' forward (transformers
    4.44's causal LMs) rejects token_type_ids, and `make_tokenizer_portable` rewrites tokenizer_config.json
    without the tokenizer's own ``model_input_names``."""
    config_path = folder / "tokenizer_config.json"
    config_json = json.loads(config_path.read_text())
    config_json["model_input_names"] = ["input_ids", "attention_mask"]
    config_path.write_text(json.dumps(config_json))


def build_model(shape: str, folder: Path) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llm2vec_hf.checkpoint.export import make_tokenizer_portable
    from llm2vec_hf.training.tiny_model import train_tokenizer

    spec = SHAPES[shape]
    tokenizer = train_tokenizer("llama", vocab_size=2048)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_layers"],
        num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_key_value_heads"],
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    make_tokenizer_portable(folder)
    drop_token_type_ids(folder)
    non_embedding = sum(p.numel() for n, p in model.model.named_parameters() if "embed_tokens" not in n)
    return {"non_embedding_params": non_embedding, "hidden": spec["hidden_size"], "layers": spec["num_layers"]}


def matmul_gflops(threads: int, size: int = 1024, seconds: float = 2.0) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


# Each path runs in a worker process of its own (so that peak RSS belongs to that path alone), kept alive for the
# whole run: the driver tells the workers in turn to encode the corpus once, round after round, so that every
# path sees the same share of whatever else the machine is doing.
WORKER = r"""
import json, resource, sys, time
import numpy as np
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
cpu_capability = torch.backends.cpu.get_cpu_capability()
inputs = json.load(open(args["inputs"]))
path, options = args["path"], args["options"]
compile_model = bool(options.pop("compile", 0))
if path == "official":
    from llm2vec import LLM2Vec
    model = LLM2Vec.from_pretrained(args["model"], torch_dtype=torch.float32, pooling_mode="mean", max_length=512)
    encode = lambda: model.encode(inputs, batch_size=args["batch_size"], show_progress_bar=False, convert_to_numpy=True)
elif path == "llm2vec-hf":
    from llm2vec_hf import LLM2Vec
    model = LLM2Vec.from_pretrained(args["model"], pooling_mode="mean", max_length=512)
    if compile_model:
        model.compile_for_inference()
    encode = lambda: model.encode(inputs, batch_size=args["batch_size"], show_progress_bar=False, convert_to_numpy=True, **options)
elif path == "llm2vec-hf-encode":
    # The `llm2vec-hf encode` command, whole: a .jsonl in, a .npy out, model loading included in every round.
    import os, tempfile
    from llm2vec_hf.encoding.file_encoder import encode_file
    work = tempfile.mkdtemp()
    source = os.path.join(work, "inputs.jsonl")
    with open(source, "w") as handle:
        for x in inputs:
            record = {"text": x} if isinstance(x, str) else {"instruction": x[0], "text": x[1]}
            handle.write(json.dumps(record) + "\n")
    def encode():
        target = os.path.join(work, "vectors.npy")
        encode_file(args["exported"], source, target, batch_size=args["batch_size"], restart=True,
                    compile_model=compile_model, **options)
        vectors = np.load(target)
        os.remove(target)
        return vectors
elif path == "vllm":
    # The engine runs in processes of its own: their memory is counted in the tree's RSS, sampled after each round.
    import os, psutil
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB: a cap for shared machines
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # compute on every core
    os.environ["VLLM_LOGGING_STREAM"] = "ext://sys.stderr"  # stdout carries this worker's JSON lines
    from llm2vec_hf.serving.vllm import LLM2VecVLLM
    # vLLM's defaults otherwise (it compiles the model); options such as vllm:enforce_eager=1 go to vllm.LLM
    model = LLM2VecVLLM.from_pretrained(args["exported"], pooling_mode="mean", max_length=512, dtype="float32",
                                        **options)
    encode = lambda: model.encode(inputs, convert_to_numpy=True)
elif path == "sentence-transformers":
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(args["exported"], trust_remote_code=True)
    if compile_model:
        from llm2vec_hf import compile_for_inference
        compile_for_inference(model[0].auto_model)
    def encode():
        plain = [x for x in inputs if isinstance(x, str)]
        pairs = [x for x in inputs if not isinstance(x, str)]
        out = [model.encode(plain, batch_size=args["batch_size"], convert_to_numpy=True, **options)] if plain else []
        if pairs:
            out.append(model.encode([x[1] for x in pairs], prompt=pairs[0][0] + " ", batch_size=args["batch_size"], convert_to_numpy=True, **options))
        return np.concatenate(out)
start = time.perf_counter()
vectors = encode()  # warm-up on the whole corpus: the first pass pays for allocations (and compilation)
np.save(args["out"], vectors)
print(json.dumps({"warmup_seconds": time.perf_counter() - start, "cpu_capability": cpu_capability}), flush=True)
for line in sys.stdin:
    if line.strip() == "profile":
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter(); encode(); seconds = time.perf_counter() - start
        self_seconds = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
        print(json.dumps({"wall_seconds": seconds, "self_seconds": self_seconds}), flush=True)
        continue
    start = time.perf_counter(); encode(); seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if path == "vllm":
        tree = [psutil.Process()] + psutil.Process().children(recursive=True)
        rss_mb = sum(p.memory_info().rss for p in tree) / 2**20
    print(json.dumps({"seconds": seconds, "peak_rss_mb": rss_mb}), flush=True)
"""

# Profile categories, by the name torch.profiler gives each op. "outside ops" is what the profiler did not see
# inside a torch op: Python, the tokenizer, pooling bookkeeping. A compiled graph's fused kernels count as "other
# ops" (their time is the self time of the graph's call record).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::", "aten::mkldnn_", "aten::_mkl")
ATTENTION_OPS = ("scaled_dot_product",)


def profile_breakdown(profiled: dict) -> dict:
    """Shares of one profiled encode: matmul, attention, other torch ops, and time outside any torch op."""
    wall = profiled["wall_seconds"]
    parts = {"matmul": 0.0, "attention": 0.0, "other_ops": 0.0}
    for name, seconds in profiled["self_seconds"].items():
        if name.startswith(MATMUL_OPS):
            parts["matmul"] += seconds
        elif any(key in name for key in ATTENTION_OPS):
            parts["attention"] += seconds
        else:
            parts["other_ops"] += seconds
    parts["outside_ops"] = max(0.0, wall - sum(parts.values()))
    top = sorted(profiled["self_seconds"].items(), key=lambda item: -item[1])[:8]
    return {"wall_seconds": round(wall, 3), **{k: round(v / wall, 3) for k, v in parts.items()},
            "top_ops_seconds": {name: round(seconds, 3) for name, seconds in top}}


class Worker:
    """One path (``name`` or ``name:key=value,...`` for encode() options) in its own process."""

    def __init__(self, python: str, spec: str, payload: dict):
        path, _, option_text = spec.partition(":")
        options = {k: int(v) if v.isdigit() else v for k, v in (o.split("=") for o in option_text.split(",") if o)}
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(payload["threads"])}
        self.spec = spec
        # stderr goes to a file: a pipe nobody reads would block a chatty worker once it fills.
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [python, "-c", WORKER, json.dumps({**payload, "path": path, "options": options})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env,
        )
        ready = json.loads(self._read())  # loaded and warmed up
        self.warmup_seconds, self.cpu_capability = ready["warmup_seconds"], ready["cpu_capability"]

    def _read(self) -> str:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                self.stderr.seek(0)
                raise RuntimeError(f"{self.spec} failed:\n{self.stderr.read()[-3000:]}")
            if line.startswith("{"):  # the worker's JSON; a library may print to stdout too
                return line

    def run(self, command: str = "run") -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self._read())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()
        self.stderr.close()


def time_paths(specs: list[str], pythons: dict[str, str], payload: dict, rounds: int, matmul_rates: list,
               profile: bool = False) -> dict[str, dict]:
    """Best and median seconds per path over ``rounds`` alternating rounds, and peak RSS. The matmul rate is
    measured in every round too (appended to ``matmul_rates``): this machine's speed drifts by 2× over minutes.
    With ``profile``, each path then encodes once more under torch.profiler (not timed with the rounds)."""
    workers = []
    for spec in specs:
        # One warm worker at a time, so that loading one does not slow another one's warm-up.
        workers.append(Worker(pythons[spec.partition(":")[0]], spec, {**payload, "out": payload["out"].format(spec=spec)}))
    times = {spec: [] for spec in specs}
    peak = {}
    try:
        for round_index in range(rounds):
            order = workers if round_index % 2 == 0 else workers[::-1]
            matmul_rates.append(matmul_gflops(payload["threads"], seconds=1.0))
            for worker in order:
                result = worker.run()
                times[worker.spec].append(result["seconds"])
                peak[worker.spec] = result["peak_rss_mb"]
        profiles = {worker.spec: profile_breakdown(worker.run("profile")) for worker in workers} if profile else {}
    finally:
        for worker in workers:
            worker.close()
    warmup = {worker.spec: worker.warmup_seconds for worker in workers}
    capability = {worker.spec: worker.cpu_capability for worker in workers}
    return {
        spec: {"seconds": min(t), "median_seconds": statistics.median(t), "all_seconds": [round(x, 3) for x in t],
               "warmup_seconds": round(warmup[spec], 1), "peak_rss_mb": peak[spec], "cpu_capability": capability[spec],
               **({"profile": profiles[spec]} if spec in profiles else {})}
        for spec, t in times.items()
    }


def official_python(explicit: str | None) -> str:
    if explicit:
        return explicit
    python = OFFICIAL_VENV / "bin" / "python"
    if not python.exists():
        print(f"Creating {OFFICIAL_VENV} with the official llm2vec 0.2.3 (once)…", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(OFFICIAL_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["torch==2.13.0"], check=True)
        # peft 0.21.2 beside transformers 4.44.2 on torch 2.13 fails on load ("module 'torch.distributed' has no
        # attribute 'tensor'", seen here); peft 0.13.2 loads and merges the official adapters.
        subprocess.run(pip + ["llm2vec==0.2.3", "transformers==4.44.2", "peft==0.13.2"], check=True)
    return str(python)


def token_counts(folder: Path, inputs) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    full = [f"{x[0]} {x[1]}" if isinstance(x, list) else x for x in inputs]
    return [min(512, len(ids)) for ids in tokenizer(full)["input_ids"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="64 texts, tiny model only, 1 repeat")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds; the best is reported")
    parser.add_argument("--official-python", help="python of an environment with llm2vec==0.2.3")
    parser.add_argument("--vllm-python", help="python of an environment with vLLM and this checkout installed "
                        "(--no-deps), for the vllm path (docs/serving.md)")
    parser.add_argument(
        "--paths", default="official,llm2vec-hf,llm2vec-hf-encode,sentence-transformers",
        help="comma-separated; a path may carry encode() options after a colon, joined by '+', e.g. "
        "llm2vec-hf:max_batch_tokens=100000000 (the row's name is the whole spec)",
    )
    parser.add_argument("--shapes", default="llama-26m,llama-tiny", help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--profile", action="store_true",
                        help="after the rounds, profile one encode per path (torch.profiler): where its time goes")
    parser.add_argument("--corpora", default="plain,instr",
                        help="plain (texts), instr (the same texts with an instruction), or both (default)")
    parser.add_argument("--output", default=str(HERE / "results" / "encode.json"))
    args = parser.parse_args()
    shapes = ["llama-tiny"] if args.quick else args.shapes.split(",")
    n_texts, repeats = (64, 1) if args.quick else (args.texts, args.repeats)
    paths = [spec.replace("+", ",") for spec in args.paths.split(",")]
    python_official = official_python(args.official_python) if "official" in paths else None
    if any(spec.partition(":")[0] == "vllm" for spec in paths) and not args.vllm_python:
        parser.error("the vllm path runs in vLLM's own environment: pass --vllm-python")

    from llm2vec_hf.checkpoint.export import export_checkpoint

    matmul_rates = []
    corpus = make_corpus(n_texts)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for shape in shapes:
            shape_paths = paths
            if SHAPES[shape]["hidden_size"] // SHAPES[shape]["num_attention_heads"] < 32:
                shape_paths = [spec for spec in paths if spec.partition(":")[0] != "vllm"]
                if shape_paths != paths:
                    print(f"{shape}: no vllm row, vLLM's CPU attention needs head_dim >= 32", flush=True)
            model_dir = tmp / shape
            info = build_model(shape, model_dir)
            exported = export_checkpoint(str(model_dir), str(tmp / f"{shape}-exported"), max_length=512)
            for with_instruction in [c == "instr" for c in args.corpora.split(",")]:
                inputs = [[INSTRUCTION, t] for t in corpus] if with_instruction else list(corpus)
                inputs_file = tmp / "inputs.json"
                inputs_file.write_text(json.dumps(inputs))
                tokens = token_counts(model_dir, inputs)
                flops = sum(2 * info["non_embedding_params"] * n + 4 * info["layers"] * info["hidden"] * n * n for n in tokens)
                payload = {
                    "model": str(model_dir), "exported": exported, "inputs": str(inputs_file), "threads": args.threads,
                    "batch_size": args.batch_size, "out": str(tmp / "{spec}.npy"),
                }
                pythons = {"official": python_official, "llm2vec-hf": sys.executable, "llm2vec-hf-encode": sys.executable,
                           "sentence-transformers": sys.executable, "vllm": args.vllm_python}
                results = time_paths(shape_paths, pythons, payload, repeats, matmul_rates, profile=args.profile)
                rate = max(matmul_rates)
                import numpy as np

                vectors = {spec: np.load(tmp / f"{spec}.npy") for spec in shape_paths}
                for path, result in results.items():
                    seconds = result["seconds"]
                    delta = float(abs(vectors[path] - vectors["official"]).max()) if "official" in vectors else None
                    delta_hf = float(abs(vectors[path] - vectors["llm2vec-hf"]).max()) if "llm2vec-hf" in vectors else None
                    rows.append({
                        "model": shape, "instructions": with_instruction, "path": path, "texts": len(inputs),
                        "tokens": sum(tokens), "seconds": round(seconds, 3),
                        "median_seconds": round(result["median_seconds"], 3), "all_seconds": result["all_seconds"],
                        "warmup_seconds": result["warmup_seconds"], "cpu_capability": result["cpu_capability"],
                        "texts_per_s": round(len(inputs) / seconds, 1), "tokens_per_s": round(sum(tokens) / seconds),
                        "gflops": round(flops / seconds / 1e9, 1), "fraction_of_matmul": round(flops / seconds / 1e9 / rate, 3),
                        "peak_rss_mb": round(result["peak_rss_mb"]), "max_abs_delta_vs_official": delta,
                        "max_abs_delta_vs_llm2vec_hf": delta_hf,
                        **({"profile": result["profile"]} if "profile" in result else {}),
                    })
                if "official" in results:
                    base = results["official"]["seconds"]
                    base_median = results["official"]["median_seconds"]
                    for row in rows[-len(results):]:
                        row["speedup_vs_official"] = round(base / row["seconds"], 2)
                        row["median_speedup_vs_official"] = round(base_median / row["median_seconds"], 2)
    rate = max(matmul_rates)
    for row in rows:  # against the best rate of the whole run, so that rows compare
        row["fraction_of_matmul"] = round(row["gflops"] / rate, 3)
    print_table(rows, rate, args.threads)
    report = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "threads": args.threads, **cpu_isa()},
        "load_average": os.getloadavg(),
        "matmul_gflops_fp32": round(rate, 1),
        "matmul_gflops_fp32_per_round": [round(r, 1) for r in matmul_rates], "corpus_texts": n_texts, "batch_size": args.batch_size, "rows": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    wrong = [f"{r['model']}/{r['path']}: {d:.1e}" for r in rows
             for d in (r["max_abs_delta_vs_official"], r.get("max_abs_delta_vs_llm2vec_hf")) if d is not None and d > VECTOR_TOLERANCE]
    if wrong:
        sys.exit(f"vectors differ by more than {VECTOR_TOLERANCE}: {', '.join(wrong)}")


#: Environment variables that cap the instruction set torch's kernels (ATen), oneDNN and MKL use: with
#: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 an AVX-512 machine runs AVX2 code.
ISA_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def cpu_isa() -> dict:
    """What the CPU offers (its flags) and what torch uses (its ATen capability), and the env that capped it."""
    import torch

    flags = set()
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            flags = next((set(line.split(":", 1)[1].split()) for line in handle if line.startswith("flags")), set())
    offered = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return {"cpu_flags": offered, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "isa_env": {k: os.environ[k] for k in ISA_ENV if k in os.environ}}


def print_table(rows: list[dict], rate: float, threads: int) -> None:
    isa = cpu_isa()
    forced = " ".join(f"{k}={v}" for k, v in isa["isa_env"].items()) or "none"
    print(f"\nCPU flags {' '.join(isa['cpu_flags'])}; torch runs {isa['torch_cpu_capability']} kernels "
          f"(workers: {', '.join(sorted({r['cpu_capability'] for r in rows}))}); ISA env: {forced}")
    print(f"fp32 matmul rate (best of the run's rounds): {rate:.1f} GFLOP/s with {threads} threads")
    print("best round per path; speedup = official's best / path's best (median rounds in parentheses)\n")
    header = ["model", "instr", "path", "texts/s", "tokens/s", "GFLOP/s", "% matmul", "speedup", "peak MB", "max |Δ|"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        delta = "—" if r["max_abs_delta_vs_official"] is None else f"{r['max_abs_delta_vs_official']:.1e}"
        if r["max_abs_delta_vs_official"] is None and r.get("max_abs_delta_vs_llm2vec_hf") is not None:
            delta = f"{r['max_abs_delta_vs_llm2vec_hf']:.1e} vs llm2vec-hf"
        speedup = (f"{r['speedup_vs_official']}× ({r['median_speedup_vs_official']}×)"
                   if "speedup_vs_official" in r else "—")
        print(
            f"| {r['model']} | {'yes' if r['instructions'] else 'no'} | {r['path']} | {r['texts_per_s']} | {r['tokens_per_s']} "
            f"| {r['gflops']} | {100 * r['fraction_of_matmul']:.0f}% | {speedup} | {r['peak_rss_mb']} | {delta} |"
        )
    profiled = [r for r in rows if "profile" in r]
    if profiled:
        print("\nwhere one profiled encode spent its time (torch.profiler self time; shares of wall time)\n")
        print("| model | instr | path | wall s | matmul | attention | other ops | outside ops |")
        print("|" + "---|" * 8)
        for r in profiled:
            p = r["profile"]
            print(f"| {r['model']} | {'yes' if r['instructions'] else 'no'} | {r['path']} | {p['wall_seconds']} "
                  + " ".join(f"| {100 * p[k]:.0f}%" for k in ("matmul", "attention", "other_ops", "outside_ops")) + " |")


if __name__ == "__main__":
    main()
