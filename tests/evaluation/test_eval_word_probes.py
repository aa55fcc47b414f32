"""Word-level probes on a small local CoNLL-format file (no mteb needed).

Checks the pieces against direct computations: words map to exactly their tokens, a word's feature is the mean of
its tokens' vectors (or of the vectors one position earlier with the MNTP shift), causal probing is causal, and
the linear probe learns POS tags from a random tiny model's features better than the majority label.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from llm2vec_hf import cli
from llm2vec_hf.evaluation.word_probes import (
    TASKS,
    Sentence,
    load_word_data,
    read_conll,
    run_word_probes,
    word_features,
    word_token_positions,
)
from llm2vec_hf.errors import LLM2VecError
from llm2vec_hf.llm2vec import LLM2Vec

CONLL = Path(__file__).resolve().parents[1] / "fixtures" / "eval" / "conll"


@pytest.fixture(scope="module")
def checkpoint(exported) -> Path:
    return exported("llama", "mean")


@pytest.fixture(scope="module")
def encoder(checkpoint) -> LLM2Vec:
    return LLM2Vec.from_pretrained(str(checkpoint))


def test_read_conll():
    train, test = read_conll(CONLL / "train.txt"), read_conll(CONLL / "test.txt")
    assert (len(train), len(test)) == (70, 30)
    first = test[0]
    assert first.words[:3] == ["The", "large", "report"]
    assert first.tags["pos"][:3] == ["DT", "JJ", "NN"]
    assert first.tags["chunk"][:3] == ["B-NP", "I-NP", "I-NP"]
    assert "B-LOC" in first.tags["ner"] and len(first.tags["ner"]) == len(first.words)


def test_dataset_path_reads_conll2003_columns(tmp_path):
    """The Hugging Face dataset path, fed offline: CoNLL-2003's columns (class ids with names) in parquet files."""
    datasets = pytest.importorskip("datasets", reason="datasets is not installed (it comes with the [eval] extra)")
    splits = {"train": read_conll(CONLL / "train.txt"), "test": read_conll(CONLL / "test.txt")}
    names = {task: sorted({t for s in splits["train"] + splits["test"] for t in s.tags[task]}) for task in TASKS}
    features = datasets.Features(
        {"tokens": datasets.Sequence(datasets.Value("string")),
         **{TASKS[task][1]: datasets.Sequence(datasets.ClassLabel(names=names[task])) for task in TASKS}}
    )
    for split, sentences in splits.items():
        rows = {"tokens": [s.words for s in sentences],
                **{TASKS[t][1]: [[names[t].index(tag) for tag in s.tags[t]] for s in sentences] for t in TASKS}}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / f"{split}.parquet"))
    train, test, name = load_word_data(str(tmp_path))
    assert name == tmp_path.name
    assert [(s.words, s.tags) for s in train] == [(s.words, s.tags) for s in splits["train"]]
    assert [(s.words, s.tags) for s in test] == [(s.words, s.tags) for s in splits["test"]]


def test_words_map_to_exactly_their_tokens(encoder):
    tokenizer = encoder.tokenizer
    words = ["Buenos", "Aires", "is", "unbelievably", "large", "."]
    ids, positions = word_token_positions(tokenizer, words, max_length=64)
    assert ids == tokenizer(" ".join(words))["input_ids"]
    flat = [p for word in positions for p in word]
    assert flat == list(range(1, len(ids)))  # every token but BOS, in order, once
    for word, word_positions in zip(words, positions):
        assert tokenizer.decode([ids[p] for p in word_positions]).strip() == word
    # truncation drops the words that no longer fit
    _, cut = word_token_positions(tokenizer, words, max_length=positions[2][-1] + 1)
    assert cut[2] and not cut[3] and not cut[5]


@pytest.mark.parametrize("pre_tokenize", [True, False])
def test_word_alignment_with_a_sentencepiece_style_tokenizer(pre_tokenize):
    """Llama-2 / Mistral-style tokens ("▁word", from a Prepend + Replace normaliser). Without a Metaspace
    pre-tokenizer BPE also learns pieces across words ("s▁"): those go to the word of their first letter."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from llm2vec_hf.training.tiny_model import english_corpus

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    if pre_tokenize:
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    backend.train_from_iterator(english_corpus(), trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>"]))
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", unk_token="<unk>")
    words = ["Buenos", "Aires", "is", "unbelievably", "large", ".", "U.S.", "1,000"]
    ids, positions = word_token_positions(tokenizer, words, max_length=64)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert [p for word in positions for p in word] == list(range(1, len(ids)))
    for word, word_positions in zip(words, positions):
        pieces = "".join(tokens[p] for p in word_positions)
        if pre_tokenize:
            assert pieces == "▁" + word
        else:  # a piece may end in the next word's "▁"
            assert pieces.replace("▁", "") == word


@pytest.mark.parametrize("shift", [False, True])
def test_word_feature_is_the_mean_of_its_token_vectors(encoder, shift):
    sentences = [Sentence(["Mary", "sold", "a", "quiet", "horse", "."]), Sentence(["Fiat", "builds", "cars", "."])]
    features, kept = word_features(encoder.model, encoder.tokenizer, sentences, max_length=64, shift=shift)
    assert kept == [(0, w) for w in range(6)] + [(1, w) for w in range(4)]
    for (s, w), feature in zip(kept, features):
        ids, positions = word_token_positions(encoder.tokenizer, sentences[s].words, 64)
        with torch.no_grad():
            hidden = encoder.model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        wanted = [p - 1 for p in positions[w]] if shift else positions[w]
        torch.testing.assert_close(torch.from_numpy(feature), hidden[wanted].mean(0), atol=1e-5, rtol=1e-5)


def test_probes_learn_pos_tags_and_write_results(checkpoint, tmp_path):
    # logistic regression: the official linear probe needs more than this fixture's 70 steps to beat the majority
    rows = run_word_probes(str(checkpoint), ["pos", "chunk", "ner"], data=str(CONLL), output_dir=tmp_path,
                           probe="logistic")
    by_task = {row["task"]: row for row in rows}
    pos = by_task["word:pos"]
    assert pos["test_words"] == pos["test_words_total"] == sum(len(s.words) for s in read_conll(CONLL / "test.txt"))
    # a random tiny model's token vectors still identify words: far better than always guessing "NNP"
    assert pos["accuracy"] > pos["majority_baseline"] + 0.1
    assert by_task["word:ner"]["f1_macro"] > 0  # the "O" class alone gives a positive macro F1
    assert json.loads((tmp_path / "word_probes" / "pos.json").read_text())["accuracy"] == pos["accuracy"]


def test_causal_probe_is_causal(checkpoint, tmp_path, monkeypatch):
    seen = {}
    original = word_features

    def spy(model, *args, **kwargs):
        seen["model"] = model
        return original(model, *args, **kwargs)

    monkeypatch.setattr("llm2vec_hf.evaluation.word_probes.word_features", spy)
    causal = run_word_probes(str(checkpoint), ["pos"], data=str(CONLL), causal=True, max_train_sentences=20,
                             max_test_sentences=10)
    model = seen["model"]
    ids = torch.tensor([[1, 50, 60, 70, 80]])
    changed = torch.tensor([[1, 50, 60, 70, 81]])
    with torch.no_grad():
        moved = (model(input_ids=ids).last_hidden_state - model(input_ids=changed).last_hidden_state).abs().amax(-1)
    assert moved[0, :4].max() == 0 and moved[0, 4] > 0
    assert causal[0]["attention"] == "causal"


@pytest.mark.slow
def test_eval_command_runs_word_probes(checkpoint, tmp_path, capsys):
    folder = Path(shutil.copytree(checkpoint, tmp_path / "model"))
    code = cli.main(["eval", str(folder), "--tasks", "word:pos", "word:chunk", "--word-data", str(CONLL),
                     "--mntp-shift", "--output", str(tmp_path / "out"), "--model-card"])
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["task"] for r in summary["rows"]] == ["word:pos", "word:chunk"]
    assert all(r["shift"] for r in summary["rows"])
    table = capsys.readouterr().out
    assert "word:pos" in table and "accuracy" in table
    from huggingface_hub import ModelCard

    results = ModelCard.load(folder / "README.md").data.eval_results
    by_task = {r.task_name: r for r in results}
    assert by_task["Word-level probe (word:pos)"].task_type == "token-classification"
    assert by_task["Word-level probe (word:pos)"].metric_value == pytest.approx(summary["rows"][0]["score"], abs=1e-6)


@pytest.mark.slow
def test_official_linear_probe_is_the_default_and_logistic_stays_an_option(checkpoint, tmp_path):
    linear = run_word_probes(str(checkpoint), ["pos"], data=str(CONLL))[0]
    logistic = run_word_probes(str(checkpoint), ["pos"], data=str(CONLL), probe="logistic")[0]
    assert (linear["probe"], logistic["probe"]) == ("linear", "logistic")
    assert 0 <= linear["accuracy"] <= 1 and linear["accuracy"] != logistic["accuracy"]
    sentences = len(read_conll(CONLL / "train.txt"))
    assert linear["probe_steps"] == min(4000, 10 * -(-sentences // 8))  # 10 epochs of 8-sentence batches
    with pytest.raises(LLM2VecError, match="unknown probe"):
        run_word_probes(str(checkpoint), ["pos"], data=str(CONLL), probe="svm")


@pytest.mark.slow
def test_linear_probe_trains_as_the_official_probe(monkeypatch):
    """nn.Linear behind dropout 0.1, AdamW at 5e-4 without weight decay, linear decay, capped at 4000 steps."""
    import numpy as np

    from llm2vec_hf.evaluation import word_probes

    seen = {}
    adamw = torch.optim.AdamW

    def spy_adamw(params, **kwargs):
        seen["optimizer"] = kwargs
        return adamw(params, **kwargs)

    dropout = torch.nn.Dropout

    def spy_dropout(p):
        seen["dropout"] = p
        return dropout(p)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny probe: threads only wait on each other
    monkeypatch.setattr(torch.optim, "AdamW", spy_adamw)
    monkeypatch.setattr(torch.nn, "Dropout", spy_dropout)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9000, 4)).astype(np.float32)
    y = ["a" if v > 0 else "b" for v in x[:, 0]]
    sentence_of = [i // 2 for i in range(9000)]  # 4500 sentences: 10 epochs would be 5630 steps
    try:
        scores = word_probes.linear_probe_scores(x, y, x[:200], y[:200], sentence_of)
    finally:
        torch.set_num_threads(threads)
    assert scores["probe_steps"] == 4000
    assert seen["optimizer"] == {"lr": 5e-4, "weight_decay": 0.0} and seen["dropout"] == 0.1
    assert scores["accuracy"] > 0.95
