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
    for name in ("gpu_bench.py", "gpu_vllm.py", "encode_memory.py", "encode.py", "encode_ray.py", "packed_attention.py",
                 "scale.py", "make_large_checkpoint.py", "train.py", "train_data.py"):
        py_compile.compile(str(BENCHMARKS / name), cfile=str(tmp_path / f"{name}c"), doraise=True)


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
