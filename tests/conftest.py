"""Shared fixtures: tiny decoders built on the spot (never downloaded) and their exported checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llm2vec_hf import FAMILIES, POOLING_MODES
from llm2vec_hf.encoding.inputs import count_inputs, iter_inputs
from llm2vec_hf.export import export_checkpoint
from llm2vec_hf.tiny import build_tiny_decoder

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

#: Inputs that exercise the encoding rules: plain, instruction pairs, unicode, very short, over-long.
SAMPLE_INPUTS = [
    "The quick brown fox jumps over the lazy dog.",
    ["Given a web search query, retrieve relevant passages", "how do transformers attend to tokens?"],
    "Ünïcödé naïve café — 日本語のテキスト 😀",
    "a",
    ["Retrieve the definition", "x"],
    " ".join(["Long documents are cut word-wise before they are truncated to max_length."] * 60),
]
SAMPLE_PROMPTS = {"query": "Given a web search query, retrieve relevant passages "}


class TinyBases(dict):
    """``family -> folder`` of a random tiny ``…ForCausalLM`` checkpoint, built on first use."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, family: str) -> Path:
        if family not in FAMILIES:
            raise KeyError(family)
        self[family] = build_tiny_decoder(self.root / family, family)
        return self[family]


@pytest.fixture(scope="session")
def tiny_bases(tmp_path_factory) -> TinyBases:
    """A random tiny ``…ForCausalLM`` checkpoint per family (built when a test first asks for it)."""
    return TinyBases(tmp_path_factory.mktemp("bases"))


@pytest.fixture(scope="session")
def exported(tiny_bases, tmp_path_factory):
    """``exported(family, pooling_mode)`` -> folder of an exported checkpoint (built once per pair)."""
    root = tmp_path_factory.mktemp("exported")
    cache: dict[tuple[str, str], Path] = {}

    def get(family: str, pooling_mode: str = "mean", **encoding) -> Path:
        key = (family, pooling_mode, tuple(sorted(encoding.items())))
        if key not in cache:
            name = "-".join([family, pooling_mode] + [f"{k}={v}" for k, v in sorted(encoding.items())])
            cache[key] = Path(
                export_checkpoint(
                    str(tiny_bases[family]),
                    str(root / name),
                    prompts=SAMPLE_PROMPTS,
                    pooling_mode=pooling_mode,
                    max_length=48,
                    doc_max_length=40,
                    **encoding,
                )
            )
        return cache[key]

    return get


def hub_cache_with(repo_id: str, folder: Path, cache_root: Path) -> Path:
    """Lays ``folder`` out as the Hub cache does (models--org--name/snapshots/<sha>/, refs/main)."""
    repo_dir = cache_root / ("models--" + repo_id.replace("/", "--"))
    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / revision
    shutil.copytree(folder, snapshot)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return cache_root


def read_inputs(path: str) -> list:
    """Every input of a ``.txt``/``.jsonl`` file as ``encode`` reads it (the same checks; none: an error)."""
    count_inputs(path)
    return [item for item, _, _ in iter_inputs(path)]


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


@pytest.fixture(scope="session")
def recorded_losses():
    """Records every training loss of the llm2vec-hf trainers (``loss_recording.losses(run)`` reads them)."""
    from loss_recording import record_losses

    with pytest.MonkeyPatch.context() as patch:
        record_losses(patch.setattr)
        yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and a busy 2-core machine makes OpenMP spin; a module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------------------
# The support matrix: the conformance suite's outcomes per family (docs/families.md, `llm2vec-hf families`)
# --------------------------------------------------------------------------------------------------------------
def pytest_addoption(parser):
    parser.addoption("--family-matrix", metavar="JSON", default=None,
                     help="record the conformance suite's outcome per family and check into JSON, under this "
                          "transformers version (src/llm2vec_hf/families.json is the shipped one)")


_MATRIX_OUTCOMES: dict[str, dict[str, str]] = {}


def pytest_runtest_logreport(report):
    from llm2vec_hf.families import matrix_cell

    cell = matrix_cell(report.nodeid)
    if cell is None or (report.when != "call" and not report.failed and not report.skipped):
        return
    family, check = cell
    if report.skipped:
        outcome = "skipped: " + (report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr))
        outcome = outcome.replace("Skipped: ", "")
    else:
        outcome = "passed" if report.passed else "failed"
    previous = _MATRIX_OUTCOMES.setdefault(family, {}).get(check)
    if previous is None or previous == "passed":  # a failure or skip of either test of a cell decides it
        _MATRIX_OUTCOMES[family][check] = outcome


def pytest_sessionfinish(session, exitstatus):
    path = session.config.getoption("--family-matrix")
    if path and _MATRIX_OUTCOMES:
        from llm2vec_hf.families import record_outcomes

        record_outcomes(path, _MATRIX_OUTCOMES)
