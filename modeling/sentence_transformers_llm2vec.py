# Copyright 2026 The llm2vec-hf authors. Apache-2.0.
"""sentence-transformers input module with LLM2Vec's encoding semantics.

This is the one file in ``modeling/`` that imports sentence_transformers: only sentence-transformers loads it
(listed in the checkpoint's modules.json), so that package is always present when it runs.

Why not the stock ``Transformer`` + ``Pooling(include_prompt=False)``: the stock prompt exclusion counts the
prompt tokenized on its own, BOS included. That pools BOS for texts without a prompt and, for prompts ending in
a space, drops the first text token (the tokenizer merges the space into it). Stock pooling also restarts no
weights for ``weighted_mean`` and cannot append EOS for ``eos_token``. LLM2Vec's rule (docs/architecture.md) counts the
text's own tokens from the end; this module applies it with the same code as the ``AutoModel`` path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

import torch
from sentence_transformers.base.modules import Transformer

from .encoding_settings import EncodingSettings, resolve_encoding, write_encoding_settings
from .input_formatting import cut_to_doc_max_length, normalize_inputs, tokenize_inputs
from .modeling_llm2vec import MIN_TRANSFORMERS_VERSION, compile_for_inference
from .packing import forward_in_length_groups, forward_padding_free
from .pooling import pool
from .serving_engines import TEI_POOLING
from .tokenization_llm2vec import reference_tokenizer_for

#: Where the LLM2Vec card's usage snippets name the checkpoint; the repo id replaces it on upload.
MODEL_ID_PLACEHOLDER = "PATH_OR_REPO_ID"
#: The files of this checkpoint's remote code, kept beside every saved copy (modeling_llm2vec.py imports the next
#: five, and transformers copies them with it; `export` copies the last two).
MODELING_FILES = ("modeling_llm2vec.py", "encoding_settings.py", "input_formatting.py", "tokenization_llm2vec.py",
                  "packing.py", "pooling.py", "serving_engines.py", "sentence_transformers_llm2vec.py")
#: Legacy ``pooling_mode_*`` booleans by sentence-transformers pooling mode.
_LEGACY_POOLING_KEYS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}


def requirements(stock: bool = False) -> dict[str, Any]:
    """The ``requirements`` guard of config_sentence_transformers.json (sentence-transformers checks it on load)."""
    return {
        "transformers": {
            "specifier": f">={MIN_TRANSFORMERS_VERSION}",
            "reason": "older transformers ignore config.is_causal=False and would run causal attention",
        },
        "sentence_transformers": {
            "specifier": ">=6.0",
            "reason": "modules.json names sentence-transformers 6 module classes" if stock
            else "the LLM2Vec module subclasses the sentence-transformers 6 Transformer module",
        },
    }


def write_modeling_files(folder: str) -> None:
    """Copies the remote-code files (`MODELING_FILES`) into ``folder``, those it lacks: the one writer of them for
    `export` and for a save through sentence-transformers (``save_pretrained`` copies only the files the model
    class imports, and this module is not one of them)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for name in MODELING_FILES:
        source, target = os.path.join(here, name), os.path.join(folder, name)
        if os.path.isfile(source) and not os.path.exists(target):
            shutil.copyfile(source, target)


#: sentence_bert_config.json's keys as ``Transformer.save_config`` writes them for a text feature-extraction module.
TRANSFORMER_CONFIG = {
    "transformer_task": "feature-extraction",
    "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
    "module_output_name": "token_embeddings",
}


def write_transformer_config(folder: str, max_seq_length: int, saved: dict[str, Any] | None = None) -> None:
    """The one writer of sentence_bert_config.json: ``saved`` (what sentence-transformers wrote there; else
    `TRANSFORMER_CONFIG`) with ``max_seq_length``, which TEI and sentence-transformers read (sentence-transformers
    writes it only into the tokenizer's ``model_max_length``, and the tokenizer files stay as the source had them)."""
    _write_json(os.path.join(folder, "sentence_bert_config.json"),
                {**(TRANSFORMER_CONFIG if saved is None else saved), "max_seq_length": max_seq_length})


def write_model_config(folder: str, saved: dict[str, Any], stock: bool = False) -> None:
    """The one writer of config_sentence_transformers.json: ``saved`` (the keys ``SentenceTransformer.save``
    writes) with the `requirements` guard, which sentence-transformers reads on load but has no API to declare."""
    _write_json(os.path.join(folder, "config_sentence_transformers.json"),
                {**saved, "requirements": requirements(stock)}, sort_keys=True)


def write_pooling_config(folder: str, dimension: int | None, pooling_mode: str) -> None:
    """``folder``/config.json as sentence-transformers' ``Pooling`` saves it, plus the ``pooling_mode_*`` booleans:
    TEI parses only those (its router's ``PoolConfig``); sentence-transformers 6 writes only ``pooling_mode`` and
    reads either."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    os.makedirs(folder, exist_ok=True)
    Pooling(dimension or 1, pooling_mode).save(folder)
    path = os.path.join(folder, "config.json")
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    if dimension is None:
        config.pop("embedding_dimension", None)
    config.update({key: mode == pooling_mode for mode, key in _LEGACY_POOLING_KEYS.items()})
    _write_json(path, config, indent=4)


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _write_json(path: str, data: Any, indent: int = 2, sort_keys: bool = False) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n")


def finish_saved_checkpoint(folder: str, model, settings: EncodingSettings) -> None:
    """Puts back what a save through sentence-transformers or transformers drops or renames, so that the folder is
    again the checkpoint `llm2vec-hf export` writes (docs/architecture.md, "Checkpoint layout"):

    - the ``llm2vec`` settings block and llm2vec_config.json, derived from it (`write_encoding_settings`);
    - the remote-code files (`MODELING_FILES`);
    - ``max_seq_length`` in sentence_bert_config.json (`write_transformer_config`), the ``requirements`` guard in
      config_sentence_transformers.json (`write_model_config`), and 1_Pooling/config.json for TEI.
    """
    # config.json's ``architectures``, serving flags and ``auto_map``, and the modeling files, come from the
    # encoder's own ``save_pretrained`` (`LLM2VecEncoderMixin.save_pretrained`, `register_for_auto_class`)
    write_encoding_settings(folder, settings)
    write_modeling_files(folder)
    tokenizer_config_path = os.path.join(folder, "tokenizer_config.json")
    if os.path.isfile(tokenizer_config_path):  # options of the load that saved it, not properties of the tokenizer
        tokenizer_config = _read_json(tokenizer_config_path)
        dropped = [tokenizer_config.pop(key) for key in ("local_files_only", "is_local") if key in tokenizer_config]
        if dropped:
            _write_json(tokenizer_config_path, tokenizer_config)
    st_config_path = os.path.join(folder, "sentence_bert_config.json")
    if os.path.isfile(st_config_path):
        write_transformer_config(folder, settings.max_length, _read_json(st_config_path))
    model_config_path = os.path.join(folder, "config_sentence_transformers.json")
    if os.path.isfile(model_config_path):  # sentence-transformers writes it before it saves the modules
        write_model_config(folder, _read_json(model_config_path))
    if settings.pooling_mode in TEI_POOLING:
        write_pooling_config(os.path.join(folder, "1_Pooling"), model.config.hidden_size,
                             TEI_POOLING[settings.pooling_mode])


_BASE_MODEL_LINE = re.compile(r"^base_model:\s*['\"]?(?P<id>[^'\"\s]+)['\"]?\s*$", re.MULTILINE)


class LLM2VecUsageSnippet:
    """sentence-transformers' usage snippet with the flag this module needs, and what the checkpoint is.

    Set on a model's card data (its class is sentence-transformers', chosen by the model); a module-level class
    rather than a closure, so that the model still pickles (multi-process encoding)."""

    def __init__(self, card_data):
        self.card_data = card_data

    def __call__(self) -> str:
        snippet = type(self.card_data).generate_usage_snippet(self.card_data)
        snippet = re.sub(r'(model = SentenceTransformer\("[^"]*")\)', r"\1, trust_remote_code=True)", snippet, count=1)
        return snippet + (
            "\n\nThis is an [LLM2Vec](https://arxiv.org/abs/2404.05961) encoder: a decoder with bidirectional "
            "attention whose vectors pool only the text's own tokens (an instruction given as `prompt=` or "
            "`prompt_name=` is read but not pooled). `trust_remote_code=True` loads that pooling from "
            "`sentence_transformers_llm2vec.py` in this repository; `AutoModel.from_pretrained(..., "
            "trust_remote_code=True).encode(texts, tokenizer)` and `llm2vec_hf.LLM2Vec.from_pretrained(...)` give the "
            f"same vectors. It needs transformers >= {MIN_TRANSFORMERS_VERSION}, which runs the attention "
            "bidirectionally."
        )


class LLM2VecTransformer(Transformer):
    """Loads the bidirectional encoder like ``Transformer`` and pools as LLM2Vec does.

    The prompt (``encode(texts, prompt=...)`` or a named prompt) is the instruction: the model reads
    ``prompt.strip() + " " + text`` and only the text's tokens are pooled (with ``skip_instruction``).
    Settings are resolved by `resolve_encoding` from the checkpoint's ``config.llm2vec``, then
    ``encoding_overrides`` (settings for a model that is not a checkpoint yet, such as one in training), then
    ``max_seq_length`` for ``max_length``.

    At inference, each batch runs in the forward calls `LLM2Vec.encode` would make for it (`forward_in_length_groups`):
    short texts share rows (packed, with a block-diagonal mask), the others in groups of similar token length;
    sentence-transformers sorts by characters and batches by count, so a batch as given can be mostly padding.
    ``max_batch_tokens`` caps a call's tokens, padding included, and ``packing=False`` turns packing off (both
    attributes, or ``encode(..., max_batch_tokens=N, packing=False)``).

    In training (the module in train mode, or gradients on), each batch runs on its real tokens only
    (`forward_padding_free`: the texts packed into rows that attend within each text, ``max_batch_tokens`` per
    call), with the same embeddings and gradients as the padded batch; ``padding_free=False`` runs the padded
    batch as given. Both
    passes of GradCache run the same way, so that its replayed dropout matches.
    """

    max_batch_tokens: int | None = None
    packing: bool | None = None
    padding_free: bool = True
    #: Compile the encoder (`compile_for_inference`) at the first inference batch; set before a multi-process
    #: pool starts, so that each worker compiles its own copy.
    compile_on_first_forward: bool = False
    forward_kwargs = {"max_batch_tokens", "packing"}

    def __init__(self, *args, encoding_overrides: dict[str, Any] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoding_overrides = dict(encoding_overrides or {})

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """As ``Transformer.save``, then `finish_saved_checkpoint`: a checkpoint re-saved by
        ``SentenceTransformer.save_pretrained``, ``push_to_hub`` or a ``SentenceTransformerTrainer`` loads in every
        way and serves as the exported one did."""
        super().save(output_path, *args, safe_serialization=safe_serialization, **kwargs)
        finish_saved_checkpoint(output_path, self.auto_model, self.encoding_settings())

    def on_model_ready(self, model) -> None:
        """Gives the card sentence-transformers generates (after training) what this checkpoint needs: the usage
        snippet with ``trust_remote_code=True`` and the LLM2Vec notes, the base model named in the LLM2Vec card (the
        Hub lookup sentence-transformers does instead fails offline and names it "Unknown"), and the tag."""
        super().on_model_ready(model)
        card_data = getattr(model, "model_card_data", None)
        if card_data is None:
            return
        card_data.add_tags(["llm2vec"])
        # so that push_to_hub, which keeps the LLM2Vec card, puts the repo id into its sentence-transformers snippet
        model._model_card_model_id_placeholder = MODEL_ID_PLACEHOLDER
        match = _BASE_MODEL_LINE.search((getattr(model, "_model_card_text", None) or "").partition("\n---")[0])
        if match and not card_data.base_model:
            card_data.base_model = match["id"]
        if not isinstance(card_data.__dict__.get("generate_usage_snippet"), LLM2VecUsageSnippet):
            card_data.generate_usage_snippet = LLM2VecUsageSnippet(card_data)

    def encoding_settings(self) -> EncodingSettings:
        """This module's settings (`resolve_encoding`), resolved again only when what they come from changes
        (``max_seq_length``, ``encoding_overrides``, the config's block, the tokenizer): every batch reads them
        twice (`preprocess`, `forward`)."""
        overrides = {"max_length": self.max_seq_length} if self.max_seq_length else {}
        stored = [self.encoding_overrides] if getattr(self, "encoding_overrides", None) else []
        block = getattr(self.auto_model.config, "llm2vec", None)
        key = (tuple(overrides.items()), repr(stored), repr(block), id(self.tokenizer))
        if self.__dict__.get("_resolved_for") != key:
            self.__dict__["_resolved"] = resolve_encoding(self.auto_model.config, self.tokenizer, stored=stored,
                                                          **overrides)
            self.__dict__["_resolved_for"] = key
        return self.__dict__["_resolved"]

    def _can_flatten_inputs(self) -> bool:
        # sentence-transformers' padding-free path (flash-attention varlen, on GPUs) packs a batch into one row
        # without an attention mask, and then interleaves long and short texts in each batch since padding no
        # longer costs anything. `preprocess` here always pads, because LLM2Vec pooling needs each row's
        # pool_mask; saying so keeps batches length-sorted, and `forward_in_length_groups` cuts the padding.
        return False

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, Any]:
        # tokenize as llm2vec 0.2.3 does, whatever class transformers picked (see `reference_tokenizer_for`)
        tokenizer = reference_tokenizer_for(self.tokenizer, self.auto_model)
        if tokenizer is not self.tokenizer and self.processor is self.tokenizer:
            tokenizer.model_max_length = self.tokenizer.model_max_length  # sentence-transformers' max_seq_length
            self.processor = tokenizer
        settings = self.encoding_settings()
        if prompt:
            inputs = [[prompt, item] if isinstance(item, str) else item for item in inputs]
        pairs = normalize_inputs(list(inputs))
        texts = cut_to_doc_max_length(
            self.tokenizer, [text for _, text in pairs], settings.doc_max_length, settings.max_length
        )
        batch = tokenize_inputs(
            self.tokenizer, [(instruction, text) for (instruction, _), text in zip(pairs, texts)], settings
        )
        return dict(batch)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        pool_mask = features.pop("pool_mask")
        max_batch_tokens = kwargs.pop("max_batch_tokens", None) or self.max_batch_tokens
        packing = kwargs.pop("packing", None)
        packing = self.packing if packing is None else packing
        if kwargs or ((self.training or torch.is_grad_enabled()) and not self.padding_free):
            features = super().forward(features, **kwargs)
        elif self.training or torch.is_grad_enabled():
            features["token_embeddings"] = forward_padding_free(
                self.auto_model, features["input_ids"], features["attention_mask"], max_batch_tokens
            )
        else:
            if self.compile_on_first_forward:
                compile_for_inference(self.auto_model)
                self.compile_on_first_forward = False
            features["token_embeddings"] = forward_in_length_groups(
                self.auto_model, features["input_ids"], features["attention_mask"], max_batch_tokens, packing
            )
        features["pool_mask"] = pool_mask
        features["sentence_embedding"] = pool(
            features["token_embeddings"],
            features,
            self.encoding_settings().pooling_mode,
            self.tokenizer.bos_token_id,
        ).to(features["token_embeddings"].dtype)
        return features
