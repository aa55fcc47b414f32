"""``llm2vec-hf encode --engine ray`` on a local Ray cluster (2 CPUs, loopback): the vectors of the in-process
``encode``, in input order; a run killed mid-way resumes to the same result; a bad row fails with one line naming
it and loses no finished shard.

Ray is an optional extra. Without it this module is skipped, except where REQUIRE_RAY=1 (CI's Ray step), where a
missing Ray is an error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

if os.environ.get("REQUIRE_RAY") == "1":
    import pyarrow  # noqa: F401  (REQUIRE_RAY: a missing extra fails here instead of skipping)
    import ray
else:
    ray = pytest.importorskip("ray", reason="Ray Data is an optional extra: pip install -e '.[ray]'")
    pytest.importorskip("pyarrow", reason="Ray Data is an optional extra: pip install -e '.[ray]'")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from llm2vec_hf import LLM2Vec  # noqa: E402
from llm2vec_hf.encoding import ray_engine as encode_ray  # noqa: E402
from llm2vec_hf.cli import main  # noqa: E402
from helpers.samples import read_inputs  # noqa: E402
from llm2vec_hf.errors import LLM2VecError  # noqa: E402

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "a",
    "Ünïcödé naïve café — 日本語のテキスト",
    "LLM2Vec turns decoder-only language models into text encoders.",
    "bidirectional attention with masked next token prediction and contrastive learning " * 3,
]


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module (Ray takes seconds to start): 2 CPUs, loopback, no dashboard."""
    if ray.is_initialized():
        ray.shutdown()
    context = ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                       runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                                                 "TOKENIZERS_PARALLELISM": "false"}})
    yield context.address_info["gcs_address"]
    ray.shutdown()


def write_jsonl(path, n: int, bad_line: int | None = None) -> None:
    lines = []
    for i in range(n):
        record = {"text": f"{TEXTS[i % len(TEXTS)]} {i}"}
        if i % 3 == 1:
            record["instruction"] = "Retrieve passages:"
        lines.append(json.dumps(record, ensure_ascii=False))
        if i == 6:
            lines.append("")  # a blank .jsonl line is skipped: line numbers, not row numbers, identify rows
    if bad_line is not None:
        lines[bad_line - 1] = '{"text": "unterminated'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def in_process(model, items) -> np.ndarray:
    return LLM2Vec.from_pretrained(str(model)).encode(items, show_progress_bar=False, convert_to_numpy=True)


def shard_files(folder) -> dict[str, int]:
    """Shard name -> inode and mtime: a file rewritten (encoded again) changes them."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("shard-*.parquet")}


@pytest.mark.slow
def test_jsonl_vectors_equal_in_process_encode_in_input_order(cluster, exported, tmp_path):
    model = exported("llama")
    source = tmp_path / "in.jsonl"
    write_jsonl(source, 23)
    npy = tmp_path / "local.npy"
    assert main(["encode", str(model), "--input", str(source), "--output", str(npy), "--prompt-name", "query"]) == 0
    out = tmp_path / "out"
    assert main(["encode", str(model), "--input", str(source), "--output", str(out), "--engine", "ray",
                 "--address", cluster, "--num-workers", "2", "--chunk-size", "5", "--prompt-name", "query"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 23 and manifest["dim"] == 32 and len(manifest["shards"]) == 5
    assert [s["rows"] for s in manifest["shards"]] == [5, 4, 5, 5, 4]  # lines 1-5, 6-10 (one blank), …
    assert manifest["input"]["path"] == str(source.resolve()) and manifest["checkpoint"]["weights"]
    assert manifest["instruction"] and manifest["id_columns"] == ["line"]
    ids, vectors = encode_ray.read_vectors(str(out))
    lines = ids["line"].to_pylist()
    assert lines == sorted(lines) and len(set(lines)) == 23 and 8 not in lines  # line 8 is the blank one
    local = np.load(npy)
    assert vectors.dtype == np.float32 and vectors.shape == local.shape
    assert np.abs(vectors - local).max() <= 1e-5
    # Each shard is a plain Parquet file: ids and a fixed-size float32 list.
    table = pq.read_table(out / manifest["shards"][0]["file"])
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 32)


def test_parquet_carries_ids_and_instructions(cluster, exported, tmp_path):
    model = exported("qwen2")  # a byte-level BPE vocabulary; the jsonl test runs a SentencePiece-style Llama one
    folder = tmp_path / "corpus"
    folder.mkdir()
    texts = [f"{TEXTS[i % len(TEXTS)]} #{i}" for i in range(17)]
    instructions = [None if i % 4 else "Represent the document:" for i in range(17)]
    doc_ids = [f"doc-{i:03d}" for i in range(17)]
    # Two files (read in name order), the second with two row groups.
    pq.write_table(pa.table({"doc_id": doc_ids[:7], "shard_no": list(range(7)), "text": texts[:7],
                             "instruction": instructions[:7]}), folder / "a.parquet")
    pq.write_table(pa.table({"doc_id": doc_ids[7:], "shard_no": list(range(7, 17)), "text": texts[7:],
                             "instruction": instructions[7:]}), folder / "b.parquet", row_group_size=6)
    out = tmp_path / "out"
    manifest = encode_ray.encode_path(str(model), str(folder), str(out), rows_per_shard=4, num_workers=2)
    assert [s["rows"] for s in manifest["shards"]] == [4, 3, 4, 2, 4]  # cut at files and row groups
    ids, vectors = encode_ray.read_vectors(str(out))
    assert ids.column_names == ["row", "doc_id", "shard_no"]
    assert ids["row"].to_pylist() == list(range(17)) and ids["doc_id"].to_pylist() == doc_ids
    items = [[instruction, text] if instruction else text for instruction, text in zip(instructions, texts)]
    assert np.abs(vectors - in_process(model, items)).max() <= 1e-5


def test_jsonl_carries_its_other_keys_as_id_columns(cluster, exported, tmp_path):
    """A .jsonl's keys beyond text and instruction reach the output as id columns (as text), like Parquet's."""
    model = exported("llama")
    source = tmp_path / "rows.jsonl"
    rows = [{"doc_id": f"d{i}", "text": f"{TEXTS[i % len(TEXTS)]} #{i}", "rank": i} for i in range(7)]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    encode_ray.encode_path(str(model), str(source), str(tmp_path / "out"), rows_per_shard=3, num_workers=1)
    ids, vectors = encode_ray.read_vectors(str(tmp_path / "out"))
    assert ids.column_names == ["line", "doc_id", "rank"]
    assert ids["doc_id"].to_pylist() == [row["doc_id"] for row in rows]
    assert ids["rank"].to_pylist() == [str(row["rank"]) for row in rows]
    assert np.abs(vectors - in_process(model, [row["text"] for row in rows])).max() <= 1e-5


@pytest.mark.slow
def test_dataset_entry_point(cluster, exported, tmp_path):
    model = exported("llama")
    rows = [{"key": 100 + i, "body": f"{TEXTS[i % len(TEXTS)]} {i}"} for i in range(11)]

    def delay_block_with_key_100(batch):  # nested: pickled by value, the workers cannot import this module
        import time

        if 100 in batch["key"]:
            time.sleep(3)
        return batch

    # The first block comes late: the manifest must still list its shard first (input order, not finishing order).
    dataset = ray.data.from_items(rows, override_num_blocks=3).map_batches(delay_block_with_key_100)
    out = tmp_path / "out"
    manifest = encode_ray.encode_dataset(dataset, str(model), str(out), text_column="body", rows_per_shard=4,
                                         num_workers=2, prompt_name="query", input_key="rows-v1")
    assert manifest["rows"] == 11 and manifest["input"] == "rows-v1"
    ids, vectors = encode_ray.read_vectors(str(out))
    assert ids["key"].to_pylist() == [row["key"] for row in rows]
    instruction = manifest["instruction"]
    expected = in_process(model, [[instruction, row["body"]] for row in rows])
    assert np.abs(vectors - expected).max() <= 1e-5
    before = shard_files(out)
    again = encode_ray.encode_dataset(dataset, str(model), str(out), text_column="body", rows_per_shard=4,
                                      num_workers=2, prompt_name="query", input_key="rows-v1")
    assert again == manifest and shard_files(out) == before


#: ``llm2vec-hf encode`` whose driver SIGKILLs itself once 3 shards are complete (the progress bar counts them).
KILLED_AFTER_3_SHARDS = """
import os, signal, sys
import tqdm.auto
from llm2vec_hf import cli

class Killing(tqdm.auto.tqdm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shards = 0 if kwargs.get("desc") == "Encoding shards" else None

    def update(self, n=1):
        shown = super().update(n)  # a bar on no terminal is disabled and counts nothing itself
        if self.shards is not None:
            self.shards += n
            if self.shards >= 3:
                os.kill(os.getpid(), signal.SIGKILL)
        return shown

tqdm.auto.tqdm = Killing
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_vectors(cluster, exported, tmp_path):
    model = exported("llama")
    source = tmp_path / "in.jsonl"
    write_jsonl(source, 40)
    out = tmp_path / "out"
    args = [str(model), "--input", str(source), "--output", str(out), "--engine", "ray", "--address", cluster,
            "--num-workers", "2", "--chunk-size", "4"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # A driver in its own process, SIGKILLed once 3 of its 11 shards are complete.
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_3_SHARDS, "encode", *args], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    survivors = shard_files(out)
    assert len(survivors) >= 3 and not (out / "manifest.json").exists()
    assert main(["encode", *args]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 40 and len(manifest["shards"]) == 11
    after = shard_files(out)
    assert all(after[name] == stamp for name, stamp in survivors.items())  # kept, not encoded again
    assert not list(out.glob(".shard-*"))  # no temporary file left
    ids, vectors = encode_ray.read_vectors(str(out))
    assert ids["line"].to_pylist() == sorted(ids["line"].to_pylist())
    assert np.abs(vectors - in_process(model, read_inputs(str(source)))).max() <= 1e-5


@pytest.mark.slow
def test_bad_line_is_named_and_finished_shards_are_kept(cluster, exported, tmp_path, capsys):
    model = exported("llama")
    source = tmp_path / "in.jsonl"
    write_jsonl(source, 30, bad_line=29)
    out = tmp_path / "out"
    args = [str(model), "--input", str(source), "--output", str(out), "--engine", "ray", "--address", cluster,
            "--num-workers", "2", "--chunk-size", "4"]
    assert main(["encode", *args]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1] == f"llm2vec-hf encode: error: {source}:29: malformed JSON (Unterminated string starting at)"
    assert not (out / "manifest.json").exists()
    kept = shard_files(out)
    assert kept  # shards finished before the bad one are on disk…
    write_jsonl(source, 30)  # …and, the line fixed, the rerun reuses them
    assert main(["encode", *args]) == 0
    after = shard_files(out)
    assert all(after[name] == stamp for name, stamp in kept.items())
    _, vectors = encode_ray.read_vectors(str(out))
    assert np.abs(vectors - in_process(model, read_inputs(str(source)))).max() <= 1e-5


def test_bad_parquet_row_is_named_by_its_ids(cluster, exported, tmp_path):
    model = exported("llama")
    texts = [f"text {i}" for i in range(9)]
    texts[6] = "   "
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"doc_id": [f"d{i}" for i in range(9)], "text": texts}), source)
    with pytest.raises(LLM2VecError, match=r"in\.parquet: row with row=6, doc_id='d6': 'text' is empty"):
        encode_ray.encode_path(str(model), str(source), str(tmp_path / "out"), rows_per_shard=3, num_workers=1)
    with pytest.raises(LLM2VecError, match="no 'text' column"):
        bad = tmp_path / "notext.parquet"
        pq.write_table(pa.table({"body": ["x"]}), bad)
        encode_ray.encode_path(str(model), str(bad), str(tmp_path / "out2"))


def test_ray_options_need_the_ray_engine(exported, tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text("hello\n")
    code = main(["encode", str(exported("llama")), "--input", str(source), "--output", str(tmp_path / "o.npy"),
                 "--num-workers", "2"])
    assert code == 2 and "need --engine ray" in capsys.readouterr().err


@pytest.mark.parametrize("content", [
    b"one\ntwo\nthree\nfour\nfive\nsix\n",     # a multiple of the shard size
    b"one\ntw\ro\nthree\nfour\nfive\nsix\nseven",  # a lone \r inside a line; no newline at the end
    b'{"text": "a"}\r\n\r\n{"text": "b", "instruction": "q"}\r\n{"text": "c\\rd"}\n{"text": "e"}\n',  # CRLF, blank
])
@pytest.mark.parametrize("scan_bytes", [5, 1 << 20])
def test_planned_shards_read_back_the_whole_file(tmp_path, monkeypatch, content, scan_bytes):
    """The newline scan (in blocks of ``scan_bytes``, so that shard ends fall across blocks) cuts the file into
    byte ranges that, read by the workers, give exactly the lines and line numbers of encode's reader."""
    from llm2vec_hf.encoding.inputs import iter_inputs

    monkeypatch.setattr(encode_ray, "SCAN_BYTES", scan_bytes)
    path = tmp_path / ("in.jsonl" if content.startswith(b"{") else "in.txt")
    path.write_bytes(content)
    for lines_per_shard in (1, 2, 3, 4, 100):
        shards = encode_ray.plan_text_shards(str(path), lines_per_shard)
        assert shards[0]["start"] == 0 and shards[-1]["stop"] == len(content)
        assert all(a["stop"] == b["start"] for a, b in zip(shards, shards[1:]))
        items, lines = [], []
        for shard in shards:
            rows = encode_ray.read_text_shard({key: [value] for key, value in shard.items()})
            lines += rows["line"].tolist()
            items += [[i, t] if i else t for i, t in zip(rows["instruction"], rows["text"])]
        expected = list(iter_inputs(str(path)))
        assert items == [item for item, _, _ in expected]
        assert lines == [number - 1 for _, _, number in expected]
