"""Encoding settings: one resolver, one writer (docs/architecture.md, "Encoding settings").

config.json's ``llm2vec`` block is the single source of truth; llm2vec_config.json (the official loader's file) is
derived from it by `write_encoding_settings`, whoever writes a folder: export, the contrastive trainer, or anyone
calling the writer. Reading goes through `resolve_encoding` once, with the precedence
defaults < the base's config block < the base's llm2vec_config.json < each adapter's block and file < explicit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from llm2vec_hf import LLM2Vec
from llm2vec_hf.errors import LLM2VecError
from llm2vec_hf.checkpoint.export import export_checkpoint
from llm2vec_hf.modeling.encoding_settings import (
    DEFAULT_ENCODING,
    OFFICIAL_KEYS,
    EncodingSettings,
    resolve_encoding,
    write_encoding_settings,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _json(path: Path):
    return json.loads(path.read_text())


def _lora_adapter(base: Path, folder: Path) -> Path:
    """A LoRA adapter for ``base`` as PEFT saves it (no config.json, no llm2vec_config.json); B is zero, so it
    leaves the vectors as they are."""
    from peft import LoraConfig, get_peft_model

    model = LLM2Vec.from_pretrained(str(base)).model
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(str(folder))
    return folder


def test_writer_puts_the_block_in_config_json_and_derives_the_official_file(tmp_path):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 32}))
    settings = EncodingSettings(pooling_mode="weighted_mean", max_length=64, doc_max_length=48,
                                skip_instruction=False, text_template="[INST] {text} [/INST]", eos_text=" </s>")
    write_encoding_settings(str(folder), settings)
    config = _json(folder / "config.json")
    assert config["model_type"] == "llama" and config["hidden_size"] == 32  # the rest of config.json is kept
    assert config["llm2vec"] == settings.to_dict()
    assert EncodingSettings.from_dict(config["llm2vec"]) == settings
    assert _json(folder / "llm2vec_config.json") == {k: getattr(settings, k) for k in OFFICIAL_KEYS}


@pytest.mark.parametrize("bad", [{"pooling_mode": "max"}, {"max_length": 0}, {"doc_max_length": True},
                                 {"text_template": "no placeholder"}, {"eos_text": "!@#$%^&*()"}])
def test_settings_are_validated_once_when_made(bad):
    """Every way to make `EncodingSettings` (constructor, `from_dict`, `replace`) runs the same checks."""
    for make in (lambda: EncodingSettings(**bad), lambda: EncodingSettings.from_dict(bad),
                 lambda: EncodingSettings().replace(**bad)):
        with pytest.raises(ValueError):
            make()


def test_settings_dictionaries_round_trip_and_unknown_keys_are_refused():
    settings = EncodingSettings(pooling_mode="eos_token", eos_text="", text_template="")
    assert EncodingSettings.from_dict(settings.to_dict()) == settings and settings.is_resolved
    assert EncodingSettings().to_dict() == DEFAULT_ENCODING and not EncodingSettings().is_resolved
    with pytest.raises(TypeError, match="poolingmode"):
        EncodingSettings.from_dict({"poolingmode": "mean"})
    with pytest.raises(AttributeError):
        settings.max_length = 3  # frozen: a resolved value cannot change on its way between modules


def test_the_api_takes_only_resolved_settings_objects(tiny_bases):
    library = LLM2Vec.from_pretrained(str(tiny_bases["llama"]))
    assert isinstance(library.settings, EncodingSettings) and library.pooling_mode == library.settings.pooling_mode
    with pytest.raises(TypeError, match="EncodingSettings"):
        LLM2Vec(library.model, library.tokenizer, settings=library.settings.to_dict())
    assert resolve_encoding(library.model.config, library.tokenizer) == library.settings


def test_a_checkpoint_is_written_only_with_resolved_settings(tiny_bases, tmp_path):
    """Unresolved settings (the reference's name-dependent choices not made) would let the name a checkpoint is
    loaded under change how it encodes; a plain dict is not settings."""
    from llm2vec_hf.checkpoint.export import write_checkpoint

    library = LLM2Vec.from_pretrained(str(tiny_bases["llama"]))
    with pytest.raises(ValueError, match="resolved"):
        write_checkpoint(library.model, library.tokenizer, EncodingSettings(), str(tmp_path / "out"))
    with pytest.raises(TypeError, match="EncodingSettings"):
        write_checkpoint(library.model, library.tokenizer, library.settings.to_dict(), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_writer_in_an_adapter_folder_and_with_some_settings(tmp_path):
    """An adapter folder has no config.json: it gets one holding only the block; the derived file holds the
    official keys among the settings given, never others (text_template is not one)."""
    write_encoding_settings(str(tmp_path), {"pooling_mode": "last_token", "text_template": "<s>{text}"})
    assert _json(tmp_path / "config.json") == {"llm2vec": {"pooling_mode": "last_token", "text_template": "<s>{text}"}}
    assert _json(tmp_path / "llm2vec_config.json") == {"pooling_mode": "last_token"}


@pytest.mark.parametrize("bad", [{"pooling_mode": "max"}, {"max_length": 0}, {"text_template": "no placeholder"},
                                 {"poolingmode": "mean"}])
def test_writer_refuses_bad_settings_and_writes_nothing(tmp_path, bad):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises((ValueError, TypeError)):
        write_encoding_settings(str(tmp_path), bad)
    assert _json(tmp_path / "config.json") == {"model_type": "llama"}
    assert not (tmp_path / "llm2vec_config.json").exists()


def test_export_and_contrastive_checkpoints_come_from_the_one_writer(tiny_bases, tmp_path):
    """For the same settings, an exported checkpoint, a contrastive-trainer checkpoint and a folder written by
    `write_encoding_settings` hold the same block and the same derived llm2vec_config.json."""
    from llm2vec_hf.training import parse_recipe, run_training
    from llm2vec_hf.training.tiny_data import prepare_tiny

    tiny = prepare_tiny(tmp_path / "tiny")
    template = "[INST] {text} [/INST]"
    run = run_training(parse_recipe({
        "stage": "supervised", "model_name_or_path": str(tiny["base"]), "train_file": str(tiny["supervised"]),
        "max_seq_length": 32, "lora_r": 4, "output_dir": str(tmp_path / "run"), "per_device_train_batch_size": 8,
        "max_steps": 1, "save_strategy": "no", "report_to": "none", "use_cpu": True, "disable_tqdm": True,
        "pooling_mode": "weighted_mean", "text_template": template,
    }))
    trained = Path(run.adapter_dir)
    by_hand = tmp_path / "by_hand"
    by_hand.mkdir()
    write_encoding_settings(str(by_hand), {"pooling_mode": "weighted_mean", "text_template": template})
    for name in ("config.json", "llm2vec_config.json"):
        assert (trained / name).read_bytes() == (by_hand / name).read_bytes(), name

    exported = Path(export_checkpoint(str(tiny["base"]), str(tmp_path / "exported"), adapters=[str(trained)]))
    block = _json(exported / "config.json")["llm2vec"]
    assert block["pooling_mode"] == "weighted_mean" and block["text_template"] == template
    assert _json(exported / "llm2vec_config.json") == {k: block[k] for k in OFFICIAL_KEYS}
    rewritten = tmp_path / "rewritten"
    rewritten.mkdir()
    write_encoding_settings(str(rewritten), block)
    assert _json(rewritten / "config.json")["llm2vec"] == block
    assert (rewritten / "llm2vec_config.json").read_bytes() == (exported / "llm2vec_config.json").read_bytes()


def test_writing_a_checkpoint_leaves_the_callers_config_alone(tiny_bases, tmp_path):
    model = LLM2Vec.from_pretrained(str(tiny_bases["qwen2"]), pooling_mode="last_token")
    before = model.model.config.to_dict()
    saved = Path(model.save(str(tmp_path / "saved")))
    assert model.model.config.to_dict() == before
    assert not hasattr(model.model.config, "llm2vec") and not hasattr(model.model.config, "auto_map")
    config = _json(saved / "config.json")
    assert config["llm2vec"]["pooling_mode"] == "last_token"
    assert config["auto_map"] == {"AutoConfig": "modeling_llm2vec.BidirectionalQwen2Config",
                                  "AutoModel": "modeling_llm2vec.BidirectionalQwen2Model"}


def test_a_causal_model_is_not_written_as_a_bidirectional_checkpoint(tiny_bases, tmp_path):
    causal = LLM2Vec.from_pretrained(str(tiny_bases["llama"]), enable_bidirectional=False)
    with pytest.raises(LLM2VecError, match="enable_bidirectional=True"):
        causal.save(str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_plain_save_pretrained_gives_a_checkpoint_that_loads_as_our_class(exported, tmp_path):
    """`register_for_auto_class`: any save_pretrained of our encoder copies modeling_llm2vec.py and writes the
    auto_map, as export does, so the folder loads with trust_remote_code=True."""
    from transformers import AutoModel

    model = LLM2Vec.from_pretrained(str(exported("mistral"))).model
    model.save_pretrained(tmp_path / "plain")
    assert (tmp_path / "plain" / "modeling_llm2vec.py").read_bytes() == (
        exported("mistral") / "modeling_llm2vec.py").read_bytes()
    assert _json(tmp_path / "plain" / "config.json")["auto_map"] == _json(exported("mistral") / "config.json")["auto_map"]
    loaded = AutoModel.from_pretrained(str(tmp_path / "plain"), trust_remote_code=True)
    assert type(loaded).__name__ == "BidirectionalMistralModel" and type(loaded) is not type(model)


def test_precedence_defaults_config_base_file_adapter_explicit(tiny_bases, tmp_path):
    """Each source wins over the ones before it, and an adapter's config.json block (where the contrastive
    trainer writes the template) is read as well as its llm2vec_config.json. Within one folder the two files must
    agree (`test_settings_rules.py::test_disagreeing_settings_files_are_refused_on_every_entry_point`)."""
    base = tmp_path / "base"
    shutil.copytree(tiny_bases["llama"], base)
    config = _json(base / "config.json")
    config["llm2vec"] = {"pooling_mode": "weighted_mean", "max_length": 80, "doc_max_length": 70,
                         "skip_instruction": False, "text_template": "A: {text}"}
    (base / "config.json").write_text(json.dumps(config))
    (base / "llm2vec_config.json").write_text(json.dumps({"max_length": 80, "doc_max_length": 70}))
    adapter = _lora_adapter(base, tmp_path / "adapter")
    (adapter / "config.json").write_text(json.dumps({"llm2vec": {"doc_max_length": 50, "text_template": "B: {text}"}}))
    (adapter / "llm2vec_config.json").write_text(json.dumps({"doc_max_length": 50}))

    settings = LLM2Vec.from_pretrained(str(base), peft_model_name_or_path=str(adapter), skip_instruction=True).settings
    assert {k: getattr(settings, k) for k in ("pooling_mode", "max_length", "doc_max_length", "text_template",
                                     "skip_instruction")} == {
        "pooling_mode": "weighted_mean",  # base config block over the default
        "max_length": 80,                 # the base's settings over the defaults
        "doc_max_length": 50,             # the adapter's over the base's
        "text_template": "B: {text}",     # adapter block over the base block
        "skip_instruction": True,         # explicit over all
    }
    assert settings.eos_text == " </s>"  # unset: the reference's choice for a Llama config
    exported_block = _json(Path(export_checkpoint(str(base), str(tmp_path / "out"), adapters=[str(adapter)],
                                                  skip_instruction=True)) / "config.json")["llm2vec"]
    assert exported_block == settings.to_dict()



def test_every_adapter_is_layered_in_order_by_the_api_as_by_export(tiny_bases, tmp_path):
    """Two adapters: the first one's settings count where the second sets nothing, the second wins where both
    do; `LLM2Vec.from_pretrained` and `export` resolve by the same rule, so they store the same settings."""
    base = tiny_bases["llama"]
    first = _lora_adapter(base, tmp_path / "first")
    (first / "llm2vec_config.json").write_text(json.dumps({"pooling_mode": "last_token", "doc_max_length": 30}))
    second = _lora_adapter(base, tmp_path / "second")
    (second / "llm2vec_config.json").write_text(json.dumps({"doc_max_length": 20}))

    settings = LLM2Vec.from_pretrained(str(base), peft_model_name_or_path=[str(first), str(second)]).settings
    assert settings.pooling_mode == "last_token" and settings.doc_max_length == 20
    exported_block = _json(Path(export_checkpoint(str(base), str(tmp_path / "out"),
                                                  adapters=[str(first), str(second)])) / "config.json")["llm2vec"]
    assert exported_block == settings.to_dict()

def test_official_layout_with_only_llm2vec_config_json(tiny_bases, tmp_path):
    """A folder as the official library saves it (no block in config.json, settings in llm2vec_config.json)
    resolves from that file, and an export of it moves the settings into config.json's block."""
    base = tmp_path / "official"
    shutil.copytree(tiny_bases["gemma"], base)
    (base / "llm2vec_config.json").write_text(json.dumps(
        {"pooling_mode": "eos_token", "max_length": 40, "doc_max_length": 30, "skip_instruction": False}))
    settings = LLM2Vec.from_pretrained(str(base)).settings
    assert settings == EncodingSettings(pooling_mode="eos_token", max_length=40, doc_max_length=30,
                                        skip_instruction=False, text_template="", eos_text="<eos>")
    out = Path(export_checkpoint(str(base), str(tmp_path / "out")))
    assert _json(out / "config.json")["llm2vec"] == settings.to_dict()


def test_demo_baseline_takes_its_settings_without_writing_the_config():
    """The demo's causal baseline pools as it asks (weighted mean) through the module's encoding_overrides,
    resolved like every other source; the loaded config carries no llm2vec block."""
    pytest.importorskip("sentence_transformers")
    from llm2vec_hf.demo.assets import default_model_path
    from llm2vec_hf.demo.pipeline import causal_baseline

    module = causal_baseline(default_model_path())[0]
    assert not hasattr(module.auto_model.config, "llm2vec")
    assert module.encoding_settings().pooling_mode == "weighted_mean"
    batch = module.preprocess(["a short text", "another one"])
    out = module.forward(dict(batch))
    weights = batch["pool_mask"].cumsum(1) * batch["pool_mask"]
    expected = (out["token_embeddings"] * (weights / weights.sum(1, keepdim=True)).unsqueeze(-1)).sum(1)
    torch.testing.assert_close(out["sentence_embedding"], expected)


def _set_pooling_by_hand(folder: Path, mode: str) -> None:
    """Both files agree on a mode no loader knows (the writer would refuse it)."""
    config = _json(folder / "config.json")
    config["llm2vec"]["pooling_mode"] = mode
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "llm2vec_config.json").write_text(json.dumps({**_json(folder / "llm2vec_config.json"), "pooling_mode": mode}))


@pytest.mark.parametrize("edit, needle", [
    (lambda f: (f / "llm2vec_config.json").write_text('{"pooling_mode": "last_token"}'),
     "llm2vec_config.json disagrees with config.json's llm2vec block"),
    (lambda f: (f / "config.json").write_text(json.dumps({**_json(f / "config.json"), "llm2vec": {}})),
     "config.json has no llm2vec block with a pooling_mode"),
    (lambda f: _set_pooling_by_hand(f, "max"), "Unknown pooling_mode 'max'"),
])
def test_push_refuses_settings_the_loaders_would_read_differently(exported, tmp_path, edit, needle):
    """The push check reads the settings from config.json's block and refuses a llm2vec_config.json that is not
    derived from it: the official loader would pool otherwise than transformers and sentence-transformers."""
    from llm2vec_hf.errors import CheckpointError
    from llm2vec_hf.checkpoint.validation import check_checkpoint

    folder = tmp_path / "ckpt"
    shutil.copytree(exported("llama"), folder)
    check_checkpoint(folder)
    edit(folder)
    with pytest.raises(CheckpointError, match=needle.replace("(", r"\(")):
        check_checkpoint(folder)
