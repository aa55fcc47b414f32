"""The GPU benchmark cannot run here (no GPU): check that its scripts at least parse."""

from __future__ import annotations

import py_compile
import shutil
import subprocess
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_sh_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_benchmark_workers_compile(tmp_path):
    for name in ("gpu_bench.py", "encode_memory.py", "encode.py"):
        py_compile.compile(str(BENCHMARKS / name), cfile=str(tmp_path / f"{name}c"), doraise=True)
