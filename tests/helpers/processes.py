"""Fresh Python processes: the remote code's own run, with llm2vec_hf unimportable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def run_python(code: str, env: dict[str, str] | None = None, block_llm2vec_hf: bool = False) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter; optionally with llm2vec_hf unimportable."""
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
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, env=full_env, timeout=600
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
