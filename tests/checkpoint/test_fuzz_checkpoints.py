"""Property tests of the checkpoint loaders: random truncations and header byte flips of model.safetensors and
adapter_model.safetensors, random deletions of tensors, random junk files. Every outcome is a load whose vectors
equal the intact checkpoint's, or a one-line error; never randomly initialised weights, never a traceback.

Byte flips are aimed at the safetensors header (names, dtypes, shapes, offsets, metadata): a flip inside the
tensor bytes is a valid file with another weight, which the format carries no checksum to detect (the Hub's
LFS/Xet transfer is checked by sha256; docs/reliability.md)."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from llm2vec_hf import LLM2Vec
from llm2vec_hf.errors import LLM2VecError
from llm2vec_hf.training.tiny_model import build_tiny_decoder

FUZZ = settings(max_examples=45, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TEXTS = ["a short text", ["Retrieve the passage", "about foxes"], "naïve café 日本語"]


@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    """A tiny base (SentencePiece-free byte-level BPE, untied head), a LoRA adapter for it, and their vectors."""
    from peft import LoraConfig, get_peft_model

    from llm2vec_hf.loading.models import load_bidirectional

    root = tmp_path_factory.mktemp("fuzz-ckpt")
    base = build_tiny_decoder(root / "base", "llama", seed=3)
    model, _, _ = load_bidirectional(str(base))
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                   init_lora_weights=False))
    peft_model.save_pretrained(root / "adapter")
    vectors = {
        "base": _encode(LLM2Vec.from_pretrained(str(base))),
        "adapter": _encode(LLM2Vec.from_pretrained(str(base), peft_model_name_or_path=str(root / "adapter"))),
    }
    return {"base": base, "adapter": root / "adapter", "vectors": vectors}


def _encode(model) -> torch.Tensor:
    return model.encode(TEXTS, show_progress_bar=False)


def _outcome(load, expected: torch.Tensor, damage) -> str:
    try:
        model = load()
        vectors = _encode(model)
    except (LLM2VecError, ValueError, TypeError, OSError) as error:
        assert "\n" not in str(error) and str(error).strip(), (damage, repr(error))
        _note("outcome: one-line error")
        return "error"
    assert torch.allclose(vectors, expected, atol=1e-6), f"loaded with other weights after {damage}"
    _note("outcome: loaded, same vectors")
    return "same vectors"


def _note(outcome: str) -> None:
    if currently_in_test_context():  # counted in --hypothesis-show-statistics
        event(outcome)


def _header_length(path: Path) -> int:
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


damages = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip-header"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("delete-keys"), st.lists(st.floats(0, 1), min_size=1, max_size=3)),
    st.tuples(st.just("junk-file"), st.sampled_from(["model.safetensors.index.json", "pytorch_model.bin", "config.json",
                                                     "tokenizer.json", "adapter_config.json", "notes.txt"]),
              st.binary(max_size=64)),
)


def _damage(folder: Path, weights_name: str, damage) -> list[str]:
    """Applies ``damage``; returns the names of the tensors it deleted."""
    weights = folder / weights_name
    deleted = []
    kind = damage[0]
    if kind == "truncate":
        data = weights.read_bytes()
        weights.write_bytes(data[: int(damage[1] * (len(data) - 1))])
    elif kind == "flip-header":
        data = bytearray(weights.read_bytes())
        position = min(int(damage[1] * _header_length(weights)), len(data) - 1)
        data[position] ^= damage[2]
        weights.write_bytes(bytes(data))
    elif kind == "delete-keys":
        state = load_file(weights)
        names = sorted(state)
        for fraction in damage[1]:
            name = names[min(int(fraction * len(names)), len(names) - 1)]
            if state.pop(name, None) is not None:
                deleted.append(name)
        save_file(state, weights, metadata={"format": "pt"})
    else:
        (folder / damage[1]).write_bytes(damage[2])
    return deleted


@FUZZ
@given(damage=damages)
@pytest.mark.slow
def test_damaged_base_loads_right_or_fails_in_one_line(intact, tmp_path_factory, damage):
    folder = tmp_path_factory.mktemp("base") / "model"
    shutil.copytree(intact["base"], folder)
    deleted = _damage(folder, "model.safetensors", damage)
    outcome = _outcome(lambda: LLM2Vec.from_pretrained(str(folder)), intact["vectors"]["base"], damage)
    # the causal-LM head is the one tensor of a decoder checkpoint the encoder does not use
    if damage[0] == "truncate" or any(not name.startswith("lm_head.") for name in deleted):
        assert outcome == "error", damage


@FUZZ
@given(damage=damages)
@pytest.mark.slow
def test_damaged_adapter_loads_right_or_fails_in_one_line(intact, tmp_path_factory, damage):
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    shutil.copytree(intact["adapter"], folder)
    _damage(folder, "adapter_model.safetensors", damage)
    for merge in (False, True):
        outcome = _outcome(
            lambda: LLM2Vec.from_pretrained(str(intact["base"]), peft_model_name_or_path=str(folder), merge_peft=merge),
            intact["vectors"]["adapter"], damage)
        if damage[0] in ("truncate", "delete-keys"):
            assert outcome == "error", damage


def test_the_fuzzed_outcomes_include_both_kinds(intact, tmp_path):
    """The properties above would hold vacuously if every damage failed to load: a harmless one loads."""
    folder = tmp_path / "model"
    shutil.copytree(intact["base"], folder)
    _damage(folder, "model.safetensors", ("junk-file", "notes.txt", b"hello"))
    assert _outcome(lambda: LLM2Vec.from_pretrained(str(folder)), intact["vectors"]["base"], "junk") == "same vectors"
