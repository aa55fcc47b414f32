"""Export never loses data: overwrite swaps atomically, never writes through a link; stale siblings of killed
exports are recovered; modes; a full disk keeps the old copy."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import assert_one_line, run_cli
from llm2vec_hf.checkpoint.export import export_checkpoint
from llm2vec_hf.errors import LLM2VecError


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("target_kind", ["folder", "file"])
def test_overwrite_never_writes_through_a_symlink(tiny_bases, tmp_path, capsys, target_kind):
    target = tmp_path / "precious"
    if target_kind == "folder":
        target.mkdir()
        (target / "thesis.tex").write_text("years of work")
    else:
        target.write_text("years of work")
    link = tmp_path / "out"
    link.symlink_to(target)
    code, _, err = run_cli(["export", tiny_bases["llama"], "--output", link, "--overwrite"], capsys)
    assert_one_line(code, err, "symbolic link")
    assert link.is_symlink()
    assert (target / "thesis.tex" if target_kind == "folder" else target).read_text() == "years of work"


def test_overwrite_of_a_regular_file_is_refused(tiny_bases, tmp_path, capsys):
    target = tmp_path / "out"
    target.write_text("not a checkpoint")
    code, _, err = run_cli(["export", tiny_bases["llama"], "--output", target, "--overwrite"], capsys)
    assert_one_line(code, err, "is a file")
    assert target.read_text() == "not a checkpoint"


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of a checkpoint folder (it has subfolders, e.g. 1_Pooling), by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_writes_in_a_staging_sibling_never_in_place(tiny_bases, exported, tmp_path, monkeypatch):
    """Fails if export wrote into the output folder: while the weights are written the old copy is intact."""
    from transformers import PreTrainedModel

    out = tmp_path / "out"
    shutil.copytree(exported("llama"), out)
    before = _files(out)
    seen = []
    real_save = PreTrainedModel.save_pretrained

    @functools.wraps(real_save)  # keeps the signature, whose max_shard_size default export reads
    def spying_save(self, directory, *args, **kwargs):
        seen.append(Path(directory))
        assert _files(out) == before  # the old copy is untouched so far
        return real_save(self, directory, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", spying_save)
    export_checkpoint(str(tiny_bases["llama"]), str(out), overwrite=True, pooling_mode="last_token")
    assert len(seen) == 1 and seen[0].parent == tmp_path and seen[0].name.startswith(".out.partial-")
    assert json.loads((out / "llm2vec_config.json").read_text())["pooling_mode"] == "last_token"
    assert sorted(os.listdir(tmp_path)) == ["out"]


_KILL_AT_SECOND_RENAME = """
import os, signal, sys
from llm2vec_hf.checkpoint import export, staging
staging.exchange = lambda a, b: False  # as where renameat2(RENAME_EXCHANGE) is unavailable (not Linux, some file systems)
real = os.replace
calls = []
def replace(a, b):
    calls.append((a, b))
    if len(calls) == 2:  # killed between moving the old copy aside and moving the new one in
        os.kill(os.getpid(), signal.SIGKILL)
    return real(a, b)
os.replace = replace
export.export_checkpoint(sys.argv[1], sys.argv[2], overwrite=True, pooling_mode="last_token")
"""


@pytest.mark.slow
def test_kill_between_the_renames_of_an_overwrite_loses_nothing(tiny_bases, exported, tmp_path):
    """Without an atomic exchange (not Linux, or a file system without it) an overwrite takes two renames; a kill
    between them leaves the old copy in a hidden sibling, and the next export to that output puts it back."""
    out = tmp_path / "out"
    shutil.copytree(exported("llama"), out)
    before = _files(out)
    proc = subprocess.run([sys.executable, "-c", _KILL_AT_SECOND_RENAME, str(tiny_bases["llama"]), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not out.exists()
    assert any(p.name.startswith(".out.old-") for p in tmp_path.iterdir())
    with pytest.raises(LLM2VecError, match="--overwrite"):  # recovered first, then refused as non-empty
        export_checkpoint(str(tiny_bases["llama"]), str(out))
    assert _files(out) == before
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_overwrite_swaps_atomically_where_the_os_can(tiny_bases, exported, tmp_path, monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2(RENAME_EXCHANGE) is Linux's")
    out = tmp_path / "out"
    shutil.copytree(exported("llama"), out)
    renames = []
    monkeypatch.setattr(os, "replace", lambda a, b: renames.append((a, b)) or os.rename(a, b))
    export_checkpoint(str(tiny_bases["llama"]), str(out), overwrite=True)
    assert renames == []  # one atomic exchange: at no instant is there no checkpoint at out
    assert json.loads((out / "llm2vec_config.json").read_text())["pooling_mode"] == "mean"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_stale_partial_folders_of_dead_exports_are_removed(tiny_bases, tmp_path):
    from llm2vec_hf.checkpoint.staging import host_tag

    host, dead = host_tag(), _dead_pid()
    stale = tmp_path / f".out.partial-{host}-{dead}-abc123"
    alive = tmp_path / f".out.partial-{host}-1-def456"  # pid 1 runs: an export in progress, left alone
    other_host = tmp_path / f".out.partial-00000000-{dead}-x"  # cannot tell on another host: left alone
    not_ours = tmp_path / ".out.partial-notes"
    for folder in (stale, alive, other_host, not_ours):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
    export_checkpoint(str(tiny_bases["llama"]), str(tmp_path / "out"))
    assert not stale.exists()
    assert alive.exists() and other_host.exists() and not_ours.exists()


def test_exported_folder_has_normal_permissions(tiny_bases, tmp_path):
    old = os.umask(0o022)
    try:
        out = Path(export_checkpoint(str(tiny_bases["llama"]), str(tmp_path / "out")))
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()} == {0o644}
    assert {p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_dir()} == {0o755}  # 1_Pooling
    os.umask(0o077)
    try:
        private = Path(export_checkpoint(str(tiny_bases["llama"]), str(tmp_path / "private")))
    finally:
        os.umask(old)
    assert private.stat().st_mode & 0o777 == 0o700  # the umask is respected, as save_pretrained does


@pytest.mark.parametrize("writer", ["safetensors", "tokenizers", "plain"])
def test_disk_full_during_export_is_one_line_and_keeps_the_old_copy(tiny_bases, exported, tmp_path, capsys,
                                                                    monkeypatch, writer):
    import errno

    out = tmp_path / "out"
    shutil.copytree(exported("llama"), out)
    before = _files(out)
    # Each writer raises its own exception type with the OS error in its text, as on a real full disk (checked
    # by hand on a 200 KB tmpfs: docs/reliability.md); mounting one needs root, so the writers are made to fail.
    if writer == "safetensors":
        # export streams the weights into the safetensors file itself (merged_weights.write_safetensors): the
        # file fills up part way, as on a real disk
        import io

        from llm2vec_hf.checkpoint import merged_weights

        class FillsUp(io.FileIO):
            def write(self, data):
                if self.tell() + len(memoryview(data).cast("B")) > 4096:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return super().write(data)

        monkeypatch.setattr(merged_weights, "open", lambda path, mode: FillsUp(path, "wb"), raising=False)
    elif writer == "tokenizers":
        from transformers.tokenization_utils_tokenizers import TokenizersBackend

        real = TokenizersBackend.backend_tokenizer

        class FullDisk:
            def __init__(self, tokenizer):
                self.tokenizer = tokenizer

            def save(self, *args, **kwargs):
                raise Exception("No space left on device (os error 28)")  # the tokenizers library's type and text

            def __getattr__(self, name):
                return getattr(self.tokenizer, name)

        monkeypatch.setattr(TokenizersBackend, "backend_tokenizer", property(lambda self: FullDisk(real.fget(self))))
    else:
        from llm2vec_hf.checkpoint import export

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(export, "write_sentence_transformers_files", full)
    code, _, err = run_cli(["export", tiny_bases["llama"], "--output", out, "--overwrite"], capsys)
    assert_one_line(code, err, "disk is full", "unchanged")
    assert _files(out) == before
    assert sorted(os.listdir(tmp_path)) == ["out"]
