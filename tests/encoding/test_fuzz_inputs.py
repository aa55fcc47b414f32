"""Property tests (hypothesis, seeded and derandomized) of what reads user input: the .txt/.jsonl reader,
``normalize_inputs`` and the doc_max_length cut. Every outcome is a correct result or a one-line error that the
CLI prints (an ``LLM2VecError``, ``ValueError`` or ``TypeError`` without a newline), never another exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from helpers.samples import read_inputs
from llm2vec_hf.encoding.inputs import count_inputs
from llm2vec_hf.errors import LLM2VecError
from llm2vec_hf.modeling.input_formatting import cut_to_doc_max_length, normalize_inputs
from llm2vec_hf.modeling.input_formatting import count_tokens

FUZZ = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def assert_one_line(error: BaseException) -> None:
    event("outcome: one-line error")
    assert isinstance(error, (LLM2VecError, ValueError, TypeError)), repr(error)
    assert "\n" not in str(error) and str(error).strip(), repr(error)


# ---------------------------------------------------------------------------------------------------------------
# The .txt / .jsonl reader
# ---------------------------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)
records = st.fixed_dictionaries({}, optional={"text": json_values | st.text(min_size=1, max_size=30),
                                              "instruction": json_values, "extra": json_values})
valid_records = st.fixed_dictionaries(
    {"text": st.text(min_size=1, max_size=20).filter(str.strip)},
    optional={"instruction": st.text(max_size=10), "id": st.integers()},
)
jsonl_lines = st.one_of(
    valid_records.map(lambda r: json.dumps(r, ensure_ascii=bool(len(r) % 2)).encode()),
    valid_records.map(lambda r: json.dumps(r).encode()),
    records.map(lambda r: json.dumps(r, ensure_ascii=False).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
    st.just(b""),
    st.just(b"   "),
)
txt_lines = st.one_of(st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=40))


def _as_read(lines: list[bytes], bom: bool) -> list[bytes]:
    """The lines as the reader must see them: one BOM at the very start of the file is not text."""
    if not bom and lines and lines[0].startswith(b"\xef\xbb\xbf"):
        return [lines[0][3:]] + lines[1:]
    return lines


#: Line endings as Python's text mode reads them (universal newlines).
ENDINGS = st.sampled_from([b"\n", b"\r\n", b"\r"])


def _file(tmp_path, suffix, lines, bom, ending) -> str:
    path = tmp_path / f"input{suffix}"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + ending.join(lines) + ending)
    return str(path)


def _expected_jsonl(lines: list[bytes]) -> list | None:
    """What the reader must return for these lines, or None when it must refuse them (an independent model of
    the format: UTF-8 JSON objects with a non-blank string "text" and, if present, a string "instruction", no other
    key, Unicode text only (no lone surrogate), and no llm2vec separator where its reading is undefined)."""
    items = []
    for raw in lines:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if "\n" in line or "\r" in line:
            return "skip"
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
            return None
        instruction = record.get("instruction", "")
        if not isinstance(instruction, str) or set(record) - {"text", "instruction"}:
            return None
        if any(not _encodes(part) for part in (instruction, record["text"])):
            return None
        if MARKER in instruction or MARKER in record["text"] and not record["text"].split(MARKER, 1)[0].strip():
            return None
        items.append([instruction, record["text"]] if instruction else record["text"])
    return items or None


@FUZZ
@given(lines=st.lists(jsonl_lines, min_size=1, max_size=6), bom=st.booleans(), ending=ENDINGS)
def test_jsonl_reader(tmp_path_factory, lines, bom, ending):
    path = _file(tmp_path_factory.mktemp("j"), ".jsonl", lines, bom, ending)
    expected = _expected_jsonl(_as_read(lines, bom))
    if expected == "skip":  # a raw newline inside a generated line makes it two lines: not this model's case
        return
    try:
        items = read_inputs(path)
    except LLM2VecError as error:
        assert_one_line(error)
        assert expected is None, (lines, error)
        return
    event("outcome: read")
    assert items == expected


@FUZZ
@given(lines=st.lists(txt_lines, min_size=1, max_size=6), bom=st.booleans(), ending=ENDINGS)
def test_txt_reader(tmp_path_factory, lines, bom, ending):
    if any(b"\n" in line or b"\r" in line for line in lines):
        lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    path = _file(tmp_path_factory.mktemp("t"), ".txt", lines, bom, ending)
    lines = _as_read(lines, bom)
    try:
        items = read_inputs(path)
    except LLM2VecError as error:
        assert_one_line(error)
        decodable = all(_decodes(line) for line in lines)
        assert not decodable or any(not line.decode().strip() or line.decode().lstrip().startswith(MARKER)
                                    for line in lines), (lines, error)
        return
    event("outcome: read")
    assert items == [line.decode("utf-8") for line in lines]  # the BOM is never part of row 0
    assert count_inputs(path) == len(items)


MARKER = "!@#$%^&*()"


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _decodes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# ---------------------------------------------------------------------------------------------------------------
# normalize_inputs: the shapes llm2vec 0.2.3 reads, checked against an independent model of its rules
# ---------------------------------------------------------------------------------------------------------------
leaf = st.one_of(st.text(max_size=6), st.text(min_size=1, max_size=6).filter(str.strip), st.integers(-3, 3),
                 st.none(), st.floats(allow_nan=False), st.booleans(), st.binary(max_size=3))
text = st.text(min_size=1, max_size=6).filter(str.strip)
pair = st.tuples(st.text(max_size=6), text).map(list) | st.tuples(st.text(max_size=6), text)
medi = st.tuples(st.text(max_size=6), text, st.integers(0, 9))
valid_shapes = st.one_of(text, st.lists(text | pair, min_size=1, max_size=4),
                         st.lists(text, min_size=1, max_size=4).map(tuple), medi.map(list), st.lists(medi, max_size=3))
shapes = valid_shapes | st.recursive(leaf, lambda c: st.lists(c, max_size=4) | st.lists(c, max_size=4).map(tuple),
                                     max_leaves=8)


def _reference_pairs(inputs):
    """llm2vec 0.2.3's reading (a text alone is one text; a flat [str, str, int] is one pair), or None where it
    cannot give a vector per input (it would crash, or embed padding for an empty text)."""
    def is_medi(x):
        return len(x) == 3 and isinstance(x[0], str) and isinstance(x[1], str) and type(x[2]) is int

    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)) or not inputs:
        return None
    if is_medi(inputs):
        inputs = [inputs]
    pairs = []
    for item in inputs:
        if isinstance(item, str):
            pair = ("", item)
        elif isinstance(item, (list, tuple)) and (len(item) == 2 or is_medi(item)) and all(
                isinstance(x, str) for x in item[:2]):
            pair = (item[0], item[1])
        else:
            return None
        if not pair[1].strip():
            return None
        pairs.append(pair)
    return pairs


@FUZZ
@given(inputs=shapes)
def test_normalize_inputs(inputs):
    expected = _reference_pairs(inputs)
    try:
        pairs = normalize_inputs(inputs)
    except (TypeError, ValueError) as error:
        assert_one_line(error)
        assert expected is None, (inputs, error)
        return
    event("outcome: read")
    assert pairs == expected


# ---------------------------------------------------------------------------------------------------------------
# The doc_max_length cut gives the reference's text, without re-tokenizing long texts
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    from llm2vec_hf.training.tiny_model import train_tokenizer

    return train_tokenizer("llama")


def _reference_cut(tokenizer, text, doc_max_length, max_length):
    """The official loop (llm2vec 0.2.3 `_convert_to_str`), except that a text is never cut to nothing."""
    length = count_tokens(tokenizer, [text], max_length)[0]
    while length > doc_max_length:
        keep = int(len(text.split()) * doc_max_length / length)
        if keep < 1:
            break
        text = " ".join(text.split()[:keep])
        length = count_tokens(tokenizer, [text], max_length)[0]
    return text


words = st.sampled_from(["the", "fox", "naïve", "日本語", "😀", "a", "supercalifragilistic", "x\ny", "\t", "  ",
                         "don't", "-", "0.5"])


@FUZZ
@given(pieces=st.lists(words, min_size=1, max_size=400), repeat=st.sampled_from([1, 1, 3, 20]),
       lengths=st.sampled_from([(40, 48), (10, 16), (3, 8), (100, 64), (1, 2), (15, 16)]))
def test_cut_matches_the_reference(tokenizer, pieces, repeat, lengths):
    text = " ".join(pieces * repeat)
    if not text.strip():
        return
    doc_max_length, max_length = lengths
    assert cut_to_doc_max_length(tokenizer, [text], doc_max_length, max_length) == [
        _reference_cut(tokenizer, text, doc_max_length, max_length)]
