"""The model card every export writes: HF metadata that parses, usage for each loading path, training facts from
the run, evaluation results in the model-index."""

from __future__ import annotations

import json
import re
import shutil
import types
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, metadata_load

from helpers.samples import FIXTURES, REPO
from llm2vec_hf.checkpoint.export import export_checkpoint
from llm2vec_hf.checkpoint.model_card import (
    MODEL_ID_PLACEHOLDER,
    add_evaluation_results,
    hub_repo_id,
    render_model_card,
    with_model_id,
)
from llm2vec_hf.modeling.encoding_settings import EncodingSettings

MIGRATION = FIXTURES / "reference" / "migration"
PLACEHOLDER = re.compile(r"\$\{?[A-Za-z_]\w*")


def test_exported_card_parses_with_hub_metadata_and_usage(exported):
    folder = exported("llama", "mean")
    text = (folder / "README.md").read_text()
    card = ModelCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "sentence-transformers"
    assert data["pipeline_tag"] == "sentence-similarity"
    assert {"llm2vec", "sentence-transformers", "feature-extraction", "llama"} <= set(data["tags"])
    assert data["license"] and data["language"] == ["en"]
    assert "model-index" not in metadata_load(folder / "README.md")  # no results recorded: no model-index
    # a base given as a plain local folder has no Hub id, so base_model is left out rather than leak a path
    assert "base_model" not in data and str(folder.parent) not in text
    assert not PLACEHOLDER.search(text), PLACEHOLDER.search(text)
    # usage for every loading path, with the stored named prompt
    for snippet in ('SentenceTransformer("PATH_OR_REPO_ID", trust_remote_code=True)', 'prompt_name="query"',
                    'AutoModel.from_pretrained("PATH_OR_REPO_ID", trust_remote_code=True)',
                    'LLM2Vec.from_pretrained("PATH_OR_REPO_ID")', "text-embeddings-router",
                    "--io-processor-plugin llm2vec"):
        assert snippet in text
    assert "| max_length | 48 |" in text and "| doc_max_length | 40 |" in text and "| pooling_mode | `mean` |" in text
    assert re.search(r"guaranteed bidirectional on transformers >= 5\.\d+\.\d+ \(", text)
    assert "exported with transformers " in text
    assert "arXiv:2404.05961" in text and "## Limitations" in text
    assert "No contrastive or MNTP training" in text  # no adapters merged


def _copy_adapter(src: Path, dst: Path, **extra_files) -> Path:
    shutil.copytree(src, dst)
    for name, content in extra_files.items():
        (dst / name).write_text(json.dumps(content))
    return dst


def test_card_carries_training_facts_of_the_run(tmp_path):
    # the base sits in a Hub-cache snapshot folder (as snapshot_download leaves it) with its own card
    base = tmp_path / "hub" / "models--llm2vec-hf-fixtures--tiny-random-llama" / "snapshots" / "0123abcd"
    shutil.copytree(MIGRATION / "base", base)
    (base / "README.md").write_text("---\nlicense: apache-2.0\nlanguage:\n- fr\n---\n# base\n")
    mntp = _copy_adapter(MIGRATION / "mntp", tmp_path / "runs" / "tiny-mntp", **{
        "trainer_state.json": {"global_step": 120, "train_batch_size": 8, "num_train_epochs": 1,
                               "log_history": [{"loss": 2.5, "step": 60}, {"loss": 1.25, "step": 120}]},
    })
    supervised = _copy_adapter(MIGRATION / "supervised", tmp_path / "runs" / "tiny-supervised", **{
        "llm2vec_training.json": {"stage": "supervised", "datasets": ["org/e5-public: subset"], "steps": 50,
                                  "hyperparameters": {"learning_rate": 0.0002, "loss_scale": 20},
                                  "final_loss": 0.75},
    })
    # a run of `llm2vec-hf train`: train_results.json names its recipe; the folder name says nothing
    recipe = tmp_path / "simcse.yaml"
    recipe.write_text("stage: simcse\ndataset_name: wikitext\ndataset_config_name: wikitext-103-raw-v1\n"
                      "learning_rate: 3.0e-4\nlora_r: 4\nloss_scale: 20\noutput_dir: /secret/runs/x\n"
                      "logging_steps: 5\n")
    simcse = _copy_adapter(MIGRATION / "mntp", tmp_path / "runs" / "run-3", **{
        "train_results.json": {"stage": "simcse", "base": "b", "adapters": [], "recipe": str(recipe),
                               "train_loss": 1.5},
    })
    out = export_checkpoint(str(base), str(tmp_path / "out"), adapters=[str(mntp), str(supervised), str(simcse)])
    text = Path(out, "README.md").read_text()
    data = ModelCard.load(Path(out, "README.md")).data.to_dict()
    assert data["base_model"] == "llm2vec-hf-fixtures/tiny-random-llama"
    assert data["datasets"] == ["org/e5-public: subset", "wikitext"]  # a colon in a value stays valid YAML
    assert data["license"] == "apache-2.0" and data["language"] == ["fr"]  # inherited from the base's card
    rows = [line for line in text.splitlines() if line.startswith(("| 1 |", "| 2 |", "| 3 |"))]
    assert len(rows) == 3
    mntp_row, supervised_row, simcse_row = rows
    assert "SimCSE" in simcse_row and "`run-3`" in simcse_row and "`wikitext`" in simcse_row
    assert "`learning_rate=0.0003`" in text and "`lora_r=4`" in text and "`mean_train_loss=1.5`" in text
    assert "`dataset_config_name=wikitext-103-raw-v1`" in text
    assert "/secret/runs" not in text and "logging_steps" not in text  # bookkeeping is not a hyperparameter
    assert "MNTP" in mntp_row and "`tiny-mntp`" in mntp_row and "4 / 8 / 0.05" in mntp_row
    assert "| 120 | 1.25 |" in mntp_row and "`q_proj`" in mntp_row
    assert "supervised contrastive" in supervised_row and "| 50 | 0.75 |" in supervised_row
    assert "`org/e5-public: subset`" in supervised_row
    assert "`learning_rate=0.0002`" in text and "`loss_scale=20`" in text and "`train_batch_size=8`" in text
    assert str(tmp_path) not in text  # local paths are not published
    # llm2vec_config.json of the last adapter (pooling, lengths) is what the card reports
    assert "| max_length | 64 |" in text and "| doc_max_length | 48 |" in text


def test_evaluation_results_go_into_model_index_and_table(exported, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(exported("llama", "mean"), folder)
    retrieval = {"task_type": "retrieval", "task_name": "Retrieval", "dataset_type": "local/wordnet-definitions",
                 "dataset_name": "WordNet definitions", "dataset_split": "test", "metric_type": "ndcg_at_10",
                 "metric_value": 0.42}
    add_evaluation_results(folder, [retrieval], model_name="tiny-llm2vec")
    raw = metadata_load(folder / "README.md")
    index = raw["model-index"]
    assert index[0]["name"] == "tiny-llm2vec"
    result = index[0]["results"][0]
    assert result["task"]["type"] == "retrieval" and result["dataset"]["type"] == "local/wordnet-definitions"
    assert result["metrics"][0] == {"type": "ndcg_at_10", "value": 0.42}
    text = (folder / "README.md").read_text()
    assert "| Retrieval | WordNet definitions | test | ndcg_at_10 | 0.42 |" in text
    assert "No evaluation results were recorded" not in text

    # the same (task, dataset, split, metric) replaces; a new metric adds
    sts = {"task_type": "sts", "dataset_type": "local/sts", "dataset_name": "STS pairs", "metric_type": "spearman",
           "metric_value": 0.61}
    add_evaluation_results(folder, [dict(retrieval, metric_value=0.5), sts])
    card = ModelCard.load(folder / "README.md")
    values = sorted((e.metric_type, e.metric_value) for e in card.data.eval_results)
    assert values == [("ndcg_at_10", 0.5), ("spearman", 0.61)]
    text = card.text
    assert text.count("| Retrieval | WordNet definitions |") == 1 and "| sts | STS pairs |" in text
    # the rest of the card survives the rewrite
    assert "## Usage" in text and "SentenceTransformer(" in text and card.data.library_name == "sentence-transformers"


def test_render_with_evaluation_and_model_id(exported):
    from transformers import AutoConfig

    folder = exported("llama", "mean")
    config = AutoConfig.from_pretrained(folder)
    model = types.SimpleNamespace(config=config, parameters=lambda: iter([torch.zeros(1)]))
    settings = EncodingSettings.from_dict(json.loads((folder / "config.json").read_text())["llm2vec"]).replace(
        text_template="<|start_header_id|>user<|end_header_id|>\n\n{text}<|eot_id|>")
    evaluation = [{"task_type": "sts", "dataset_type": "mteb/stsbenchmark-sts", "dataset_name": "STSBenchmark",
                   "metric_type": "cosine_spearman", "metric_value": 77.5, "dataset_split": "test"}]
    text = render_model_card(model, settings, {}, {"base_model": "org/base", "adapters": []}, evaluation=evaluation)
    card = ModelCard(text)
    assert card.data.base_model == "org/base"
    assert card.data.eval_results[0].metric_value == 77.5 and card.data.model_name == "llm2vec-base"
    # the template sits in a table row: its "|" are escaped, so the row keeps its two cells
    row = next(line for line in text.splitlines() if line.startswith("| text template |"))
    assert row == "| text template | `<\\|start_header_id\\|>user<\\|end_header_id\\|>\\n\\n{text}<\\|eot_id\\|>` |"
    assert len(re.split(r"(?<!\\)\|", row)) == 4
    # no stored prompt: the usage passes the instruction itself
    assert 'prompt="Given a web search query, retrieve relevant passages that answer the query "' in text
    published = with_model_id(text, "org/llm2vec-base")
    assert MODEL_ID_PLACEHOLDER not in published
    assert 'SentenceTransformer("org/llm2vec-base", trust_remote_code=True)' in published
    assert "text-embeddings-router --model-id org/llm2vec-base" in published


@pytest.mark.parametrize(
    "name, expected",
    [
        ("McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp", "McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp"),
        ("/nonexistent/models--org--name/snapshots/abc", None),  # not a folder and not a repo id
        ("bad--id/x", None),
        ("", None),
    ],
)
def test_hub_repo_id(name, expected):
    assert hub_repo_id(name) == expected


def test_hub_repo_id_of_cache_snapshot(tmp_path):
    snapshot = tmp_path / "models--org--my.model" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    assert hub_repo_id(snapshot) == "org/my.model"
    assert hub_repo_id(tmp_path) is None


def test_template_front_matter_holds_the_fixed_metadata():
    """The template names the fixed metadata (what every card carries); the rest comes from ModelCardData."""
    template = ModelCard((REPO / "MODEL_CARD_TEMPLATE.md").read_text())
    assert template.data.library_name == "sentence-transformers" and template.data.pipeline_tag == "sentence-similarity"
    assert {"llm2vec", "sentence-transformers", "feature-extraction"} <= set(template.data.tags)
    assert not PLACEHOLDER.search(template.content.split("---")[1])  # no $placeholders in the YAML


def test_package_template_is_the_top_level_template():
    from importlib import resources

    top = (REPO / "MODEL_CARD_TEMPLATE.md").read_text()
    assert resources.files("llm2vec_hf.checkpoint").joinpath("MODEL_CARD_TEMPLATE.md").read_text() == top


def _settings(pooling_mode, **overrides):
    return EncodingSettings(pooling_mode=pooling_mode, text_template="", eos_text=" </s>").replace(**overrides)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2"])
@pytest.mark.parametrize("pooling_mode", ["mean", "weighted_mean", "eos_token", "last_token", "bos_token"])
def test_serving_section_for_every_family_and_pooling_mode(family, pooling_mode):
    from llm2vec_hf.checkpoint.model_card import serving_section

    text = serving_section(family, _settings(pooling_mode), "org/x")
    if family.startswith("gemma"):  # absent from TEI; bidirectional on vLLM only through its Transformers backend
        assert "TEI has no" in text and "cannot serve this checkpoint" in text
        assert "--io-processor-plugin llm2vec --dtype float32 --model-impl transformers" in text
        assert "text-embeddings-router" not in text
        return
    assert "--model org/x --runner pooling --io-processor-plugin llm2vec --dtype float32\n" in text
    assert "/v1/embeddings" in text
    assert ("CPU and CUDA" if family == "qwen3" else "CUDA only") in text
    assert ("`is_causal`" if family == "qwen2" else "`use_bidirectional_attention`") in text
    expected_flag = {"mean": "mean", "weighted_mean": "mean", "eos_token": "last-token", "last_token": "last-token",
                     "bos_token": "cls"}[pooling_mode]
    assert f"text-embeddings-router --model-id org/x --pooling {expected_flag}" in text
    # with the default doc_max_length (400 < 512) no mode is exact on TEI, and the card says why
    assert "TEI is not exact for this checkpoint" in text and "equal these" not in text


@pytest.mark.parametrize("pooling_mode,flag", [("last_token", "last-token"), ("bos_token", "cls")])
def test_serving_section_says_when_tei_is_exact(pooling_mode, flag):
    from llm2vec_hf.checkpoint.model_card import serving_section

    exact = serving_section("qwen3", _settings(pooling_mode, doc_max_length=512), "org/x")
    assert f"--pooling {flag}" in exact and "equal these" in exact and "TEI is not exact" not in exact
    templated = serving_section("qwen3", _settings(pooling_mode, doc_max_length=512, text_template="[INST] {text}"),
                                "org/x")
    assert "TEI is not exact" in templated and "template" in templated
    eos = serving_section("llama", _settings("eos_token", doc_max_length=512), "org/x")
    assert "TEI is not exact" in eos and "' </s>'" in eos
    assert "equal these" in serving_section("llama", _settings("eos_token", doc_max_length=512, eos_text=""), "org/x")
    # pooling every token (no skip_instruction) is what TEI's mean does
    assert "equal these" in serving_section("llama", _settings("mean", doc_max_length=512, skip_instruction=False),
                                            "org/x")


def test_serving_section_works_as_written_for_a_reader_of_the_hub():
    """Every vLLM command names the weights' dtype, a /pooling request is shown, links open on the Hub (no
    relative docs/ link: a checkpoint carries no docs/ folder), head_dim below vLLM's CPU minimum is said, and TEI's
    instruction advice names a stored prompt only when there is one."""
    from llm2vec_hf.checkpoint.model_card import DOCS_URL, serving_section

    text = serving_section("llama", _settings("last_token", doc_max_length=512), "org/x", dtype="bfloat16",
                           prompts={}, head_width=8)
    commands = [line for line in text.splitlines() if "api_server" in line]
    assert commands and all("--dtype bfloat16" in line for line in commands)
    assert "localhost:8000/pooling" in text and '"data": ["a text", [' in text
    assert "**Precision.**" in text and "float16" in text
    assert f"]({DOCS_URL}/serving.md)" in text and DOCS_URL.startswith("https://")
    assert not re.search(r"(?<![/\w])docs/serving\.md", text.replace(DOCS_URL + "/serving.md", ""))
    assert "head_dim of at least 32" in text and "is 8" in text
    assert "prompt_name" not in text and "followed by one space" in text
    stored = serving_section("llama", _settings("last_token", doc_max_length=512), "org/x", prompts={"query": "Q "},
                             head_width=64)
    assert "stored `prompt_name` (`query`" in stored and "head_dim" not in stored


def test_export_warns_about_a_small_head_dim_and_the_card_says_it(tiny_bases, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="llm2vec_hf.checkpoint.export"):
        folder = export_checkpoint(str(tiny_bases["llama"]), str(tmp_path / "out"), st_modules="remote")
    assert any("head_dim >= 32" in record.getMessage() for record in caplog.records)
    card = (Path(folder) / "README.md").read_text()
    assert "head_dim of at least 32" in card and "--dtype float32" in card
