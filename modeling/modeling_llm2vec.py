# Copyright 2026 The llm2vec-hf authors. Apache-2.0.
"""Bidirectional decoder LLMs as text encoders (LLM2Vec, arXiv 2404.05961).

The files of ``modeling/`` are the Hub remote code of every llm2vec-hf checkpoint and the library's own model
code: one copy, shipped verbatim by ``llm2vec-hf export`` (transformers' remote-code loader follows their relative
imports). They import only torch and transformers and never touch the network. In the order data flows:

- ``encoding_settings``: the settings (pooling mode, lengths, template, EOS text), resolved by one rule;
- ``input_formatting``: text -> (instruction, text) pairs -> tokens and the mask of pooled tokens;
- ``tokenization_llm2vec``: tokenizers read as llm2vec 0.2.3 read them;
- ``packing``: the forward calls (length groups, packed rows, per-text attention);
- ``pooling``: token states -> one vector per text;
- this file: the version guard, ``BidirectionalMixin`` (the single mechanism that turns a decoder into a
  bidirectional encoder), `encode_with` (the one encode path) and one thin declaration per architecture family
  (config, encoder for ``AutoModel``, MNTP head).
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
import transformers
from transformers.utils import logging
from transformers.utils.versions import require_version

from .encoding_settings import (
    EncodingSettings,
    check_positive_integer,
    check_unambiguous_weights,
    read_encoding_settings,
    read_json_object,
    resolve_encoding,
    write_config_json,
)
from .input_formatting import collate, tokenize_for_encoding
from .packing import (
    forward_packed,
    packed_batch,
    packed_groups,
    runs_varlen,
    unpack_to_padded,
    use_varlen_attention,
)
from .pooling import pool
from .tokenization_llm2vec import reference_tokenizer_for

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


@torch.inference_mode()
def encode_with(
    model: torch.nn.Module,
    tokenizer,
    inputs: Any,
    settings: EncodingSettings,
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
        pooled = pool(hidden, batch, settings.pooling_mode, tokenizer.bos_token_id).cpu()
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
        "MISSING" and initialise them randomly, and such an encoder returns wrong vectors without an error. An sdpa
        encoder gets the per-text attention of packed calls (`use_varlen_attention`)."""
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
        use_varlen_attention(model)
        return (model, info) if wants_info else model

    def save_pretrained(self, save_directory, *args, is_main_process: bool = True, **kwargs):
        """As transformers', but ``architectures`` names the native class (``LlamaModel``…): serving engines pick
        their class from it and know only the native names; ``auto_map`` still leads remote code to this one."""
        super().save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)
        config_path = os.path.join(save_directory, "config.json")
        config = read_json_object(config_path) if is_main_process else None
        if config is not None:
            config["architectures"] = [family_for(self.config).native_model_name]
            write_config_json(config_path, config)

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
