"""``llm2vec-hf push``: checks before upload, the upload itself end to end against a Hub-compatible server on
loopback (tests/helpers/fake_hub.py, driven by huggingface_hub's real client code), loading the pushed repo back by repo
id through all three loading paths, and the error paths (one line, non-zero exit, never the token)."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import struct
from pathlib import Path

import pytest
from huggingface_hub import constants

from llm2vec_hf import cli
from llm2vec_hf.errors import CheckpointError
from llm2vec_hf.checkpoint.validation import check_checkpoint
from llm2vec_hf.checkpoint.hub import push
from llm2vec_hf.checkpoint.model_card import MODEL_ID_PLACEHOLDER, with_model_id

from helpers.processes import run_python
from helpers.samples import SAMPLE_INPUTS
from helpers.fake_hub import TOKEN, FakeHub

OTHER_SECRET = "hf_" + "Z" * 34


@pytest.fixture
def checkpoint(exported, tmp_path) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(exported("llama", "mean"), folder)
    return folder


def _calls(hub: FakeHub) -> list[dict]:
    """Requests of the push itself: huggingface_hub also fetches its agent-harness registry (best-effort telemetry)."""
    return [r for r in hub.requests if r["path"] != "/api/agent-harnesses"]


def _run_cli(argv, capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("llm2vec-hf push: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert TOKEN not in out + err


@pytest.mark.slow
def test_push_end_to_end_then_load_by_repo_id(checkpoint, hub_env, capsys, caplog, tmp_path):
    caplog.set_level("DEBUG")
    with FakeHub(TOKEN) as hub:
        constants.ENDPOINT = hub.endpoint  # restored by monkeypatch (hub_env)
        code, out, err = _run_cli(["push", str(checkpoint), "--repo-id", "org/tiny-llm2vec", "--private",
                                   "--revision", "v1", "--commit-message", "first upload"], capsys)
        assert code == 0, err
        assert f"to {hub.endpoint}/org/tiny-llm2vec/commit/" in out
        # the calls huggingface_hub made, in order
        calls = [(r["method"], r["path"]) for r in _calls(hub)]
        assert calls == [
            ("POST", "/api/repos/create"),
            ("POST", "/api/models/org/tiny-llm2vec/branch/v1"),
            ("POST", "/api/validate-yaml"),
            ("POST", "/api/models/org/tiny-llm2vec/preupload/v1"),
            ("POST", "/org/tiny-llm2vec.git/info/lfs/objects/batch"),
            ("PUT", f"/lfs-upload/{hashlib.sha256((checkpoint / 'model.safetensors').read_bytes()).hexdigest()}"),
            ("POST", "/lfs-verify"),
            ("POST", "/api/models/org/tiny-llm2vec/commit/v1"),
        ]
        # the weights took the LFS route real weights take; the small text files went inline
        assert hub.upload_modes["model.safetensors"] == "lfs" and hub.upload_modes["config.json"] == "regular"
        commit = next(r for r in hub.requests if r["path"].endswith("/commit/v1"))
        assert b'"lfsFile"' in commit["body"] and b"model.safetensors" in commit["body"]
        repo = hub.repos["org/tiny-llm2vec"]
        assert repo.private and repo.commits[-1]["summary"] == "first upload"
        assert repo.branches["main"] == {}  # pushed to the branch only
        uploaded = repo.branches["v1"]
        local = {p.relative_to(checkpoint).as_posix(): p.read_bytes() for p in checkpoint.rglob("*") if p.is_file()}
        assert set(uploaded) == set(local)
        for name, content in local.items():
            if name != "README.md":
                assert uploaded[name] == content, name
        readme = uploaded["README.md"].decode()
        assert readme == with_model_id(local["README.md"].decode(), "org/tiny-llm2vec")
        assert MODEL_ID_PLACEHOLDER not in readme and 'SentenceTransformer("org/tiny-llm2vec"' in readme
        assert MODEL_ID_PLACEHOLDER in local["README.md"].decode()  # the folder itself is untouched
        assert hub.validated[0]["library_name"] == "sentence-transformers"
        # the token travels in the Authorization header only, and appears in no output or log
        # (the LFS upload goes to a storage URL the batch answer names, which gets no token, as on the Hub)
        assert all(r["auth"] == f"Bearer {TOKEN}" for r in _calls(hub) if r["method"] != "PUT")
        assert [r["auth"] for r in _calls(hub) if r["method"] == "PUT"] == [""]
        assert not any(TOKEN in r["path"] + r["query"] or TOKEN.encode() in r["body"] for r in hub.requests)
        assert TOKEN not in out + err + caplog.text

        # a second push to the existing repo (create_repo answers 409 → exist_ok) lands on main
        assert push(checkpoint, "org/tiny-llm2vec", out=lambda line: None) is not None
        assert set(repo.branches["main"]) == set(local) and len(repo.commits) == 2
        # and one to the branch that now exists (create_branch answers 409 → exist_ok)
        assert push(checkpoint, "org/tiny-llm2vec", revision="v1", commit_message="again", out=lambda line: None)
        assert [c["branch"] for c in repo.commits] == ["v1", "main", "v1"] and repo.commits[-1]["summary"] == "again"

        # download side: a fresh process loads the pushed repo by id through all three paths
        code = f"""
import json, numpy as np, torch
from transformers import AutoModel, AutoTokenizer
from sentence_transformers import SentenceTransformer
from llm2vec_hf import LLM2Vec
inputs = {SAMPLE_INPUTS!r}
texts = [x for x in inputs if isinstance(x, str)]
repo, rev = "org/tiny-llm2vec", "v1"
l2v = LLM2Vec.from_pretrained(repo)  # main: the second push put the same files there
a = l2v.encode(inputs, show_progress_bar=False, convert_to_numpy=True)
model = AutoModel.from_pretrained(repo, revision=rev, trust_remote_code=True)
tok = AutoTokenizer.from_pretrained(repo, revision=rev)
b = model.encode(inputs, tok).detach().numpy()
st = SentenceTransformer(repo, revision=rev, trust_remote_code=True)
c = st.encode(texts)
print("RESULT" + json.dumps({{"l2v": a.tolist(), "auto": b.tolist(), "st": c.tolist()}}))
"""
        result = run_python(code, env={"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf_home"),
                                       "HF_HUB_DISABLE_XET": "1",
                                       "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
                                       "HF_HUB_DISABLE_TELEMETRY": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert TOKEN not in result.stdout + result.stderr
    vectors = json.loads(result.stdout.split("RESULT", 1)[1])

    import numpy as np

    from llm2vec_hf import LLM2Vec

    reference = LLM2Vec.from_pretrained(str(checkpoint)).encode(SAMPLE_INPUTS, show_progress_bar=False,
                                                                 convert_to_numpy=True)
    text_rows = [i for i, x in enumerate(SAMPLE_INPUTS) if isinstance(x, str)]
    assert np.abs(np.array(vectors["l2v"]) - reference).max() < 1e-4
    assert np.abs(np.array(vectors["auto"]) - reference).max() < 1e-4
    assert np.abs(np.array(vectors["st"]) - reference[text_rows]).max() < 1e-4


def test_token_from_login_cache(checkpoint, hub_env, monkeypatch, tmp_path, capsys):
    token_file = tmp_path / "login" / "token"
    token_file.parent.mkdir()
    token_file.write_text(TOKEN + "\n")
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_file))
    with FakeHub(TOKEN) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        code, out, err = _run_cli(["push", str(checkpoint), "--repo-id", "org/cached"], capsys)
        assert code == 0, err
        assert hub.repos["org/cached"].branches["main"] and not hub.repos["org/cached"].private
        # (the LFS upload goes to a storage URL the batch answer names, which gets no token, as on the Hub)
        assert all(r["auth"] == f"Bearer {TOKEN}" for r in _calls(hub) if r["method"] != "PUT")
        assert [r["auth"] for r in _calls(hub) if r["method"] == "PUT"] == [""]
    assert TOKEN not in out + err


@pytest.mark.parametrize("repo_id", ["not a repo", "a/b/c", "org/bad--name", "org/name.git", "noslash"])
def test_bad_repo_id(checkpoint, hub_env, capsys, repo_id):
    code, out, err = _run_cli(["push", str(checkpoint), "--repo-id", repo_id], capsys)
    _assert_one_line_error(code, out, err, "Invalid repo id")


def test_missing_token(checkpoint, hub_env, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN")
    with FakeHub(TOKEN) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        code, out, err = _run_cli(["push", str(checkpoint), "--repo-id", "org/x"], capsys)
        assert _calls(hub) == []
    _assert_one_line_error(code, out, err, "no Hugging Face token", "HF_TOKEN")


def test_unreachable_hub(checkpoint, hub_env, capsys):
    code, out, err = _run_cli(["push", str(checkpoint), "--repo-id", "org/x"], capsys)
    _assert_one_line_error(code, out, err, "cannot reach the Hub at http://127.0.0.1:")


@pytest.mark.parametrize("mode, needle", [("401", "rejected the token (401"), ("403", "may not write to org/x (403"),
                                          ("500", "answered 500")])
def test_refusing_hub(checkpoint, hub_env, monkeypatch, capsys, mode, needle):
    with FakeHub(TOKEN, mode=mode) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        code, out, err = _run_cli(["push", str(checkpoint), "--repo-id", "org/x"], capsys)
        assert _calls(hub) and not hub.repos
    _assert_one_line_error(code, out, err, needle)


def test_offline_mode_is_named(checkpoint, hub_env, monkeypatch, capsys):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, out, err = _run_cli(["push", str(checkpoint), "--repo-id", "org/x"], capsys)
    _assert_one_line_error(code, out, err, "HF_HUB_OFFLINE is set")


def test_dry_run_prints_files_sizes_and_metadata_without_network(checkpoint, hub_env, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN")  # a dry run needs no token

    attempts = []

    def no_network(sock, address, *args):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    code, out, err = _run_cli(["push", str(checkpoint), "--repo-id", "org/tiny", "--dry-run", "--revision", "dev"],
                              capsys)
    assert code == 0, err
    assert attempts == []  # (huggingface_hub swallows its own telemetry errors, so count attempts)
    assert "/org/tiny (revision dev)" in out
    sizes = {p.relative_to(checkpoint).as_posix(): p.stat().st_size for p in checkpoint.rglob("*") if p.is_file()}
    assert f"Would upload {len(sizes)} files" in out
    for name in sizes:
        assert any(line.rstrip().endswith(f"  {name}") for line in out.splitlines()), name
    assert f"{sizes['llm2vec_config.json']} B  llm2vec_config.json" in out
    assert "library_name: sentence-transformers" in out and "pipeline_tag: sentence-similarity" in out
    assert "- llm2vec" in out and "parameters in" in out and "prompts: document, query" in out


class RecordingApi:
    endpoint = "http://127.0.0.1:1"

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


def _refused(folder: Path, *needles: str, token: str | None = TOKEN) -> str:
    api = RecordingApi()
    with pytest.raises(CheckpointError) as info:
        push(folder, "org/x", api=api, out=lambda line: None)
    assert api.calls == []  # nothing was sent
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "name, content, why",
    [
        ("training_args.bin", b"\x80\x04pickle", "pickle file"),
        ("pytorch_model.pt", b"\x80\x04pickle", "pickle file"),
        ("extra/optimizer.pkl", b"\x80\x04", "pickle file"),
        (".env", b"HF_TOKEN=abc\n", "environment file"),
        ("prod.env", b"X=1\n", "environment file"),
        ("credentials.json", b"{}", "credential file"),
        ("id_rsa", b"key", "credential file"),
        ("server.pem", b"cert", "credential file"),
        ("notes.txt", ("remember " + OTHER_SECRET).encode(), "looks like a Hugging Face token"),
        ("deploy.md", b"-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n", "looks like a private key"),
        ("aws.txt", b"key AKIAABCDEFGHIJKLMNOP", "looks like an AWS access key"),
    ],
)
def test_refuses_pickles_env_files_and_credentials(checkpoint, hub_env, name, content, why):
    path = checkpoint / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    message = _refused(checkpoint, name, why)
    assert OTHER_SECRET not in message and "AKIAABCDEFGHIJKLMNOP" not in message


def test_refuses_a_file_holding_the_push_token(checkpoint, hub_env):
    config = json.loads((checkpoint / "config.json").read_text())
    config["note"] = f"pushed with {TOKEN}"
    (checkpoint / "config.json").write_text(json.dumps(config))
    message = _refused(checkpoint, "config.json (contains the token used to push)")
    assert TOKEN not in message


def _drop_tensor(path: Path, name: str) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    del tensors[name]
    save_file(tensors, path, metadata={"format": "pt"})


def _edit_tensors(path: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


@pytest.mark.parametrize(
    "breakage, needle",
    [
        (lambda f: (f / "model.safetensors").unlink(), "no model.safetensors"),
        (lambda f: _drop_tensor(f / "model.safetensors", "layers.1.mlp.up_proj.weight"),
         "1 of the 20 tensors the config asks for are not in its weights (e.g. layers.1.mlp.up_proj.weight)"),
        (lambda f: _edit_tensors(f / "model.safetensors", lambda t: t.update(
            {"layers.0.mlp.up_proj.weight": t["layers.0.mlp.up_proj.weight"].T.contiguous()})),
         "tensor layers.0.mlp.up_proj.weight has shape [32, 64], the config asks for [64, 32]"),
        (lambda f: _edit_tensors(f / "model.safetensors", lambda t: t.update(
            {"layers.0.mlp.extra.weight": t["norm.weight"].clone()})),
         "1 tensors of its weights fit no parameter (e.g. layers.0.mlp.extra.weight)"),
        (lambda f: (f / "model.safetensors").write_bytes(struct.pack("<Q", 10) + b"not json!!"), "not a safetensors"),
        (lambda f: (f / "config.json").unlink(), "no config.json"),
        (lambda f: (f / "modules.json").unlink(), "modules.json is missing"),
        (lambda f: (f / "modules.json").write_text("[]"), "lists no sentence-transformers modules"),
        (lambda f: (f / "sentence_transformers_llm2vec.py").unlink(), "sentence_transformers_llm2vec.py is missing"),
        (lambda f: (f / "modeling_llm2vec.py").unlink(), "modeling_llm2vec.py, which is missing"),
        (lambda f: (f / "packing.py").unlink(), "modeling_llm2vec.py imports packing.py, which is missing"),
        (lambda f: (f / "config_sentence_transformers.json").write_text("{broken"), "does not parse as JSON"),
        (lambda f: (f / "tokenizer.json").unlink(), "no tokenizer files"),
        (lambda f: (f / "README.md").unlink(), "README.md (model card) is missing"),
        (lambda f: (f / "README.md").write_text("---\ntags: [unclosed\n---\nbody\n"), "metadata does not parse"),
    ],
)
def test_refuses_incomplete_checkpoints(checkpoint, hub_env, breakage, needle):
    breakage(checkpoint)
    _refused(checkpoint, needle)


def test_check_counts_weights_of_a_sharded_checkpoint(checkpoint):
    from safetensors.torch import load_file, save_file

    tensors = load_file(checkpoint / "model.safetensors")
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, checkpoint / shard, metadata={"format": "pt"})
    (checkpoint / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    summary = check_checkpoint(checkpoint)
    assert summary.tensors == len(names)
    assert summary.parameters == sum(t.numel() for t in tensors.values())
    assert summary.weight_files == sorted(shards)
    (checkpoint / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="shard model-00002-of-00002.safetensors is missing"):
        check_checkpoint(checkpoint)


def test_skips_git_and_cache_folders(checkpoint):
    (checkpoint / ".git").mkdir()
    (checkpoint / ".git" / "config").write_text("[core]\n")
    (checkpoint / ".cache" / "huggingface").mkdir(parents=True)
    (checkpoint / ".cache" / "huggingface" / "x.lock").write_text("")
    names = [name for name, _ in check_checkpoint(checkpoint).files]
    assert not any(n.startswith((".git/", ".cache/")) for n in names) and "model.safetensors" in names


# ----------------------------------------------------------------------------------------------------------------
# Push never reads outside the folder, and its checks have no gaps
# ----------------------------------------------------------------------------------------------------------------
def _push_refused_on_the_wire(checkpoint, capsys, *needles) -> FakeHub:
    """Pushes through the CLI to the loopback hub: one-line refusal, and no byte of the folder sent."""
    with FakeHub(TOKEN) as hub:
        constants.ENDPOINT = hub.endpoint  # restored by monkeypatch (hub_env)
        code, out, err = _run_cli(["push", str(checkpoint), "--repo-id", "org/x"], capsys)
    _assert_one_line_error(code, out, err, *needles)
    assert not any(r["method"] in ("POST", "PUT") and "/api/repos/create" != r["path"] for r in _calls(hub))
    assert hub.repos == {}
    return hub


def test_symlink_out_of_the_folder_is_refused_on_the_real_upload_path(checkpoint, hub_env, capsys, tmp_path):
    secret = tmp_path / "outside" / "shadow"
    secret.parent.mkdir()
    secret.write_text("root:$6$saltsalt$hash:19000:0:99999:7:::\n")
    (checkpoint / "notes.txt").symlink_to(secret)
    _push_refused_on_the_wire(checkpoint, capsys, "notes.txt", "symbolic link", "outside the folder")


@pytest.mark.parametrize("kind", ["dir-out", "dir-in", "broken", "absolute-system-file"])
def test_every_kind_of_escaping_link_is_refused(checkpoint, hub_env, tmp_path, kind):
    link = checkpoint / "extra"
    if kind == "dir-out":
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "data.txt").write_text("private")
        link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
        needle = "symbolic link to a folder"
    elif kind == "dir-in":  # would be uploaded partly (links to folders are not walked): refused too
        (checkpoint / "sub").mkdir()
        (checkpoint / "sub" / "a.txt").write_text("a")
        link.symlink_to(checkpoint / "sub", target_is_directory=True)
        needle = "symbolic link to a folder"
    elif kind == "broken":
        link.symlink_to(tmp_path / "nothing-here")
        needle = "broken symbolic link"
    else:
        link.symlink_to("/etc/hostname")
        needle = "outside the folder"
    _refused(checkpoint, "extra", needle)


def test_link_to_a_file_inside_the_folder_is_uploaded_as_that_file(checkpoint, hub_env):
    (checkpoint / "LICENSE").write_text("MIT\n")
    (checkpoint / "LICENSE.txt").symlink_to("LICENSE")
    with FakeHub(TOKEN) as hub:
        constants.ENDPOINT = hub.endpoint
        push(checkpoint, "org/x", out=lambda line: None)
    assert hub.repos["org/x"].branches["main"]["LICENSE.txt"] == b"MIT\n"


def test_model_safetensors_truncated_after_an_intact_header_is_refused(checkpoint, hub_env):
    weights = checkpoint / "model.safetensors"
    data = weights.read_bytes()
    (header_length,) = struct.unpack("<Q", data[:8])
    weights.write_bytes(data[: 8 + header_length + 100])  # header intact, tensor bytes cut
    _refused(checkpoint, "model.safetensors is not a complete safetensors file")


def test_model_safetensors_one_byte_short_is_refused(checkpoint, hub_env):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1])
    _refused(checkpoint, "model.safetensors is not a complete safetensors file")


@pytest.mark.parametrize(
    "name",
    ["state.pickle", "model.joblib", "session.dill", "module.pyc", "model.pt", "weights.bin", "last.ckpt",
     "model.pkl.gz", "weights.pth", "x.npz", "tf_model.h5", "ext/optimizer.pkl"],
)
def test_refuses_every_pickle_like_suffix(checkpoint, hub_env, name):
    path = checkpoint / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not even a pickle inside")
    _refused(checkpoint, name, "pickle file")


@pytest.mark.parametrize("name", ["weights.dat", "vocab.safetensors.txt", "tokenizer.model"])
def test_refuses_a_pickle_under_an_innocent_name(checkpoint, hub_env, name):
    import pickle

    (checkpoint / name).write_bytes(pickle.dumps({"a": 1}, protocol=4))
    _refused(checkpoint, name, "a pickle (by its content)")


def test_refuses_a_torch_save_archive_under_any_name(checkpoint, hub_env):
    import torch

    torch.save({"w": torch.zeros(2)}, checkpoint / "extra_weights.data")
    _refused(checkpoint, "extra_weights.data", "archive holding a pickle")


@pytest.mark.slow
def test_scans_files_over_64_mb_streamed(checkpoint, hub_env):
    big = checkpoint / "corpus.txt"
    with open(big, "wb") as handle:  # sparse: 70 MB of zeros, then a token
        handle.seek(70 * 1024 * 1024)
        handle.write(f"\n{OTHER_SECRET}\n".encode())
    message = _refused(checkpoint, "corpus.txt (contains what looks like a Hugging Face token)")
    assert OTHER_SECRET not in message


def test_a_secret_straddling_two_scan_blocks_is_found(checkpoint, hub_env, monkeypatch):
    from llm2vec_hf.checkpoint import secret_scan

    monkeypatch.setattr(secret_scan, "SCAN_BLOCK", 4096)
    (checkpoint / "notes.txt").write_bytes(b"x" * (4096 - 10) + b" " + OTHER_SECRET.encode() + b"\n")
    _refused(checkpoint, "notes.txt (contains what looks like a Hugging Face token)")


def test_the_token_in_a_file_name_is_refused(checkpoint, hub_env):
    (checkpoint / f"backup-{TOKEN}.txt").write_text("hello")
    message = _refused(checkpoint, "its name", "the token used to push")
    assert TOKEN not in message


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-be"])
def test_secrets_in_utf16_and_utf32_files_are_found(checkpoint, hub_env, encoding):
    (checkpoint / "notes.txt").write_bytes(f"my token is {TOKEN}\n".encode(encoding))
    message = _refused(checkpoint, "notes.txt (contains the token used to push)")
    assert TOKEN not in message


def test_safetensors_metadata_is_scanned(checkpoint, hub_env):
    from safetensors.torch import load_file, save_file

    weights = checkpoint / "model.safetensors"
    save_file(load_file(weights), weights, metadata={"format": "pt", "notes": f"trained with {OTHER_SECRET}"})
    _refused(checkpoint, "model.safetensors (contains what looks like a Hugging Face token)")


def test_a_secret_in_a_header_field_the_safetensors_library_ignores_is_found(checkpoint, hub_env):
    from safetensors import safe_open

    weights = checkpoint / "model.safetensors"
    data = weights.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    name = next(key for key in header if key != "__metadata__")
    header[name]["notes"] = f"trained with {OTHER_SECRET}"  # an extra field of a tensor entry
    raw = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length :])
    with safe_open(str(weights), framework="pt") as handle:  # a valid file whose reader never shows the field
        assert OTHER_SECRET not in repr((list(handle.keys()), handle.metadata()))
    _refused(checkpoint, "model.safetensors (contains what looks like a Hugging Face token)")


@pytest.mark.parametrize(
    "relpath, verdict",
    [
        ("model.safetensors", None),
        ("README.md", None),
        ("x.pkl/notes.txt", None),  # a folder's name is not the file's
        ("my dir/a.pkl.d/notes.txt", None),
        ("sub/weights.pkl", "pickle file"),
        (".pkl", "pickle file"),
        ("model.PKL.GZ", "pickle file"),
        (".env", "environment file"),
        (".env.local", "environment file"),
        ("config/prod.env", "environment file"),
        (".envrc", "environment file"),
        ("environment.yml", None),
        ("dotenv.txt", None),
        ("id_rsa_backup", "credential file"),
        ("keys/server.PEM", "credential file"),
        ("tokenizer_config.json", None),
    ],
)
def test_refused_by_name_table(relpath, verdict):
    """Exact verdicts (found missing by a mutation run of hub.py: docs/reliability.md)."""
    from llm2vec_hf.checkpoint.secret_scan import refused_by_name

    why = refused_by_name(relpath)
    if verdict is None:
        assert why is None, (relpath, why)
    else:
        assert why is not None and why.startswith(verdict), (relpath, why)


# ---------------------------------------------------------------------------------------------------------------
# Secrets detect-secrets' patterns find, archives, and sentence-transformers files read as it reads them
# ---------------------------------------------------------------------------------------------------------------
GOOGLE_KEY = "AIza" + "Sy" + "B" * 33
STRIPE_KEY = "sk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize("content, secret, why", [
    ("git remote https://deploy:s3cr3tPassw0rd@git.example.com/org/repo", "s3cr3tPassw0rd", "a password in a URL"),
    (f'aws_secret_access_key = "{AWS_SECRET}"', AWS_SECRET, "an AWS access key or secret key"),
    (f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET}\n", AWS_SECRET, "an AWS secret key"),
    (f"maps key {GOOGLE_KEY}", GOOGLE_KEY, "a Google API key"),
    (f"billing {STRIPE_KEY}", STRIPE_KEY, "a Stripe key"),
])
def test_refuses_url_credentials_aws_secret_google_and_stripe_keys(checkpoint, hub_env, content, secret, why):
    (checkpoint / "notes.md").write_text(content)
    message = _refused(checkpoint, "notes.md", why)
    assert secret not in message


@pytest.mark.parametrize("name", ["notes.zip", "notes.txt.gz", "innocent.dat", "bundle.tar"])
def test_refuses_archives_whose_content_cannot_be_scanned(checkpoint, hub_env, name):
    import gzip
    import io
    import tarfile
    import zipfile

    secret = f"token {OTHER_SECRET}".encode()
    path = checkpoint / name
    if name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("notes.txt", secret)
    elif name.endswith(".tar"):
        with tarfile.open(path, "w") as archive:
            info = tarfile.TarInfo("notes.txt")
            info.size = len(secret)
            archive.addfile(info, io.BytesIO(secret))
    else:  # gzip under a telling and under an innocent name
        path.write_bytes(gzip.compress(secret))
    if not name.endswith(".tar"):
        assert OTHER_SECRET.encode() not in path.read_bytes()  # compressed: a plain scan would miss it
    _refused(checkpoint, name, "archive")


@pytest.mark.parametrize("file, content, needle", [
    ("config_sentence_transformers.json", [], "a JSON object is expected"),
    ("config_sentence_transformers.json", {"prompts": {"query": 3}}, "prompts must map names to texts"),
    ("config_sentence_transformers.json", {"prompts": {}, "default_prompt_name": "query"}, "default_prompt_name"),
    ("config_sentence_transformers.json", {"similarity_fn_name": "jaccard"}, "similarity_fn_name"),
    ("sentence_bert_config.json", {"max_seq_length": 48, "bogus": 1}, "unknown key(s) bogus"),
])
def test_sentence_transformers_files_are_read_as_sentence_transformers_reads_them(checkpoint, hub_env, file, content,
                                                                                  needle):
    (checkpoint / file).write_text(json.dumps(content))
    _refused(checkpoint, file, needle)
