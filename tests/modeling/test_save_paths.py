"""Checkpoints survive the ecosystem's own save paths: ``SentenceTransformer.save_pretrained``, ``push_to_hub`` (to the
Hub-compatible server on loopback, tests/helpers/fake_hub.py) and a ``SentenceTransformerTrainer`` run.

After each, the folder is again what ``export`` writes: the native ``architectures`` and the serving flags, the
``llm2vec`` settings with llm2vec_config.json derived from them, the remote code, the ``requirements`` guard and
TEI's pooling config; ``llm2vec-hf push`` accepts it; and it loads through AutoModel (remote code only),
SentenceTransformer and ``llm2vec_hf.LLM2Vec`` with the same vectors.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants

from llm2vec_hf import LLM2Vec
from llm2vec_hf.errors import CheckpointError
from llm2vec_hf.checkpoint.hub import check_checkpoint
from llm2vec_hf.modeling.sentence_transformers_llm2vec import MODELING_FILES

from helpers.hub_cache import hub_cache_with
from helpers.processes import remote_code_vectors
from helpers.samples import SAMPLE_INPUTS
from helpers.fake_hub import TOKEN, FakeHub

TOL = 1e-4
TEXTS = [x for x in SAMPLE_INPUTS if isinstance(x, str)]


def _sentence_transformer(folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), trust_remote_code=True)


def _assert_is_a_checkpoint(folder: Path, exported: Path, pushable: bool = True) -> None:
    """The files `export` writes, with the exported checkpoint's settings."""
    config = json.loads((folder / "config.json").read_text())
    original = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == original["architectures"] == ["LlamaModel"]
    assert config["is_causal"] is False and config["use_bidirectional_attention"] is True
    assert config["auto_map"] == original["auto_map"]
    assert config["llm2vec"] == original["llm2vec"]
    assert json.loads((folder / "llm2vec_config.json").read_text()) == json.loads(
        (exported / "llm2vec_config.json").read_text())
    for name in MODELING_FILES:
        assert (folder / name).read_text() == (exported / name).read_text()
    st_config = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert st_config["requirements"] == json.loads((exported / "config_sentence_transformers.json").read_text())[
        "requirements"]
    assert json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"] == config["llm2vec"][
        "max_length"]
    assert json.loads((folder / "1_Pooling" / "config.json").read_text()) == json.loads(
        (exported / "1_Pooling" / "config.json").read_text())
    if pushable:
        check_checkpoint(folder)  # what `llm2vec-hf push` checks before it uploads


def _three_ways(folders: dict[str, Path], tmp_path: Path) -> dict[str, dict[str, np.ndarray]]:
    remote = remote_code_vectors({k: str(v) for k, v in folders.items()}, {k: SAMPLE_INPUTS for k in folders},
                                 tmp_path / "remote.npz")
    result = {}
    for key, folder in folders.items():
        library = LLM2Vec.from_pretrained(str(folder)).encode(SAMPLE_INPUTS, show_progress_bar=False,
                                                              convert_to_numpy=True)
        st = _sentence_transformer(folder).encode(TEXTS, convert_to_numpy=True)
        result[key] = {"library": library, "remote": remote[key], "st": st}
    return result


def _assert_same_vectors(vectors: dict[str, np.ndarray], expected: np.ndarray) -> None:
    rows = [i for i, x in enumerate(SAMPLE_INPUTS) if isinstance(x, str)]
    assert np.abs(vectors["library"] - expected).max() <= TOL
    assert np.abs(vectors["remote"] - expected).max() <= TOL
    assert np.abs(vectors["st"] - expected[rows]).max() <= TOL


@pytest.mark.slow
def test_save_pretrained_and_push_to_hub_keep_the_checkpoint(exported, hub_env, tmp_path, capsys,  # noqa: F811
                                                              monkeypatch):
    source = exported("llama", "mean")
    expected = LLM2Vec.from_pretrained(str(source)).encode(SAMPLE_INPUTS, show_progress_bar=False,
                                                           convert_to_numpy=True)
    model = _sentence_transformer(source)
    resaved = tmp_path / "resaved"
    model.save_pretrained(str(resaved))
    _assert_is_a_checkpoint(resaved, source)
    assert (resaved / "README.md").read_text() == (source / "README.md").read_text()  # the LLM2Vec card, kept
    tokenizer_config = json.loads((resaved / "tokenizer_config.json").read_text())
    assert "local_files_only" not in tokenizer_config and "is_local" not in tokenizer_config  # load options

    with FakeHub(TOKEN) as hub:
        constants.ENDPOINT = hub.endpoint  # restored by monkeypatch (hub_env)
        # push_to_hub asks the repo for an existing README.md with a download URL fixed at import time
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        model.push_to_hub("org/pushed-by-st", token=TOKEN)
        pushed = tmp_path / "pushed"  # the repo as the hub holds it
        for name, content in hub.repos["org/pushed-by-st"].branches["main"].items():
            (pushed / name).parent.mkdir(parents=True, exist_ok=True)
            (pushed / name).write_bytes(content)
        _assert_is_a_checkpoint(pushed, source)
        card = (pushed / "README.md").read_text()
        assert 'SentenceTransformer("org/pushed-by-st", trust_remote_code=True)' in card
        # and llm2vec-hf push takes the re-saved folder as it takes an export
        from llm2vec_hf import cli

        assert cli.main(["push", str(resaved), "--repo-id", "org/pushed-again"]) == 0, capsys.readouterr().err
        assert "config.json" in hub.repos["org/pushed-again"].branches["main"]

    vectors = _three_ways({"resaved": resaved, "pushed": pushed}, tmp_path)
    for key in ("resaved", "pushed"):
        _assert_same_vectors(vectors[key], expected)


@pytest.mark.slow
def test_sentence_transformer_trainer_output_keeps_the_checkpoint(tiny_bases, tmp_path):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from llm2vec_hf.checkpoint.export import export_checkpoint

    # exported from a Hub-cache snapshot, so that the card names a real base model
    base = hub_cache_with("llm2vec-test/tiny-llama-base", tiny_bases["llama"], tmp_path / "hub")
    snapshot = next((base / "models--llm2vec-test--tiny-llama-base" / "snapshots").iterdir())
    source = Path(export_checkpoint(str(snapshot), str(tmp_path / "exported"), pooling_mode="mean", max_length=48))
    assert "base_model: llm2vec-test/tiny-llama-base" in (source / "README.md").read_text()

    model = _sentence_transformer(source)
    data = Dataset.from_dict({
        "anchor": ["how do transformers attend?", "what is a dog?", "where is the lazy fox?", "define attention"],
        "positive": ["Attention weighs every token.", "A dog is an animal.", "The fox sleeps.", "Attention is focus."],
    })
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3,
        use_cpu=True, report_to=[], save_strategy="no", logging_steps=1,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                         loss=MultipleNegativesRankingLoss(model))
    before = model.encode(TEXTS, convert_to_numpy=True)
    trainer.train()
    trained = tmp_path / "trained"
    trainer.save_model(str(trained))
    after = model.encode(TEXTS, convert_to_numpy=True)
    assert np.abs(after - before).max() > 1e-4  # the run changed the weights

    # the Trainer adds its arguments as a pickle, which push refuses (by name); the model's own save is clean
    _assert_is_a_checkpoint(trained, source, pushable=False)
    with pytest.raises(CheckpointError, match=r"Refusing to upload .*: training_args.bin \(pickle"):
        check_checkpoint(trained)
    (trained / "training_args.bin").unlink()
    check_checkpoint(trained)
    final = tmp_path / "final"
    model.save_pretrained(str(final))
    _assert_is_a_checkpoint(final, source)
    card = (trained / "README.md").read_text()
    assert "generated_from_trainer" in card  # sentence-transformers' own card of the run
    assert re.search(r'model = SentenceTransformer\("[^"]+", trust_remote_code=True\)', card)
    assert "base_model: llm2vec-test/tiny-llama-base" in card
    assert "finetuned from [llm2vec-test/tiny-llama-base]" in card and "[LLM2Vec]" in card

    assert "base_model: llm2vec-test/tiny-llama-base" in (final / "README.md").read_text()
    vectors = _three_ways({"trained": trained, "final": final}, tmp_path)
    for key in ("trained", "final"):
        _assert_same_vectors(vectors[key], vectors["trained"]["library"])
        assert np.abs(vectors[key]["st"] - after).max() <= TOL
    shutil.rmtree(tmp_path / "run", ignore_errors=True)
