"""Shared fixtures: tiny decoders built on the spot (never downloaded) and their exported checkpoints."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from helpers.fake_hub import TOKEN
from helpers.loss_recording import record_losses
from helpers.samples import SAMPLE_PROMPTS
from llm2vec_hf import FAMILIES
from llm2vec_hf.checkpoint.export import export_checkpoint
from llm2vec_hf.training.tiny_model import build_tiny_decoder


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


@pytest.fixture(scope="session")
def recorded_losses():
    """Records every training loss of the llm2vec-hf trainers (``helpers.loss_recording.losses(run)`` reads them)."""
    with pytest.MonkeyPatch.context() as patch:
        record_losses(patch.setattr)
        yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and a busy 2-core machine makes OpenMP spin; a module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    """Token in HF_TOKEN, no login cache; the default endpoint points at a closed loopback port."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # The loopback hub speaks the LFS protocol, not Xet's chunk storage: with Xet off the client takes LFS.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


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
