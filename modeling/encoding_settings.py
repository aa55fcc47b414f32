# Copyright 2026 The llm2vec-hf authors. Apache-2.0.
"""LLM2Vec encoding settings: their defaults and checks, the one rule that resolves them, and the one writer
that stores them in a checkpoint (docs/architecture.md, "Encoding settings"). Part of the remote code
(torch and transformers only)."""

from __future__ import annotations

import dataclasses
import json
import os
import string
from typing import Any, Mapping, Sequence

POOLING_MODES = ("mean", "weighted_mean", "eos_token", "last_token", "bos_token")


@dataclasses.dataclass(frozen=True)
class EncodingSettings:
    """LLM2Vec's encoding settings (docs/architecture.md, "Encoding settings"), validated once, when made.

    The one object that carries settings between modules: `resolve_encoding` makes it, `encode_with`, the
    sentence-transformers module, export, the model card and the serving poolers read it, and
    `write_encoding_settings` stores it (``to_dict`` is config.json's ``llm2vec`` block). ``text_template`` and
    ``eos_text`` None mean "the reference's choice by model name", which `resolve_encoding` makes when it has a
    tokenizer (`is_resolved`).
    """

    pooling_mode: str = "mean"
    max_length: int = 512
    doc_max_length: int = 400
    skip_instruction: bool = True
    #: A chat/instruction wrapper such as "[INST] {text} [/INST]", applied to the whole input ("" for none); a
    #: property of the checkpoint. None: the reference's choice by model name (`REFERENCE_TEMPLATES`).
    text_template: str | None = None
    #: What `eos_token` pooling appends to each text ("" appends nothing); None: the reference's choice,
    #: `reference_eos_text`. `export` stores the resolved string, so the checkpoint's name cannot change it.
    eos_text: str | None = None

    def __post_init__(self):
        check_encoding(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EncodingSettings":
        """Settings from a mapping of some or all keys (the rest default); unknown keys are refused."""
        check_known_keys(data)
        return cls(**data)

    def replace(self, **changes: Any) -> "EncodingSettings":
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def is_resolved(self) -> bool:
        """Whether the reference's name-dependent choices are made (what a checkpoint must store)."""
        return self.text_template is not None and self.eos_text is not None


#: The setting names, in the order config.json's block lists them.
ENCODING_KEYS = tuple(field.name for field in dataclasses.fields(EncodingSettings))
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
TEXT_MARKER = "!@#$%^&*()"


def check_known_keys(settings: Mapping[str, Any]) -> None:
    unknown = set(settings) - set(ENCODING_KEYS)
    if unknown:
        raise TypeError(f"Unknown encoding setting(s) {sorted(unknown)}; known: {sorted(ENCODING_KEYS)}")


def check_encoding(settings: dict[str, Any]) -> None:
    """Refuses unknown keys and bad values among ``settings`` (all of them or some)."""
    check_known_keys(settings)
    if "pooling_mode" in settings:
        check_pooling_mode(settings["pooling_mode"])
    for key in ("max_length", "doc_max_length"):
        check_positive_integer(key, settings.get(key, 1))
    if settings.get("text_template"):  # "" and None mean none / the reference's choice
        check_text_template(settings["text_template"])
    for key in ("text_template", "eos_text"):
        if isinstance(settings.get(key), str) and TEXT_MARKER in settings[key]:
            raise ValueError(f"{key} contains {TEXT_MARKER!r}, the string that marks where the text starts; the "
                             "pooled part would move into it")


def resolve_encoding(
    config=None,
    tokenizer=None,
    name_or_path: str | None = None,
    stored: Sequence[Mapping[str, Any]] = (),
    **overrides: Any,
) -> EncodingSettings:
    """The one resolution of encoding settings (docs/architecture.md, "Encoding settings"), later sources winning:
    defaults, the checkpoint's ``config.llm2vec``, each of ``stored`` in order (what `read_encoding_settings`
    finds in the base's and the adapters' folders), then ``overrides`` that are not None.

    With a tokenizer (the final resolution), unset ones take the reference's choices for the model's name
    (``name_or_path``, else ``config._name_or_path``): ``text_template`` from `REFERENCE_TEMPLATES` ("" for
    none), then ``eos_text`` from `reference_eos_text`.
    """
    layered: dict[str, Any] = {}
    for layer in [getattr(config, SETTINGS_KEY, None) if config is not None else None, *stored]:
        if isinstance(layer, Mapping):
            known = {k: v for k, v in layer.items() if k in ENCODING_KEYS}
            check_encoding(known)  # names the layer's bad value before a later layer could hide it
            layered.update(known)
    check_encoding({k: v for k, v in overrides.items() if v is not None or k not in ENCODING_KEYS})
    layered.update({k: v for k, v in overrides.items() if v is not None})
    settings = EncodingSettings(**layered)
    positions = getattr(config, "max_position_embeddings", None) if config is not None else None
    if isinstance(positions, int) and settings.max_length > positions:
        raise ValueError(f"max_length {settings.max_length} is more than the model's max_position_embeddings "
                         f"({positions}): it cannot read that many tokens; use a max_length of at most {positions}")
    if tokenizer is not None:
        name = name_or_path if name_or_path is not None else getattr(config, "_name_or_path", None)
        if settings.text_template is None:
            settings = settings.replace(text_template=REFERENCE_TEMPLATES.get(name, ""))
        if settings.eos_text is None:
            settings = settings.replace(eos_text=reference_eos_text(
                getattr(config, "model_type", None), name, settings.text_template,
                getattr(tokenizer, "eos_token", None)))
    return settings


def write_config_json(path: str, config: dict[str, Any]) -> None:
    # the format transformers writes config.json in, so that a saved config reads the same after a rewrite
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_json_object(path: str) -> dict[str, Any] | None:
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
    config = read_json_object(os.path.join(folder, "config.json")) or {}
    block = config.get(SETTINGS_KEY) if isinstance(config.get(SETTINGS_KEY), dict) else None
    official = read_json_object(os.path.join(folder, OFFICIAL_SETTINGS_FILE))
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


def write_encoding_settings(folder: str, settings: EncodingSettings | Mapping[str, Any]) -> None:
    """Writes ``settings`` as the ``llm2vec`` block of ``folder``/config.json, and derives ``llm2vec_config.json``
    (the official loader's keys among them) from that block: a checkpoint's `EncodingSettings`, or the layer a
    training stage stores with its adapter (the keys the stage sets, a mapping), which `resolve_encoding` layers
    over the base's when the adapter is loaded.

    The only writer of encoding settings into a checkpoint or an adapter folder (docs/architecture.md, "Encoding
    settings"): other keys of an existing config.json stay as they are; where there is no config.json (an adapter
    folder) one holding only the block is written. Nothing else is touched, the caller's config object least.
    Callers that need the folder complete or absent write it staged (as `export` and the trainers do).
    """
    layer = settings.to_dict() if isinstance(settings, EncodingSettings) else dict(settings)
    check_encoding(layer)
    block = {k: layer[k] for k in ENCODING_KEYS if k in layer}
    config_path = os.path.join(folder, "config.json")
    config = read_json_object(config_path) or {}
    config[SETTINGS_KEY] = block
    write_config_json(config_path, config)
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


#: The defaults as config.json's ``llm2vec`` block (made here, once `check_encoding` and what it calls exist).
DEFAULT_ENCODING = EncodingSettings().to_dict()
