"""Packed rows: several texts in one row with a block-diagonal mask and positions restarting per text.

The vectors must equal the padded ones (one text per row) for every family, pooling mode and attention backend
that packs, and a model whose attention depends on positions in the row (a sliding window) must stay exact.
"""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from llm2vec_hf import LLM2Vec, POOLING_MODES
from llm2vec_hf.modeling.packing import forward_in_length_groups, pack_rows, packable_length, packed_groups
from llm2vec_hf.training.tiny_model import build_tiny_decoder

from helpers.samples import SAMPLE_INPUTS

TOL = 1e-5

#: Mixed lengths (1 token to past max_length), plain texts and instruction pairs, in no particular order.
MIXED_INPUTS = SAMPLE_INPUTS + [" ".join(["word"] * n) for n in (2, 3, 5, 8, 13, 21)] + [
    ["Represent the sentence", "short one"],
    ["Represent the sentence", " ".join(["longer"] * 20)],
    "tiny",
    ["Find", "two words"],
]


class PackingSpy:
    """Counts, per forward call, the rows and the texts in them (from the restarts of ``position_ids``)."""

    def __init__(self, model: torch.nn.Module):
        self.calls: list[tuple[int, int, int]] = []  # (rows, width, texts)
        self.handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        ids = kwargs["input_ids"]
        positions = kwargs.get("position_ids")
        texts = ids.shape[0] if positions is None else int((positions == 0).sum())
        self.calls.append((ids.shape[0], ids.shape[1], texts))

    def remove(self):
        self.handle.remove()

    @property
    def packed(self) -> bool:
        return any(texts > rows for rows, _, texts in self.calls)


def encode_both(model, tokenizer, inputs, **kwargs):
    spy = PackingSpy(model)
    try:
        packed = model.encode(inputs, tokenizer, packing=True, **kwargs)
    finally:
        spy.remove()
    padded = model.encode(inputs, tokenizer, packing=False, **kwargs)
    return packed, padded, spy


def test_pack_rows_respects_every_cap():
    rng = random.Random(0)
    lengths = [rng.randint(1, 120) for _ in range(400)] + [300, 250]
    calls = pack_rows(lengths, row_tokens=128, max_tokens=512, max_texts=24)
    seen = sorted(i for rows in calls for row in rows for i in row)
    assert seen == list(range(len(lengths)))
    for rows in calls:
        fills = [sum(lengths[i] for i in row) for row in rows]
        assert sum(len(row) for row in rows) <= 24
        longest = max(lengths[i] for row in rows for i in row)
        assert all(fill <= max(128, longest) for fill in fills)
        assert lengths[rows[0][0]] == longest
        assert len(rows) * max(fills) <= 512 or len(rows) == 1
    assert any(len(row) > 1 for rows in calls for row in rows), "short texts should share rows"
    assert calls == pack_rows(lengths, row_tokens=128, max_tokens=512, max_texts=24)


def test_pack_rows_leaves_little_padding():
    rng = random.Random(1)
    lengths = [rng.randint(5, 60) for _ in range(300)]
    calls = pack_rows(lengths, row_tokens=256, max_tokens=1024, max_texts=10**6)
    computed = sum(len(rows) * max(sum(lengths[i] for i in row) for row in rows) for rows in calls)
    assert computed <= 1.1 * sum(lengths)


def test_pack_rows_gives_a_text_longer_than_the_row_a_row_of_its_own():
    calls = pack_rows([900, 3, 2, 600], row_tokens=64, max_tokens=512, max_texts=32)
    rows = [row for call in calls for row in call]
    assert [0] in rows and [3] in rows and [1, 2] in rows


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2"])
@pytest.mark.slow
def test_packed_vectors_equal_padded_ones_for_every_pooling_mode(exported, family):
    folder = exported(family)
    model = AutoModel.from_pretrained(str(folder), trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert packable_length(model) > 48, "the tiny checkpoints have no window that would stop packing"
    for pooling_mode in POOLING_MODES:
        if pooling_mode == "bos_token" and tokenizer.bos_token is None:  # Qwen adds no BOS
            continue
        # a budget smaller than the longest text (48 tokens): that one gets a call of its own
        packed, padded, spy = encode_both(model, tokenizer, MIXED_INPUTS, pooling_mode=pooling_mode,
                                          max_batch_tokens=40, batch_size=32)
        assert spy.packed, (family, pooling_mode)
        assert any(width > 40 and rows == 1 for rows, width, _ in spy.calls)
        assert (packed - padded).abs().max() <= TOL, (family, pooling_mode)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_llm2vec_encode_packs_sdpa_by_default_and_eager_when_asked(exported, attn_implementation):
    library = LLM2Vec.from_pretrained(str(exported("llama")), attn_implementation=attn_implementation)
    spy = PackingSpy(library.model)
    try:
        default = library.encode(MIXED_INPUTS, show_progress_bar=False)
        assert spy.packed == (attn_implementation == "sdpa")  # masked rows (eager) measured no faster
        default = library.encode(MIXED_INPUTS, show_progress_bar=False, packing=True)
    finally:
        spy.remove()
    padded = library.encode(MIXED_INPUTS, show_progress_bar=False, packing=False)
    one_by_one = library.encode(MIXED_INPUTS, show_progress_bar=False, batch_size=1)
    assert spy.packed
    assert (default - padded).abs().max() <= TOL
    assert (default - one_by_one).abs().max() <= TOL


def test_packing_true_refuses_a_backend_that_cannot_take_the_mask(exported):
    library = LLM2Vec.from_pretrained(str(exported("llama")))
    library.model.config._attn_implementation = "flash_attention_2"  # what the check reads; never run here
    assert packable_length(library.model) == 0
    with pytest.raises(ValueError, match="packing=True needs attention implementation"):
        packed_groups(library.model, [3, 4, 5], 32, packing=True)
    assert packed_groups(library.model, [3, 4, 5], 32) == [[[2], [1], [0]]]  # default: padded rows


@pytest.mark.parametrize("family, extra", [
    ("mistral", {"sliding_window": 6}),
    ("gemma2", {"sliding_window": 6, "attn_logit_softcapping": 5.0, "final_logit_softcapping": 3.0}),
    ("qwen2", {"sliding_window": 6, "use_sliding_window": True, "max_window_layers": 1}),
])
def test_sliding_window_models_pack_every_text(tmp_path, family, extra):
    """Windows are widened to the whole input (`attend_to_whole_text`), so texts longer than the configured window
    pack too, with the padded vectors, which are those of the same weights without a window."""
    folder = build_tiny_decoder(tmp_path / family, family, **extra)
    windowed = LLM2Vec.from_pretrained(str(folder))
    assert packable_length(windowed.model) == windowed.model.config.max_position_embeddings
    inputs = ["a b", "one two three four five six seven eight nine ten eleven twelve", "x", "y z",
              ["Find", "w"], " ".join(["longer"] * 12)]
    spy = PackingSpy(windowed.model)
    try:
        packed = windowed.encode(inputs, show_progress_bar=False, packing=True)
    finally:
        spy.remove()
    padded = windowed.encode(inputs, show_progress_bar=False, packing=False)
    assert spy.packed
    assert (packed - padded).abs().max() <= TOL
    no_window = {"use_sliding_window": False} if family == "qwen2" else {"sliding_window": 4096}
    free_folder = build_tiny_decoder(tmp_path / "free", family, **{**extra, **no_window})  # same seed, same weights
    free = LLM2Vec.from_pretrained(str(free_folder)).encode(inputs, show_progress_bar=False, packing=False)
    assert (free - padded).abs().max() <= TOL


def test_sentence_transformers_packs_each_batch(exported):
    from sentence_transformers import SentenceTransformer

    folder = exported("gemma")
    texts = [x for x in MIXED_INPUTS if isinstance(x, str)]
    expected = LLM2Vec.from_pretrained(str(folder)).encode(texts, batch_size=1, show_progress_bar=False)
    model = SentenceTransformer(str(folder), trust_remote_code=True)
    spy = PackingSpy(model[0].auto_model)
    try:
        vectors = model.encode(texts, batch_size=32, convert_to_tensor=True)
    finally:
        spy.remove()
    assert spy.packed
    assert (vectors - expected).abs().max() <= TOL
    query = model.encode(texts, batch_size=8, prompt_name="query", convert_to_tensor=True)
    library = LLM2Vec.from_pretrained(str(folder))
    prompt = "Given a web search query, retrieve relevant passages "
    assert (query - library.encode([[prompt, t] for t in texts], show_progress_bar=False)).abs().max() <= TOL


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_forward_in_length_groups_packs_and_returns_each_text_in_place(exported, padding_side):
    library = LLM2Vec.from_pretrained(str(exported("qwen2")))
    library.tokenizer.padding_side = padding_side
    batch = library.tokenize([("", text if isinstance(text, str) else text[1]) for text in MIXED_INPUTS])
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    spy = PackingSpy(library.model)
    with torch.inference_mode():
        try:
            packed = forward_in_length_groups(library.model, input_ids, attention_mask, max_tokens=64)
        finally:
            spy.remove()
        padded = forward_in_length_groups(library.model, input_ids, attention_mask, max_tokens=64, packing=False)
    real = attention_mask.bool()
    assert spy.packed
    assert (packed[real] - padded[real]).abs().max() <= TOL


def test_masked_rows_and_per_text_attention_agree(exported):
    """The two packed forms of one call (a block-diagonal mask over rows, or sdpa per text) give the same states,
    and the same as each text run alone."""
    from llm2vec_hf.modeling.packing import VARLEN_ATTENTION, forward_packed, packed_batch

    library = LLM2Vec.from_pretrained(str(exported("mistral")))
    ids = library.tokenizer(["one two three", "a much longer text with many more words in it", "x", "four five"])[
        "input_ids"]
    rows = [[1, 0], [3, 2]]
    dtype = next(library.model.parameters()).dtype
    kernel = library.model.config._attn_implementation
    with torch.inference_mode():
        masked = forward_packed(library.model, packed_batch(0, ids, rows, dtype, additive=False), torch.device("cpu"))
        per_text = forward_packed(library.model, packed_batch(0, ids, rows, dtype, additive=False, varlen=True),
                                  torch.device("cpu"))
        alone = [library.model(input_ids=torch.tensor([ids[i]])).last_hidden_state[0] for row in rows for i in row]
    assert kernel == VARLEN_ATTENTION == library.model.config._attn_implementation  # chosen at load, never switched
    for a, b, c in zip(masked, per_text, alone):
        assert (a - c).abs().max() <= TOL and (b - c).abs().max() <= TOL


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_a_causal_model_is_never_packed(tmp_path, attn_implementation):
    """A causal baseline (``enable_bidirectional=False``) keeps its causal vectors: packed rows attend both ways
    within each text, so such a model is encoded one text per row, and ``packing=True`` is refused."""
    folder = build_tiny_decoder(tmp_path / "llama", "llama")
    inputs = [x for x in MIXED_INPUTS if isinstance(x, str)]
    causal = LLM2Vec.from_pretrained(str(folder), enable_bidirectional=False, attn_implementation=attn_implementation)
    spy = PackingSpy(causal.model)
    try:
        got = causal.encode(inputs, show_progress_bar=False, convert_to_tensor=True)
    finally:
        spy.remove()
    assert not spy.packed
    unpacked = causal.encode(inputs, show_progress_bar=False, convert_to_tensor=True, packing=False)
    assert (got - unpacked).abs().max() <= TOL
    bidirectional = LLM2Vec.from_pretrained(str(folder), attn_implementation=attn_implementation)
    assert (got - bidirectional.encode(inputs, show_progress_bar=False, convert_to_tensor=True)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="bidirectional"):
        causal.encode(inputs, show_progress_bar=False, packing=True)


def _graph_node_names(output: torch.Tensor) -> list[str]:
    seen, stack, names = set(), [output.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def _spans(lengths_per_row: list[list[int]], width: int) -> list[tuple[int, int, int]]:
    spans = []
    for row, lengths in enumerate(lengths_per_row):
        start = 0
        for length in lengths:
            spans.append((row, start, length))
            start += length
        assert start <= width
    return spans


def test_per_text_attention_backward_grows_with_tokens_not_with_texts():
    """Cutting a packed row per text must not cost a whole-row gradient per text in the backward (a slice of the
    row per text does: its backward writes a zero tensor of the row's size, once per text, quadratic in a long
    row of short texts). The graph holds as many slicing nodes for 48 texts as for 4."""
    from llm2vec_hf.modeling.packing import forward_packed, varlen_sdpa_attention

    def slicing_nodes(texts: int) -> int:
        width = texts * 5
        query, key, value = (torch.randn(1, 2, width, 8, requires_grad=True) for _ in range(3))
        output, _ = varlen_sdpa_attention(None, query, key, value, None, llm2vec_spans=_spans([[5] * texts], width))
        return sum(name in ("SliceBackward0", "SelectBackward0", "AsStridedBackward0")
                   for name in _graph_node_names(output))

    assert slicing_nodes(48) == slicing_nodes(4)

    class Rows(torch.nn.Module):  # `forward_packed` cuts the model's output per text the same way
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)

        def forward(self, input_ids, attention_mask=None, **kwargs):
            return type("Output", (), {"last_hidden_state": self.embed(input_ids)})

    def state_slicing_nodes(texts: int) -> int:
        batch = {"input_ids": torch.zeros(2, texts * 3, dtype=torch.long), "position_ids": torch.zeros(2, texts * 3),
                 "attention_mask": torch.ones(2, texts * 3), "spans": _spans([[3] * texts, [2] * texts], texts * 3)}
        states = forward_packed(Rows(), batch, torch.device("cpu"))
        assert [s.shape[0] for s in states] == [3] * texts + [2] * texts
        return sum(name in ("SliceBackward0", "SelectBackward0", "AsStridedBackward0")
                   for name in _graph_node_names(torch.cat(states)))

    assert state_slicing_nodes(40) == state_slicing_nodes(4)


def test_per_text_attention_gradients_equal_each_text_alone_across_rows_and_gaps():
    """Two rows, texts of unequal lengths and padding after each row's last text (as `packed_batch` lays them
    out): outputs and gradients equal each text's own sdpa call; the gaps give zeros and no gradient."""
    from llm2vec_hf.modeling.packing import varlen_sdpa_attention

    torch.manual_seed(0)
    width, lengths = 16, [[5, 7], [3, 4, 6]]
    spans = _spans(lengths, width)
    query, key, value = (torch.randn(2, 4, width, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    weights = torch.randn(2, width, 4, 8, dtype=torch.float64)
    output, _ = varlen_sdpa_attention(None, query, key, value, None, llm2vec_spans=spans)
    (output * weights).sum().backward()
    packed_grads = [t.grad.clone() for t in (query, key, value)]
    for t in (query, key, value):
        t.grad = None
    expected = torch.zeros_like(output)
    for row, start, length in spans:
        cut = slice(start, start + length)
        alone = torch.nn.functional.scaled_dot_product_attention(
            query[row : row + 1, :, cut], key[row : row + 1, :, cut], value[row : row + 1, :, cut])
        expected[row, cut] = alone[0].transpose(0, 1)
    (expected * weights).sum().backward()
    assert (output - expected).abs().max() <= 1e-12
    for got, want in zip(packed_grads, (query.grad, key.grad, value.grad)):
        assert (got - want).abs().max() <= 1e-12
    assert not bool(output[0, 12:].any()) and not bool(packed_grads[0][0, :, 12:].any())
