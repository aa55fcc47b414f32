"""Does vLLM's own model code run a family's export bidirectionally? Measured on a tiny model per family.

Two steps, in two environments (vLLM lives in its own, see docs/serving.md):

    python benchmarks/vllm_families.py prepare benchmarks/.models/vllm-families [FAMILY ...]
    /path/to/vllm-venv/bin/python benchmarks/vllm_families.py measure benchmarks/.models/vllm-families

``prepare`` (the project's environment) builds each family's tiny model (head_dim 32: vLLM's CPU attention
rejects 16), exports it with ``llm2vec-hf export`` and records, for fixed token ids, the final token states that
transformers computes bidirectionally (the export) and causally (the same weights, flags off). ``measure`` runs
vLLM's default model implementation on each export, and its Transformers backend (``--model-impl transformers``)
where the default is not bidirectional (``runner="pooling"``, raw per-token states, float32) and says
which of the two it matches. It prints a table and writes ``benchmarks/results/vllm_families.json``, naming the
machine and versions.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

#: Token ids every family reads (inside every tiny vocabulary).
PROMPTS = [[5, 17, 42, 99, 7, 63, 120, 8, 31], [11, 250, 3, 77, 140]]
#: float32 vLLM against float32 transformers: ~1e-6; a causal run differs by ~1e-1 at the first tokens.
TOLERANCE = 1e-4
#: Where a conformance fixture exercises a corner vLLM's CPU build refuses (asserts on Qwen2's partial sliding
#: window; no head_dim under 32), the benchmark's copy takes the shape released checkpoints have.
VLLM_LOADABLE = {
    "qwen2": {"use_sliding_window": False},
    "minicpm3": {"qk_nope_head_dim": 24, "qk_rope_head_dim": 8, "v_head_dim": 32, "head_dim": 32},
}
RESULT = Path(__file__).resolve().parent / "results" / "vllm_families.json"


def prepare(root: Path, families: list[str]) -> None:
    import torch
    from transformers import AutoModel

    from llm2vec_hf.cli import main as cli
    from llm2vec_hf.modeling.modeling_llm2vec import FAMILIES
    from llm2vec_hf.training.tiny_model import build_tiny_decoder

    tests = Path(__file__).resolve().parent.parent / "tests"
    sys.path[:0] = [str(tests), str(tests / "modeling")]  # the tiny configs are the conformance suite's
    from test_conformance import FAMILY_CONFIGS

    root.mkdir(parents=True, exist_ok=True)
    states = {}
    for family in families or sorted(FAMILIES):
        overrides = {**FAMILY_CONFIGS[family], **VLLM_LOADABLE.get(family, {})}
        base = build_tiny_decoder(root / "base" / family, family, hidden_size=128, **overrides)
        folder = root / family
        assert cli(["export", str(base), "--output", str(folder), "--max-length", "64"]) == 0
        runs = {}
        for name, causal in (("bidirectional", False), ("causal", True)):
            model = AutoModel.from_pretrained(folder, is_causal=causal, use_bidirectional_attention=not causal).eval()
            with torch.no_grad():
                runs[name] = [model(input_ids=torch.tensor([ids])).last_hidden_state[0].tolist() for ids in PROMPTS]
        states[family] = runs
        print(family, "prepared", flush=True)
    (root / "transformers_states.json").write_text(json.dumps(states))


def measure(root: Path) -> None:
    import numpy as np
    import transformers
    import vllm
    from vllm import LLM, PoolingParams

    states = json.loads((root / "transformers_states.json").read_text())

    def run(family: str, runs: dict, model_impl: str) -> dict:
        try:
            llm = LLM(model=str(root / family), runner="pooling", dtype="float32", enforce_eager=True,
                      max_model_len=64, max_num_seqs=4, pooler_config={"task": "token_embed"},
                      model_impl=model_impl)
            outputs = llm.encode([{"prompt_token_ids": ids} for ids in PROMPTS],
                                 pooling_params=PoolingParams(task="token_embed", use_activation=False),
                                 pooling_task="token_embed", use_tqdm=False)
            got = [np.asarray(output.outputs.data, dtype=np.float32) for output in outputs]
            del llm
        except Exception as error:  # a family vLLM cannot load is a result too
            return {"verdict": "does not load", "error": f"{type(error).__name__}: {error}"[:300]}
        gap = {name: max(float(np.abs(g - np.asarray(r, dtype=np.float32)).max()) for g, r in zip(got, run))
               for name, run in runs.items()}
        verdict = ("bidirectional" if gap["bidirectional"] <= TOLERANCE else
                   "causal" if gap["causal"] <= TOLERANCE else "neither")
        return {"verdict": verdict, **{f"max_abs_diff_{k}": v for k, v in gap.items()}}

    results = {}
    for family, runs in states.items():
        results[family] = {"auto": run(family, runs, "auto")}
        if results[family]["auto"]["verdict"] != "bidirectional":  # does the Transformers backend fix it?
            results[family]["transformers"] = run(family, runs, "transformers")
        print(family, results[family], flush=True)
    report = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs (CPU only)",
              "vllm": vllm.__version__, "transformers": transformers.__version__, "results": results}
    RESULT.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{report['machine']}, vLLM {vllm.__version__}, transformers {transformers.__version__}")
    print("| family | vLLM default implementation | max abs diff to bidirectional / causal "
          "| --model-impl transformers |\n|---|---|---|---|")
    for family, result in results.items():
        auto, backend = result["auto"], result.get("transformers", {})
        gaps = (f"{auto['max_abs_diff_bidirectional']:.1e} / {auto['max_abs_diff_causal']:.1e}"
                if "max_abs_diff_causal" in auto else auto.get("error", "")[:60])
        print(f"| {family} | {auto['verdict']} | {gaps} | {backend.get('verdict', 'not needed')} |")

if __name__ == "__main__":
    step, folder, *names = sys.argv[1:]
    prepare(Path(folder), names) if step == "prepare" else measure(Path(folder))
