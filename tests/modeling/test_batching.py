"""Token-budget batching: fewer padded tokens, the same vectors.

`length_groups` decides which rows share a forward call; `encode_with` (LLM2Vec / AutoModel path) groups the whole
input by exact token count, and the sentence-transformers module regroups each batch it is given
(`forward_in_length_groups`). Vectors must not depend on how inputs are grouped beyond float rounding.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from llm2vec_hf import LLM2Vec
from llm2vec_hf.modeling.packing import DEFAULT_MAX_BATCH_TOKENS, forward_in_length_groups, length_groups

from helpers.samples import SAMPLE_INPUTS

TOL = 1e-5

# Lengths spread from 1 word to past doc_max_length, so that groups differ in width.
MIXED_INPUTS = SAMPLE_INPUTS + [
    " ".join(["word"] * n) for n in (2, 3, 5, 8, 13, 21, 34)
] + [["Represent the sentence", "short one"], ["Represent the sentence", " ".join(["longer"] * 20)]]


class ShapeRecorder:
    """Records the (rows, width) of every forward call of a model, seen at its input embedding (a hook on the
    model itself would miss callers that call ``model.forward`` directly, as sentence-transformers does)."""

    def __init__(self, model: torch.nn.Module):
        self.shapes: list[tuple[int, int]] = []
        self.handle = model.get_input_embeddings().register_forward_pre_hook(self._record)

    def _record(self, module, args):
        self.shapes.append(tuple(args[0].shape))

    def remove(self):
        self.handle.remove()


def test_length_groups_respects_both_caps():
    rng = random.Random(0)
    lengths = [rng.randint(1, 120) for _ in range(300)]
    groups = length_groups(lengths, max_rows=16, max_tokens=400)
    assert sorted(i for g in groups for i in g) == list(range(300))
    for group in groups:
        longest = max(lengths[i] for i in group)
        assert lengths[group[0]] == longest
        assert len(group) <= 16
        assert len(group) * longest <= 400 or len(group) == 1
    # Longest first across groups too, and deterministic.
    firsts = [lengths[g[0]] for g in groups]
    assert firsts == sorted(firsts, reverse=True)
    assert groups == length_groups(lengths, max_rows=16, max_tokens=400)


def test_length_groups_budget_cuts_padding():
    lengths = [500, 480, 60, 50, 40, 40, 30, 20]
    by_count = length_groups(lengths, max_rows=8, max_tokens=10**9)
    by_tokens = length_groups(lengths, max_rows=8, max_tokens=1000)
    padded = lambda groups: sum(len(g) * lengths[g[0]] for g in groups)  # noqa: E731
    assert len(by_count) == 1 and padded(by_count) == 4000
    assert padded(by_tokens) == 500 * 2 + 60 * 6  # the two long rows together, the short ones together


def test_length_groups_a_row_longer_than_the_budget_gets_its_own_group():
    assert length_groups([9, 3, 2], max_rows=4, max_tokens=4) == [[0], [1], [2]]


@pytest.mark.parametrize("bad", [0, -3, True, 1.5, "2048"])
def test_length_groups_rejects_a_bad_budget(bad):
    with pytest.raises(ValueError, match="max_batch_tokens must be a positive integer"):
        length_groups([3, 2], max_rows=4, max_tokens=bad)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("family", ["llama", "gemma"])
@pytest.mark.slow
def test_forward_in_length_groups_equals_one_padded_call(exported, family, padding_side):
    library = LLM2Vec.from_pretrained(str(exported(family)))
    tokenizer, model = library.tokenizer, library.model
    tokenizer.padding_side = padding_side
    batch = library.tokenize([("", text if isinstance(text, str) else text[1]) for text in MIXED_INPUTS])
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    with torch.inference_mode():
        expected = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        recorder = ShapeRecorder(model)
        try:
            grouped = forward_in_length_groups(model, input_ids, attention_mask, max_tokens=64)
        finally:
            recorder.remove()
    real = attention_mask.bool()
    assert len(recorder.shapes) > 1, "the batch should have been split"
    assert all(rows * width <= 64 or rows == 1 for rows, width in recorder.shapes)
    assert sum(rows * width for rows, width in recorder.shapes) < input_ids.numel()
    assert (grouped[real] - expected[real]).abs().max() <= TOL


def test_forward_in_length_groups_runs_an_unusual_mask_as_given(exported):
    library = LLM2Vec.from_pretrained(str(exported("llama")))
    input_ids = torch.randint(3, 100, (3, 6))
    attention_mask = torch.tensor([[1, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    with torch.inference_mode():
        recorder = ShapeRecorder(library.model)
        try:
            grouped = forward_in_length_groups(library.model, input_ids, attention_mask, max_tokens=4)
        finally:
            recorder.remove()
        expected = library.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    assert recorder.shapes == [(3, 6)]
    assert torch.equal(grouped, expected)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_encode_vectors_do_not_depend_on_batching(exported, family):
    library = LLM2Vec.from_pretrained(str(exported(family)))
    one_by_one = library.encode(MIXED_INPUTS, batch_size=1, show_progress_bar=False)
    for batch_size, max_batch_tokens in [(32, None), (32, 40), (4, 10**6), (3, 1)]:
        recorder = ShapeRecorder(library.model)
        try:
            vectors = library.encode(
                MIXED_INPUTS, batch_size=batch_size, max_batch_tokens=max_batch_tokens, show_progress_bar=False
            )
        finally:
            recorder.remove()
        budget = max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS
        assert all(rows <= batch_size and (rows * width <= budget or rows == 1) for rows, width in recorder.shapes)
        assert (vectors - one_by_one).abs().max() <= TOL, (batch_size, max_batch_tokens)


def test_encode_rejects_a_bad_budget(exported):
    library = LLM2Vec.from_pretrained(str(exported("llama")))
    with pytest.raises(ValueError, match="max_batch_tokens must be a positive integer"):
        library.encode(["a text"], max_batch_tokens=0, show_progress_bar=False)


def test_sentence_transformers_regroups_each_batch(exported):
    from sentence_transformers import SentenceTransformer

    folder = exported("llama")
    texts = [x for x in MIXED_INPUTS if isinstance(x, str)]
    expected = LLM2Vec.from_pretrained(str(folder)).encode(texts, batch_size=1, show_progress_bar=False).numpy()
    model = SentenceTransformer(str(folder), trust_remote_code=True)
    recorder = ShapeRecorder(model[0].auto_model)
    try:
        default = model.encode(texts, batch_size=32, convert_to_numpy=True)
        calls_default = len(recorder.shapes)
        small = model.encode(texts, batch_size=32, convert_to_numpy=True, max_batch_tokens=24)
    finally:
        recorder.remove()
    assert calls_default >= 1
    assert len(recorder.shapes) - calls_default > calls_default, "a smaller budget should split the batch further"
    assert all(rows * width <= 24 or rows == 1 for rows, width in recorder.shapes[calls_default:])
    assert np.abs(default - expected).max() <= TOL
    assert np.abs(small - expected).max() <= TOL


def test_sentence_transformers_never_takes_the_padding_free_path(exported, monkeypatch):
    """With flash-attention varlen at hand (simulated: it needs a GPU), stock sentence-transformers would pack
    batches and interleave long and short texts; the LLM2Vec module pads (it needs each row's pool mask), so it
    must decline, and encode keeps length-sorted batches."""
    import transformers.modeling_flash_attention_utils as flash_utils
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer

    model = SentenceTransformer(str(exported("llama")), trust_remote_code=True)
    monkeypatch.setattr(Transformer, "_is_flash_attention_requested", lambda self: True)
    monkeypatch.setattr(flash_utils, "lazy_import_flash_attention", lambda *a, **k: ((None, object(), None, None, None), (None, None)))
    assert Transformer._can_flatten_inputs(model[0]), "the simulated environment should allow flattening"
    model[0].unpad_inputs = None  # re-evaluates, as sentence-transformers does on load
    assert model[0].can_flatten_inputs is False and not model._can_flatten_inputs()
    texts = [x for x in MIXED_INPUTS if isinstance(x, str)]
    expected = LLM2Vec.from_pretrained(str(exported("llama"))).encode(texts, show_progress_bar=False).numpy()
    assert np.abs(model.encode(texts, batch_size=4, convert_to_numpy=True) - expected).max() <= TOL


def test_sentence_transformers_training_forward_packs_the_real_tokens_in_capped_calls(exported):
    """With gradients on (training), the module runs the batch on its real tokens only: one packed row when they
    fit ``max_batch_tokens`` (default 2048), else calls of at most that many tokens, a longer text in a call of
    its own (so that gradient checkpointing rebuilds a bounded layer); with ``padding_free=False``, the batch as
    given. The embeddings are the same every way."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(exported("llama")), trust_remote_code=True)
    features = model[0].preprocess([x for x in MIXED_INPUTS if isinstance(x, str)])
    lengths = features["attention_mask"].sum(1).tolist()
    real = int(sum(lengths))
    outputs = {}
    for name, padding_free, budget in (("one row", True, None), ("capped", True, 8), ("padded", False, 8)):
        model[0].padding_free = padding_free
        recorder = ShapeRecorder(model[0].auto_model)
        try:
            with torch.enable_grad():
                kwargs = {} if budget is None else {"max_batch_tokens": budget}
                outputs[name] = model[0](dict(features), **kwargs)["sentence_embedding"]
        finally:
            recorder.remove()
        assert outputs[name].requires_grad
        if name == "one row":
            assert recorder.shapes == [(1, real)]
        elif name == "capped":
            assert all(rows == 1 for rows, _ in recorder.shapes) and sum(w for _, w in recorder.shapes) == real
            longest = max(lengths)
            assert longest > 8 and all(width <= 8 or width in lengths for _, width in recorder.shapes)
            assert (1, longest) in recorder.shapes
        else:
            assert recorder.shapes == [tuple(features["input_ids"].shape)]
    for name in ("capped", "padded"):
        assert torch.allclose(outputs[name], outputs["one row"], atol=1e-5)


def test_encode_command_takes_a_token_budget(exported, tmp_path, capsys):
    from llm2vec_hf.cli import main

    model = exported("llama")
    source = tmp_path / "texts.txt"
    texts = [x for x in MIXED_INPUTS if isinstance(x, str)]
    source.write_text("\n".join(texts) + "\n")
    base = ["encode", str(model), "--input", str(source)]
    assert main(base + ["--output", str(tmp_path / "a.npy")]) == 0
    assert main(base + ["--output", str(tmp_path / "b.npy"), "--max-batch-tokens", "16"]) == 0
    assert np.abs(np.load(tmp_path / "a.npy") - np.load(tmp_path / "b.npy")).max() <= TOL
    assert main(base + ["--output", str(tmp_path / "c.npy"), "--max-batch-tokens", "0"]) == 2
    assert "--max-batch-tokens must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "c.npy").exists()


@pytest.mark.slow
def test_compile_for_inference_keeps_the_vectors(exported):
    """torch.compile with frozen weights (inductor, C++ on CPU) gives the eager vectors."""
    library = LLM2Vec.from_pretrained(str(exported("llama")))
    eager = library.encode(MIXED_INPUTS, max_batch_tokens=64, show_progress_bar=False)
    from torch._dynamo.utils import counters

    counters.clear()
    assert library.compile_for_inference() is library
    compiled = library.encode(MIXED_INPUTS, max_batch_tokens=64, show_progress_bar=False)
    assert counters["stats"]["unique_graphs"] >= 1, "nothing was compiled"
    assert (compiled - eager).abs().max() <= 1e-4


def test_should_compile_decides_from_the_forward_flops(exported, monkeypatch):
    from llm2vec_hf.encoding.compile_policy import AUTO_COMPILE_MIN_FLOPS, should_compile

    sdpa = LLM2Vec.from_pretrained(str(exported("llama"))).model
    assert not should_compile(sdpa, 10**15), "compiling would lose per-text attention in packed calls"
    model = LLM2Vec.from_pretrained(str(exported("llama")), attn_implementation="eager").model
    parameters = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    pays = -(-int(AUTO_COMPILE_MIN_FLOPS) // (2 * parameters))  # fewest tokens whose FLOPs reach the threshold
    assert should_compile(model, pays) and not should_compile(model, pays - 1)
    assert should_compile(model, 10**15, "cpu") and not should_compile(model, 10**15, "cuda:0")  # CPU-measured
    assert should_compile(model, 1, requested=True) and not should_compile(model, 10**15, requested=False)
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    assert not should_compile(model, 10**15), "inductor needs a C++ compiler on CPU"


@pytest.mark.slow  # compiles (inductor, C++)
def test_encode_command_compiles_when_asked_and_not_for_a_small_input(exported, tmp_path):
    from torch._dynamo.utils import counters

    from llm2vec_hf.encoding.file_encoder import encode_file

    source = tmp_path / "texts.txt"
    source.write_text("\n".join(x for x in MIXED_INPUTS if isinstance(x, str)) + "\n")
    torch._dynamo.reset()  # an earlier test's compile of the same forward would be reused: no new graph to count
    counters.clear()
    encode_file(str(exported("llama")), str(source), str(tmp_path / "auto.npy"))
    assert not counters["stats"]["unique_graphs"], "a handful of texts should not be compiled"
    encode_file(str(exported("llama")), str(source), str(tmp_path / "compiled.npy"), compile_model=True)
    assert counters["stats"]["unique_graphs"] >= 1
    assert np.abs(np.load(tmp_path / "auto.npy") - np.load(tmp_path / "compiled.npy")).max() <= 1e-4


@pytest.mark.slow  # compiles (inductor, C++)
def test_sentence_transformers_module_compiles_at_its_first_batch(exported):
    """What the encode command's process pool sets in each worker's copy of the module."""
    from sentence_transformers import SentenceTransformer
    from torch._dynamo.utils import counters

    model = SentenceTransformer(str(exported("llama")), trust_remote_code=True)
    texts = [x for x in MIXED_INPUTS if isinstance(x, str)]
    eager = model.encode(texts, convert_to_numpy=True)
    torch._dynamo.reset()
    counters.clear()
    model[0].compile_on_first_forward = True
    compiled = model.encode(texts, convert_to_numpy=True)
    assert counters["stats"]["unique_graphs"] >= 1 and model[0].compile_on_first_forward is False
    assert np.abs(compiled - eager).max() <= 1e-4
