"""Benchmark scripts: the CPU encode benchmark runs end to end (without the official library, which lives in a
venv of its own); the GPU benchmark cannot run here (no GPU), so its scripts are checked to parse."""

from __future__ import annotations

import json
import os
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_sh_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_benchmark_workers_compile(tmp_path):
    scripts = sorted(BENCHMARKS.glob("*.py"))
    assert {"encode.py", "scale.py", "train.py", "vllm_families.py"} <= {script.name for script in scripts}
    for script in scripts:
        py_compile.compile(str(script), cfile=str(tmp_path / f"{script.name}c"), doraise=True)


@pytest.mark.slow
def test_encode_benchmark_runs_from_one_command(tmp_path):
    output = tmp_path / "encode.json"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "encode.py"), "--quick", "--profile",
         "--paths", "llm2vec-hf,sentence-transformers,llm2vec-hf:packing=0", "--output", str(output)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "ATEN_CPU_CAPABILITY": "default"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "where one profiled encode spent its time" in result.stdout
    report = json.loads(output.read_text())
    assert report["matmul_gflops_fp32"] > 0
    rows = report["rows"]
    assert {(r["path"], r["instructions"]) for r in rows} == {(path, instr) for instr in (False, True)
                                                              for path in ("llm2vec-hf", "sentence-transformers", "llm2vec-hf:packing=0")}
    # the instruction set torch ran, and the env that capped it, are in the report
    assert report["machine"]["isa_env"]["ATEN_CPU_CAPABILITY"] == "default"
    assert {r["cpu_capability"] for r in rows} == {"DEFAULT"} == {report["machine"]["torch_cpu_capability"]}
    assert "torch runs DEFAULT kernels" in result.stdout
    for row in rows:
        assert row["texts"] == 64 and row["texts_per_s"] > 0 and row["max_abs_delta_vs_official"] is None
        shares = [row["profile"][k] for k in ("matmul", "attention", "other_ops", "outside_ops")]
        assert all(0 <= x <= 1 for x in shares) and 0.97 <= sum(shares) <= 1.03
        assert row["profile"]["matmul"] > 0 and row["profile"]["top_ops_seconds"]


def test_training_benchmark_data_is_in_the_official_formats(tmp_path):
    """The side-by-side data: every dataset the official E5Data opens, queries much shorter than passages, the same
    records in the project's supervised format, and one Wiki1M sentence per line."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from train_data import E5_LIKE_WORDS, prepare
    finally:
        sys.path.remove(str(BENCHMARKS))
    paths = prepare(tmp_path, records_per_dataset=20, wiki_lines=50, corpus_paragraphs=10)
    official = sorted(p.stem for p in (BENCHMARKS.parent / "tests" / "fixtures" / "official_training" / "echo-data").glob("*.jsonl"))
    assert sorted(p.stem for p in paths["echo_data"].glob("*.jsonl")) == sorted(E5_LIKE_WORDS) == official
    records = [json.loads(line) for p in paths["echo_data"].glob("*.jsonl") for line in p.read_text().splitlines()]
    assert len(records) == 20 * 14 and all(set(r) == {"query", "positive", "negative"} for r in records)
    words = {k: sorted(len(r[k].split()) for r in records) for k in ("query", "positive")}
    assert words["query"][len(records) // 2] * 4 < words["positive"][len(records) // 2]
    converted = [json.loads(line) for line in paths["supervised"].read_text().splitlines()]
    assert len(converted) == len(records) and len({r["dataset"] for r in converted}) == 14
    assert len(paths["wiki"].read_text().splitlines()) == 50


def _benchmark_module(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_training_benchmark_replays_the_official_order_on_our_sampler(tmp_path, monkeypatch):
    """Supervised side by side: the records the official E5Data serves, found by content in llm2vec-hf's train file,
    come out of llm2vec-hf's own batch sampler in that order and in batches of the run's size; a record missing
    from the file stops the benchmark rather than train the two sides on other batches."""
    from llm2vec_hf.training.data import GroupedBatchSampler

    train, train_data = _benchmark_module("train"), _benchmark_module("train_data")
    paths = train_data.prepare(tmp_path, records_per_dataset=8, wiki_lines=4, corpus_paragraphs=2)
    records = [json.loads(line) for line in paths["supervised"].read_text().splitlines()]
    served_rows = [37, 36, 39, 38, 5, 7, 4, 6, 100, 103, 101, 102]
    served = [[records[i]["dataset"], records[i]["query"], records[i]["positive"]] for i in served_rows]
    assert train.rows_in_order(served, paths["supervised"]) == served_rows

    monkeypatch.setattr(GroupedBatchSampler, "global_batches", GroupedBatchSampler.global_batches)  # restored after
    train.replay_batch_order(served_rows, 4)
    sampler = GroupedBatchSampler([r["dataset"] for r in records], batch_size=4, seed=0)
    assert list(sampler) == [served_rows[:4], served_rows[4:8], served_rows[8:]]

    with pytest.raises(RuntimeError, match="1 official records"):
        train.rows_in_order(served + [[records[0]["dataset"], "a query of no record", "a passage"]],
                            paths["supervised"])


def test_training_benchmark_reports_medians_spreads_and_per_round_ratios():
    """Each side's figure is the median over rounds with its min and max; the ratio to the official side is taken
    per round (the two runs of a round ran back to back) and reported as their median and spread."""
    train = _benchmark_module("train")

    def run(step_seconds: list[float], tokens: int, peak: float) -> dict:
        records = [{"seconds": s, "cpu_seconds": s / 2, "loss": 1.0 + i, "tokens": tokens, "rss_before_mib": 100.0,
                    "peak_rss_mib": peak} for i, s in enumerate(step_seconds)]
        return {"records": records, "process_peak_rss_mib": peak + 10, "torch": "t", "transformers": "x"}

    # the first step is a warm-up and not counted
    runs = {"supervised": {"official": [run([9.0, 2.0, 2.0], 100, 500), run([9.0, 4.0, 4.0], 100, 520),
                                        run([9.0, 1.0, 1.0], 100, 510)],
                           "ours": [run([9.0, 1.0, 1.0], 100, 490), run([9.0, 1.0, 1.0], 100, 480),
                                    run([9.0, 1.0, 1.0], 100, 500)]}}
    official, ours = train.side_rows(["supervised"], runs)
    assert official["tokens_per_s"]["per_round"] == [50.0, 25.0, 100.0] and official["tokens_per_s"]["median"] == 50.0
    assert ours["tokens_per_s"] == {"median": 100.0, "min": 100.0, "max": 100.0, "per_round": [100.0] * 3}
    assert ours["tokens_per_s_vs_official"] == 2.0  # the ratio of the medians
    assert ours["tokens_per_s_vs_official_per_round"]["per_round"] == [2.0, 4.0, 1.0]
    assert ours["tokens_per_s_vs_official_per_round"]["median"] == 2.0
    assert ours["tokens_per_cpu_s"]["median"] == 200.0
    assert ours["peak_rss_process_mib"]["max"] == 510 and ours["peak_rss_vs_official"] == 510 / 530
    assert ours["first_loss_minus_official"] == 0.0 and ours["losses"][0] == [1.0, 2.0, 3.0]


#: Shapes unlike the script's built-in ones, as a user's config.json gives them: attention biases and a tied head
#: (Qwen2), a head_dim that is not hidden_size / heads with per-layer types (Gemma 2), fused experts (Qwen3 MoE).
UNSEEN_SHAPES = {
    "qwen2": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 48,
              "intermediate_size": 72, "num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 2,
              "vocab_size": 3000, "tie_word_embeddings": True, "bos_token_id": 151643, "eos_token_id": 151645,
              "torch_dtype": "bfloat16", "transformers_version": "4.43.1"},
    "gemma2": {"model_type": "gemma2", "hidden_size": 40, "intermediate_size": 88, "num_hidden_layers": 3,
               "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 3000,
               "layer_types": ["sliding_attention", "full_attention", "sliding_attention"], "sliding_window": 16,
               "query_pre_attn_scalar": 32, "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0},
    "qwen3_moe": {"model_type": "qwen3_moe", "hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16,
                  "num_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 3000, "decoder_sparse_step": 1,
                  "mlp_only_layers": [1], "tie_word_embeddings": False},
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(UNSEEN_SHAPES))
def test_large_checkpoint_script_writes_any_config_shape(family, tmp_path):
    """make_large_checkpoint.py from a config.json of a shape it has no entry for (fewer layers, as ``--layers``
    asks), stored as save_pretrained stores it: transformers loads the base with nothing missing or unexpected, PEFT places every adapter tensor on a
    module of the loaded model with its shape, and the pair exports and encodes."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from llm2vec_hf import LLM2Vec
    from llm2vec_hf.checkpoint.export import export_checkpoint

    config = tmp_path / "config.json"
    config.write_text(json.dumps(UNSEEN_SHAPES[family]))
    output = tmp_path / "model"
    script = _benchmark_module("make_large_checkpoint")
    assert script.main(["--shape", str(config), "--layers", "2", "--output", str(output), "--max-shard-size",
                        "50KB"]) == 0
    stored = json.loads((output / "base" / "model.safetensors.index.json").read_text())["weight_map"]
    # stored as save_pretrained stores it: one tensor per expert, as the Hub's mixture-of-experts checkpoints
    assert any(".experts.0.up_proj." in name for name in stored) == (family == "qwen3_moe")
    written = json.loads((output / "base" / "config.json").read_text())
    assert written["num_hidden_layers"] == 2 and written["model_type"] == family
    model, info = AutoModelForCausalLM.from_pretrained(str(output / "base"), output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    for adapter in ("mntp", "supervised"):
        stored = len(load_file(str(output / adapter / "adapter_model.safetensors")))
        peft = PeftModel.from_pretrained(model, str(output / adapter))
        placed = sum(1 for name, _ in peft.named_parameters() if "lora_" in name)
        assert placed == stored > 0
        model = peft.unload()
    out = export_checkpoint(str(output / "base"), str(tmp_path / "export"),
                            adapters=[str(output / "mntp"), str(output / "supervised")])
    vectors = LLM2Vec.from_pretrained(out).encode(["a text of a few words", "another"])
    assert vectors.shape[0] == 2 and bool((vectors.abs().sum(dim=1) > 0).all())
