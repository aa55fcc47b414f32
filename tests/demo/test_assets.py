"""The assets shipped for the offline demo: the embedded default model and the WordNet/pydoc demo data."""

from __future__ import annotations

import json

import pytest
import torch

from llm2vec_hf.demo import assets as default_assets
from llm2vec_hf.demo.assets import (
    DEMO_FILES,
    WORDNET_INSTRUCTION,
    default_model_path,
    demo_data_path,
    load_eval_task,
    load_pairs,
    unlabeled_texts,
)


def test_files_exist_parse_and_are_small():
    folder = demo_data_path()
    assert (folder / "README.md").is_file()
    total = 0
    for name in DEMO_FILES:
        path = demo_data_path(name)
        total += path.stat().st_size
        if name.endswith(".jsonl"):
            for line in path.read_text(encoding="utf-8").splitlines():
                json.loads(line)
    assert total <= 3_300_000  # package data: the wheel carries it
    with pytest.raises(FileNotFoundError):
        demo_data_path("missing.jsonl")


def test_eval_task_shape():
    queries, docs, qrels = load_eval_task()
    assert 1000 <= len(queries) == len(docs) == len(qrels)
    assert set(qrels) == set(queries)
    assert all(len(rel) == 1 and set(rel.values()) == {1} for rel in qrels.values())
    assert {d for rel in qrels.values() for d in rel} == set(docs)  # 1:1
    assert all(text.strip() for text in [*queries.values(), *docs.values()])
    assert len(set(docs.values())) == len(docs) and len(set(queries.values())) == len(queries)


def test_pairs_shape():
    rows = load_pairs()
    assert len(rows) >= 2000
    assert load_pairs(limit=5) == rows[:5]
    for row in rows:
        assert set(row) >= {"query", "positive", "negative", "instruction", "dataset"}
        assert row["instruction"] == WORDNET_INSTRUCTION and row["dataset"] == "wordnet"
        assert row["positive"] != row["negative"] and all(row[k].strip() for k in ("query", "positive", "negative"))
        assert '"' not in row["positive"][:1] + row["positive"][-1:]


def _definition(query: str) -> str:
    """The definition part of a query ``words (part of speech): definition``."""
    head, separator, definition = query.partition("): ")
    assert separator and " (" in head, query
    return definition


def test_queries_name_their_words_and_sense():
    queries, _, _ = load_eval_task()
    for query in [*queries.values(), *(row["query"] for row in load_pairs())]:
        words, _, pos = query.partition("): ")[0].rpartition(" (")
        assert words and pos in ("noun", "verb", "adjective", "adverb"), query
        assert len(_definition(query).split()) >= 3


def test_eval_texts_appear_nowhere_in_training_data():
    queries, docs, _ = load_eval_task()
    eval_texts = {t.lower() for t in [*queries.values(), *map(_definition, queries.values()), *docs.values()]}
    train_texts = {row[k].lower() for row in load_pairs() for k in ("query", "positive", "negative")}
    assert not eval_texts & train_texts
    unlabeled = "\n".join(unlabeled_texts()).lower()
    leaked = [t for t in eval_texts if len(t.split()) >= 3 and t in unlabeled]
    assert not leaked, leaked[:5]
    rows = [json.loads(l) for l in demo_data_path("wordnet_eval.jsonl").read_text().splitlines()]
    eval_synsets = {row["synset"] for row in rows}
    assert len(eval_synsets) == len(rows)


def test_unlabeled_texts():
    texts = unlabeled_texts()
    assert len(texts) >= 5000 and all(t.strip() for t in texts)
    assert unlabeled_texts(limit=10) == texts[:10]


def test_default_model_files():
    path = default_model_path()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (path / name).is_file(), name
    assert (path / "model.safetensors").stat().st_size <= 12_000_000
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    assert config["vocab_size"] == 4096


def test_default_tokenizer_adds_bos():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == ("<s>", "</s>", "<unk>")
    ids = tokenizer("a definition of a word")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and tokenizer.bos_token_id not in ids[1:]


def _first_token_moves(llm2vec) -> bool:
    model = llm2vec.model.eval()
    ids = torch.tensor([[1, 200, 300, 400, 500, 600]])
    edited = ids.clone()
    edited[0, -1] = 700
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0, 0]
        after = model(input_ids=edited, attention_mask=torch.ones_like(ids)).last_hidden_state[0, 0]
    return (before - after).abs().max().item() > 1e-5


def test_default_model_loads_bidirectional_through_llm2vec():
    from llm2vec_hf import LLM2Vec

    bidirectional = LLM2Vec.from_pretrained(str(default_model_path()), pooling_mode="mean")
    assert _first_token_moves(bidirectional)
    causal = LLM2Vec.from_pretrained(str(default_model_path()), enable_bidirectional=False, pooling_mode="weighted_mean")
    assert not _first_token_moves(causal)
    vectors = bidirectional.encode([[WORDNET_INSTRUCTION, "a small domesticated carnivore"], "the cat sat"],
                                   show_progress_bar=False)
    assert vectors.shape == (2, bidirectional.model.config.hidden_size) and torch.isfinite(vectors).all()


def test_default_model_is_pretrained_not_random():
    log = json.loads((default_model_path() / "training_log.json").read_text())
    assert log["final_held_out_loss"] < log["initial_held_out_loss"] - 2.0


def test_module_paths_are_inside_the_package():
    assert default_model_path().parent == demo_data_path().parent == default_assets._HERE
