"""Word-level probes (the paper's chunking, NER and POS tagging on CoNLL-2003, §3.2 of arXiv 2404.05961).

A linear classifier is trained on frozen token representations of the checkpoint's last layer and scored on the
test split. The default probe is the official run_word_task.py's: an ``nn.Linear`` behind dropout 0.1, AdamW at
lr 5e-4 with linear decay over 10 epochs, stopped at 4,000 steps, 8 sentences per batch (``probe="linear"``), so
numbers compare with the paper's. ``probe="logistic"`` fits scikit-learn's ``LogisticRegression`` on standardised
features instead: faster, a few points apart.
- A word split into several tokens is represented by the average of its tokens' vectors (``merge_subwords``).
- ``shift=True`` (for MNTP-trained models): the label of the token at position *i* is read from position *i−1*,
  because MNTP trains the output at *i−1* to predict token *i* (the official script's
  ``retroactive_labels="next_token"``). With subword merging, a word is the average of the vectors one position
  before each of its tokens; a first word with no position before it (tokenizers without BOS) is left out.
- Words cut off by ``max_length`` are left out of training and scoring.

Data: a folder with CoNLL-format ``train.txt`` and ``test.txt`` (``word POS chunk NER`` per line, blank line
between sentences, ``-DOCSTART-`` lines skipped), or a Hugging Face dataset id with CoNLL-2003's columns
(``tokens``, ``pos_tags``, ``chunk_tags``, ``ner_tags``; default ``eriktks/conll2003``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import LLM2VecError
from ..llm2vec import LLM2Vec
from ..loading.json_files import write_json

logger = logging.getLogger(__name__)

#: probe name -> (column in a CoNLL-2003 line after the word, column of the HF dataset)
TASKS = {"pos": (1, "pos_tags"), "chunk": (2, "chunk_tags"), "ner": (3, "ner_tags")}
DEFAULT_DATASET = "eriktks/conll2003"
PREFIX = "word:"


@dataclass
class Sentence:
    words: list[str]
    tags: dict[str, list[str]] = field(default_factory=dict)


def read_conll(path: str | os.PathLike) -> list[Sentence]:
    """Sentences of a CoNLL-format file: one ``word tag tag tag`` line per word, blank lines between sentences."""
    sentences: list[Sentence] = []
    rows: list[list[str]] = []

    def flush():
        if rows:
            tags = {task: [r[column] for r in rows] for task, (column, _) in TASKS.items() if all(len(r) > column for r in rows)}
            sentences.append(Sentence([r[0] for r in rows], tags))
            rows.clear()

    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                flush()
            elif fields[0] == "-DOCSTART-":
                flush()
            elif len(fields) < 2:
                raise LLM2VecError(f"{path}:{number}: expected 'word tag ...', got {line.strip()!r}")
            else:
                rows.append(fields)
    flush()
    return sentences


def _split_file(folder: Path, split: str) -> Path | None:
    for name in (f"{split}.txt", f"{split}.conll", f"eng.{'testb' if split == 'test' else split}"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_word_data(source: str) -> tuple[list[Sentence], list[Sentence], str]:
    """(train, test, dataset name) from a CoNLL folder, or else a dataset ``datasets.load_dataset`` reads.

    The dataset (a Hub id, or a local folder of parquet/json files) needs ``train`` and ``test`` splits with a
    ``tokens`` column and any of ``pos_tags``, ``chunk_tags``, ``ner_tags`` (class ids with names, or strings).
    """
    if os.path.isdir(source):
        folder = Path(source)
        train, test = _split_file(folder, "train"), _split_file(folder, "test")
        if train and test:
            return read_conll(train), read_conll(test), folder.resolve().name
    try:
        import datasets
    except ImportError as error:  # datasets comes with mteb, i.e. with the [eval] extra
        raise LLM2VecError(
            f"{source} is not a folder with CoNLL train.txt and test.txt; reading it as a dataset needs `datasets`: "
            "pip install 'llm2vec-hf[eval]'"
        ) from error
    data = datasets.load_dataset(source)
    missing = [split for split in ("train", "test") if split not in data]
    if missing:
        raise LLM2VecError(f"{source}: no {' or '.join(missing)} split (has {', '.join(data)})")

    def convert(split) -> list[Sentence]:
        features = data[split].features
        columns = {task: column for task, (_, column) in TASKS.items() if column in features}

        def namer(column):
            names = getattr(getattr(features[column], "feature", None), "names", None)
            return (lambda value: names[value]) if names else str

        namers = {task: namer(column) for task, column in columns.items()}
        return [
            Sentence(list(row["tokens"]), {task: [namers[task](v) for v in row[column]] for task, column in columns.items()})
            for row in data[split]
        ]

    name = Path(source).resolve().name if os.path.isdir(source) else source
    return convert("train"), convert("test"), name


def word_token_positions(tokenizer, words: Sequence[str], max_length: int) -> tuple[list[int], list[list[int]]]:
    """Token ids of ``" ".join(words)`` (with special tokens) and, per word, the positions of its tokens.

    A token belongs to the word holding its first non-space character (byte-level ``Ġword`` and SentencePiece
    ``▁word`` tokens carry the space before the word); a token that is only a space belongs to the next word.
    Words whose tokens were all cut by ``max_length`` get no positions.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise LLM2VecError("word probes need a fast tokenizer (offset mapping)")
    text, owner, starts = "", [], []
    for index, word in enumerate(words):
        if index:
            text += " "
            owner.append(index)  # the separating space goes with the next word
        starts.append(len(text))
        text += word
        owner.extend([index] * len(word))
    encoded = tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=max_length)
    positions: list[list[int]] = [[] for _ in words]
    for position, (start, end) in enumerate(encoded["offset_mapping"]):
        if end <= start or end > len(owner):
            continue  # special tokens
        chars = [i for i in range(start, end) if not text[i].isspace()]
        positions[owner[chars[0] if chars else end - 1]].append(position)
    return list(encoded["input_ids"]), positions


@torch.no_grad()
def word_features(
    model, tokenizer, sentences: Sequence[Sentence], max_length: int = 512, batch_size: int = 16, shift: bool = False,
    device: str | torch.device | None = None, desc: str = "word features",
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Frozen last-layer vectors, one per word (subwords averaged); returns (features, [(sentence, word)])."""
    device = device or next(model.parameters()).device
    features, kept = [], []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in tqdm(range(0, len(sentences), batch_size), desc=desc, unit="batch"):
        batch = sentences[start:start + batch_size]
        encoded = [word_token_positions(tokenizer, s.words, max_length) for s in batch]
        length = max(len(ids) for ids, _ in encoded)
        input_ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, (ids, _) in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        hidden = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).last_hidden_state
        hidden = hidden.float().cpu()
        for row, (_, positions) in enumerate(encoded):
            for word, word_positions in enumerate(positions):
                if shift:
                    word_positions = [p - 1 for p in word_positions]
                if not word_positions or min(word_positions) < 0:
                    continue
                features.append(hidden[row, word_positions].mean(dim=0).numpy())
                kept.append((start + row, word))
    width = model.config.hidden_size
    return (np.stack(features) if features else np.zeros((0, width), dtype=np.float32)), kept


def _scores(y_train, y_test, predicted) -> dict[str, float]:
    """Accuracy and macro F1 of ``predicted`` on the test words, and the accuracy of always guessing the most
    frequent training label (what a probe must beat to show the states carry the task)."""
    from sklearn.metrics import accuracy_score, f1_score

    values, counts = np.unique(y_train, return_counts=True)
    majority = values[np.argmax(counts)]
    return {
        "accuracy": float(accuracy_score(y_test, predicted)),
        "f1_macro": float(f1_score(y_test, predicted, average="macro", zero_division=0)),
        "majority_baseline": float(np.mean(np.asarray(y_test) == majority)),
    }


def probe_scores(x_train, y_train, x_test, y_test, seed: int = 0, max_iter: int = 2000) -> dict[str, float]:
    """Fits the linear probe on train and scores it on test: accuracy, macro-F1, and the majority-label accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    classifier.fit(x_train, y_train)
    return _scores(y_train, y_test, classifier.predict(x_test))


#: The official probe's training (train_configs/word-task: lr 5e-4, 10 epochs, stop at 4,000 steps, the
#: Trainer's default batch of 8 sentences, AdamW without weight decay, classifier dropout 0.1).
LINEAR_PROBE = {"learning_rate": 5e-4, "epochs": 10, "max_steps": 4000, "batch_sentences": 8, "dropout": 0.1}
PROBES = ("linear", "logistic")


def linear_probe_scores(x_train, y_train, x_test, y_test, sentence_of_train: Sequence[int], seed: int = 0,
                        learning_rate: float = LINEAR_PROBE["learning_rate"], epochs: int = LINEAR_PROBE["epochs"],
                        max_steps: int = LINEAR_PROBE["max_steps"],
                        batch_sentences: int = LINEAR_PROBE["batch_sentences"],
                        dropout: float = LINEAR_PROBE["dropout"]) -> dict[str, float]:
    """The official probe on frozen word vectors: ``nn.Linear`` after dropout, AdamW, linear decay over
    ``epochs`` of sentence batches, stopped at ``max_steps``; the loss is the mean over the batch's words."""
    from transformers import get_linear_schedule_with_warmup

    labels = sorted(set(y_train) | set(y_test))
    index = {label: i for i, label in enumerate(labels)}
    x = torch.as_tensor(np.asarray(x_train), dtype=torch.float32)
    y = torch.tensor([index[label] for label in y_train])
    by_sentence: dict[int, list[int]] = {}
    for row, sentence in enumerate(sentence_of_train):
        by_sentence.setdefault(sentence, []).append(row)
    sentences = list(by_sentence)
    steps_per_epoch = max(1, -(-len(sentences) // batch_sentences))
    total = epochs * steps_per_epoch
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(x.shape[1], len(labels)))
    optimizer = torch.optim.AdamW(probe.parameters(), lr=learning_rate, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, total)
    step = 0
    probe.train()
    while step < min(total, max_steps):
        order = torch.randperm(len(sentences), generator=generator).tolist()
        for start in range(0, len(order), batch_sentences):
            rows = [r for i in order[start:start + batch_sentences] for r in by_sentence[sentences[i]]]
            loss = torch.nn.functional.cross_entropy(probe(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step >= min(total, max_steps):
                break
    probe.eval()
    with torch.no_grad():
        predicted_ids = probe(torch.as_tensor(np.asarray(x_test), dtype=torch.float32)).argmax(-1).tolist()
    return {**_scores(y_train, y_test, [labels[i] for i in predicted_ids]), "probe_steps": step}


def run_word_probes(
    model_dir: str,
    tasks: Sequence[str],
    data: str = DEFAULT_DATASET,
    output_dir: str | os.PathLike | None = None,
    shift: bool = False,
    causal: bool = False,
    max_length: int = 512,
    batch_size: int = 16,
    max_train_sentences: int | None = None,
    max_test_sentences: int | None = None,
    device: str | None = None,
    seed: int = 0,
    probe: str = "linear",
) -> list[dict[str, Any]]:
    """Probes the checkpoint on ``tasks`` (``pos``, ``chunk``, ``ner``); returns one summary row per task.

    Writes ``OUTPUT/word_probes/<task>.json`` when ``output_dir`` is given. ``causal=True`` probes the same
    weights with causal attention (the paper's uni-directional comparison).
    """
    if probe not in PROBES:
        raise LLM2VecError(f"unknown probe {probe!r}; choose from {', '.join(PROBES)}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise LLM2VecError(f"unknown word probe(s) {unknown}; choose from {sorted(TASKS)}")
    train, test, dataset_name = load_word_data(data)
    train, test = train[:max_train_sentences], test[:max_test_sentences]
    encoder = LLM2Vec.from_pretrained(model_dir, enable_bidirectional=not causal)
    model = encoder.model.eval()
    if causal:
        # An exported checkpoint's config says is_causal=False, which transformers >= 5.2 honours even in the
        # plain AutoModel class: switch it back so that the baseline really is causal.
        model.config.is_causal = True
    if device:
        model.to(device)
    x_train, kept_train = word_features(model, encoder.tokenizer, train, max_length, batch_size, shift, device,
                                        desc="word features (train)")
    x_test, kept_test = word_features(model, encoder.tokenizer, test, max_length, batch_size, shift, device,
                                      desc="word features (test)")
    rows = []
    for task in tasks:
        missing = [s for s in train + test if task not in s.tags]
        if missing:
            raise LLM2VecError(f"{data}: the data has no {task} tags")
        y_train = [train[s].tags[task][w] for s, w in kept_train]
        y_test = [test[s].tags[task][w] for s, w in kept_test]
        if probe == "linear":
            scores = linear_probe_scores(x_train, y_train, x_test, y_test, [s for s, _ in kept_train], seed=seed)
        else:
            scores = probe_scores(x_train, y_train, x_test, y_test, seed=seed)
        row = {
            "task": PREFIX + task,
            "type": "WordProbe",
            "split": "test",
            "subset": "default",
            "metric": "accuracy",
            "score": scores["accuracy"],
            **scores,
            "dataset": dataset_name,
            "train_words": len(y_train),
            "test_words": len(y_test),
            "test_words_total": sum(len(s.words) for s in test),
            "shift": shift,
            "probe": probe,
            "attention": "causal" if causal else "bidirectional",
        }
        rows.append(row)
        if output_dir is not None:
            folder = Path(output_dir) / "word_probes"
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / f"{task}.json", row, indent=2)
    return rows
