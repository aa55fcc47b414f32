"""Fresh Python processes: the remote code's own run, with llm2vec_hf unimportable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def run_python(code: str, env: dict[str, str] | None = None, block_llm2vec_hf: bool = False,
               argv: list[str] | None = None) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter, with ``argv`` as its ``sys.argv[1:]``; optionally with llm2vec_hf
    unimportable."""
    prelude = ""
    if block_llm2vec_hf:
        prelude = (
            "import sys, importlib.abc\n"
            "class _Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'llm2vec_hf' or name.startswith('llm2vec_hf.'):\n"
            "            raise ImportError('llm2vec_hf is blocked in this test')\n"
            "sys.meta_path.insert(0, _Block())\n"
        )
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", prelude + code, *(argv or [])], capture_output=True, text=True, env=full_env, timeout=600
    )


def remote_code_vectors(folders: dict[str, str], inputs: dict[str, list], out: Path) -> dict:
    """``{key: vectors}`` from ``AutoModel.from_pretrained(folder, trust_remote_code=True).encode(inputs[key])``.

    Runs in one fresh process in which llm2vec_hf cannot be imported, so only the checkpoint's own code serves.
    """
    request = out.with_suffix(".json")
    request.write_text(json.dumps({"folders": folders, "inputs": inputs}))
    code = f"""
import json, numpy as np
from transformers import AutoModel, AutoTokenizer
request = json.load(open({str(request)!r}))
result = {{}}
for key, folder in request["folders"].items():
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    result[key] = model.encode(request["inputs"][key], AutoTokenizer.from_pretrained(folder), batch_size=4).numpy()
np.savez({str(out)!r}, **result)
"""
    proc = run_python(code, block_llm2vec_hf=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(out))


# The export's own peak, in a fresh process:
# - VmHWM is reset (clear_refs 5) after the imports, so import-time noise is not counted.
#   ru_maxrss would also count the parent's peak, which a child inherits across fork and exec.
# - glibc's mmap threshold is pinned. By default it rises after each freed block, up to 32 MiB. Later
#   4–32 MiB tensors then come from the heap, and a fragmented heap keeps them resident. That made the
#   peak vary by ±10 MiB from run to run (one CI run failed on it).
#   At 1B+ sizes every tensor is above the 32 MiB cap and always mmapped, so pinning the threshold
#   measures what the code holds, as it behaves at scale.
_EXPORT_PEAK = """
import re, sys
from llm2vec_hf.checkpoint import export
if sys.argv[1] == "streamed-only":
    def whole_model(*args, **kwargs):
        raise AssertionError("export fell back to merging on the loaded model")
    export.load_bidirectional = whole_model
def kib(field):
    return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
open("/proc/self/clear_refs", "w").write("5")
before = kib("VmRSS")
export.export_checkpoint(sys.argv[2], sys.argv[3], adapters=sys.argv[4:])
print(kib("VmHWM") - before)
"""


def export_peak_bytes(base: str, out: str, adapters: list[str], streamed_only: bool = False) -> int:
    """How far the resident memory of a fresh process rises above its post-import level while it exports
    ``base`` with ``adapters`` to ``out``. ``streamed_only``: a fallback to merging on the loaded model fails."""
    env = {"OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    proc = run_python(_EXPORT_PEAK, env=env, argv=["streamed-only" if streamed_only else "any", base, out, *adapters])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.strip().splitlines()[-1]) * 1024
