# Copyright 2026 The llm2vec-hf authors. Apache-2.0.
"""Bidirectional decoder LLMs as text encoders (LLM2Vec, arXiv 2404.05961).

This file is the Hub remote code of every llm2vec-hf checkpoint and the library's own model code: one copy,
shipped verbatim by ``llm2vec-hf export``. It imports only torch and transformers and never touches the network.

Read it top to bottom:

1. the version guard: we rely on transformers honouring ``config.is_causal = False``;
2. ``BidirectionalMixin``, the single mechanism that turns a decoder into a bidirectional encoder;
3. the LLM2Vec encoding semantics (input formatting, tokenization, pooling), identical to llm2vec 0.2.3;
4. one thin declaration per architecture family (config, encoder for ``AutoModel``, MNTP head).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import transformers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma2Model,
    GemmaConfig,
    GemmaForCausalLM,
    GemmaModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaModel,
    MistralConfig,
    MistralForCausalLM,
    MistralModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Model,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3Model,
)
from transformers.utils import logging
from transformers.utils.versions import require_version

logger = logging.get_logger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# 1. Version guard
# ---------------------------------------------------------------------------------------------------------------
# From 5.2 on, transformers' mask factory (`masking_utils.create_causal_mask`) builds a bidirectional mask when
# `config.is_causal` is False, under eager, sdpa, flash and flex attention, for every family declared below.
# Older releases ignore the flag and would run causal attention without a word, so we refuse to load there.
MIN_TRANSFORMERS_VERSION = "5.2.0"
require_version(
    f"transformers>={MIN_TRANSFORMERS_VERSION}",
    "LLM2Vec models need bidirectional attention, which transformers guarantees (config.is_causal=False) "
    f"only from {MIN_TRANSFORMERS_VERSION} on; older versions would silently run causal attention. "
    f"Upgrade with: pip install -U 'transformers>={MIN_TRANSFORMERS_VERSION}'",
)


# ---------------------------------------------------------------------------------------------------------------
# 2. The mechanism: one mixin, used by every family
# ---------------------------------------------------------------------------------------------------------------
def make_config_bidirectional(config: transformers.PretrainedConfig) -> transformers.PretrainedConfig:
    """Sets the flags that transformers, TEI and vLLM read to run a decoder bidirectionally.

    ``is_causal`` is read by transformers' mask factory, vLLM and TEI (Qwen2); ``use_bidirectional_attention`` by
    transformers' Gemma attention and TEI (Llama/Mistral). Both are written into config.json on save.
    """
    config.is_causal = False
    config.use_bidirectional_attention = True
    return config


class BidirectionalMixin:
    """Turns a transformers decoder (``…Model`` or ``…ForCausalLM``) into a bidirectional one.

    The config flags make the mask factory build a padding-only (bidirectional) mask; switching off each
    attention module's ``is_causal`` covers the kernels that read the module attribute instead of the mask
    (flash-attention without padding, sdpa with no mask).
    """

    def __init__(self, config, *args, **kwargs):
        make_config_bidirectional(config)
        super().__init__(config, *args, **kwargs)
        for module in self.modules():
            if hasattr(module, "is_causal"):
                module.is_causal = False


# ---------------------------------------------------------------------------------------------------------------
# 3. LLM2Vec encoding semantics (the contract of DESIGN.md §4, as llm2vec 0.2.3 behaves)
# ---------------------------------------------------------------------------------------------------------------
POOLING_MODES = ("mean", "weighted_mean", "eos_token", "last_token", "bos_token")

#: Encoding settings and their defaults. Stored in config.json under ``llm2vec`` and in llm2vec_config.json.
DEFAULT_ENCODING = {
    "pooling_mode": "mean",
    "max_length": 512,
    "doc_max_length": 400,
    "skip_instruction": True,
    # A chat/instruction wrapper such as "[INST] {text} [/INST]", applied to the whole input; a property of the
    # checkpoint (the official library keyed it on a handful of hub names instead).
    "text_template": None,
    # What `eos_token` pooling appends to each text; None means the family's default (see `FAMILIES`).
    "eos_text": None,
}

# The official library marks where the text starts inside "instruction + text" with this string; we keep the
# same marker so that any wrapper or EOS suffix lands in the pooled part exactly as it does there.
_TEXT_MARKER = "!@#$%^&*()"


def resolve_encoding(config=None, tokenizer=None, **overrides: Any) -> dict[str, Any]:
    """Encoding settings: defaults, then the checkpoint's ``config.llm2vec``, then non-None ``overrides``.

    With a tokenizer, an unset ``eos_text`` becomes the family's separator plus the tokenizer's EOS token.
    """
    settings = dict(DEFAULT_ENCODING)
    stored = getattr(config, "llm2vec", None) if config is not None else None
    if isinstance(stored, dict):
        settings.update({k: v for k, v in stored.items() if k in DEFAULT_ENCODING})
    unknown = set(overrides) - set(DEFAULT_ENCODING)
    if unknown:
        raise TypeError(f"Unknown encoding setting(s) {sorted(unknown)}; known: {sorted(DEFAULT_ENCODING)}")
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if settings["pooling_mode"] not in POOLING_MODES:
        raise ValueError(f"Unknown pooling_mode {settings['pooling_mode']!r}; choose one of {', '.join(POOLING_MODES)}")
    for key in ("max_length", "doc_max_length"):
        if not isinstance(settings[key], int) or isinstance(settings[key], bool) or settings[key] < 1:
            raise ValueError(f"{key} must be a positive integer, got {settings[key]!r}")
    if settings["text_template"] is not None:
        check_text_template(settings["text_template"])
    if settings["eos_text"] is None and tokenizer is not None and tokenizer.eos_token is not None:
        family = FAMILIES.get(getattr(config, "model_type", None))
        settings["eos_text"] = (family.eos_separator if family else " ") + tokenizer.eos_token
    return settings


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
        pairs.append((instruction, text))
    return pairs


def _is_medi_item(item) -> bool:
    return isinstance(item[0], str) and isinstance(item[1], str) and isinstance(item[2], int) and not isinstance(item[2], bool)


def check_text_template(template: Any) -> None:
    """A text template holds exactly one ``{text}`` placeholder and no other field; literal braces are doubled
    (``{{`` and ``}}``), as in ``str.format``. Without ``{text}`` every input would embed the same string."""
    import string

    if not isinstance(template, str):
        raise ValueError(f"text_template must be a string with one {{text}} placeholder, got {type(template).__name__}")
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as error:
        raise ValueError(f"text_template {template!r} is not a valid template ({error}); write literal braces "
                         "as {{ and }}") from None
    others = sorted({name or "{}" for name, _, _ in fields if name != "text"})
    if others:
        raise ValueError(f"text_template {template!r} has placeholders other than {{text}}: "
                         f"{', '.join(others)}; write literal braces as {{{{ and }}}}")
    if len(fields) != 1:
        raise ValueError(f"text_template {template!r} must contain exactly one {{text}} placeholder, "
                         f"found {len(fields)}")
    if fields[0][1] or fields[0][2]:
        raise ValueError(f"text_template {template!r}: {{text}} takes no format spec or conversion")


def _count_tokens(tokenizer, texts: list[str], max_length: int) -> list[int]:
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
    for i, length in zip(short, _count_tokens(tokenizer, [texts[i] for i in short], max_length)):
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
        length = _count_tokens(tokenizer, [text], max_length)[0]
    return text


def _cut_long_text(tokenizer, text: str, doc_max_length: int, max_length: int) -> str:
    """`cut_to_doc_max_length` for a text of more than ``max_length`` words, tokenizing at most that many words
    at a time."""
    import itertools
    import re

    words = text.split()
    # The reference's first pass measures the text as given (its own whitespace), later passes the joined words.
    last_head_word = next(itertools.islice(re.finditer(r"\S+", text), max_length - 1, None), None)
    first_capped = last_head_word is not None and (
        _count_tokens(tokenizer, [text[: last_head_word.end()]], max_length)[0] >= max_length
    )
    joined_capped = _count_tokens(tokenizer, [" ".join(words[:max_length])], max_length)[0] >= max_length
    if not (first_capped and joined_capped):  # a tokenizer that drops whole words: the reference loop, as is
        length = _count_tokens(tokenizer, [text], max_length)[0]
        return _cut_words(tokenizer, words, text, length, doc_max_length, max_length)
    n = len(words)
    while n >= max_length:  # measured length is max_length: one pass keeps int(n * doc / max) words
        n = int(n * doc_max_length / max_length)
    text = " ".join(words[:n])
    return _cut_words(tokenizer, words[:n], text, _count_tokens(tokenizer, [text], max_length)[0], doc_max_length,
                      max_length)


def format_inputs(pairs: list[tuple[str, str]], settings: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Returns (what the model reads, the part that is pooled) for each ``(instruction, text)`` pair."""
    if settings["pooling_mode"] == "eos_token" and not settings["eos_text"]:
        raise ValueError("eos_token pooling needs `eos_text` or a tokenizer with an EOS token")
    full_texts, pooled_texts = [], []
    for instruction, text in pairs:
        marked = f"{instruction.strip()} {_TEXT_MARKER}{text}" if instruction else f"{_TEXT_MARKER}{text}"
        if settings["text_template"]:
            marked = settings["text_template"].format(text=marked.strip())
        if settings["pooling_mode"] == "eos_token":
            marked = marked.strip() + settings["eos_text"]
        head, _, tail = marked.partition(_TEXT_MARKER)
        full_texts.append(head + tail)
        pooled_texts.append(tail)
    return full_texts, pooled_texts


def tokenize_unpadded(tokenizer, pairs: list[tuple[str, str]], settings: dict[str, Any]) -> tuple[list, list[int]]:
    """Token ids of what the model reads (truncated to ``max_length``, unpadded), and how many tokens of each
    are pooled: its last n real tokens, n being the length of the text tokenized alone without special tokens
    (``skip_instruction``; BOS and instruction are not pooled), else all of them."""
    full_texts, pooled_texts = format_inputs(pairs, settings)
    input_ids = tokenizer(full_texts, truncation=True, max_length=settings["max_length"])["input_ids"]
    if settings["skip_instruction"]:
        n_pooled = _count_tokens(tokenizer, pooled_texts, settings["max_length"])
    else:
        n_pooled = [len(ids) for ids in input_ids]
    return input_ids, n_pooled


def collate(tokenizer, input_ids: list, n_pooled: list[int]) -> dict[str, torch.Tensor]:
    """Pads token ids (from `tokenize_unpadded`) into a batch and adds ``pool_mask``, the tokens that get pooled.

    Works for either padding side: the pooled tokens are counted back from each row's last real token.
    """
    if tokenizer.pad_token is None:
        # As the reference does; padded positions are masked out, so any token will do.
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer.pad({"input_ids": input_ids}, return_tensors="pt")
    attention_mask = batch["attention_mask"]
    tokens_to_end = attention_mask.flip(-1).cumsum(-1).flip(-1) * attention_mask
    pool_mask = (tokens_to_end > 0) & (tokens_to_end <= torch.tensor(n_pooled).unsqueeze(-1))
    batch["pool_mask"] = pool_mask.to(attention_mask.dtype)
    return dict(batch)


def tokenize_inputs(tokenizer, pairs: list[tuple[str, str]], settings: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Tokenizes one batch of ``(instruction, text)`` pairs, padded, with ``pool_mask`` (see `collate`)."""
    return collate(tokenizer, *tokenize_unpadded(tokenizer, pairs, settings))


#: Default cap on the tokens of one forward call, padding included; see `length_groups`.
DEFAULT_MAX_BATCH_TOKENS = 2048


def length_groups(lengths: Sequence[int], max_rows: int, max_tokens: int | None = None) -> list[list[int]]:
    """Groups row indices for batching: longest first, at most ``max_rows`` rows and ``max_tokens`` tokens
    (rows × longest row, i.e. padding included) per group; a row longer than ``max_tokens`` gets its own group.

    Grouping by token count rather than by row count keeps the padding of a mixed-length corpus small: with
    LLM2Vec's 512-token limit a batch of 32 rows can be mostly padding, which costs as much as real tokens.
    Ties keep their input order, so grouping is deterministic.
    """
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_BATCH_TOKENS
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ValueError(f"max_batch_tokens must be a positive integer, got {max_tokens!r}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        if group is None or len(group) >= max_rows or (len(group) + 1) * lengths[group[0]] > max_tokens:
            groups.append([i])
        else:
            group.append(i)
    return groups


def forward_in_length_groups(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_tokens: int | None = None
) -> torch.Tensor:
    """``last_hidden_state`` of a padded batch, computed group by group (`length_groups`), each group cut to
    its own longest row. As in one padded call, the states at padded positions mean nothing (here they are
    zero or the model's output there).

    The vectors do not change beyond float rounding: padded positions are masked out of attention and pooling,
    and rotary position embeddings depend only on the distance between tokens, so dropping left padding (which
    shifts every position of a row by the same amount) leaves attention scores as they were. Masks that are not
    one contiguous block per row (never produced by `collate`) run as one call, as given.
    """
    rows_total, width = attention_mask.shape
    lengths = attention_mask.sum(1)
    positions = torch.arange(width, device=attention_mask.device)
    mask = attention_mask.bool()
    right_padded = bool((mask == (positions < lengths.unsqueeze(1))).all())
    left_padded = not right_padded and bool((mask == (positions >= width - lengths.unsqueeze(1))).all())
    groups = length_groups(lengths.tolist(), rows_total, max_tokens)
    if len(groups) == 1 or not (right_padded or left_padded):
        return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    hidden_states = None
    for group in groups:
        rows = torch.tensor(group, device=input_ids.device)
        longest = int(lengths[group[0]])
        columns = slice(0, longest) if right_padded else slice(width - longest, width)
        output = model(input_ids=input_ids[rows, columns], attention_mask=attention_mask[rows, columns])
        hidden = output.last_hidden_state
        if hidden_states is None:
            hidden_states = hidden.new_zeros(rows_total, width, hidden.shape[-1])
        hidden_states[rows, columns] = hidden
    return hidden_states


def pool(
    last_hidden_state: torch.Tensor,
    batch: dict[str, torch.Tensor],
    pooling_mode: str,
    bos_token_id: int | None = None,
) -> torch.Tensor:
    """Pools token states into one vector per row, in float32; ``batch`` comes from `tokenize_inputs`."""
    hidden = last_hidden_state.float()
    mask = batch["pool_mask"].to(hidden.device, hidden.dtype)
    if pooling_mode == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    if pooling_mode == "weighted_mean":
        weights = mask.cumsum(1) * mask
        weights = weights / weights.sum(1, keepdim=True).clamp(min=1e-9)
        return (hidden * weights.unsqueeze(-1)).sum(1)
    attention_mask = batch["attention_mask"].to(hidden.device)
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    if pooling_mode in ("eos_token", "last_token"):
        index = (positions * attention_mask).argmax(1)
    elif pooling_mode == "bos_token":
        if bos_token_id is None:
            raise ValueError("bos_token pooling needs a tokenizer with a BOS token")
        is_bos = (batch["input_ids"].to(hidden.device) == bos_token_id) & attention_mask.bool()
        if not bool(is_bos.any(1).all()):
            raise ValueError("bos_token pooling: some inputs have no BOS token (does the tokenizer add one?)")
        index = is_bos.int().argmax(1)
    else:
        raise ValueError(f"Unknown pooling_mode {pooling_mode!r}; choose one of {', '.join(POOLING_MODES)}")
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


@torch.inference_mode()
def encode_with(
    model: torch.nn.Module,
    tokenizer,
    inputs: Any,
    settings: dict[str, Any],
    batch_size: int = 32,
    show_progress_bar: bool = False,
    device: torch.device | str | None = None,
    max_batch_tokens: int | None = None,
) -> torch.Tensor:
    """Embeds texts or ``[instruction, text]`` pairs with any bidirectional encoder; returns float32 (N, hidden).

    All inputs are tokenized first, then run longest first in batches of at most ``batch_size`` texts and
    ``max_batch_tokens`` tokens counting padding (`length_groups`; default `DEFAULT_MAX_BATCH_TOKENS`). The
    reference sorts by characters and batches by count; sorting by tokens and capping tokens removes most
    padding, and the vectors are the same up to float rounding.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    pairs = normalize_inputs(inputs)
    texts = cut_to_doc_max_length(
        tokenizer, [text for _, text in pairs], settings["doc_max_length"], settings["max_length"]
    )
    pairs = [(instruction, text) for (instruction, _), text in zip(pairs, texts)]
    input_ids, n_pooled = tokenize_unpadded(tokenizer, pairs, settings)
    groups = length_groups([len(ids) for ids in input_ids], batch_size, max_batch_tokens)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if show_progress_bar:
        groups = logging.tqdm(groups, desc="Encoding", unit="batch")
    was_training = model.training
    model.eval()
    vectors = [None] * len(pairs)
    for group in groups:
        batch = collate(tokenizer, [input_ids[i] for i in group], [n_pooled[i] for i in group])
        hidden = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        pooled = pool(hidden.last_hidden_state, batch, settings["pooling_mode"], tokenizer.bos_token_id).cpu()
        for row, i in enumerate(group):
            vectors[i] = pooled[row]
    model.train(was_training)
    return torch.stack(vectors)


class LLM2VecEncoderMixin(BidirectionalMixin):
    """The encoder classes that ``AutoModel`` returns: bidirectional, plus ``encode`` with LLM2Vec pooling."""

    # Decoder checkpoints carry an LM head that the encoder does not use.
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """As transformers', but a checkpoint that lacks weights is refused: transformers would only log
        "MISSING" and initialise them randomly, and such an encoder returns wrong vectors without an error."""
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        missing = sorted(info.get("missing_keys") or ())
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise OSError(f"{args[0] if args else 'the checkpoint'} is incomplete: {len(missing)} tensors are not "
                          f"in its weights ({shown}); they would be randomly initialised")
        return (model, info) if wants_info else model

    def encode(
        self,
        inputs,
        tokenizer,
        batch_size: int = 32,
        show_progress_bar: bool = False,
        max_batch_tokens: int | None = None,
        **settings,
    ):
        """Embeds texts or ``[instruction, text]`` pairs exactly as llm2vec does, with this checkpoint's settings.

        ``settings`` override the checkpoint's (pooling_mode, max_length, doc_max_length, skip_instruction, …);
        ``max_batch_tokens`` caps the tokens of one forward call, padding included (see `encode_with`).
        """
        resolved = resolve_encoding(self.config, tokenizer, **settings)
        return encode_with(
            self, tokenizer, inputs, resolved, batch_size, show_progress_bar, max_batch_tokens=max_batch_tokens
        )


# ---------------------------------------------------------------------------------------------------------------
# 4. The families: one declaration each
# ---------------------------------------------------------------------------------------------------------------
# Config classes keep the native `model_type`, so that config.json stays loadable (and runs bidirectionally on
# transformers >= 5.2) without remote code, by TEI and by vLLM. `is_causal = False` is the class default.
# MNTP heads are the causal-LM heads on the bidirectional body: their loss shifts labels by one, so the masked
# token at position i is predicted from the hidden state at i-1, as LLM2Vec's MNTP prescribes.


class BidirectionalLlamaConfig(LlamaConfig):
    is_causal = False


class BidirectionalLlamaModel(LLM2VecEncoderMixin, LlamaModel):
    config_class = BidirectionalLlamaConfig


class BidirectionalLlamaForMNTP(BidirectionalMixin, LlamaForCausalLM):
    config_class = BidirectionalLlamaConfig


class BidirectionalMistralConfig(MistralConfig):
    is_causal = False


class BidirectionalMistralModel(LLM2VecEncoderMixin, MistralModel):
    config_class = BidirectionalMistralConfig


class BidirectionalMistralForMNTP(BidirectionalMixin, MistralForCausalLM):
    config_class = BidirectionalMistralConfig


class BidirectionalQwen2Config(Qwen2Config):
    is_causal = False


class BidirectionalQwen2Model(LLM2VecEncoderMixin, Qwen2Model):
    config_class = BidirectionalQwen2Config


class BidirectionalQwen2ForMNTP(BidirectionalMixin, Qwen2ForCausalLM):
    config_class = BidirectionalQwen2Config


class BidirectionalQwen3Config(Qwen3Config):
    is_causal = False


class BidirectionalQwen3Model(LLM2VecEncoderMixin, Qwen3Model):
    config_class = BidirectionalQwen3Config


class BidirectionalQwen3ForMNTP(BidirectionalMixin, Qwen3ForCausalLM):
    config_class = BidirectionalQwen3Config


class BidirectionalGemmaConfig(GemmaConfig):
    is_causal = False


class BidirectionalGemmaModel(LLM2VecEncoderMixin, GemmaModel):
    config_class = BidirectionalGemmaConfig


class BidirectionalGemmaForMNTP(BidirectionalMixin, GemmaForCausalLM):
    config_class = BidirectionalGemmaConfig


class BidirectionalGemma2Config(Gemma2Config):
    is_causal = False


class BidirectionalGemma2Model(LLM2VecEncoderMixin, Gemma2Model):
    config_class = BidirectionalGemma2Config


class BidirectionalGemma2ForMNTP(BidirectionalMixin, Gemma2ForCausalLM):
    config_class = BidirectionalGemma2Config


class Family:
    """One supported architecture: its classes and how the reference appends EOS for `eos_token` pooling."""

    def __init__(self, config, model, mntp, eos_separator: str):
        self.config, self.model, self.mntp, self.eos_separator = config, model, mntp, eos_separator

    @property
    def native_model_name(self) -> str:
        """The transformers class the encoder builds on (``LlamaModel``…), the name serving engines know."""
        return next(c.__name__ for c in self.model.__mro__ if c.__module__.startswith("transformers.models."))

    def auto_map(self) -> dict[str, str]:
        return {
            "AutoConfig": f"{__name__.rsplit('.', 1)[-1]}.{self.config.__name__}",
            "AutoModel": f"{__name__.rsplit('.', 1)[-1]}.{self.model.__name__}",
            "AutoModelForCausalLM": f"{__name__.rsplit('.', 1)[-1]}.{self.mntp.__name__}",
        }


#: model_type -> Family. The reference appends " </s>" for Llama/Mistral and the bare EOS for the others.
FAMILIES: dict[str, Family] = {
    "llama": Family(BidirectionalLlamaConfig, BidirectionalLlamaModel, BidirectionalLlamaForMNTP, " "),
    "mistral": Family(BidirectionalMistralConfig, BidirectionalMistralModel, BidirectionalMistralForMNTP, " "),
    "qwen2": Family(BidirectionalQwen2Config, BidirectionalQwen2Model, BidirectionalQwen2ForMNTP, ""),
    "qwen3": Family(BidirectionalQwen3Config, BidirectionalQwen3Model, BidirectionalQwen3ForMNTP, ""),
    "gemma": Family(BidirectionalGemmaConfig, BidirectionalGemmaModel, BidirectionalGemmaForMNTP, ""),
    "gemma2": Family(BidirectionalGemma2Config, BidirectionalGemma2Model, BidirectionalGemma2ForMNTP, ""),
}


def family_for(config: transformers.PretrainedConfig) -> Family:
    """The family of a config, or a ValueError that lists the supported ones."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(
            f"Unsupported architecture {model_type!r}; llm2vec-hf supports: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type]
