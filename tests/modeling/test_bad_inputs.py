"""Bad encode input gets an error that names the problem (or a correct result), never a crash deep inside torch;
settings follow one rule everywhere."""

from __future__ import annotations

import re

import pytest
import torch

from helpers.cli import assert_one_line, run_cli
from helpers.processes import run_python
from helpers.samples import REPO
from llm2vec_hf import LLM2Vec


@pytest.fixture(scope="module")
def model(exported):
    return LLM2Vec.from_pretrained(str(exported("llama")))


@pytest.mark.parametrize(
    "inputs,error,message",
    [
        ([], ValueError, "empty"),
        ("", ValueError, "empty or whitespace"),
        (["fine", "   \n"], ValueError, "Input #1"),
        ([None], TypeError, "Input #0"),
        ([3.5], TypeError, "Input #0"),
        (None, TypeError, "Expected a text"),
        ([["only one"]], TypeError, "pair of two strings"),
        ([["a", "b", "c"]], TypeError, "pair of two strings"),
        ([["instruction", None]], TypeError, "pair of two strings"),
    ],
)
def test_bad_inputs_are_named(model, inputs, error, message):
    with pytest.raises(error, match=message):
        model.encode(inputs, show_progress_bar=False)


def test_input_shapes_read_as_llm2vec_0_2_3_reads_them(model):
    """Shapes and values checked against llm2vec 0.2.3 on the same weights (docs/reliability.md): a tuple of
    texts is that many texts, a pair is a list inside the list, and MTEB's MEDI [instruction, text, id] is a pair."""
    def encode(inputs):
        return model.encode(inputs, show_progress_bar=False)

    assert encode("one text").shape == (1, 32)
    two = encode(("an instruction", "a text"))
    assert two.shape == (2, 32)
    assert torch.equal(two, encode(["an instruction", "a text"]))
    assert encode(("a", "b", "c")).shape == (3, 32)
    pair = encode([["an instruction", "a text"]])
    assert pair.shape == (1, 32)
    for same in (encode([("an instruction", "a text")]), encode(["an instruction", "a text", 0]),
                 encode([["an instruction", "a text", 7]])):
        assert torch.equal(same, pair)
    assert not torch.allclose(pair[0], two[1])  # the instruction changes the vector: a pair is not a text


def test_text_far_longer_than_max_length_is_truncated(model):
    text = "word " * (100 * model.max_length)
    vector = model.encode([text], show_progress_bar=False)
    assert torch.isfinite(vector).all()
    batch = model.tokenize([("", text)])
    assert batch["input_ids"].shape[1] <= model.max_length


def test_bad_batch_size(model):
    with pytest.raises(ValueError, match="batch_size"):
        model.encode(["x"], batch_size=0, show_progress_bar=False)


def test_unknown_pooling_mode_lists_the_known_ones(exported):
    with pytest.raises(ValueError, match="weighted_mean"):
        LLM2Vec.from_pretrained(str(exported("llama")), pooling_mode="max")


@pytest.mark.slow
def test_old_transformers_is_refused_with_a_clear_message():
    """On a transformers older than 5.2 the model code refuses to import instead of running causal."""
    code = f"""
import importlib.metadata, sys
real = importlib.metadata.version
importlib.metadata.version = lambda name: "4.44.2" if name == "transformers" else real(name)
sys.path.insert(0, {str(REPO)!r})
try:  # as a package, as transformers' remote-code loader imports it (the files import each other relatively)
    import modeling.modeling_llm2vec
except ImportError as error:
    print("REFUSED:", error)
"""
    proc = run_python(code, block_llm2vec_hf=True)
    assert "REFUSED:" in proc.stdout, proc.stderr[-2000:]
    assert "transformers>=5.2.0" in proc.stdout and "silently run causal" in proc.stdout


def test_single_overlong_word_is_not_cut_to_nothing(model):
    """The reference cuts a doc_max_length-busting single word to "" and then pools padding; we keep it."""
    word = "x" * (20 * model.doc_max_length)
    vector = model.encode([word, ["Find", word]], show_progress_bar=False)
    assert torch.isfinite(vector).all() and vector.abs().sum() > 0


@pytest.mark.parametrize(
    "template,needle",
    [
        ("[INST] [/INST]", "exactly one {text}"),
        ("{text} and {text}", "exactly one {text}"),
        ("{text} {foo}", "other than {text}: foo"),
        ("{} {text}", "other than {text}"),
        ("{0} {text}", "other than {text}: 0"),
        ("{text!r}", "no format spec"),
        ("{text:>10}", "no format spec"),
        ("{text", "not a valid template"),
        ("} {text}", "not a valid template"),
    ],
)
def test_text_template_rule_is_the_same_in_export_api_and_encode(tiny_bases, exported, tmp_path, capsys, template, needle):
    code, _, err = run_cli(["export", tiny_bases["llama"], "--output", tmp_path / "out", "--text-template", template], capsys)
    assert_one_line(code, err, needle)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=re.escape(needle)):
        LLM2Vec.from_pretrained(str(exported("llama")), text_template=template)


def test_text_template_with_escaped_braces_keeps_them_literal(exported):
    plain = LLM2Vec.from_pretrained(str(exported("llama")), text_template="{{json}} {text}")
    batch = plain.tokenize([("", "hello")])
    assert plain.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True).startswith("{json} hello")


def test_doc_max_length_cut_of_a_huge_line_tokenizes_little(exported):
    """A 2 MB line is cut word-wise before tokenizing: at most max_length words are re-tokenized, never the line."""
    from llm2vec_hf.modeling.input_formatting import cut_to_doc_max_length

    model = LLM2Vec.from_pretrained(str(exported("llama")))
    tokenizer = model.tokenizer
    seen = []
    real_call = type(tokenizer).__call__

    class Counting(type(tokenizer)):
        def __call__(self, text, *args, **kwargs):
            seen.extend(len(t) for t in ([text] if isinstance(text, str) else text))
            return real_call(self, text, *args, **kwargs)

    tokenizer.__class__ = Counting
    try:
        text = "word " * 400_000
        cut = cut_to_doc_max_length(tokenizer, [text], doc_max_length=40, max_length=48)[0]
    finally:
        tokenizer.__class__ = Counting.__mro__[1]
    assert len(tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 40
    assert sum(seen) < 20 * 48 * 5, sum(seen)  # a few small pieces, never the 2 MB line
