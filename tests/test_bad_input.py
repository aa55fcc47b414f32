"""Bad input gets an error that names the problem (or a correct result), never a crash deep inside torch."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from llm2vec_hf import LLM2Vec
from llm2vec_hf.errors import AdapterMismatchError, CheckpointError
from llm2vec_hf.training.tiny_model import build_tiny_decoder

from helpers.processes import run_python
from helpers.samples import REPO


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


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="No such model folder"):
        LLM2Vec.from_pretrained(str(tmp_path / "nope"))


def test_unknown_repo_id_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="local folder or a Hub repo id"):
        LLM2Vec.from_pretrained("nobody/does-not-exist")


def test_folder_without_config(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        LLM2Vec.from_pretrained(str(tmp_path / "weights"))


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_truncated_or_corrupt_weights(tiny_bases, tmp_path, damage):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_bases["llama"], folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="Could not load the weights"):
        LLM2Vec.from_pretrained(str(folder))


def test_pickle_only_weights_are_refused(tiny_bases, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bases["llama"], folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle"):
        LLM2Vec.from_pretrained(str(folder))


def test_unsupported_architecture_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="supports: gemma, gemma2, llama, mistral, qwen2, qwen3"):
        LLM2Vec.from_pretrained(str(tmp_path))


def save_lora(base_folder, out, target_modules=("q_proj", "v_proj")):
    from peft import LoraConfig, get_peft_model

    from llm2vec_hf.loading.models import load_bidirectional

    model, _, _ = load_bidirectional(str(base_folder))
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=list(target_modules), init_lora_weights=False))
    peft_model.save_pretrained(out)
    return out


def test_adapter_for_another_base_is_refused(tiny_bases, tmp_path):
    wider = build_tiny_decoder(tmp_path / "wider", "llama", hidden_size=64)
    adapter = save_lora(wider, tmp_path / "adapter-wide")
    with pytest.raises(AdapterMismatchError, match="another base"):
        LLM2Vec.from_pretrained(str(tiny_bases["llama"]), peft_model_name_or_path=str(adapter))


def test_adapter_whose_modules_do_not_exist_is_refused(tiny_bases, tmp_path):
    adapter = save_lora(tiny_bases["llama"], tmp_path / "adapter")
    weights_file = adapter / "adapter_model.safetensors"
    from safetensors.torch import load_file, save_file

    renamed = {k.replace("layers.", "blocks."): v for k, v in load_file(weights_file).items()}
    save_file(renamed, weights_file)
    with pytest.raises(AdapterMismatchError, match="match no module"):
        LLM2Vec.from_pretrained(str(tiny_bases["llama"]), peft_model_name_or_path=str(adapter))


def test_old_transformers_is_refused_with_a_clear_message():
    """On a transformers older than 5.2 the model code refuses to import instead of running causal."""
    code = f"""
import importlib.metadata, sys
real = importlib.metadata.version
importlib.metadata.version = lambda name: "4.44.2" if name == "transformers" else real(name)
sys.path.insert(0, {str(REPO / 'modeling')!r})
try:
    import modeling_llm2vec
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


# ----------------------------------------------------------------------------------------------------------------
# Weights are complete or refused (never randomly initialised)
# ----------------------------------------------------------------------------------------------------------------
import os
import re
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from llm2vec_hf import cli
from llm2vec_hf.errors import LLM2VecError
from llm2vec_hf.checkpoint.export import export_checkpoint


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(code: int, err: str, *needles: str) -> str:
    # progress bars (transformers' "Loading weights") are not messages
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip() and not re.search(r"\d+%\|", line)]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _rewrite(path: Path, keep=lambda key: True, rename=lambda key: key, extra=None) -> None:
    weights = {rename(k): v for k, v in load_file(path).items() if keep(k)}
    weights.update(extra or {})
    save_file(weights, path, metadata={"format": "pt"})


def test_adapter_without_its_lora_a_tensors_is_refused_everywhere(tiny_bases, tmp_path, capsys):
    adapter = save_lora(tiny_bases["llama"], tmp_path / "adapter")
    _rewrite(adapter / "adapter_model.safetensors", keep=lambda k: "lora_A" not in k)
    with pytest.raises(CheckpointError, match=r"incomplete: 4 of the 8 tensors .*lora_A"):
        LLM2Vec.from_pretrained(str(tiny_bases["llama"]), peft_model_name_or_path=str(adapter))
    with pytest.raises(CheckpointError, match="incomplete"):
        LLM2Vec.from_pretrained(str(tiny_bases["llama"]), peft_model_name_or_path=str(adapter), merge_peft=True)
    code, _, err = run_cli(["export", tiny_bases["llama"], "--output", tmp_path / "out", "--adapter", adapter], capsys)
    assert_one_line(code, err, "lora_A", "randomly initialised")
    assert not (tmp_path / "out").exists()


def test_adapter_missing_one_tensor_is_refused(tiny_bases, tmp_path):
    adapter = save_lora(tiny_bases["llama"], tmp_path / "adapter")
    dropped = sorted(load_file(adapter / "adapter_model.safetensors"))[-1]
    _rewrite(adapter / "adapter_model.safetensors", keep=lambda k: k != dropped)
    with pytest.raises(CheckpointError, match="1 of the 8"):
        LLM2Vec.from_pretrained(str(tiny_bases["llama"]), peft_model_name_or_path=str(adapter))


@pytest.mark.parametrize("damage", ["missing-layer", "missing-norm", "extra-layer", "wrong-shape"])
def test_base_checkpoint_that_does_not_match_its_config_is_refused(tiny_bases, tmp_path, capsys, damage):
    folder = tmp_path / "base"
    shutil.copytree(tiny_bases["llama"], folder)
    weights = folder / "model.safetensors"
    if damage == "missing-layer":
        _rewrite(weights, keep=lambda k: ".layers.1." not in k)
        needle = "layers.1."
    elif damage == "missing-norm":
        _rewrite(weights, keep=lambda k: k != "model.norm.weight")
        needle = "norm.weight"
    elif damage == "extra-layer":  # a checkpoint with more layers than its config: silently truncated before
        extra = {k.replace(".layers.1.", ".layers.2."): v for k, v in load_file(weights).items() if ".layers.1." in k}
        _rewrite(weights, extra=extra)
        needle = "layers.2."
    else:
        state = load_file(weights)
        state["model.norm.weight"] = torch.ones(31)
        save_file(state, weights, metadata={"format": "pt"})
        needle = "norm.weight"
    with pytest.raises(CheckpointError, match=re.escape(needle)):
        LLM2Vec.from_pretrained(str(folder))
    code, _, err = run_cli(["export", folder, "--output", tmp_path / "out"], capsys)
    assert_one_line(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_exported_checkpoint_missing_a_tensor_is_refused(exported, tmp_path):
    folder = tmp_path / "exported"
    shutil.copytree(exported("llama"), folder)
    _rewrite(folder / "model.safetensors", keep=lambda k: "layers.0.mlp.up_proj" not in k)
    with pytest.raises(CheckpointError, match="layers.0.mlp.up_proj.weight"):
        LLM2Vec.from_pretrained(str(folder))
    # the checkpoint's own remote code refuses it too, for AutoModel and sentence-transformers
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    with pytest.raises(OSError, match="layers.0.mlp.up_proj.weight"):
        AutoModel.from_pretrained(str(folder), trust_remote_code=True)
    with pytest.raises(OSError, match="randomly initialised"):
        SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")


def test_tied_embeddings_are_not_reported_missing(tmp_path):
    """A base with tie_word_embeddings stores no lm_head: loading it as encoder, as MNTP model and exporting it
    must not be refused, and the MNTP head must be the embeddings."""
    from llm2vec_hf.loading.models import load_bidirectional

    base = build_tiny_decoder(tmp_path / "tied", "llama", tie_word_embeddings=True)
    assert not any(k.startswith("lm_head") for k in load_file(base / "model.safetensors"))
    mntp, _, _ = load_bidirectional(str(base), for_mntp=True)
    assert torch.equal(mntp.lm_head.weight, mntp.model.embed_tokens.weight)
    out = export_checkpoint(str(base), str(tmp_path / "out"))
    assert LLM2Vec.from_pretrained(out).encode(["fine"], show_progress_bar=False).shape == (1, 32)


def test_causal_baseline_of_a_decoder_checkpoint_loads(tiny_bases):
    """The native AutoModel (enable_bidirectional=False) has no use for the decoder's lm_head: not an error."""
    model = LLM2Vec.from_pretrained(str(tiny_bases["llama"]), enable_bidirectional=False)
    assert model.encode(["fine"], show_progress_bar=False).shape == (1, 32)


def test_adapter_of_the_wrong_hidden_size_is_one_line(tiny_bases, tmp_path, capsys):
    wider = build_tiny_decoder(tmp_path / "wider", "llama", hidden_size=64)
    adapter = save_lora(wider, tmp_path / "adapter-wide")
    code, _, err = run_cli(["export", tiny_bases["llama"], "--output", tmp_path / "out", "--adapter", adapter], capsys)
    assert_one_line(code, err, "another base model", "[2, 64]", "[2, 32]")


def test_adapter_of_another_family_is_refused_by_export_as_by_train(tiny_bases, tmp_path, capsys):
    """A Qwen2 adapter has the module names and, at the same width, the shapes of a Llama one."""
    adapter = save_lora(tiny_bases["qwen2"], tmp_path / "qwen2-adapter")
    code, _, err = run_cli(["export", tiny_bases["llama"], "--output", tmp_path / "out", "--adapter", adapter], capsys)
    assert_one_line(code, err, "another base model", "qwen2", "llama")
    with pytest.raises(AdapterMismatchError, match="qwen2"):
        LLM2Vec.from_pretrained(str(tiny_bases["llama"]), peft_model_name_or_path=str(adapter))
    # and with the class record gone, the base named in the adapter config still tells
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["auto_mapping"] = None
    config_path.write_text(json.dumps(config))
    with pytest.raises(AdapterMismatchError, match="qwen2"):
        LLM2Vec.from_pretrained(str(tiny_bases["llama"]), peft_model_name_or_path=str(adapter))


def test_checkpoint_without_tokenizer_files_is_one_line(tiny_bases, tmp_path, capsys):
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_bases["llama"], folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    code, _, err = run_cli(["export", folder, "--output", tmp_path / "out"], capsys)
    assert_one_line(code, err, "no tokenizer files")
    assert "sentencepiece" not in err.lower()


# ----------------------------------------------------------------------------------------------------------------
# Settings: one rule for text_template everywhere
# ----------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------
# Export: overwrite never loses data, never writes through a link; stale siblings; modes; disk full
# ----------------------------------------------------------------------------------------------------------------
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
        import transformers.modeling_utils
        from safetensors import SafetensorError

        def full(*args, **kwargs):
            raise SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)')

        monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
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


# ----------------------------------------------------------------------------------------------------------------
# One clear line: recipes, eval, resume
# ----------------------------------------------------------------------------------------------------------------
RECIPE = "stage: simcse\nmodel_name_or_path: {base}\ntrain_file: {data}\noutput_dir: {out}\n"


@pytest.mark.parametrize(
    "line,needles",
    [
        ("lora_r: [1, 2]", ["lora_r in ", "recipe.yaml", "must be an integer", "list"]),
        ("lora_r: abc", ["lora_r in ", "must be an integer", "'abc'"]),
        ("lora_r: true", ["lora_r in ", "must be an integer", "True"]),
        ("max_seq_length: 3.5", ["max_seq_length in ", "must be an integer"]),
        ("learning_rate: [0.1]", ["learning_rate in ", "must be a number", "list"]),
        ("simcse_dropout: {a: 1}", ["simcse_dropout in ", "must be a number", "dict"]),
        ("use_cpu: maybe", ["use_cpu in ", "true or false"]),
        ("lr_scheduler_type: bogus", ["lr_scheduler_type in ", "must be one of", "cosine"]),
    ],
)
def test_recipe_values_of_the_wrong_type_name_the_key_and_the_file(tiny_bases, tmp_path, capsys, line, needles):
    recipe = tmp_path / "recipe.yaml"
    data = tmp_path / "data.txt"
    data.write_text("a sentence\n" * 4)
    recipe.write_text(RECIPE.format(base=tiny_bases["llama"], data=data, out=tmp_path / "run") + line + "\n")
    code, _, err = run_cli(["train", recipe], capsys)
    message = assert_one_line(code, err, *needles)
    assert "command-line" not in message and "not supported between" not in message


def test_a_bad_command_line_value_is_still_called_one(tiny_bases, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(base=tiny_bases["llama"], data=tmp_path / "d.txt", out=tmp_path / "run"))
    code, _, err = run_cli(["train", recipe, "--lora_r", "abc"], capsys)
    assert_one_line(code, err, "command-line", "lora_r")


@pytest.mark.parametrize("name", ["runs/missing-model", "./missing-model"])
def test_eval_on_a_missing_local_folder_names_it(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    code, _, err = run_cli(["eval", name, "--tasks", "STS12", "--output", tmp_path / "results"], capsys)
    message = assert_one_line(code, err, "No such model folder", name)
    assert "connect" not in message.lower() and "internet" not in message.lower()


def test_encode_with_a_stray_placeholder_is_one_line(exported, tmp_path, capsys):
    """A checkpoint whose stored template has a stray field (made by hand or an older export) is refused when it
    loads, with one line, instead of a KeyError in the middle of encoding."""
    folder = tmp_path / "ckpt"
    shutil.copytree(exported("llama"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["llm2vec"]["text_template"] = "<s>{system} {text}"
    (folder / "config.json").write_text(json.dumps(config))
    source = tmp_path / "in.txt"
    source.write_text("hello\n")
    code, _, err = run_cli(["encode", folder, "--input", source, "--output", tmp_path / "out.npy"], capsys)
    assert_one_line(code, err, "other than {text}: system")


def test_doc_max_length_cut_of_a_huge_line_tokenizes_little(exported):
    """A 2 MB line is cut word-wise before tokenizing: at most max_length words are re-tokenized, never the line."""
    from llm2vec_hf.modeling.modeling_llm2vec import cut_to_doc_max_length

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


def _train_with_checkpoint(tiny, tmp_path, **overrides):
    from llm2vec_hf.training import parse_recipe, run_training

    values = {"stage": "simcse", "model_name_or_path": str(tiny["base"]), "train_file": str(tiny["corpus"]),
              "max_seq_length": 32, "lora_r": 4, "output_dir": str(tmp_path / "run"), "per_device_train_batch_size": 4,
              "learning_rate": 1e-3, "max_steps": 2, "save_strategy": "steps", "save_steps": 2, "report_to": "none",
              "seed": 7, "use_cpu": True, "disable_tqdm": True, "max_train_samples": 16, "logging_steps": 1}
    values.update(overrides)
    return run_training(parse_recipe(values))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from llm2vec_hf.training.tiny_data import prepare_tiny

    return prepare_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"lora_r": 8}, "was lora_r changed"),
        ({"learning_rate": 5e-3}, "learning_rate 0.001 -> 0.005"),
        ({"seed": 8}, "seed 7 -> 8"),
    ],
)
def test_resuming_a_run_with_other_settings_is_refused(tiny, tmp_path, change, needle):
    _train_with_checkpoint(tiny, tmp_path)
    assert (tmp_path / "run" / "checkpoint-2" / "llm2vec_run.json").is_file()
    with pytest.raises(LLM2VecError, match=re.escape(needle)) as info:
        _train_with_checkpoint(tiny, tmp_path, resume_from_checkpoint="true", max_steps=4, **change)
    assert "\n" not in str(info.value)


def test_resuming_from_a_checkpoint_missing_adapter_tensors_is_refused(tiny, tmp_path):
    _train_with_checkpoint(tiny, tmp_path)
    weights = tmp_path / "run" / "checkpoint-2" / "adapter_model.safetensors"
    _rewrite(weights, keep=lambda k: "lora_B" not in k)
    with pytest.raises(LLM2VecError, match="adapter tensors are missing"):
        _train_with_checkpoint(tiny, tmp_path, resume_from_checkpoint="true", max_steps=4)
