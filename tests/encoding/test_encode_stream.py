"""``llm2vec-hf encode`` streams in chunks, resumes a killed run to the same bytes, and scales out over processes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from helpers.samples import read_inputs
from llm2vec_hf.encoding import file_encoder as encode_module
from llm2vec_hf.encoding.encoders import worker_devices
from llm2vec_hf.encoding.inputs import iter_inputs
from llm2vec_hf.errors import LLM2VecError
from llm2vec_hf.cli import main

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "a",
    "Ünïcödé naïve café — 日本語のテキスト",
    "LLM2Vec turns decoder-only language models into text encoders.",
    "short",
    "bidirectional attention with masked next token prediction and contrastive learning " * 3,
]


def write_jsonl(path, n: int) -> None:
    lines = []
    for i in range(n):
        record = {"text": f"{TEXTS[i % len(TEXTS)]} {i}"}
        if i % 3 == 1:
            record["instruction"] = "Retrieve passages:"
        lines.append(json.dumps(record, ensure_ascii=False))
        if i == 10:
            lines.append("")  # blank lines are skipped in .jsonl; offsets and line numbers must still hold
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def count_encoded(monkeypatch) -> list[int]:
    """Records the size of every chunk the in-process encoder gets."""
    sizes: list[int] = []
    original = encode_module.InProcessEncoder.__call__

    def recording(self, items):
        sizes.append(len(items))
        return original(self, items)

    monkeypatch.setattr(encode_module.InProcessEncoder, "__call__", recording)
    return sizes


#: ``encode`` in a fresh process that SIGKILLs itself around the progress record of chunk N (argv[1]): "N" once
#: it is written (chunk N committed), "N:data" just before (chunk N's rows on disk, its record not).
KILLED_RUN = """
import os, signal, sys
from llm2vec_hf import cli
from llm2vec_hf.encoding import file_encoder as encode_file

chunk, _, phase = sys.argv[1].partition(":")
write_json, records = encode_file.write_json, []

def die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

def write_progress(path, data, **options):
    if phase == "data" and len(records) + 1 == int(chunk):
        die()
    write_json(path, data, **options)
    records.append(path)
    if phase != "data" and len(records) == int(chunk):
        die()

encode_file.write_json = write_progress
sys.exit(cli.main(sys.argv[2:]))
"""


def run_cli(args: list[str], crash: str | None = None) -> subprocess.CompletedProcess:
    command = ["-c", KILLED_RUN, crash] if crash else ["-m", "llm2vec_hf.cli"]
    return subprocess.run([sys.executable, *command, *args], capture_output=True, text=True, timeout=300)


def test_streams_in_chunks_and_writes_a_plain_npy(exported, tmp_path, monkeypatch):
    model = exported("llama")
    source = tmp_path / "in.jsonl"
    write_jsonl(source, 21)
    sizes = count_encoded(monkeypatch)
    out = tmp_path / "out.npy"
    assert main(["encode", str(model), "--input", str(source), "--output", str(out), "--chunk-size", "8"]) == 0
    assert sizes == [8, 8, 5]
    vectors = np.load(out)
    assert vectors.shape == (21, 32) and vectors.dtype == np.float32
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    assert out.read_bytes() == buffer.getvalue()  # the header is exactly numpy's
    assert not (tmp_path / "out.npy.partial.npy").exists() and not (tmp_path / "out.npy.progress.json").exists()
    from llm2vec_hf import LLM2Vec

    items = [item for item, _, _ in iter_inputs(str(source))]
    expected = LLM2Vec.from_pretrained(str(model)).encode(items, show_progress_bar=False).numpy()
    assert np.abs(vectors - expected).max() <= 1e-5


@pytest.mark.parametrize("crash", ["2", "2:data"])
@pytest.mark.slow
def test_killed_run_resumes_to_identical_bytes(exported, tmp_path, monkeypatch, capsys, crash):
    """Killed after chunk 2 is committed ("2"), or after its rows are written but before its progress record
    ("2:data"): the rerun encodes only what is left and writes the same bytes as an uninterrupted run."""
    model = exported("llama")
    source = tmp_path / "in.jsonl"
    write_jsonl(source, 40)
    reference = tmp_path / "reference.npy"
    args = ["encode", str(model), "--input", str(source), "--chunk-size", "8", "--batch-size", "3"]
    assert main(args + ["--output", str(reference)]) == 0

    out = tmp_path / "out.npy"
    killed = run_cli(args + ["--output", str(out)], crash=crash)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not out.exists()  # nothing that looks complete
    progress = json.loads((tmp_path / "out.npy.progress.json").read_text())
    committed = 16 if crash == "2" else 8
    assert progress["done"] == committed and progress["rows"] == 40
    assert (tmp_path / "out.npy.partial.npy").is_file()

    # Another instruction is another job: refused in one line, the partial output is kept.
    capsys.readouterr()
    assert main(args + ["--output", str(out), "--prompt-name", "query"]) == 2
    err = capsys.readouterr().err.strip()
    assert "was started from a different instruction" in err and len(err.splitlines()) == 1
    assert (tmp_path / "out.npy.partial.npy").is_file()

    sizes = count_encoded(monkeypatch)
    assert main(args + ["--output", str(out)]) == 0
    assert sum(sizes) == 40 - committed  # resumed, not redone
    assert out.read_bytes() == reference.read_bytes()
    assert not (tmp_path / "out.npy.partial.npy").exists() and not (tmp_path / "out.npy.progress.json").exists()


def test_changed_input_is_refused_and_restart_discards(exported, tmp_path, capsys):
    model = exported("llama")
    source = tmp_path / "in.txt"
    source.write_text("\n".join(f"text number {i}" for i in range(12)) + "\n")
    out = tmp_path / "out.npy"
    args = ["encode", str(model), "--input", str(source), "--output", str(out), "--chunk-size", "4"]
    original = encode_module.InProcessEncoder.__call__
    calls = []

    def interrupted_after_one_chunk(self, items):
        calls.append(len(items))
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second chunk
        return original(self, items)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encode_module.InProcessEncoder, "__call__", interrupted_after_one_chunk)
        assert main(args) == 130
    assert json.loads((tmp_path / "out.npy.progress.json").read_text())["done"] == 4 and not out.exists()
    with open(source, "a") as handle:
        handle.write("one more line\n")
    capsys.readouterr()
    assert main(args) == 2
    assert "was started from a different input" in capsys.readouterr().err
    assert main(args + ["--restart"]) == 0
    assert np.load(out).shape == (13, 32)


def test_bad_line_far_into_the_file_fails_before_any_output(exported, tmp_path, capsys):
    model = exported("llama")
    source = tmp_path / "in.jsonl"
    write_jsonl(source, 30)
    with open(source, "a") as handle:
        handle.write('{"text": 3}\n')
    capsys.readouterr()
    out = tmp_path / "out.npy"
    assert main(["encode", str(model), "--input", str(source), "--output", str(out), "--chunk-size", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert ":32: each record needs a string field 'text'" in err and len(err.splitlines()) == 1
    assert not any(tmp_path.glob("out.npy*"))


def test_worker_devices():
    assert worker_devices(None, None) is None
    assert worker_devices("cpu", 1) is None
    assert worker_devices(None, 3) == ["cpu"] * 3
    assert worker_devices("cuda", 2) == ["cuda:0", "cuda:1"]
    assert worker_devices("cuda:0,cuda:1", None) == ["cuda:0", "cuda:1"]
    with pytest.raises(LLM2VecError):
        worker_devices("cuda:0,cuda:1", 3)


@pytest.mark.slow
def test_two_processes_give_the_vectors_of_one(exported, tmp_path):
    """sentence-transformers' multi-process pool (2 CPU workers, reused over 2 chunks) against one process."""
    model = exported("llama")
    source = tmp_path / "in.jsonl"
    write_jsonl(source, 30)
    one, two = tmp_path / "one.npy", tmp_path / "two.npy"
    base = ["encode", str(model), "--input", str(source), "--chunk-size", "16", "--batch-size", "4"]
    assert main(base + ["--output", str(one)]) == 0
    threads_before = os.environ.get("OMP_NUM_THREADS")
    assert main(base + ["--output", str(two), "--processes", "2"]) == 0
    assert os.environ.get("OMP_NUM_THREADS") == threads_before  # the workers' setting does not leak
    a, b = np.load(one), np.load(two)
    assert a.shape == b.shape == (30, 32)
    delta = float(np.abs(a - b).max())
    print(f"2 processes vs 1: max |delta| = {delta:.3g}")
    assert delta <= 1e-5


# ----------------------------------------------------------------------------------------------------------------
# Encoding traps: BOM, non-string instructions, an output that cannot be written, two runs on one output
# ----------------------------------------------------------------------------------------------------------------
def _encode(model, source, out, capsys, *extra) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["encode", str(model), "--input", str(source), "--output", str(out), *extra])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_a_utf8_bom_is_stripped_in_txt_and_jsonl_alike(exported, tmp_path, capsys, suffix):
    model = exported("llama")
    texts = ["first line", "second line"]
    plain = tmp_path / "plain.txt"
    plain.write_text("\n".join(texts) + "\n", encoding="utf-8")
    source = tmp_path / f"bom{suffix}"
    body = "\n".join(texts if suffix == ".txt" else [json.dumps({"text": t}) for t in texts]) + "\n"
    source.write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert _encode(model, plain, tmp_path / "plain.npy", capsys)[0] == 0
    code, err = _encode(model, source, tmp_path / "bom.npy", capsys)
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "bom.npy"), np.load(tmp_path / "plain.npy"))
    assert read_inputs(str(source)) == texts


@pytest.mark.parametrize("value", ["0", "false", "null", "[]", "[\"a\"]", "{}", "1.5"])
def test_an_instruction_that_is_not_a_string_is_refused(exported, tmp_path, capsys, value):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "fine"}\n{"text": "x", "instruction": ' + value + "}\n")
    code, err = _encode(exported("llama"), source, tmp_path / "out.npy", capsys)
    assert code == 2 and len(err.splitlines()) == 1 and ":2: 'instruction' must be a string" in err, err
    assert not any(tmp_path.glob("out.npy*"))


def test_an_empty_string_instruction_means_none(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "x", "instruction": ""}\n')
    assert read_inputs(str(source)) == ["x"]


@pytest.mark.parametrize("kind", ["folder", "link", "no-parent"])
def test_an_output_that_cannot_be_written_fails_before_encoding(exported, tmp_path, capsys, monkeypatch, kind):
    source = tmp_path / "in.txt"
    source.write_text("a\nb\n")
    out = tmp_path / "out.npy"
    if kind == "folder":
        out.mkdir()
        needle = "is a folder"
    elif kind == "link":
        (tmp_path / "elsewhere.npy").write_bytes(b"keep")
        out.symlink_to(tmp_path / "elsewhere.npy")
        needle = "symbolic link"
    else:
        out = tmp_path / "missing" / "out.npy"
        needle = "does not exist"

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(encode_module, "InProcessEncoder", never)
    monkeypatch.setattr(encode_module, "count_inputs", never)
    code, err = _encode(exported("llama"), source, out, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    if kind == "link":
        assert (tmp_path / "elsewhere.npy").read_bytes() == b"keep"


def test_a_second_run_on_the_same_output_fails_with_one_line_and_leaves_nothing(exported, tmp_path, capsys):
    import fcntl

    source = tmp_path / "in.txt"
    source.write_text("a\nb\n")
    out = tmp_path / "out.npy"
    with open(str(out) + ".lock", "a+") as held:  # what a running encode holds
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, err = _encode(exported("llama"), source, out, capsys)
        assert code == 2 and len(err.splitlines()) == 1 and "another encode is writing" in err, err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.npy.lock"]
    code, err = _encode(exported("llama"), source, out, capsys)  # once it is released
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.npy"]


@pytest.mark.slow
def test_two_concurrent_processes_on_one_output(exported, tmp_path):
    """Two real runs started together: one writes the output, the other stops with one line; the output is
    complete and no progress or partial file is left."""
    source = tmp_path / "in.txt"
    source.write_text("".join(f"text number {i}\n" for i in range(200)))
    out = tmp_path / "out.npy"
    args = [sys.executable, "-m", "llm2vec_hf.cli", "encode", str(exported("llama")), "--input", str(source),
            "--output", str(out), "--chunk-size", "8"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    for code, err in results:
        if code == 2:  # stopped by the lock, or (started after the first finished) by the finished output
            last = err.strip().splitlines()[-1]
            assert "another encode is writing" in last or "pass --overwrite to replace it" in last, last
    assert np.load(out).shape[0] == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.npy"]
