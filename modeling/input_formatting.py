# Copyright 2026 The llm2vec-hf authors. Apache-2.0.
"""Text -> tokens, as llm2vec 0.2.3 does it: (instruction, text) pairs, the word-wise cut to doc_max_length,
the text template and EOS text, and the mask of the tokens that are pooled (docs/architecture.md,
"Semantics"). Part of the remote code."""

from __future__ import annotations

import itertools
import re
from typing import Any, Sequence

import torch

from .encoding_settings import TEXT_MARKER, EncodingSettings

def normalize_inputs(inputs: Any) -> list[tuple[str, str]]:
    """Validates encode() inputs and returns ``(instruction, text)`` pairs.

    Accepts a text, a list of texts, or a list of ``[instruction, text]`` pairs (also mixed). Raises a
    ``TypeError``/``ValueError`` that names the offending item instead of failing deep inside torch.
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    # As llm2vec 0.2.3 reads it, a sequence of texts is that many texts whatever its type (a tuple of two
    # strings is two texts, not a pair), and a flat [instruction, text, id] (MTEB's MEDI form) is one pair.
    elif isinstance(inputs, (list, tuple)) and len(inputs) == 3 and _is_medi_item(inputs):
        inputs = [inputs]
    if not isinstance(inputs, Sequence) or isinstance(inputs, (bytes, bytearray)):
        raise TypeError(f"Expected a text or a list of texts / [instruction, text] pairs, got {type(inputs).__name__}")
    if len(inputs) == 0:
        raise ValueError("Nothing to encode: the input list is empty")
    pairs = []
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            instruction, text = "", item
        elif isinstance(item, (list, tuple)):
            if len(item) == 3 and _is_medi_item(item):
                item = item[:2]
            if len(item) != 2 or not all(isinstance(x, str) for x in item):
                raise TypeError(f"Input #{i} must be a text or an [instruction, text] pair of two strings, got {item!r}")
            instruction, text = item
        else:
            raise TypeError(f"Input #{i} must be a string or an [instruction, text] pair, got {type(item).__name__}")
        if not text.strip():
            raise ValueError(f"Input #{i} has an empty or whitespace-only text; there is nothing to embed")
        for part in (instruction, text):
            try:
                part.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"Input #{i} holds a lone surrogate ({part[_first_bad(part)]!r}), which is not "
                                 "Unicode text") from None
        check_separator(instruction, text, f"Input #{i}")
        pairs.append((instruction, text))
    return pairs


def check_separator(instruction: str, text: str, where: str) -> None:
    """Refuses the inputs whose reading by llm2vec 0.2.3 is not defined by its marker `TEXT_MARKER` (docs/
    architecture.md, "Semantics"). The reference splits "instruction marker text" at every marker, feeds the parts
    joined and pools the part after the first one: an instruction holding the marker would pool instruction words,
    and a text starting with it would pool nothing. A text holding it later is read as the reference reads it."""
    if TEXT_MARKER in instruction:
        raise ValueError(f"{where}: the instruction contains {TEXT_MARKER!r}, the string that marks where the text "
                         "starts (llm2vec 0.2.3 would pool instruction words); remove it from the instruction")
    if TEXT_MARKER in text and not text.split(TEXT_MARKER, 1)[0].strip():
        raise ValueError(f"{where}: the text starts with {TEXT_MARKER!r}, the string that marks where the text "
                         "starts (llm2vec 0.2.3 would pool nothing); remove it or put words before it")


def _first_bad(text: str) -> int:
    return next(i for i, char in enumerate(text) if 0xD800 <= ord(char) <= 0xDFFF)


def _is_medi_item(item) -> bool:
    return isinstance(item[0], str) and isinstance(item[1], str) and isinstance(item[2], int) and not isinstance(item[2], bool)



def count_tokens(tokenizer, texts: list[str], max_length: int) -> list[int]:
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    return [len(ids) for ids in encoded]


def cut_to_doc_max_length(tokenizer, texts: list[str], doc_max_length: int, max_length: int) -> list[str]:
    """Cuts each text word-wise until it has at most ``doc_max_length`` tokens (the reference's rule).

    Lengths are measured after truncation to ``max_length``, as the reference does. Unlike the reference, a text
    is never cut to nothing (a single "word" longer than doc_max_length, e.g. unspaced CJK, stays as it is and
    is truncated to max_length): the reference would then pool padding.

    The reference re-tokenizes the whole text on every pass and each pass keeps only doc/max of the words, so a
    10 MB line takes dozens of full tokenizations. Every prefix of at least ``max_length`` words has at least
    ``max_length`` tokens (checked once on those words), so its measured length is ``max_length`` and the
    reference's passes over it are arithmetic; only prefixes shorter than ``max_length`` words are tokenized.
    """
    texts = list(texts)
    if doc_max_length >= max_length:  # a length measured after truncation never exceeds doc_max_length
        return texts
    short = [i for i, text in enumerate(texts) if len(text.split()) <= max_length]
    for i, length in zip(short, count_tokens(tokenizer, [texts[i] for i in short], max_length)):
        texts[i] = _cut_words(tokenizer, texts[i].split(), texts[i], length, doc_max_length, max_length)
    for i in sorted(set(range(len(texts))) - set(short)):
        texts[i] = _cut_long_text(tokenizer, texts[i], doc_max_length, max_length)
    return texts


def _cut_words(tokenizer, words: list[str], text: str, length: int, doc_max_length: int, max_length: int) -> str:
    """The reference's loop, from ``text`` (its words, its measured length) on."""
    while length > doc_max_length:
        keep = int(len(words) * doc_max_length / length)
        if keep < 1:
            break
        words = words[:keep]
        text = " ".join(words)
        length = count_tokens(tokenizer, [text], max_length)[0]
    return text


def _cut_long_text(tokenizer, text: str, doc_max_length: int, max_length: int) -> str:
    """`cut_to_doc_max_length` for a text of more than ``max_length`` words, tokenizing at most that many words
    at a time."""
    words = text.split()
    # The reference's first pass measures the text as given (its own whitespace), later passes the joined words.
    last_head_word = next(itertools.islice(re.finditer(r"\S+", text), max_length - 1, None), None)
    first_capped = last_head_word is not None and (
        count_tokens(tokenizer, [text[: last_head_word.end()]], max_length)[0] >= max_length
    )
    joined_capped = count_tokens(tokenizer, [" ".join(words[:max_length])], max_length)[0] >= max_length
    if not (first_capped and joined_capped):  # a tokenizer that drops whole words: the reference loop, as is
        length = count_tokens(tokenizer, [text], max_length)[0]
        return _cut_words(tokenizer, words, text, length, doc_max_length, max_length)
    n = len(words)
    while n >= max_length:  # measured length is max_length: one pass keeps int(n * doc / max) words
        n = int(n * doc_max_length / max_length)
    text = " ".join(words[:n])
    return _cut_words(tokenizer, words[:n], text, count_tokens(tokenizer, [text], max_length)[0], doc_max_length,
                      max_length)


def format_inputs(pairs: list[tuple[str, str]], settings: EncodingSettings) -> tuple[list[str], list[str]]:
    """Returns (what the model reads, the part that is pooled) for each ``(instruction, text)`` pair."""
    if settings.pooling_mode == "eos_token" and settings.eos_text is None:
        raise ValueError("eos_token pooling needs `eos_text` (resolve the settings with a tokenizer)")
    full_texts, pooled_texts = [], []
    for instruction, text in pairs:
        marked = f"{instruction.strip()} {TEXT_MARKER}{text}" if instruction else f"{TEXT_MARKER}{text}"
        if settings.text_template:
            marked = settings.text_template.format(text=marked.strip())
        if settings.pooling_mode == "eos_token":
            marked = marked.strip() + settings.eos_text
        # as llm2vec 0.2.3 splits it: the model reads every part, markers removed; the pooled part is the one
        # after the first marker (a text holding the marker is pooled up to it, `check_separator`)
        parts = marked.split(TEXT_MARKER)
        full_texts.append("".join(parts))
        pooled_texts.append(parts[1])
    return full_texts, pooled_texts


def tokenize_unpadded(tokenizer, pairs: list[tuple[str, str]], settings: EncodingSettings) -> tuple[list, list[int]]:
    """Token ids of what the model reads (truncated to ``max_length``, unpadded), and how many tokens of each
    are pooled: its last n real tokens, n being the length of the text tokenized alone without special tokens
    (``skip_instruction``; BOS and instruction are not pooled), else all of them."""
    full_texts, pooled_texts = format_inputs(pairs, settings)
    input_ids = tokenizer(full_texts, truncation=True, max_length=settings.max_length)["input_ids"]
    if settings.skip_instruction:
        n_pooled = count_tokens(tokenizer, pooled_texts, settings.max_length)
    else:
        n_pooled = [len(ids) for ids in input_ids]
    return input_ids, n_pooled


def collate(tokenizer, input_ids: list, n_pooled: list[int]) -> dict[str, torch.Tensor]:
    """Pads token ids (from `tokenize_unpadded`) into a batch and adds ``pool_mask``, the tokens that get pooled.

    Pads with the EOS id, as the reference does (it sets ``pad_token = eos_token``): padded positions are masked
    out, and a tokenizer's own pad token may lie outside the embedding (transformers 5 adds ``<|endoftext|>`` to
    Qwen2 tokenizers that lack it). Works for either padding side: the pooled tokens are counted back from each
    row's last real token.
    """
    pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("The tokenizer has neither an EOS nor a pad token to pad batches with")
    width = max(len(ids) for ids in input_ids)  # by hand: `tokenizer.pad` would pad with its own pad id
    left = tokenizer.padding_side == "left"
    rows, masks = [], []
    for ids in input_ids:
        padding = [pad_id] * (width - len(ids))
        rows.append(padding + list(ids) if left else list(ids) + padding)
        masks.append([0] * len(padding) + [1] * len(ids) if left else [1] * len(ids) + [0] * len(padding))
    attention_mask = torch.tensor(masks, dtype=torch.long)
    tokens_to_end = attention_mask.flip(-1).cumsum(-1).flip(-1) * attention_mask
    pool_mask = (tokens_to_end > 0) & (tokens_to_end <= torch.tensor(n_pooled).unsqueeze(-1))
    return {
        "input_ids": torch.tensor(rows, dtype=torch.long),
        "attention_mask": attention_mask,
        "pool_mask": pool_mask.to(attention_mask.dtype),
    }


def tokenize_inputs(tokenizer, pairs: list[tuple[str, str]], settings: EncodingSettings) -> dict[str, torch.Tensor]:
    """Tokenizes one batch of ``(instruction, text)`` pairs, padded, with ``pool_mask`` (see `collate`)."""
    return collate(tokenizer, *tokenize_unpadded(tokenizer, pairs, settings))


def tokenize_for_encoding(tokenizer, inputs: Any, settings: EncodingSettings) -> tuple[list, list[int]]:
    """What every encode path does before the model runs: validates ``inputs`` (`normalize_inputs`), cuts each
    text to ``doc_max_length`` and tokenizes (`tokenize_unpadded`). Returns unpadded token ids and how many of
    each row's last tokens are pooled; serving engines are given exactly these ids."""
    pairs = normalize_inputs(inputs)
    texts = cut_to_doc_max_length(
        tokenizer, [text for _, text in pairs], settings.doc_max_length, settings.max_length
    )
    pairs = [(instruction, text) for (instruction, _), text in zip(pairs, texts)]
    return tokenize_unpadded(tokenizer, pairs, settings)
