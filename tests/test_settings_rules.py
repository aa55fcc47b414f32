"""One rule per class of input, on every path (docs/reliability.md, "Settings, tokenizers and separators"):
settings files that disagree, several adapters' settings, ambiguous weights, tokenizers larger than the
embedding, the stock layout's tokenizer, the llm2vec separator string, CAUSAL_LM adapters and max_length."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.cli import assert_one_line, run_cli
from helpers.weights import save_lora
from llm2vec_hf import LLM2Vec
from llm2vec_hf.errors import CheckpointError, TokenizerError
from llm2vec_hf.checkpoint.export import export_checkpoint
from llm2vec_hf.modeling.encoding_settings import (
    DEFAULT_ENCODING,
    EncodingSettings,
    read_encoding_settings,
    resolve_encoding,
    write_encoding_settings,
)
from llm2vec_hf.modeling.input_formatting import format_inputs, normalize_inputs
from llm2vec_hf.modeling.tokenization_llm2vec import TokenizerEmbeddingError, check_tokenizer_fits
from llm2vec_hf.training.tiny_model import english_corpus, tiny_config, train_tokenizer


MARKER = "!@#$%^&*()"
FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None)


def copy_of(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    return target


# ---------------------------------------------------------------------------------------------------------------
# 4. llm2vec_config.json that disagrees with config.json's block: refused on every entry point
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture()
def disagreeing(exported, tmp_path) -> Path:
    folder = copy_of(exported("llama"), tmp_path / "disagreeing")
    official = json.loads((folder / "llm2vec_config.json").read_text())
    official["pooling_mode"] = "last_token"  # config.json's block says mean
    (folder / "llm2vec_config.json").write_text(json.dumps(official))
    return folder


def test_disagreeing_settings_files_are_refused_on_every_entry_point(disagreeing, tmp_path, capsys):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    with pytest.raises(CheckpointError, match="disagrees"):
        LLM2Vec.from_pretrained(str(disagreeing))
    with pytest.raises((OSError, ValueError), match="disagrees"):
        AutoModel.from_pretrained(str(disagreeing), trust_remote_code=True)
    with pytest.raises((OSError, ValueError), match="disagrees"):
        SentenceTransformer(str(disagreeing), trust_remote_code=True, device="cpu")
    texts = tmp_path / "t.txt"
    texts.write_text("one\n")
    for extra in ([], ["--processes", "2"]):
        code, _, err = run_cli(["encode", disagreeing, "--input", texts, "--output", tmp_path / "v.npy", *extra], capsys)
        assert_one_line(code, err, "disagrees", "pooling_mode")
        assert not (tmp_path / "v.npy").exists()


_OFFICIAL_VALUES = {"pooling_mode": st.sampled_from(["mean", "last_token", "eos_token"]),
                    "max_length": st.sampled_from([64, 512]), "doc_max_length": st.sampled_from([40, 400]),
                    "skip_instruction": st.booleans()}


@FUZZ
@given(block=st.fixed_dictionaries({}, optional=_OFFICIAL_VALUES),
       official=st.fixed_dictionaries({}, optional=_OFFICIAL_VALUES))
def test_settings_files_either_agree_or_are_refused(tmp_path_factory, block, official):
    """Any pair of files: refused exactly when a key of llm2vec_config.json differs from the block's value (its
    default when absent); when accepted, the settings are the block's, whichever file a loader reads."""
    folder = tmp_path_factory.mktemp("settings")
    (folder / "config.json").write_text(json.dumps({"llm2vec": block}))
    (folder / "llm2vec_config.json").write_text(json.dumps(official))
    disagree = any(official[key] != block.get(key, DEFAULT_ENCODING[key]) for key in official)
    if disagree:
        with pytest.raises(ValueError, match="disagrees"):
            read_encoding_settings(str(folder))
        return
    from_both = resolve_encoding(stored=read_encoding_settings(str(folder)))
    assert from_both == resolve_encoding(stored=[block])
    assert {k: getattr(from_both, k) for k in official} == official


# ---------------------------------------------------------------------------------------------------------------
# 5. Several adapters' settings: layered in order by from_pretrained, as by export
# ---------------------------------------------------------------------------------------------------------------
def test_every_adapters_settings_are_layered_in_order_as_export_does(tiny_bases, tmp_path):
    base = tiny_bases["llama"]
    first, second = save_lora(base, tmp_path / "a1"), save_lora(base, tmp_path / "a2")
    write_encoding_settings(str(first), {"pooling_mode": "last_token", "max_length": 40})
    write_encoding_settings(str(second), {"max_length": 44})
    loaded = LLM2Vec.from_pretrained(str(base), peft_model_name_or_path=[str(first), str(second)]).settings
    assert loaded.pooling_mode == "last_token" and loaded.max_length == 44
    folder = export_checkpoint(str(base), str(tmp_path / "out"), adapters=[str(first), str(second)],
                               st_modules="remote")
    assert json.loads((Path(folder) / "config.json").read_text())["llm2vec"] == loaded.to_dict()


# ---------------------------------------------------------------------------------------------------------------
# 7. A stale model.safetensors beside a sharded index
# ---------------------------------------------------------------------------------------------------------------
def test_single_and_sharded_weights_together_are_refused_naming_both(tiny_bases, exported, tmp_path, capsys):
    from transformers import AutoModel, AutoModelForCausalLM

    base = copy_of(tiny_bases["llama"], tmp_path / "base")
    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(base).save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    for file in sharded.glob("model-*.safetensors"):
        shutil.copy(file, base)
    shutil.copy(sharded / "model.safetensors.index.json", base)
    code, _, err = run_cli(["export", base, "--output", tmp_path / "out"], capsys)
    assert_one_line(code, err, "model.safetensors and model.safetensors.index.json")
    with pytest.raises(CheckpointError, match="model.safetensors.index.json"):
        LLM2Vec.from_pretrained(str(base))
    checkpoint = copy_of(exported("llama"), tmp_path / "checkpoint")
    for file in sharded.glob("model-*.safetensors"):
        shutil.copy(file, checkpoint)
    shutil.copy(sharded / "model.safetensors.index.json", checkpoint)
    with pytest.raises((OSError, ValueError), match="model.safetensors.index.json"):
        AutoModel.from_pretrained(str(checkpoint), trust_remote_code=True)
    from llm2vec_hf.checkpoint.validation import check_checkpoint

    with pytest.raises(CheckpointError, match="model.safetensors.index.json"):
        check_checkpoint(checkpoint)


# ---------------------------------------------------------------------------------------------------------------
# 8. A tokenizer with more ids than the embedding
# ---------------------------------------------------------------------------------------------------------------
def _decoder_with_embedding(tmp_path: Path, rows_fewer: int) -> Path:
    from transformers import AutoModelForCausalLM

    tokenizer = train_tokenizer("llama")
    config = tiny_config("llama", tokenizer, vocab_size=len(tokenizer) - rows_fewer)
    torch.manual_seed(0)
    folder = tmp_path / f"fewer-{rows_fewer}"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_tokenizer_larger_than_the_embedding_is_refused_at_load_and_export(tmp_path, capsys):
    folder = _decoder_with_embedding(tmp_path, rows_fewer=3)  # the special tokens (ids 0-2) all fit
    with pytest.raises(TokenizerError, match="beyond the model's embedding"):
        LLM2Vec.from_pretrained(str(folder))
    code, _, err = run_cli(["export", folder, "--output", tmp_path / "out"], capsys)
    assert_one_line(code, err, "3 token(s) with ids beyond")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def llama_tokenizer():
    return train_tokenizer("llama")


@FUZZ
@given(margin=st.integers(-40, 40))
def test_tokenizer_fits_exactly_when_every_id_has_a_row(llama_tokenizer, margin):
    rows = len(llama_tokenizer) + margin
    highest = max(llama_tokenizer.get_vocab().values())
    if highest < rows:
        check_tokenizer_fits(llama_tokenizer, rows)
    else:
        with pytest.raises(TokenizerEmbeddingError):
            check_tokenizer_fits(llama_tokenizer, rows)


# ---------------------------------------------------------------------------------------------------------------
# 3. The stock layout is exact only if the tokenizer it loads gives the exact ids
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qwen2_with_digit_merges(tmp_path_factory) -> Path:
    """A Qwen2 base with its own byte-level vocabulary (GPT-2 pre-tokenizer, merges across digits): transformers 5
    loads Qwen2Tokenizer for it, whose own pre-tokenizer splits digits one by one."""
    from transformers import AutoModelForCausalLM

    numbers = [" ".join(str(i * 37 % 10000) for i in range(j, j + 50)) for j in range(0, 5000, 50)]
    tokenizer = train_tokenizer("qwen2", corpus=[*english_corpus(), *numbers])
    folder = tmp_path_factory.mktemp("qwen2-digits")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_config("qwen2", tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_stock_layout_needs_the_exact_tokenizer_ids(qwen2_with_digit_merges, tmp_path):
    exact_settings = dict(pooling_mode="last_token", max_length=64, doc_max_length=64)
    auto = Path(export_checkpoint(str(qwen2_with_digit_merges), str(tmp_path / "auto"), **exact_settings))
    modules = json.loads((auto / "modules.json").read_text())
    assert modules[0]["type"].startswith("sentence_transformers_llm2vec"), modules  # the exact module
    stock = Path(export_checkpoint(str(qwen2_with_digit_merges), str(tmp_path / "stock"), st_modules="stock",
                                   **exact_settings))
    assert "gives other ids than the exact path" in (stock / "README.md").read_text()


# ---------------------------------------------------------------------------------------------------------------
# 9. The separator string: read as llm2vec 0.2.3 reads it where that is defined, refused where it is not
# ---------------------------------------------------------------------------------------------------------------
def reference_split(instruction: str, text: str, settings: EncodingSettings) -> tuple[str, str]:
    """llm2vec 0.2.3: `_convert_to_str`, `prepare_for_tokenization` (template, EOS text), `tokenize`'s split."""
    joined = f"{instruction.strip()} {MARKER}{text}" if instruction else f"{MARKER}{text}"
    if settings.text_template:
        joined = settings.text_template.format(text=joined.strip())
    if settings.pooling_mode == "eos_token":
        joined = joined.strip() + settings.eos_text
    parts = joined.split(MARKER)
    return "".join(parts), parts[1] if len(parts) > 1 else ""


_PIECES = st.sampled_from(["word", " ", MARKER, "x", "  ", "\n", "日本"])


@FUZZ
@given(instruction=st.lists(_PIECES, max_size=4).map("".join), text=st.lists(_PIECES, min_size=1, max_size=6).map("".join),
       mode=st.sampled_from(["mean", "eos_token"]), template=st.sampled_from(["", "[INST] {text} [/INST]"]))
def test_separator_in_inputs_matches_the_reference_or_is_refused(instruction, text, mode, template):
    settings = EncodingSettings(pooling_mode=mode, text_template=template, eos_text=" </s>")
    undefined = MARKER in instruction or (MARKER in text and not text.split(MARKER, 1)[0].strip())
    if not text.strip() or undefined:
        with pytest.raises(ValueError):
            normalize_inputs([[instruction, text]])
        return
    pairs = normalize_inputs([[instruction, text]])
    full, pooled = format_inputs(pairs, settings)
    assert (full[0], pooled[0]) == reference_split(instruction, text, settings)
    assert MARKER not in full[0]


def test_separator_in_a_jsonl_instruction_is_refused_before_the_model_loads(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": "t", "instruction": f"a {MARKER} b"}))
    code, _, err = run_cli(["encode", tmp_path / "no-model", "--input", rows, "--output", tmp_path / "v.npy"], capsys)
    assert_one_line(code, err, "rows.jsonl:2", "instruction")


@pytest.mark.parametrize("setting", ["text_template", "eos_text"])
def test_separator_in_a_template_or_eos_text_is_refused(setting):
    with pytest.raises(ValueError, match="marks where the text starts"):
        resolve_encoding(**{setting: f"[{MARKER}] {{text}}" if setting == "text_template" else MARKER})


# ---------------------------------------------------------------------------------------------------------------
# 10. max_length the model cannot take
# ---------------------------------------------------------------------------------------------------------------
def test_max_length_beyond_the_position_embeddings_is_refused(tiny_bases, tmp_path, capsys):
    with pytest.raises(ValueError, match="max_position_embeddings"):
        LLM2Vec.from_pretrained(str(tiny_bases["llama"]), max_length=1025)
    code, _, err = run_cli(["export", tiny_bases["llama"], "--output", tmp_path / "out", "--max-length", "4096"], capsys)
    assert_one_line(code, err, "max_position_embeddings (1024)")
    assert LLM2Vec.from_pretrained(str(tiny_bases["llama"]), max_length=1024).settings.max_length == 1024


# ---------------------------------------------------------------------------------------------------------------
# 13. CAUSAL_LM adapters (PEFT's most common task type) load and merge as PEFT merges them
# ---------------------------------------------------------------------------------------------------------------
def test_causal_lm_adapter_merges_as_peft_merges_it(tiny_bases, tmp_path, capsys):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base = tiny_bases["llama"]
    torch.manual_seed(1)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), config).save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"

    peft_merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), tmp_path / "adapter")
    expected = peft_merged.merge_and_unload().model.state_dict()
    ours = LLM2Vec.from_pretrained(str(base), peft_model_name_or_path=str(tmp_path / "adapter"), merge_peft=True)
    got = ours.model.state_dict()
    assert set(got) == set(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    assert not torch.equal(got["layers.0.self_attn.q_proj.weight"],
                           AutoModelForCausalLM.from_pretrained(base).model.state_dict()["layers.0.self_attn.q_proj.weight"])
    code, _, _ = run_cli(["export", base, "--adapter", tmp_path / "adapter", "--output", tmp_path / "out"], capsys)
    assert code == 0


# ---------------------------------------------------------------------------------------------------------------
# 14. One line, not a traceback
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device,needle", [("tpu9", "not a torch device"), ("meta", "holds no data"),
                                           ("cuda:0,cpu", "cuda"), ("cpu:7,cpu", None)])
@pytest.mark.slow
def test_bad_devices_are_one_line_before_anything_loads(exported, tmp_path, capsys, device, needle):
    if needle == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    texts = tmp_path / "t.txt"
    texts.write_text("one\n")
    code, _, err = run_cli(["encode", exported("llama"), "--input", texts, "--output", tmp_path / "v.npy",
                         "--device", device], capsys)
    if needle is None:  # torch accepts any cpu index
        return
    assert_one_line(code, err, needle)


def test_tokenizer_json_whose_model_is_not_an_object_is_one_line(tiny_bases, tmp_path, capsys):
    folder = copy_of(tiny_bases["llama"], tmp_path / "base")
    data = json.loads((folder / "tokenizer.json").read_text())
    data["model"] = ["not", "an", "object"]
    (folder / "tokenizer.json").write_text(json.dumps(data))
    code, _, err = run_cli(["export", folder, "--output", tmp_path / "out"], capsys)
    assert_one_line(code, err, "'model' is not a JSON object")


def test_local_task_whose_task_json_is_not_an_object_is_one_line(exported, tmp_path, capsys):
    pytest.importorskip("mteb")
    task = tmp_path / "task"
    task.mkdir()
    (task / "task.json").write_text("[]")
    code, _, err = run_cli(["eval", exported("llama"), "--tasks", task, "--output", tmp_path / "results"], capsys)
    assert_one_line(code, err, "task.json must be a JSON object")


def test_lone_surrogate_is_refused_in_the_pre_pass_and_by_the_api(model_for_api, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "fine"}\n{"text": "bad \\ud800 text"}\n')
    code, _, err = run_cli(["encode", tmp_path / "no-model", "--input", rows, "--output", tmp_path / "v.npy"], capsys)
    assert_one_line(code, err, "rows.jsonl:2", "surrogate")
    with pytest.raises(ValueError, match="surrogate"):
        model_for_api.encode(["fine", "bad \ud800 text"], show_progress_bar=False)


@pytest.fixture(scope="module")
def model_for_api(exported):
    return LLM2Vec.from_pretrained(str(exported("llama")))


# ---------------------------------------------------------------------------------------------------------------
# 10. Input rows: unknown keys, line endings as Python reads text
# ---------------------------------------------------------------------------------------------------------------
def test_a_misspelled_jsonl_key_is_one_line_naming_the_close_one(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a"}\n{"text": "b", "instructions": "Retrieve"}\n')
    code, _, err = run_cli(["encode", tmp_path / "no-model", "--input", rows, "--output", tmp_path / "v.npy"], capsys)
    assert_one_line(code, err, "rows.jsonl:2", "'instructions' (did you mean 'instruction'?)")


@pytest.mark.parametrize("ending", ["\r", "\r\n", "\n"])
def test_line_endings_are_read_as_python_reads_text(tmp_path, ending):
    from llm2vec_hf.encoding.inputs import count_inputs, iter_inputs

    path = tmp_path / "texts.txt"
    path.write_bytes(ending.join(["one", "two", "three"]).encode() + ending.encode())
    assert [item for item, _, _ in iter_inputs(str(path))] == ["one", "two", "three"]
    assert count_inputs(str(path)) == 3
    with open(path, encoding="utf-8") as handle:  # Python's own reading, universal newlines
        assert [line.rstrip("\n") for line in handle] == ["one", "two", "three"]


# ---------------------------------------------------------------------------------------------------------------
# 12 and 14. Recipes: keys given twice, lora_alpha 0, YAML syntax errors at file:line, a rank beyond the layer
# ---------------------------------------------------------------------------------------------------------------
def test_a_key_given_twice_in_a_recipe_is_an_error(tmp_path):
    from llm2vec_hf.training import parse_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stage: simcse\nmodel_name_or_path: x\nlora_r: 8\noutput_dir: out\ntrain_file: t.txt\nlora_r: 16\n")
    with pytest.raises(ValueError, match=r"recipe.yaml:6: .*'lora_r' is given twice"):
        parse_recipe(str(recipe))


def test_yaml_syntax_error_is_one_line_with_file_and_line(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stage: simcse\nmodel_name_or_path: x\nlora_r: [8\noutput_dir: out\n")
    code, _, err = run_cli(["train", recipe], capsys)
    assert_one_line(code, err, f"{recipe}:")
    assert re.search(r"recipe\.yaml:\d+: not valid YAML", err), err


@pytest.mark.parametrize("override,needle", [(["--lora_alpha", "0"], "lora_alpha must be a positive integer"),
                                             (["--lora_r", "100000000"], "lora_r 100000000 is more than the width")])
def test_lora_settings_that_cannot_train_are_one_line(tiny_bases, tmp_path, capsys, override, needle):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a text to train on\n" * 16)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"stage: simcse\nmodel_name_or_path: {tiny_bases['llama']}\ntrain_file: {corpus}\n"
                      f"output_dir: {tmp_path / 'run'}\nmax_steps: 1\nuse_cpu: true\nreport_to: none\n")
    code, _, err = run_cli(["train", recipe, *override], capsys)
    assert_one_line(code, err, needle)
    assert not (tmp_path / "run" / "adapter_model.safetensors").exists()


@FUZZ
@given(lines=st.lists(st.sampled_from(["one", "two words", "日本", " x "]), min_size=1, max_size=12),
       endings=st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=12, max_size=12),
       per_shard=st.integers(1, 5), scan=st.integers(1, 16), last_ending=st.booleans())
def test_ray_shards_read_the_lines_the_local_reader_reads(tmp_path_factory, lines, endings, per_shard, scan,
                                                          last_ending):
    """`encode --engine ray` plans byte ranges by counting line endings in blocks (a \\r\\n may straddle two) and
    reads each range on its own: together they give the local reader's rows and line numbers, whatever the endings."""
    import llm2vec_hf.encoding.ray_engine as encode_ray
    from llm2vec_hf.encoding.inputs import iter_inputs

    path = tmp_path_factory.mktemp("ray") / "texts.txt"
    text = "".join(line + ending for line, ending in zip(lines, endings))
    path.write_bytes((text if last_ending else text[: -len(endings[len(lines) - 1])]).encode())
    local = [(item, number - 1) for item, _, number in iter_inputs(str(path))]
    original, encode_ray.SCAN_BYTES = encode_ray.SCAN_BYTES, scan
    try:
        shards = encode_ray.plan_text_shards(str(path), per_shard)
    finally:
        encode_ray.SCAN_BYTES = original
    rows = []
    for shard in shards:
        batch = encode_ray.read_text_shard({key: [value] for key, value in shard.items()})
        rows += list(zip(batch["text"].tolist(), batch["line"].tolist()))
    assert rows == local == [(line, i + 1) for i, line in enumerate(lines)]


def test_jsonl_ids_reach_the_ray_shards_as_columns(tmp_path):
    """`encode --engine ray` carries a .jsonl's other keys as id columns (as Parquet's other columns); every record
    carries the first record's keys; a key close to 'instruction' is refused rather than carried."""
    from llm2vec_hf.encoding.ray_engine import plan_text_shards, read_text_shard
    from llm2vec_hf.encoding.inputs import jsonl_id_keys
    from llm2vec_hf.errors import LLM2VecError

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"doc_id": "d1", "text": "one", "n": 3}\n{"text": "two", "doc_id": "d2", "n": [1]}\n')
    keys = jsonl_id_keys(str(rows))
    assert keys == ["doc_id", "n"]
    batch = read_text_shard({**{k: [v] for k, v in plan_text_shards(str(rows), 10)[0].items()},
                             "id_keys": [json.dumps(keys)]})
    assert batch["doc_id"].tolist() == ["d1", "d2"] and batch["n"].tolist() == ["3", "[1]"]
    assert batch["text"].tolist() == ["one", "two"]
    rows.write_text('{"doc_id": "d1", "text": "one"}\n{"text": "two"}\n')
    with pytest.raises(LLM2VecError, match="rows.jsonl:2: no 'doc_id'"):
        read_text_shard({**{k: [v] for k, v in plan_text_shards(str(rows), 10)[0].items()},
                         "id_keys": [json.dumps(jsonl_id_keys(str(rows)))]})
    rows.write_text('{"text": "one", "instructions": "Retrieve"}\n')
    with pytest.raises(LLM2VecError, match="did you mean 'instruction'"):
        jsonl_id_keys(str(rows))
