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

import itertools
import json
import os
import re
import string
from typing import Any, Sequence

import torch
import transformers
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.utils import is_flash_attn_2_available, logging
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
    attend_to_whole_text(config)
    return config


def attend_to_whole_text(config: transformers.PretrainedConfig) -> None:
    """Widens a sliding window to the longest input the model takes: every token sees every token of its text.

    The official library ignores Mistral's window (its bidirectional mask has none); we keep that semantics for
    every family with windows (Mistral, Mixtral, Ministral, Qwen2's sliding layers, Gemma 2 and 3, Phi-3,
    SmolLM3), so that a text of any length gets the vectors of full attention, as transformers computes them
    with an all-visible mask. The layer types stay as they are: Gemma 3 picks its rotary base by layer type.
    Serving engines read the widened window from config.json and compute the same (docs/families.md).
    """
    window = getattr(config, "sliding_window", None)
    longest = getattr(config, "max_position_embeddings", None)
    if isinstance(window, int) and isinstance(longest, int) and window < longest:
        config.sliding_window = longest


class BidirectionalMixin:
    """Turns a transformers decoder (``…Model`` or ``…ForCausalLM``) into a bidirectional one.

    The config flags make the mask factory build a padding-only (bidirectional) mask; switching off each
    attention module's ``is_causal`` covers the kernels that read the module attribute instead of the mask
    (flash-attention without padding, sdpa with no mask).
    """

    @classmethod
    def is_custom_code(cls) -> bool:
        """False: the modules are transformers' own, so its checkpoint conversions (e.g. Mixtral's per-expert
        weights to fused 3-D ones, which transformers >= 5.24 skips for custom code) apply on load and save."""
        return False

    def __init__(self, config, *args, **kwargs):
        make_config_bidirectional(config)
        super().__init__(config, *args, **kwargs)
        for module in self.modules():
            if hasattr(module, "is_causal"):
                module.is_causal = False


# ---------------------------------------------------------------------------------------------------------------
# 3. LLM2Vec encoding semantics (as llm2vec 0.2.3 behaves; docs/architecture.md, "Semantics")
# ---------------------------------------------------------------------------------------------------------------
POOLING_MODES = ("mean", "weighted_mean", "eos_token", "last_token", "bos_token")

#: Encoding settings and their defaults (docs/architecture.md, "Encoding settings").
DEFAULT_ENCODING = {
    "pooling_mode": "mean",
    "max_length": 512,
    "doc_max_length": 400,
    "skip_instruction": True,
    # A chat/instruction wrapper such as "[INST] {text} [/INST]", applied to the whole input ("" for none); a
    # property of the checkpoint. None means the reference's choice by model name (`REFERENCE_TEMPLATES`).
    "text_template": None,
    # What `eos_token` pooling appends to each text ("" appends nothing); None means the reference's choice,
    # `reference_eos_text`. `export` stores the resolved string, so the checkpoint's name cannot change it.
    "eos_text": None,
}
#: config.json's key for a checkpoint's encoding settings: their single source of truth.
SETTINGS_KEY = "llm2vec"
#: The file the official ``llm2vec.LLM2Vec.from_pretrained`` reads, and the keys it knows; derived from config.json's
#: block by `write_encoding_settings`.
OFFICIAL_SETTINGS_FILE = "llm2vec_config.json"
OFFICIAL_KEYS = ("pooling_mode", "max_length", "doc_max_length", "skip_instruction")


def check_pooling_mode(pooling_mode: Any) -> None:
    """Refuses a pooling mode `pool` does not know, naming the ones it does."""
    if pooling_mode not in POOLING_MODES:
        raise ValueError(f"Unknown pooling_mode {pooling_mode!r}; choose one of {', '.join(POOLING_MODES)}")


def check_positive_integer(name: str, value: Any) -> None:
    """Refuses a count that is not a positive integer (``True`` is not one)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


# The official library marks where the text starts inside "instruction + text" with this string; we keep the
# same marker so that any wrapper or EOS suffix lands in the pooled part exactly as it does there.
_TEXT_MARKER = "!@#$%^&*()"


def check_encoding(settings: dict[str, Any]) -> None:
    """Refuses unknown keys and bad values among ``settings`` (all of them or some)."""
    unknown = set(settings) - set(DEFAULT_ENCODING)
    if unknown:
        raise TypeError(f"Unknown encoding setting(s) {sorted(unknown)}; known: {sorted(DEFAULT_ENCODING)}")
    if "pooling_mode" in settings:
        check_pooling_mode(settings["pooling_mode"])
    for key in ("max_length", "doc_max_length"):
        check_positive_integer(key, settings.get(key, 1))
    if settings.get("text_template"):  # "" and None mean none / the reference's choice
        check_text_template(settings["text_template"])
    for key in ("text_template", "eos_text"):
        if isinstance(settings.get(key), str) and _TEXT_MARKER in settings[key]:
            raise ValueError(f"{key} contains {_TEXT_MARKER!r}, the string that marks where the text starts; the "
                             "pooled part would move into it")


def resolve_encoding(
    config=None,
    tokenizer=None,
    name_or_path: str | None = None,
    stored: Sequence[dict[str, Any]] = (),
    **overrides: Any,
) -> dict[str, Any]:
    """The one resolution of encoding settings (docs/architecture.md, "Encoding settings"), later sources winning:
    defaults, the checkpoint's ``config.llm2vec``, each of ``stored`` in order (what `read_encoding_settings`
    finds in the base's and the adapters' folders), then ``overrides`` that are not None.

    With a tokenizer (the final resolution), unset ones take the reference's choices for the model's name
    (``name_or_path``, else ``config._name_or_path``): ``text_template`` from `REFERENCE_TEMPLATES` ("" for
    none), then ``eos_text`` from `reference_eos_text`.
    """
    settings = dict(DEFAULT_ENCODING)
    layers = [getattr(config, SETTINGS_KEY, None) if config is not None else None, *stored]
    for layer in layers:
        if isinstance(layer, dict):
            known = {k: v for k, v in layer.items() if k in DEFAULT_ENCODING}
            check_encoding(known)
            settings.update(known)
    check_encoding({k: v for k, v in overrides.items() if v is not None or k not in DEFAULT_ENCODING})
    settings.update({k: v for k, v in overrides.items() if v is not None})
    check_encoding(settings)
    positions = getattr(config, "max_position_embeddings", None) if config is not None else None
    if isinstance(positions, int) and settings["max_length"] > positions:
        raise ValueError(f"max_length {settings['max_length']} is more than the model's max_position_embeddings "
                         f"({positions}): it cannot read that many tokens; use a max_length of at most {positions}")
    if tokenizer is not None:
        name = name_or_path if name_or_path is not None else getattr(config, "_name_or_path", None)
        if settings["text_template"] is None:
            settings["text_template"] = REFERENCE_TEMPLATES.get(name, "")
        if settings["eos_text"] is None:
            settings["eos_text"] = reference_eos_text(getattr(config, "model_type", None), name,
                                                      settings["text_template"], getattr(tokenizer, "eos_token", None))
    return settings


def _write_config_json(path: str, config: dict[str, Any]) -> None:
    # the format transformers writes config.json in, so that a saved config reads the same after a rewrite
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _read_json_object(path: str) -> dict[str, Any] | None:
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def read_encoding_settings(folder: str, with_config: bool = True) -> list[dict[str, Any]]:
    """The settings a folder stores, as layers for `resolve_encoding`'s ``stored``: config.json's ``llm2vec``
    block (unless ``with_config`` is False, for a folder whose config is already loaded), then
    ``llm2vec_config.json`` (the official loader reads only that file). A folder whose two disagree is refused
    (`check_settings_files_agree`): each entry point would otherwise follow another one."""
    config = _read_json_object(os.path.join(folder, "config.json")) or {}
    block = config.get(SETTINGS_KEY) if isinstance(config.get(SETTINGS_KEY), dict) else None
    official = _read_json_object(os.path.join(folder, OFFICIAL_SETTINGS_FILE))
    check_settings_files_agree(folder, block, official)
    return [layer for layer in ((block if with_config else None), official) if layer is not None]


WEIGHTS_FILE, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"


def check_unambiguous_weights(folder: str) -> None:
    """Raises ValueError when ``folder`` holds both a single weights file and a sharded index: loaders differ in
    which they take (transformers the single file, a shard-aware check the index), so one of them is stale."""
    if os.path.isfile(os.path.join(folder, WEIGHTS_FILE)) and os.path.isfile(os.path.join(folder, WEIGHTS_INDEX)):
        raise ValueError(f"{folder} holds both {WEIGHTS_FILE} and {WEIGHTS_INDEX} (sharded weights); one of them is "
                         "stale and loaders differ in which they read: remove the one that is not current")


def check_settings_files_agree(folder: str, block: dict[str, Any] | None, official: dict[str, Any] | None) -> None:
    """Raises ValueError when ``folder``'s llm2vec_config.json sets an official key otherwise than config.json's
    ``llm2vec`` block (a key the block lacks counts as its default). Either file alone is fine."""
    if block is None or official is None:
        return
    differ = [f"{key} {official[key]!r} vs {block.get(key, DEFAULT_ENCODING[key])!r}" for key in OFFICIAL_KEYS
              if key in official and official[key] != block.get(key, DEFAULT_ENCODING[key])]
    if differ:
        raise ValueError(f"{folder}: llm2vec_config.json disagrees with config.json's llm2vec block on "
                         f"{', '.join(differ)}; make them agree (or remove one) so that every loader reads the same")


def write_encoding_settings(folder: str, settings: dict[str, Any]) -> None:
    """Writes ``settings`` (all of them or some) as the ``llm2vec`` block of ``folder``/config.json, and derives
    ``llm2vec_config.json`` (the official loader's keys among them) from that block.

    The only writer of encoding settings into a checkpoint or an adapter folder (docs/architecture.md, "Encoding
    settings"): other keys of an existing config.json stay as they are; where there is no config.json (an adapter
    folder) one holding only the block is written. Nothing else is touched, the caller's config object least.
    Callers that need the folder complete or absent write it staged (as `export` and the trainers do).
    """
    block = {k: settings[k] for k in DEFAULT_ENCODING if k in settings}
    check_encoding(dict(settings))
    config_path = os.path.join(folder, "config.json")
    config = _read_json_object(config_path) or {}
    config[SETTINGS_KEY] = block
    _write_config_json(config_path, config)
    official = {k: block[k] for k in OFFICIAL_KEYS if k in block}
    with open(os.path.join(folder, OFFICIAL_SETTINGS_FILE), "w", encoding="utf-8") as handle:
        handle.write(json.dumps(official, indent=2) + "\n")


#: What llm2vec 0.2.3 appends for `eos_token` pooling, chosen by config class, never by the tokenizer
#: (`LLM2Vec.prepare_for_tokenization`): Llama-3 configs are LlamaConfig, so they get " </s>" too. Gemma2 and
#: Qwen3 have no reference; they get their predecessor's string (both tokenizers have it as a special token).
REFERENCE_EOS_TEXT = {
    "llama": " </s>",
    "mistral": " </s>",
    "gemma": "<eos>",
    "qwen2": "<|endoftext|>",
    "gemma2": "<eos>",
    "qwen3": "<|endoftext|>",
}
#: The two hub names the reference special-cases (it compares ``config._name_or_path``).
LLAMA3_BASE_NAME = "meta-llama/Meta-Llama-3-8B"
LLAMA3_INSTRUCT_NAME = "meta-llama/Meta-Llama-3-8B-Instruct"
#: The reference's Llama-3-Instruct wrapper; it returns right after wrapping, so nothing is appended after it.
LLAMA3_INSTRUCT_TEMPLATE = "<|start_header_id|>user<|end_header_id|>\n\n{text}<|eot_id|>"
#: The wrappers the reference applies by model name (`LLM2Vec.prepare_for_tokenization`); `export` stores the
#: one it resolves, so the checkpoint keeps it under any name.
REFERENCE_TEMPLATES = {
    LLAMA3_INSTRUCT_NAME: LLAMA3_INSTRUCT_TEMPLATE,
    "mistralai/Mistral-7B-Instruct-v0.2": "[INST] {text} [/INST]",
    "meta-llama/Llama-2-7b-chat-hf": "[INST] {text} [/INST]",
    "google/gemma-2-9b-it": "<bos><start_of_turn>user\n{text}<end_of_turn>",
    "Qwen/Qwen2-1.5B-Instruct": "<|im_start|>user\n{text}<|im_end|>",
    "Qwen/Qwen2-7B-Instruct": "<|im_start|>user\n{text}<|im_end|>",
}


def reference_eos_text(model_type: str | None, name_or_path: str | None = None, text_template: str | None = None,
                       eos_token: str | None = None) -> str:
    """The string llm2vec 0.2.3 appends for `eos_token` pooling ("" when it appends nothing).

    ``name_or_path`` is what the reference compares: the hub id it was given, or for a local folder the
    ``_name_or_path`` written in its config.json. The Llama-3-Instruct template (which the reference applies
    by name, and `resolve_encoding` by name or as given) ends the input, as in the reference. Families the
    reference never had (beyond `REFERENCE_EOS_TEXT`) append their tokenizer's ``eos_token``.
    """
    if text_template == LLAMA3_INSTRUCT_TEMPLATE:
        return ""
    if name_or_path == LLAMA3_BASE_NAME:
        return "<|end_of_text|>"
    if model_type in REFERENCE_EOS_TEXT:
        return REFERENCE_EOS_TEXT[model_type]
    if eos_token:
        return eos_token
    raise ValueError(f"No eos_token text known for model_type {model_type!r} and its tokenizer has no EOS token; "
                     "set `eos_text` explicitly")


def reference_name(name_or_path: str) -> str:
    """The model name llm2vec 0.2.3 sees: for a local folder the ``_name_or_path`` in its config.json ("" if
    none), else the hub id as given."""
    config_file = os.path.join(name_or_path, "config.json")
    if os.path.isdir(name_or_path) and os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as handle:
            name = json.load(handle).get("_name_or_path", "")
        return name if isinstance(name, str) else ""
    return str(name_or_path)


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
    """Refuses the inputs whose reading by llm2vec 0.2.3 is not defined by its marker `_TEXT_MARKER` (docs/
    architecture.md, "Semantics"). The reference splits "instruction marker text" at every marker, feeds the parts
    joined and pools the part after the first one: an instruction holding the marker would pool instruction words,
    and a text starting with it would pool nothing. A text holding it later is read as the reference reads it."""
    if _TEXT_MARKER in instruction:
        raise ValueError(f"{where}: the instruction contains {_TEXT_MARKER!r}, the string that marks where the text "
                         "starts (llm2vec 0.2.3 would pool instruction words); remove it from the instruction")
    if _TEXT_MARKER in text and not text.split(_TEXT_MARKER, 1)[0].strip():
        raise ValueError(f"{where}: the text starts with {_TEXT_MARKER!r}, the string that marks where the text "
                         "starts (llm2vec 0.2.3 would pool nothing); remove it or put words before it")


def _first_bad(text: str) -> int:
    return next(i for i, char in enumerate(text) if 0xD800 <= ord(char) <= 0xDFFF)


def _is_medi_item(item) -> bool:
    return isinstance(item[0], str) and isinstance(item[1], str) and isinstance(item[2], int) and not isinstance(item[2], bool)


def check_text_template(template: Any) -> None:
    """A text template holds exactly one ``{text}`` placeholder and no other field; literal braces are doubled
    (``{{`` and ``}}``), as in ``str.format``. Without ``{text}`` every input would embed the same string."""
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
    if settings["pooling_mode"] == "eos_token" and settings["eos_text"] is None:
        raise ValueError("eos_token pooling needs `eos_text` (resolve the settings with a tokenizer)")
    full_texts, pooled_texts = [], []
    for instruction, text in pairs:
        marked = f"{instruction.strip()} {_TEXT_MARKER}{text}" if instruction else f"{_TEXT_MARKER}{text}"
        if settings["text_template"]:
            marked = settings["text_template"].format(text=marked.strip())
        if settings["pooling_mode"] == "eos_token":
            marked = marked.strip() + settings["eos_text"]
        # as llm2vec 0.2.3 splits it: the model reads every part, markers removed; the pooled part is the one
        # after the first marker (a text holding the marker is pooled up to it, `check_separator`)
        parts = marked.split(_TEXT_MARKER)
        full_texts.append("".join(parts))
        pooled_texts.append(parts[1])
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


def tokenize_inputs(tokenizer, pairs: list[tuple[str, str]], settings: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Tokenizes one batch of ``(instruction, text)`` pairs, padded, with ``pool_mask`` (see `collate`)."""
    return collate(tokenizer, *tokenize_unpadded(tokenizer, pairs, settings))


def tokenize_for_encoding(tokenizer, inputs: Any, settings: dict[str, Any]) -> tuple[list, list[int]]:
    """What every encode path does before the model runs: validates ``inputs`` (`normalize_inputs`), cuts each
    text to ``doc_max_length`` and tokenizes (`tokenize_unpadded`). Returns unpadded token ids and how many of
    each row's last tokens are pooled; serving engines are given exactly these ids."""
    pairs = normalize_inputs(inputs)
    texts = cut_to_doc_max_length(
        tokenizer, [text for _, text in pairs], settings["doc_max_length"], settings["max_length"]
    )
    pairs = [(instruction, text) for (instruction, _), text in zip(pairs, texts)]
    return tokenize_unpadded(tokenizer, pairs, settings)


# ---------------------------------------------------------------------------------------------------------------
# Tokenizers as the reference loads them (transformers 4.44's AutoTokenizer on the same files)
# ---------------------------------------------------------------------------------------------------------------
# transformers 5 picks model-specific tokenizer classes that rebuild the normalizer and pre-tokenizer from
# scratch (Qwen2Tokenizer adds NFC and Qwen's split pattern, and `<|endoftext|>` as pad even when the vocabulary
# lacks it), whatever tokenizer.json says; 4.44 read tokenizer.json as written. So we build the tokenizer from
# tokenizer.json ourselves and apply only what 4.44's classes added on top. See docs/architecture.md, "Tokenizers".

#: 4.44's class when tokenizer_config.json names none (its AutoTokenizer mapping by model_type).
_REFERENCE_TOKENIZER_CLASS = {
    "llama": "LlamaTokenizer",
    "mistral": "LlamaTokenizer",
    "gemma": "GemmaTokenizer",
    "gemma2": "GemmaTokenizer",
    "qwen2": "Qwen2Tokenizer",
    "qwen3": "Qwen2Tokenizer",
}
#: Special tokens 4.44's classes assume when the files declare none (used only if the vocabulary has them).
_REFERENCE_CLASS_DEFAULTS = {
    "LlamaTokenizer": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "CodeLlamaTokenizer": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "GemmaTokenizer": {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"},
    "Qwen2Tokenizer": {"eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
}
#: 4.44 classes whose constructor rebuilds the post-processor from add_bos_token (default True) and
#: add_eos_token (default False), ignoring the one in tokenizer.json.
_REFERENCE_REBUILDS_POST_PROCESSOR = ("LlamaTokenizer", "CodeLlamaTokenizer", "GemmaTokenizer")
_NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "cls_token", "mask_token", "pad_token")
#: tokenizer_config.json keys that decide how a tokenizer is read; `export` writes them as the source had them.
TOKENIZER_SOURCE_KEYS = ("tokenizer_class", "add_bos_token", "add_eos_token", "pad_token")
_GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")  # read tokenizer.json as written


class TokenizerEmbeddingError(ValueError):
    """A special or added token whose id lies outside the model's embedding matrix."""


def _token_text(value: Any) -> Any:
    return value.get("content") if isinstance(value, dict) else value


def load_reference_tokenizer(folder: str, model_type: str | None = None):
    """The tokenizer of ``folder`` as llm2vec 0.2.3 uses it: the ids, special tokens and BOS/EOS adding of
    transformers 4.44's ``AutoTokenizer``, with left padding, and EOS as pad token when none is declared (as the
    official scripts set it). Returns None when the folder has no tokenizer.json (SentencePiece-only folders:
    use ``AutoTokenizer``).

    Special tokens that the vocabulary lacks are not added, declared or class defaults: 4.44 would add them
    beyond the embedding, where any use fails; a pad token missing from it becomes EOS. Batches are padded
    with the EOS id whatever the pad token (`collate`), as the reference pads.
    """
    tokenizer_file = os.path.join(folder, "tokenizer.json")
    if not os.path.isfile(tokenizer_file):
        return None
    config: dict[str, Any] = {}
    declared: dict[str, Any] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # the map wins, as in 4.44
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            if name == "tokenizer_config.json":
                config = data
            declared.update({k: data[k] for k in _NAMED_SPECIAL_TOKENS + ("additional_special_tokens",) if k in data})
    class_name = config.get("tokenizer_class") or _REFERENCE_TOKENIZER_CLASS.get(model_type) or "PreTrainedTokenizerFast"
    class_name = class_name[: -len("Fast")] if class_name.endswith("Fast") else class_name
    with open(tokenizer_file, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"{tokenizer_file} is not a tokenizers file: its 'model' is not a JSON object")
    vocab = data["model"].get("vocab") or {}
    known = set(vocab) if isinstance(vocab, dict) else {entry[0] for entry in vocab}
    known |= {token["content"] for token in data.get("added_tokens", [])}
    for key, value in _REFERENCE_CLASS_DEFAULTS.get(class_name, {}).items():
        if key not in declared and value in known:
            declared[key] = value
    if _token_text(declared.get("pad_token")) not in known:
        declared.pop("pad_token", None)
    kwargs = {k: _token_text(v) for k, v in declared.items() if k != "additional_special_tokens" and v is not None}
    extra = [_token_text(t) for t in declared.get("additional_special_tokens") or []]
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=tokenizer_file,
        name_or_path=folder,
        model_max_length=config.get("model_max_length", int(1e30)),
        clean_up_tokenization_spaces=config.get("clean_up_tokenization_spaces", False),
        model_input_names=["input_ids", "attention_mask"],
        **kwargs,
    )
    if extra:
        tokenizer.add_special_tokens({"additional_special_tokens": extra})
    if class_name in _REFERENCE_REBUILDS_POST_PROCESSOR:
        tokenizer.add_bos_token = bool(config.get("add_bos_token", True)) and tokenizer.bos_token is not None
        tokenizer.add_eos_token = bool(config.get("add_eos_token", False)) and tokenizer.eos_token is not None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    # what `export` restores in the tokenizer_config.json it writes, so that 4.44 reads the export as the source
    tokenizer.llm2vec_source_config = {k: config[k] for k in TOKENIZER_SOURCE_KEYS if k in config}
    return tokenizer


def check_tokenizer_fits(tokenizer, num_embeddings: int) -> None:
    """Raises `TokenizerEmbeddingError` naming the first special or added token whose id has no embedding row,
    else the highest id of the whole vocabulary when it has none."""
    named = [(f"{k[:-6]} token", getattr(tokenizer, k, None)) for k in _NAMED_SPECIAL_TOKENS + ("pad_token",)]
    added = [("added token", token) for token in tokenizer.get_added_vocab()]
    for role, token in named + added:
        if token is None:
            continue
        token_id = tokenizer.convert_tokens_to_ids(str(token))
        if token_id is not None and token_id >= num_embeddings:
            raise TokenizerEmbeddingError(
                f"The tokenizer's {role} {str(token)!r} has id {token_id}, but the model's embedding has only "
                f"{num_embeddings} rows: the tokenizer does not belong to this model (or lacks a resize)"
            )
    # every other token too: a text that uses a high id would fail only when it is encoded
    token, token_id = max(tokenizer.get_vocab().items(), key=lambda item: item[1], default=(None, -1))
    if token_id >= num_embeddings:
        beyond = sum(1 for index in tokenizer.get_vocab().values() if index >= num_embeddings)
        raise TokenizerEmbeddingError(
            f"The tokenizer has {beyond} token(s) with ids beyond the model's embedding of {num_embeddings} rows "
            f"(e.g. {token!r}, id {token_id}): the tokenizer does not belong to this model (or lacks a resize)"
        )


def reference_tokenizer_for(tokenizer, model: torch.nn.Module):
    """The same tokenizer files loaded with `load_reference_tokenizer` (found through ``tokenizer.name_or_path``,
    cached on ``model``), in place of a tokenizer that transformers 5 loaded its own way; checked against the
    model's embedding. A tokenizer without files (built in memory) is used as it is."""
    if getattr(tokenizer, "llm2vec_source_config", None) is None:
        cache = model.__dict__.setdefault("_llm2vec_reference_tokenizers", {})
        source = str(getattr(tokenizer, "name_or_path", "") or "")
        if source not in cache:
            folder = source if os.path.isdir(source) else None
            if folder is None and source:
                try:  # a hub id: the tokenizer files are in the local cache already (no network)
                    from transformers.utils import cached_file

                    found = cached_file(source, "tokenizer.json", local_files_only=True)
                    folder = os.path.dirname(found) if found else None
                except (OSError, ValueError):
                    folder = None
            loaded = load_reference_tokenizer(folder, getattr(model.config, "model_type", None)) if folder else None
            cache[source] = loaded
            if loaded is None and type(tokenizer).__name__ not in _GENERIC_TOKENIZER_CLASSES:
                logger.warning(
                    "Could not find the tokenizer files of %r: encoding with %s as transformers loaded it, which "
                    "may tokenize differently from llm2vec 0.2.3", source, type(tokenizer).__name__
                )
        tokenizer = cache[source] or tokenizer
    checked = model.__dict__.setdefault("_llm2vec_checked_tokenizers", set())
    if id(tokenizer) not in checked:  # sentence-transformers asks once per batch
        check_tokenizer_fits(tokenizer, model.get_input_embeddings().num_embeddings)
        checked.add(id(tokenizer))
    return tokenizer


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
    check_positive_integer("max_batch_tokens", max_tokens)
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
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_tokens: int | None = None,
    packing: bool | None = None,
) -> torch.Tensor:
    """``last_hidden_state`` of a padded batch, computed in the forward calls `encode_with` would make for its
    rows (`packed_groups`: packed rows where exact, else groups of similar length, each cut to its own longest
    row). As in one padded call, the states at padded positions mean nothing (here they are zero or the model's
    output there).

    The vectors do not change beyond float rounding: padded positions are masked out of attention and pooling,
    and rotary position embeddings depend only on the distance between tokens, so moving a text within a row
    (dropping left padding, or packing it after other texts with positions restarting at 0) leaves attention
    scores as they were. Masks that are not one contiguous block per row (never produced by `collate`) run as
    one call, as given.
    """
    rows_total, width = attention_mask.shape
    lengths = attention_mask.sum(1)
    positions = torch.arange(width, device=attention_mask.device)
    mask = attention_mask.bool()
    # One contiguous block of real tokens per row, wherever it sits: left or right padding, or both (the rows
    # sentence-transformers concatenates from two columns padded on the left, then to the wider column's width).
    starts = mask.int().argmax(1, keepdim=True)
    if not bool((mask == ((positions >= starts) & (positions < starts + lengths.unsqueeze(1)))).all()):
        return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    calls = packed_groups(model, lengths.tolist(), rows_total, max_tokens, packing)
    if len(calls) == 1 and len(calls[0]) == rows_total:
        return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    additive = getattr(model.config, "_attn_implementation", None) == "eager"
    dtype = next(model.parameters()).dtype
    states: dict[int, torch.Tensor] = {}
    for rows in calls:
        group = [i for row in rows for i in row]
        if len(group) > len(rows):
            texts = {i: input_ids[i][mask[i]].tolist() for i in group}
            packed = packed_batch(int(input_ids[0, 0]), texts, rows, dtype, additive, runs_varlen(model))
            states.update(zip(group, forward_packed(model, packed, input_ids.device)))
            continue
        # one text per row, right-aligned and cut to the group's longest
        longest = int(lengths[group[0]])
        ids = input_ids.new_full((len(group), longest), int(input_ids[0, 0]))
        group_mask = attention_mask.new_zeros((len(group), longest))
        for j, i in enumerate(group):
            ids[j, : int(lengths[i])] = input_ids[i][mask[i]]
            group_mask[j, : int(lengths[i])] = 1
        hidden = model(input_ids=ids, attention_mask=group_mask).last_hidden_state
        states.update((i, hidden[j, : int(lengths[i])]) for j, i in enumerate(group))
    # One write of every text's states: a write per text would make the backward pass copy the whole gradient
    # once per text.
    ordered = torch.cat([states[i] for i in range(rows_total)])
    hidden_states = ordered.new_zeros(rows_total, width, ordered.shape[-1])
    hidden_states[mask] = ordered
    return hidden_states


def forward_padding_free(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``last_hidden_state`` of a padded batch, computed on its real tokens only: `forward_in_length_groups` with
    room for the whole batch in one call, so texts share one packed row where calls attend per text (`runs_varlen`;
    texts longer than a sliding window, and models without per-text attention, run in groups of similar length).
    Differentiable; the training path of the sentence-transformers module. The states at real tokens equal one
    padded call's up to float rounding; at padded positions they are zero."""
    budget = max(int(attention_mask.sum()), attention_mask.shape[1])
    return forward_in_length_groups(model, input_ids, attention_mask, max_tokens=budget)


#: Attention backends that take a prepared 4D mask as given (transformers returns a 4D mask unchanged): sdpa reads
#: it as booleans, eager adds it to the scores. Flash-attention and flex get padded batches (see `packed_groups`).
#: The attention function of packed sdpa calls (registered with transformers' `AttentionInterface`): sdpa on each
#: text's own span. On CPU one masked call over a packed row costs the whole row's scores (a 2048-token row of 40
#: texts: 135 ms against 8 ms for the 40 spans, one head group of a 26M Llama). Without spans it is sdpa, with
#: sdpa's masks, so that a model may keep it for all its calls (`use_varlen_attention`).
VARLEN_ATTENTION = "llm2vec_varlen_sdpa"
PACKED_ATTENTION_BACKENDS = ("sdpa", "eager", VARLEN_ATTENTION)
#: Default least width of a packed row; see `pack_rows`.
DEFAULT_PACKED_ROW_TOKENS = 128


def attends_both_ways(model: torch.nn.Module) -> bool:
    """Whether ``model`` runs bidirectional attention (``config.is_causal`` False, as `make_config_bidirectional`
    sets it); packed rows and per-text attention compute exactly that, so only such models are packed."""
    return getattr(getattr(model, "config", None), "is_causal", True) is False


def packable_length(model: torch.nn.Module) -> int:
    """The longest text that may share a row with other texts and keep its exact vector (0: none may).

    Packing needs a backend that takes a block-diagonal mask as given (`PACKED_ATTENTION_BACKENDS`). A sliding
    window (Mistral, Gemma2, Qwen2's sliding layers) is a mask transformers builds from positions in the row, which
    a prepared mask replaces, so only texts no longer than the window are packed: within them the window masks
    nothing, unpacked or packed. Softcapping (Gemma2) acts on scores before the mask and needs no care.
    A causal model (a baseline loaded with ``enable_bidirectional=False``) is never packed: packed rows attend
    both ways within each text.
    """
    config = getattr(model, "config", None)
    if not attends_both_ways(model) or getattr(config, "_attn_implementation", None) not in PACKED_ATTENTION_BACKENDS:
        return 0
    windows = [getattr(config, key, None) for key in ("sliding_window", "attention_chunk_size")]
    windows = [w for w in windows if isinstance(w, int) and not isinstance(w, bool) and w > 0]
    return min(windows) if windows else 1 << 62


def pack_rows(lengths: Sequence[int], row_tokens: int, max_tokens: int, max_texts: int) -> list[list[list[int]]]:
    """Packs text indices into rows and rows into forward calls: ``calls[c][r]`` lists the texts of row ``r``.

    First-fit decreasing: longest first, each text into the first row of the current call that has room. A row
    holds as many tokens as the call's first (longest) text, or ``row_tokens`` if that is more, and at most
    ``max_tokens``; a call at most ``max_tokens`` tokens counting the padding at row ends (rows × widest row) and
    ``max_texts`` texts. Attention costs rows × width² whatever the mask, so a row is no wider than the padded
    batch of the same texts would be (or ``row_tokens``, which lets very short texts share rows); the padding is
    left only at the ends of rows.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    calls: list[list[list[int]]] = []
    fills: list[int] = []
    capacity = 0
    texts_in_call = 0
    for i in order:
        length = lengths[i]
        rows = calls[-1] if calls else None
        if rows is not None and texts_in_call < max_texts:
            widest = max(fills)
            row = next((r for r, fill in enumerate(fills) if fill + length <= capacity
                        and len(rows) * max(widest, fill + length) <= max_tokens), None)
            if row is not None:
                rows[row].append(i)
                fills[row] += length
                texts_in_call += 1
                continue
            if (len(rows) + 1) * max(widest, length) <= max_tokens:
                rows.append([i])
                fills.append(length)
                texts_in_call += 1
                continue
        calls.append([[i]])
        fills = [length]
        capacity = min(max(length, row_tokens), max_tokens)
        texts_in_call = 1
    return calls


def packed_groups(
    model: torch.nn.Module,
    lengths: Sequence[int],
    batch_size: int,
    max_tokens: int | None = None,
    packing: bool | None = None,
    row_tokens: int | None = None,
) -> list[list[list[int]]]:
    """The forward calls of `encode_with`, as `pack_rows` returns them: packed rows for the texts that pack
    exactly (`packable_length`), one text per row (`length_groups`) for the others. ``packing`` None packs where
    calls attend per text (`runs_varlen`), the case that was measured faster; True packs with masked rows too
    (eager, soft-capped or compiled models), where it measured no faster than padded groups; False never packs."""
    max_tokens = DEFAULT_MAX_BATCH_TOKENS if max_tokens is None else max_tokens
    if row_tokens is None:  # with per-text attention a row's width costs nothing: one row per call
        row_tokens = max_tokens if runs_varlen(model) else DEFAULT_PACKED_ROW_TOKENS
    for name, value in (("max_batch_tokens", max_tokens), ("packed_row_tokens", row_tokens)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    packing = None if packing is None else bool(packing)
    limit = packable_length(model) if packing or (packing is None and runs_varlen(model)) else 0
    if packing is True and limit == 0 and not attends_both_ways(model):
        raise ValueError("packing=True needs a bidirectional model (config.is_causal False): packed rows attend "
                         "both ways within each text")
    if packing is True and limit == 0:
        raise ValueError(
            f"packing=True needs attention implementation {' or '.join(PACKED_ATTENTION_BACKENDS)}, not "
            f"{getattr(model.config, '_attn_implementation', None)!r}; load with attn_implementation='sdpa'"
        )
    packed = [i for i, length in enumerate(lengths) if length <= limit]
    padded = [i for i, length in enumerate(lengths) if length > limit]
    calls = [[[packed[i] for i in row] for row in rows]
             for rows in pack_rows([lengths[i] for i in packed], row_tokens, max_tokens, batch_size)]
    calls += [[[padded[i]] for i in group]
              for group in length_groups([lengths[i] for i in padded], batch_size, max_tokens)]
    return calls


def packed_batch(pad_id: int, input_ids: list, rows: list[list[int]], dtype: torch.dtype, additive: bool,
                 varlen: bool = False) -> dict:
    """One forward call of packed rows: ``input_ids`` and ``position_ids`` (restarting at 0 for every text) of shape
    (rows, width), and a (rows, 1, width, width) mask where a token sees exactly the tokens of its own text; the
    padding at a row's end sees itself only (a fully masked query row would give NaN in sdpa). Boolean for sdpa,
    additive (0 / dtype's min) for eager. ``spans`` gives each text's (row, start, length), in ``rows`` order."""
    width = max(sum(len(input_ids[i]) for i in row) for row in rows)
    ids, positions, segments, spans = [], [], [], []
    for r, row in enumerate(rows):
        start = len(ids)
        for segment, i in enumerate(row):
            length = len(input_ids[i])
            spans.append((r, len(ids) - start, length))
            ids.extend(input_ids[i])
            positions.extend(range(length))
            segments.extend([segment] * length)
        padding = start + width - len(ids)
        ids.extend([pad_id] * padding)
        positions.extend([0] * padding)
        segments.extend([-1] * padding)
    ids = torch.tensor(ids, dtype=torch.long).view(len(rows), width)
    positions = torch.tensor(positions, dtype=torch.long).view(len(rows), width)
    segments = torch.tensor(segments, dtype=torch.long).view(len(rows), width)
    if varlen:  # `varlen_sdpa_attention` reads the spans instead of a mask
        return {"input_ids": ids, "position_ids": positions, "spans": spans, "varlen": True}
    mask = (segments.unsqueeze(2) == segments.unsqueeze(1)).unsqueeze(1)
    if additive:
        mask = torch.zeros(mask.shape, dtype=dtype).masked_fill_(~mask, torch.finfo(dtype).min)
    return {"input_ids": ids, "position_ids": positions, "attention_mask": mask, "spans": spans}


def varlen_sdpa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Attention within each span ``(row, start, length)`` of ``llm2vec_spans``, with no mask; positions outside
    every span get zeros. On CUDA with flash-attention installed, one row tiled by its spans runs flash-attention's
    varlen kernel; otherwise sdpa runs on each span. Without ``llm2vec_spans``: transformers' sdpa attention. Same
    signature and output layout, (batch, length, heads, head_dim), as transformers' sdpa attention; differentiable."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    spans = kwargs.pop("llm2vec_spans", None)
    if spans is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    batch, width = query.shape[0], query.shape[2]
    lengths = [length for _, _, length in spans]
    # flash-attention needs values as wide as queries (latent attention's are narrower)
    if (query.is_cuda and batch == 1 and sum(lengths) == width and value.shape[-1] == query.shape[-1]
            and is_flash_attn_2_available()):
        return _flash_varlen_attention(module, query, key, value, lengths, dropout, scaling), None
    groups = query.shape[1] // key.shape[1]
    rows: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    ends = [0] * batch
    for row, start, length in spans:  # `packed_batch` lists each row's spans left to right
        if start > ends[row]:
            rows[row].append(query.new_zeros(query.shape[1], start - ends[row], value.shape[-1]))
        span = slice(start, start + length)
        rows[row].append(torch.nn.functional.scaled_dot_product_attention(
            query[row, :, span], key[row, :, span], value[row, :, span], dropout_p=dropout, scale=scaling,
            enable_gqa=groups > 1,
        ))
        ends[row] = start + length
    # One concatenation per row rather than writes into a zero tensor: in-place slice writes would make the
    # backward pass copy the whole gradient once per span.
    output = torch.stack([
        torch.cat(pieces + ([query.new_zeros(query.shape[1], width - end, value.shape[-1])] if end < width else []),
                  dim=1)
        for pieces, end in zip(rows, ends)
    ])
    return output.transpose(1, 2).contiguous(), None


def _flash_varlen_attention(module, query, key, value, lengths: list[int], dropout: float, scaling):
    """flash-attention's varlen kernel over one row holding texts of ``lengths`` back to back (through transformers'
    own flash-attention call, which also casts float32 inputs to the model's half-precision dtype)."""
    from transformers.integrations.flash_attention import get_target_dtype
    from transformers.modeling_flash_attention_utils import _flash_attention_forward

    cumulative = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device=query.device)
    return _flash_attention_forward(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), None, query_length=query.shape[2],
        is_causal=False, dropout=dropout, softmax_scale=scaling, cu_seq_lens_q=cumulative,
        cu_seq_lens_k=cumulative, max_length_q=max(lengths), max_length_k=max(lengths),
        target_dtype=get_target_dtype(query, module), attn_implementation="flash_attention_2",
    )


transformers.AttentionInterface.register(VARLEN_ATTENTION, varlen_sdpa_attention)
AttentionMaskInterface.register(VARLEN_ATTENTION, sdpa_mask)


def runs_varlen(model: torch.nn.Module) -> bool:
    """Whether packed calls of ``model`` use `varlen_sdpa_attention`: sdpa models without softcapping (sdpa has
    none; Gemma2 keeps the masked rows of eager), not compiled (a list of spans would recompile every call)."""
    config = model.config
    return (attends_both_ways(model) and config._attn_implementation in ("sdpa", VARLEN_ATTENTION)
            and getattr(config, "attn_logit_softcapping", None) is None
            and getattr(model, "_compiled_call_impl", None) is None)


def use_varlen_attention(model: torch.nn.Module) -> bool:
    """Makes `varlen_sdpa_attention` ``model``'s attention for every call, where `runs_varlen`; returns whether it
    did. Training sets it once: gradient checkpointing recomputes a layer during the backward pass, after
    `forward_packed` has returned, and must find the same attention there."""
    if not runs_varlen(model):
        return False
    model.config._attn_implementation = VARLEN_ATTENTION
    return True


def forward_packed(model: torch.nn.Module, batch: dict, device: torch.device) -> list[torch.Tensor]:
    """Runs one `packed_batch` and returns each text's own token states, (length, hidden), in ``spans`` order."""
    inputs = {"input_ids": batch["input_ids"].to(device), "position_ids": batch["position_ids"].to(device)}
    if batch.get("varlen"):
        # A mask of ones: transformers builds no mask for it, where with none it would build one from the
        # restarting positions, a (width, width) mask that the spans make useless.
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        config = model.config
        previous = config._attn_implementation
        config._attn_implementation = VARLEN_ATTENTION
        try:
            hidden = model(**inputs, llm2vec_spans=batch["spans"]).last_hidden_state
        finally:
            config._attn_implementation = previous
    else:
        hidden = model(**inputs, attention_mask=batch["attention_mask"].to(device)).last_hidden_state
    return [hidden[r, start : start + length] for r, start, length in batch["spans"]]


def unpack_to_padded(states: list[torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token states of texts (each its own length) laid out as the padded ``batch`` from `collate`, for `pool`."""
    attention_mask = batch["attention_mask"]
    hidden = states[0].new_zeros(attention_mask.shape[0], attention_mask.shape[1], states[0].shape[-1])
    mask = attention_mask.bool().to(hidden.device)
    hidden[mask] = torch.cat(states)
    return hidden


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
        check_pooling_mode(pooling_mode)
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
    packing: bool | None = None,
    packed_row_tokens: int | None = None,
) -> torch.Tensor:
    """Embeds texts or ``[instruction, text]`` pairs with any bidirectional encoder; returns float32 (N, hidden).

    All inputs are tokenized first, then run longest first in forward calls of at most ``batch_size`` texts and
    ``max_batch_tokens`` tokens counting padding (default `DEFAULT_MAX_BATCH_TOKENS`). With ``packing`` (the
    default for sdpa models, `packed_groups`), texts share rows with positions restarting per text and attend
    only within themselves (per text, `varlen_sdpa_attention`, or with a block-diagonal mask in rows of at least
    ``packed_row_tokens``), so padding is left only at row ends; ``packing=False`` pads each text to its call's
    longest (`length_groups`), ``packing=True`` also packs eager models and refuses a backend that cannot pack. The reference sorts by characters and batches by count; either way the vectors
    are the same up to float rounding (rotary positions depend only on the distance between tokens).
    """
    check_positive_integer("batch_size", batch_size)
    input_ids, n_pooled = tokenize_for_encoding(tokenizer, inputs, settings)
    calls = packed_groups(model, [len(ids) for ids in input_ids], batch_size, max_batch_tokens, packing,
                          packed_row_tokens)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    additive = getattr(model.config, "_attn_implementation", None) == "eager"
    varlen = runs_varlen(model)
    dtype = next(model.parameters()).dtype
    if show_progress_bar:
        calls = logging.tqdm(calls, desc="Encoding", unit="batch")
    was_training = model.training
    model.eval()
    vectors = [None] * len(input_ids)
    for rows in calls:
        group = [i for row in rows for i in row]
        batch = collate(tokenizer, [input_ids[i] for i in group], [n_pooled[i] for i in group])
        if len(group) > len(rows):
            packed = packed_batch(int(batch["input_ids"][0, 0]), input_ids, rows, dtype, additive, varlen)
            hidden = unpack_to_padded(forward_packed(model, packed, device), batch)
        else:
            hidden = model(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).last_hidden_state
        pooled = pool(hidden, batch, settings["pooling_mode"], tokenizer.bos_token_id).cpu()
        for row, i in enumerate(group):
            vectors[i] = pooled[row]
    model.train(was_training)
    return torch.stack(vectors)


def compile_for_inference(model: torch.nn.Module, **torch_compile_kwargs) -> torch.nn.Module:
    """Compiles a transformers model in place for encoding: ``model.compile(dynamic=True, options={"freezing": True})``.

    Inductor fuses the elementwise work around the matmuls (RMSNorm, rotary embeddings, SiLU gating, residual
    adds: a fifth of eager CPU time) and, with freezing, treats the weights as constants and prepacks them for
    oneDNN. Measured on a 2-core CPU (benchmarks/RESULTS.md): 1.05–1.2× faster encoding with the same vectors
    (max |Δ| ~ 4e-6), after a one-off 20–70 s compile that happens on the first batches; worth it for large
    corpora, not for a handful of texts. ``dynamic=True`` keeps varying batch shapes from recompiling each time.
    Frozen weights cannot be trained: compile a copy that only encodes. Works for ``LLM2Vec.model``, an
    ``AutoModel`` encoder, and a SentenceTransformer's ``model[0].auto_model``. Needs a C++ compiler on CPU.
    Extra inductor settings go in ``options`` (torch refuses ``mode`` together with ``options``).
    """
    options = {"freezing": True, **torch_compile_kwargs.pop("options", {})}
    model.compile(**{"dynamic": True, **torch_compile_kwargs}, options=options)
    return model


class LLM2VecEncoderMixin(BidirectionalMixin):
    """The encoder classes that ``AutoModel`` returns: bidirectional, plus ``encode`` with LLM2Vec pooling."""

    # Decoder checkpoints carry an LM head that the encoder does not use.
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """As transformers', but a checkpoint that lacks weights is refused: transformers would only log
        "MISSING" and initialise them randomly, and such an encoder returns wrong vectors without an error."""
        wants_info = kwargs.pop("output_loading_info", False)
        if args and os.path.isdir(str(args[0])):
            check_unambiguous_weights(str(args[0]))
            read_encoding_settings(str(args[0]))  # refuses a folder whose two settings files disagree
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        missing = sorted(info.get("missing_keys") or ())
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise OSError(f"{args[0] if args else 'the checkpoint'} is incomplete: {len(missing)} tensors are not "
                          f"in its weights ({shown}); they would be randomly initialised")
        return (model, info) if wants_info else model

    def save_pretrained(self, save_directory, *args, is_main_process: bool = True, **kwargs):
        """As transformers', but ``architectures`` names the native class (``LlamaModel``…): serving engines pick
        their class from it and know only the native names; ``auto_map`` still leads remote code to this one."""
        super().save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)
        config_path = os.path.join(save_directory, "config.json")
        config = _read_json_object(config_path) if is_main_process else None
        if config is not None:
            config["architectures"] = [family_for(self.config).native_model_name]
            _write_config_json(config_path, config)

    def encode(
        self,
        inputs,
        tokenizer,
        batch_size: int = 32,
        show_progress_bar: bool = False,
        max_batch_tokens: int | None = None,
        packing: bool | None = None,
        **settings,
    ):
        """Embeds texts or ``[instruction, text]`` pairs exactly as llm2vec does, with this checkpoint's settings.

        ``settings`` override the checkpoint's (pooling_mode, max_length, doc_max_length, skip_instruction, …);
        ``max_batch_tokens`` caps the tokens of one forward call, padding included; ``packing=False`` turns off
        packed rows (see `encode_with`).
        ``tokenizer`` is the checkpoint's (``AutoTokenizer.from_pretrained`` of the same folder or repo): its files
        are read again the way llm2vec 0.2.3 read them (`reference_tokenizer_for`), since transformers 5 may
        pick a class that tokenizes differently.
        """
        tokenizer = reference_tokenizer_for(tokenizer, self)
        resolved = resolve_encoding(self.config, tokenizer, **settings)
        return encode_with(
            self, tokenizer, inputs, resolved, batch_size, show_progress_bar, max_batch_tokens=max_batch_tokens,
            packing=packing,
        )


# ---------------------------------------------------------------------------------------------------------------
# 4. The families: one declaration each
# ---------------------------------------------------------------------------------------------------------------
# Each family's classes are transformers' own with `BidirectionalMixin` in front: `Bidirectional<X>Config`,
# `Bidirectional<X>Model` (the encoder `AutoModel` returns) and `Bidirectional<X>ForMNTP`. Config classes keep the
# native `model_type`, so that config.json stays loadable (and runs bidirectionally on transformers >= 5.2)
# without remote code, by TEI and by vLLM. MNTP heads are the causal-LM heads on the bidirectional body: their
# loss shifts labels by one, so the masked token at position i is predicted from the hidden state at i-1, as
# LLM2Vec's MNTP prescribes. docs/families.md has the support matrix the conformance suite measures.

#: LoRA targets: LLM2Vec's seven projections; Phi-3's fused ones.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FUSED_PROJECTIONS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
#: Multi-head latent attention (MiniCPM3): the query and key-value down/up projections.
LATENT_PROJECTIONS = ("q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj",
                      "up_proj", "down_proj")
#: Mixture-of-experts layers hold their experts as 3-D parameters, not Linear modules: LoRA reaches them through
#: peft's ``target_parameters``. The routers get no LoRA (they stay as pretrained).
EXPERT_PARAMETERS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
#: Phi-1/2's attention output and MLP projections; StarCoder2's MLP.
PHI_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")
STARCODER2_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj")


class Family:
    """One supported architecture: its config, encoder and MNTP classes, and what LoRA trains in it."""

    def __init__(self, model_type: str, config, model, mntp, lora_targets=PROJECTIONS, expert_parameters=()):
        self.model_type, self.config, self.model, self.mntp = model_type, config, model, mntp
        self.lora_targets, self.expert_parameters = tuple(lora_targets), tuple(expert_parameters)
        # `save_pretrained` of a registered class copies this file next to the weights and writes the `auto_map`
        # to it into config.json (transformers' `custom_object_save`), so every saved checkpoint loads with
        # trust_remote_code=True, however it was saved (docs/architecture.md, "Native `model_type` + `auto_map`").
        config.register_for_auto_class("AutoConfig")
        model.register_for_auto_class("AutoModel")
        mntp.register_for_auto_class("AutoModelForCausalLM")

    @property
    def native_model_name(self) -> str:
        """The transformers class the encoder builds on (``LlamaModel``…), the name serving engines know."""
        return next(c.__name__ for c in self.model.__mro__ if c.__module__.startswith("transformers.models."))


def declare(model_type: str, names: str | tuple[str, str, str], since: str = MIN_TRANSFORMERS_VERSION,
            **lora) -> Family | str:
    """Builds a family's three classes on transformers' ``<names>Config``, ``<names>Model`` and
    ``<names>ForCausalLM`` (or the three names given) and puts them in this module, where a checkpoint's
    ``auto_map`` finds them. Returns the reason instead where this transformers lacks the family."""
    config_name, model_name, lm_name = (
        (f"{names}Config", f"{names}Model", f"{names}ForCausalLM") if isinstance(names, str) else names
    )
    native = [getattr(transformers, name, None) for name in (config_name, model_name, lm_name)]
    if None in native:
        return (f"{model_type!r} needs transformers >= {since} (this is {transformers.__version__}); upgrade with: "
                f"pip install -U 'transformers>={since}'")
    stem = "Bidirectional" + model_name.removesuffix("Model")
    config = type(stem + "Config", (native[0],), {"__module__": __name__, "is_causal": False})
    model = type(stem + "Model", (LLM2VecEncoderMixin, native[1]), {"__module__": __name__, "config_class": config})
    mntp = type(stem + "ForMNTP", (BidirectionalMixin, native[2]), {"__module__": __name__, "config_class": config})
    globals().update({cls.__name__: cls for cls in (config, model, mntp)})
    return Family(model_type, config, model, mntp, **lora)


#: model_type -> Family, or why this transformers cannot give it. One line per family; every one passes the
#: conformance suite (tests/modeling/test_conformance.py) on the oldest and newest supported transformers.
_DECLARED = {
    "llama": declare("llama", "Llama"),  # Llama 1-3.x, rope scaling included
    "mistral": declare("mistral", "Mistral"),
    "ministral": declare("ministral", "Ministral"),
    "mixtral": declare("mixtral", "Mixtral", expert_parameters=EXPERT_PARAMETERS),
    "qwen2": declare("qwen2", "Qwen2"),
    "qwen2_moe": declare("qwen2_moe", "Qwen2Moe", expert_parameters=EXPERT_PARAMETERS),
    "qwen3": declare("qwen3", "Qwen3"),
    "qwen3_moe": declare("qwen3_moe", "Qwen3Moe", expert_parameters=EXPERT_PARAMETERS),
    "gemma": declare("gemma", "Gemma"),
    "gemma2": declare("gemma2", "Gemma2"),
    "gemma3_text": declare("gemma3_text", ("Gemma3TextConfig", "Gemma3TextModel", "Gemma3ForCausalLM")),
    "phi3": declare("phi3", "Phi3", lora_targets=FUSED_PROJECTIONS),  # Phi-3, Phi-3.5, Phi-4-mini
    "olmo2": declare("olmo2", "Olmo2"),
    "granite": declare("granite", "Granite"),
    "smollm3": declare("smollm3", "SmolLM3"),
    "glm4": declare("glm4", "Glm4"),
    "minicpm3": declare("minicpm3", "MiniCPM3", since="5.25.0", lora_targets=LATENT_PROJECTIONS),
    "olmo": declare("olmo", "Olmo"),
    "olmo3": declare("olmo3", "Olmo3"),
    "cohere": declare("cohere", "Cohere"),  # Command-R
    "cohere2": declare("cohere2", "Cohere2"),  # Command-R7B, Command-A
    "starcoder2": declare("starcoder2", "Starcoder2", lora_targets=STARCODER2_PROJECTIONS),
    "gpt_oss": declare("gpt_oss", "GptOss", expert_parameters=EXPERT_PARAMETERS),  # attention sinks stay
    "phi": declare("phi", "Phi", lora_targets=PHI_PROJECTIONS),  # Phi-1, Phi-1.5, Phi-2
    "exaone4": declare("exaone4", "Exaone4"),
    "ernie4_5": declare("ernie4_5", "Ernie4_5"),
    "hunyuan_v1_dense": declare("hunyuan_v1_dense", "HunYuanDenseV1"),
    "seed_oss": declare("seed_oss", "SeedOss"),
    "apertus": declare("apertus", "Apertus"),
    "arcee": declare("arcee", "Arcee"),  # AFM
    "dots1": declare("dots1", "Dots1", expert_parameters=EXPERT_PARAMETERS),
}
#: The supported families of this transformers.
FAMILIES: dict[str, Family] = {k: v for k, v in _DECLARED.items() if isinstance(v, Family)}
#: Declared families this transformers lacks, with the one-line reason.
UNAVAILABLE_FAMILIES: dict[str, str] = {k: v for k, v in _DECLARED.items() if isinstance(v, str)}


def refuse(reason: str, *model_types: str) -> dict[str, str]:
    """``{model_type: reason}`` for families refused for the same reason."""
    return dict.fromkeys(model_types, reason)


#: Every other causal-LM family of transformers (its ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``), with the one-line
#: reason llm2vec-hf cannot make it an encoder; `test_every_causal_lm_family_is_classified` keeps this complete on
#: each supported transformers, and the conformance suite measures each reason that a tiny model can show
#: (docs/families.md, "Refused families").
REFUSED_FAMILIES: dict[str, str] = {
    # Measured: with every flag set for bidirectional attention, this layer's state of the first token does not
    # change when the last token does (test_refused_families_cannot_see_ahead).
    **refuse("its selective state-space scan reads the text left to right: no layer can see ahead",
             "mamba", "falcon_mamba", "mamba2"),
    **refuse("its time-mixing recurrence reads the text left to right: no layer can see ahead", "rwkv"),
    **refuse("its RG-LRU recurrent blocks read the text left to right; only its few attention layers could see "
             "ahead", "recurrent_gemma"),
    **refuse("its Mamba layers read the text left to right; only its attention layers could see ahead",
             "jamba", "bamba", "falcon_h1", "granitemoehybrid", "nemotron_h", "zamba", "zamba2"),
    **refuse("its short causal-convolution layers read the text left to right; only its attention layers could "
             "see ahead", "lfm2", "lfm2_moe", "lfm3"),
    **refuse("its linear-attention (gated delta rule) layers read the text left to right; only its full-attention "
             "layers could see ahead", "qwen3_next", "qwen3_5_text", "qwen3_5_moe_text", "qwen4_exp_text",
             "kimi_linear", "olmo_hybrid", "lara_mini", "bailing_hybrid"),
    **refuse("its lightning (linear) attention layers read the text left to right; only its softmax-attention "
             "layers could see ahead", "minimax"),
    **refuse("its attention ignores is_causal: a causal mask is built into the layer, so the first token cannot "
             "see the last", "openai-gpt", "llama4_text"),
    # Stated from transformers' code (no tiny model of it runs here): the same limitation by construction.
    **refuse("its xLSTM cells are recurrences that read the text left to right: no layer can see ahead", "xlstm"),
    # Measured (test_encoders_already_attend_both_ways): the native class already sees ahead.
    **refuse("already an encoder that attends both ways (its causal-LM class is a decoder mode); use it with "
             "sentence-transformers as it is", "bert", "bert-generation", "big_bird", "camembert", "cpmant",
             "data2vec-text", "electra", "ernie", "megatron-bert", "rembert", "roberta", "roberta-prelayernorm",
             "roc_bert", "roformer", "xlm", "xlm-roberta", "xlm-roberta-xl", "xmod", "reformer", "xlnet"),
    # Checked from the config class (test_encoder_decoders_and_multimodal_types_are_what_they_say).
    **refuse("the decoder of an encoder-decoder model (it reads an encoder's output); LLM2Vec needs a decoder-only "
             "model", "bart", "bigbird_pegasus", "blenderbot", "blenderbot-small", "marian", "mbart", "musicgen",
             "musicgen_melody", "mvp", "pegasus", "plbart", "prophetnet", "trocr", "whisper"),
    **refuse("a multimodal (vision/audio + text) checkpoint type; llm2vec-hf loads decoder-only text models",
             "emu3", "fuyu", "gemma3n", "gemma4", "gemma4_unified", "git", "got_ocr2",
             "llama4", "mllama", "moshi", "moss_transcribe_diarize", "phi4_multimodal", "qwen3_5", "qwen3_5_moe",
             "qwen4_exp", "dots3_note"),
    **refuse("a speculative-decoding drafter that reads another model's hidden states, not a text encoder base",
             "gemma4_assistant", "gemma4_unified_assistant"),
}
#: Attention decoders of this transformers' causal-LM mapping that have no declaration yet: the one mechanism may
#: well cover them, but nothing has proven their vectors (no conformance row), so they are refused rather than
#: guessed. Declaring one is a `declare(...)` line plus its conformance row (docs/families.md, "Adding a family").
NOT_YET_DECLARED = (
    "afmoe", "apertus1p5_text", "aria_text", "axk1", "axk2", "beam", "biogpt", "bitnet", "bloom", "blt",
    "code_llama", "codegen", "cohere2_moe", "cohere_compass_text", "ctrl", "cwm", "dbrx", "deepseek_v2",
    "deepseek_v3", "deepseek_v32", "deepseek_v4", "diffllama", "doge", "dory", "dots3_note_text", "ergo",
    "ernie4_5_moe", "exaone", "exaone_moe", "falcon", "flex_olmo", "flint", "gemma3n_text", "gemma4_text",
    "gemma4_unified_text", "glm", "glm4_moe", "glm4_moe_lite", "glm_moe_dsa", "gpt-sw3", "gpt2", "gpt_bigcode",
    "gpt_neo", "gpt_neox", "gpt_neox_japanese", "gptj", "granite_swa", "granitemoe", "granitemoe_swa",
    "granitemoeshared", "helium", "hrm_text", "hunyuan_v1_moe", "hy_v3", "hy_v4", "hyperclovax",
    "inkling2_loop_text", "inkling2_text", "inkling_text", "internlm3", "iquestcoder", "jais2", "jetmoe",
    "kolibri1", "kolibri1_1", "laguna", "longcat_flash", "mellum", "mimo_v2_flash", "minicpm5_moe", "minimax_m2",
    "minimax_m3_vl_text", "ministral3", "modernbert-decoder", "mpt", "nanochat", "nemotron", "olmoe", "opt",
    "param2moe", "persimmon", "phimoe", "sarvam_mla", "sarvam_moe", "solar_open", "stablelm", "vaultgemma", "xglm",
    "youtu", "zaya",
)
REFUSED_FAMILIES.update(refuse("an attention decoder that llm2vec-hf has not declared yet: no conformance run has "
                               "proven its bidirectional vectors", *NOT_YET_DECLARED))


class TextTower:
    """A multimodal checkpoint type whose text tower is a declared family (Gemma-3-4B-it's ``gemma3``: a
    ``text_config`` inside, the text weights under ``language_model.``). Only the tower's config and weights are
    read; the vision and projector weights are listed (in the safetensors header) but never loaded.

    ``key_mapping`` is transformers' ``from_pretrained(key_mapping=...)``: the tower's checkpoint names onto the
    text family's ``…ForCausalLM`` names (the encoder drops the ``model.`` prefix itself). ``other_parts`` are
    the name prefixes of what the text tower leaves unread; any other unknown tensor is still an error.
    """

    def __init__(self, text_family: str, key_mapping: dict[str, str], other_parts: tuple[str, ...]):
        self.text_family, self.key_mapping, self.other_parts = text_family, key_mapping, other_parts

    def text_name(self, key: str) -> str | None:
        """The tower's name for a checkpoint tensor (``model.layers.0…``), or None for another part's tensor."""
        if key.startswith(self.other_parts):
            return None
        for pattern, replacement in self.key_mapping.items():
            key = re.sub(pattern, replacement, key)
        return key


#: Multimodal checkpoint type -> its text tower. transformers' hub layout (``language_model.model.…``) and its
#: in-memory layout (``model.language_model.…``) are both read.
TEXT_TOWERS: dict[str, TextTower] = {
    "gemma3": TextTower("gemma3_text", {r"^model\.language_model\.": "model.", r"^language_model\.": ""},
                        ("vision_tower.", "multi_modal_projector.", "model.vision_tower.",
                         "model.multi_modal_projector.")),
}


def family_for(config: transformers.PretrainedConfig) -> Family:
    """The family of a config, or a one-line ValueError that says why there is none."""
    model_type = getattr(config, "model_type", None)
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    if model_type in TEXT_TOWERS and hasattr(config, "text_config"):
        return family_for(config.text_config)
    if model_type in UNAVAILABLE_FAMILIES:
        raise ValueError(f"Architecture {UNAVAILABLE_FAMILIES[model_type]}")
    if model_type in REFUSED_FAMILIES:
        raise ValueError(f"Architecture {model_type!r} is refused: {REFUSED_FAMILIES[model_type]}")
    raise ValueError(f"Unsupported architecture {model_type!r}; llm2vec-hf supports: {', '.join(sorted(FAMILIES))}")
