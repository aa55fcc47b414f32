"""The memory one training step needs per device, computed from the base's config without loading the model.

Hand-written because no library estimates a LoRA training step (accelerate's ``estimate-memory`` counts only the
weights). The terms and the formula are in docs/training.md, "Memory plan"; in short, for T tokens in the largest
micro-batch, L layers, hidden size h, attention widths q (queries) and kv (keys and values), MLP width i, vocabulary
V, activation bytes a (2 under bf16/fp16, else 4):

* weights: every parameter of the stage's model (MNTP: with its LM head) at the recipe's ``dtype``;
* LoRA: the adapter's parameters in float32 (peft keeps adapters of a half-precision base in float32), their
  gradients and AdamW's two moments: 16 bytes per LoRA parameter;
* activations saved for the backward pass, per layer and token: two RMSNorm inputs in float32 (8h), the
  attention's q, k, v and output (a(2q + 2kv)), the MLP's gate, up and activation outputs (3ai; an MoE layer: each
  token's k experts, 3a·i_expert·k, plus its router logits), and each LoRA target's input (a per byte of width,
  plus the dropout mask where lora_dropout > 0: 1 byte on a GPU, 4 on a CPU);
  with gradient checkpointing only each layer's input (ah) is kept, and one layer's activations are rebuilt at a
  time, for one forward call's tokens (padding-free batches: at most ``max_batch_tokens``); MNTP adds the LM
  head's logits (aV) and the loss's float32 copy and log-softmax (8V) for the fraction
  ``mlm_probability`` of the tokens that predict a masked token (the only ones projected onto the vocabulary);
* the backward pass's working set: the gradients in flight (MNTP: the float32 gradient of those logits, 4V per
  predicting token; otherwise two float32 tensors of the widest activation);
* a fixed 1 GiB for the framework (CUDA context and kernels on a GPU; the interpreter and libraries on a CPU).

Tokens per micro-batch: MNTP ``per_device_train_batch_size × max_seq_length``; SimCSE two texts per row (the text
and its dropout twin), supervised 2 + ``num_hard_negatives``, each at most ``max_seq_length`` tokens (the plan
assumes full-length texts: real batches are shorter). GradCache embeds the batch without gradients and then runs
``gradcache_mini_batch_size`` texts at a time with gradients.

The base's config is read from its folder, or from the Hugging Face cache when it is there (no download); the
shipped recipes' bases also have their public config values in ``KNOWN_BASES`` (the only way to plan for a Hub id
offline).
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..loading.models import load_config
from ..modeling.modeling_llm2vec import TEXT_TOWERS, family_for
from .lora import lora_config

logger = logging.getLogger(__name__)

GIB = 1024 ** 3
#: GPU sizes the plan is checked against, in GB as sold (the usable memory is a little less).
GPU_SIZES_GB = (24, 40, 80)
#: Part of a GPU's memory a step may plan to use: the rest goes to the allocator's fragmentation.
USABLE_FRACTION = 0.95
FRAMEWORK_BYTES = 1 * GIB

#: Public config.json values (their Hub pages) of the shipped recipes' bases, for planning without a download.
KNOWN_BASES: dict[str, dict[str, Any]] = {
    "princeton-nlp/Sheared-LLaMA-1.3B": dict(model_type="llama", hidden_size=2048, intermediate_size=5504,
                                             num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
                                             vocab_size=32000, tie_word_embeddings=False),
    "meta-llama/Llama-2-7b-chat-hf": dict(model_type="llama", hidden_size=4096, intermediate_size=11008,
                                          num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                                          vocab_size=32000, tie_word_embeddings=False),
    "mistralai/Mistral-7B-Instruct-v0.2": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336,
                                               num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                               vocab_size=32000, tie_word_embeddings=False),
    "meta-llama/Meta-Llama-3-8B-Instruct": dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                                                num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                                vocab_size=128256, tie_word_embeddings=False),
    "meta-llama/Meta-Llama-3.1-8B-Instruct": dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                                                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                                  vocab_size=128256, tie_word_embeddings=False),
    "meta-llama/Llama-3.2-1B-Instruct": dict(model_type="llama", hidden_size=2048, intermediate_size=8192,
                                             num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                                             head_dim=64, vocab_size=128256, tie_word_embeddings=True),
    "meta-llama/Llama-3.2-3B-Instruct": dict(model_type="llama", hidden_size=3072, intermediate_size=8192,
                                             num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
                                             head_dim=128, vocab_size=128256, tie_word_embeddings=True),
    "google/gemma-2-9b-it": dict(model_type="gemma2", hidden_size=3584, intermediate_size=14336,
                                 num_hidden_layers=42, num_attention_heads=16, num_key_value_heads=8, head_dim=256,
                                 vocab_size=256000, tie_word_embeddings=True),
    "google/gemma-3-1b-it": dict(model_type="gemma3_text", hidden_size=1152, intermediate_size=6912,
                                 num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1, head_dim=256,
                                 vocab_size=262144, tie_word_embeddings=True),
    # the text tower of the multimodal gemma3 checkpoint: the only part llm2vec-hf loads (TEXT_TOWERS)
    "google/gemma-3-4b-it": dict(model_type="gemma3_text", hidden_size=2560, intermediate_size=10240,
                                 num_hidden_layers=34, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                                 vocab_size=262208, tie_word_embeddings=True),
    "microsoft/Phi-4-mini-instruct": dict(model_type="phi3", hidden_size=3072, intermediate_size=8192,
                                          num_hidden_layers=32, num_attention_heads=24, num_key_value_heads=8,
                                          vocab_size=200064, tie_word_embeddings=True),
    "Qwen/Qwen2.5-7B-Instruct": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944,
                                     num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                                     vocab_size=152064, tie_word_embeddings=False),
    "Qwen/Qwen3-0.6B": dict(model_type="qwen3", hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                            num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                            tie_word_embeddings=True),
    "Qwen/Qwen3-4B": dict(model_type="qwen3", hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                          num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                          tie_word_embeddings=True),
    "Qwen/Qwen3-8B": dict(model_type="qwen3", hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                          num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                          tie_word_embeddings=False),
    "Qwen/Qwen3-30B-A3B": dict(model_type="qwen3_moe", hidden_size=2048, intermediate_size=6144,
                               num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                               vocab_size=151936, tie_word_embeddings=False, num_experts=128, num_experts_per_tok=8,
                               moe_intermediate_size=768, decoder_sparse_step=1, mlp_only_layers=[]),
    "HuggingFaceTB/SmolLM3-3B": dict(model_type="smollm3", hidden_size=2048, intermediate_size=11008,
                                     num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=4,
                                     vocab_size=128256, tie_word_embeddings=True),
}

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def base_config(name_or_path: str):
    """``(config, where it came from)``: the folder's or the Hub cache's config.json, else ``KNOWN_BASES``."""
    from transformers import AutoConfig

    if os.path.isdir(name_or_path):
        return load_config(name_or_path), os.path.join(name_or_path, "config.json")
    try:
        config = AutoConfig.from_pretrained(name_or_path, local_files_only=True)
    except (OSError, ValueError):
        pass
    else:
        if config.model_type in TEXT_TOWERS:  # only the text tower is loaded and trained
            config = config.text_config
        return config, "the Hugging Face cache"
    if name_or_path in KNOWN_BASES:
        values = dict(KNOWN_BASES[name_or_path])
        return AutoConfig.for_model(values.pop("model_type"), **values), "llm2vec_hf's table of known bases"
    raise ValueError(f"No config for {name_or_path}: it is neither a local folder, nor in the Hugging Face cache, "
                     f"nor one of the known bases ({', '.join(KNOWN_BASES)})")


@dataclass
class Shape:
    """What the plan needs from a config: sizes and the parameter counts of the stage's model and its LoRA."""

    hidden: int
    intermediate: int
    layers: int
    query_width: int
    kv_width: int
    head_dim: int
    vocab: int
    parameters: int
    lora_parameters: int
    #: LoRA targets' input widths, one entry per adapted module of one layer
    lora_input_widths: list[int] = field(default_factory=list)
    experts_per_token: int = 0
    expert_intermediate: int = 0
    experts: int = 0


def model_shape(config, model_args, for_mntp: bool) -> Shape:
    """Counts the stage model's parameters and its LoRA's (peft's own ``get_peft_model`` with the stage's
    ``lora.lora_config``) on the meta device: exact for every family, and no memory."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModel, AutoModelForCausalLM

    settings = lora_config(model_args, family_for(config))
    with torch.device("meta"):
        model = (AutoModelForCausalLM if for_mntp else AutoModel).from_config(config)
        parameters = sum(p.numel() for p in model.parameters())
        widths, first_layer = [], None
        for name, module in model.named_modules():
            layer = re.search(r"(?:^|\.)layers\.(\d+)\.", name)
            if isinstance(module, torch.nn.Linear) and layer and name.rsplit(".", 1)[-1] in settings.target_modules:
                first_layer = first_layer or layer.group(1)
                if layer.group(1) == first_layer:
                    widths.append(module.in_features)
        lora, _ = get_peft_model(model, settings).get_nb_trainable_parameters()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    experts = getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None) or 0
    return Shape(
        hidden=config.hidden_size, intermediate=config.intermediate_size, layers=config.num_hidden_layers,
        query_width=config.num_attention_heads * head_dim, kv_width=kv_heads * head_dim, head_dim=head_dim,
        vocab=config.vocab_size, parameters=parameters, lora_parameters=lora, lora_input_widths=widths,
        experts_per_token=getattr(config, "num_experts_per_tok", 0) if experts else 0,
        expert_intermediate=(getattr(config, "moe_intermediate_size", None) or config.intermediate_size)
        if experts else 0,
        experts=experts,
    )


def texts_per_row(recipe) -> int:
    """Texts one batch row encodes: MNTP one block; SimCSE the text and its dropout twin; supervised the query,
    the positive and the hard negatives."""
    stage = recipe.model.stage
    if stage == "mntp":
        return 1
    if stage == "simcse":
        return 2
    negatives = recipe.contrastive.num_hard_negatives
    return 2 + (1 if negatives is None else negatives)  # None: as many as the records have; the recipes give one


def layer_activation_bytes(shape: Shape, activation_bytes: int, dropout_mask_bytes: int,
                           cpu_attention_keys: int = 0, attention_dropout: bool = False) -> int:
    """Bytes one layer saves for its backward pass, per token (see the module docstring).

    ``cpu_attention_keys``: on a CPU, autocast runs sdpa's math path in float32, which saves the queries, keys and
    values widened to every query head and the attention probabilities (and, with attention dropout, the mask and
    the dropped probabilities too) over that many keys; a GPU's fused kernels save q, k, v and the output only."""
    a = activation_bytes
    if shape.experts:
        mlp = 3 * a * shape.expert_intermediate * shape.experts_per_token + 4 * shape.experts
    else:
        mlp = 3 * a * shape.intermediate
    lora_inputs = sum((a + dropout_mask_bytes) * width for width in shape.lora_input_widths)
    if cpu_attention_keys:
        heads = shape.query_width // shape.head_dim
        attention = 4 * 3 * shape.query_width + 4 * heads * cpu_attention_keys * (3 if attention_dropout else 1) \
            + a * shape.query_width
    else:
        attention = a * (2 * shape.query_width + 2 * shape.kv_width)
    return 8 * shape.hidden + attention + mlp + lora_inputs


def plan(recipe, config=None, device: str = "cuda") -> dict[str, Any]:
    """The memory plan of one optimizer step of ``recipe`` per device, in bytes, with the verdict for 24/40/80 GB
    GPUs and the knob that makes the step fit where it does not.

    ``device`` "cpu" plans the same step on a CPU, whose dropout keeps its mask in the adapter's float32 (CUDA's
    fused dropout keeps one byte per element): the benchmark checks the plan against a CPU step's peak RSS."""
    model_args, data, contrastive, args = recipe.model, recipe.data, recipe.contrastive, recipe.training
    source = "the caller"
    if config is None:
        config, source = base_config(model_args.model_name_or_path)
    stage = model_args.stage
    shape = model_shape(config, model_args, for_mntp=stage == "mntp")
    weight_bytes = DTYPE_BYTES[model_args.dtype]
    half = model_args.dtype != "float32" or bool(getattr(args, "bf16", False) or getattr(args, "fp16", False))
    a = 2 if half else 4

    dropout = lora_config(model_args, family_for(config)).lora_dropout > 0
    mask_bytes = (4 if device == "cpu" else 1) if dropout else 0
    rows = args.per_device_train_batch_size
    length = data.max_seq_length
    texts = rows * texts_per_row(recipe)
    gradcache = stage != "mntp" and contrastive.use_gradcache
    texts_with_grad = min(texts, contrastive.gradcache_mini_batch_size) if gradcache else texts
    tokens = texts_with_grad * length
    # the tokens of the largest forward call: padding-free batches run in calls of at most max_batch_tokens (a
    # longer text in a call of its own), padded ones (and MNTP) in one call
    padding_free = stage != "mntp" and contrastive.padding_free and contrastive.simcse_pooling != "padded_row"
    call_cap = max(length, contrastive.max_batch_tokens) if padding_free else None

    def call_tokens(tokens: int) -> int:
        return tokens if call_cap is None else min(tokens, call_cap)

    attention_dropout = stage == "simcse" and recipe.contrastive.simcse_dropout > 0
    per_layer = layer_activation_bytes(shape, a, mask_bytes, length if device == "cpu" else 0, attention_dropout)
    outside_layers = (a + 4) * shape.hidden  # the embeddings' output and the final norm's float32 input
    widest = max(shape.hidden, shape.intermediate, shape.expert_intermediate * shape.experts_per_token)
    layer_gradients = 2 * 4 * widest  # the gradients in flight through a layer
    # MNTP's head: the logits, the loss's float32 copy and log-softmax, and the float32 gradient of the logits, at
    # the positions that predict a masked token only (mntp.predicted_positions_only); its backward runs before any
    # layer's, so with checkpointing its peak and a rebuilt layer's do not add up
    head = math.ceil((a + 12) * shape.vocab * recipe.mntp.mlm_probability) if stage == "mntp" else 0

    def checkpointed(tokens: int) -> int:
        # every call's layer inputs are kept; the backward rebuilds one call's layer at a time
        return tokens * (shape.layers * a * shape.hidden + outside_layers) \
            + call_tokens(tokens) * max(head, per_layer + layer_gradients)

    activations = {
        "without_gradient_checkpointing": tokens * (shape.layers * per_layer + outside_layers
                                                    + max(head, layer_gradients)),
        "with_gradient_checkpointing": checkpointed(tokens),
    }
    weights = shape.parameters * weight_bytes
    lora = shape.lora_parameters * 16
    checkpointing = bool(getattr(args, "gradient_checkpointing", False) or getattr(args, "activation_checkpointing",
                                                                                   False))
    chosen = "with_gradient_checkpointing" if checkpointing else "without_gradient_checkpointing"
    total = weights + lora + activations[chosen] + FRAMEWORK_BYTES
    fits = {f"{size} GB": total <= size * 1e9 * USABLE_FRACTION for size in GPU_SIZES_GB}
    result: dict[str, Any] = {
        "config_from": source,
        "parameters": shape.parameters,
        "lora_parameters": shape.lora_parameters,
        "tokens_per_micro_batch": tokens,
        "tokens_per_forward_call": call_tokens(tokens),
        "micro_batch": (f"{texts_with_grad} texts of GradCache's mini-batch (of {texts} per step)" if gradcache
                        else f"{rows} rows x {texts_per_row(recipe)} text(s) = {texts} texts")
        + f" x {length} tokens",
        "gradient_checkpointing": checkpointing,
        "bytes": {
            "weights": weights,
            "lora_parameters_gradients_adamw": lora,
            "activations": activations[chosen],
            "activations_without_gradient_checkpointing": activations["without_gradient_checkpointing"],
            "activations_with_gradient_checkpointing": activations["with_gradient_checkpointing"],
            "framework": FRAMEWORK_BYTES,
            "total": total,
        },
        "total_gib": round(total / GIB, 2),
        "fits": fits,
    }
    result["to_fit"] = {f"{size} GB": knob_to_fit(size, weights + lora + FRAMEWORK_BYTES, activations, checkpointed,
                                                  checkpointing, stage, length, texts)
                        for size in GPU_SIZES_GB if not fits[f"{size} GB"]}
    return result


def knob_to_fit(size_gb: int, fixed: int, activations: dict[str, int], checkpointed, checkpointing: bool,
                stage: str, length: int, texts: int) -> dict[str, Any]:
    """The recipe fields that make the step fit a ``size_gb`` GPU (``set``) and why, in the order that keeps the
    recipe's results: gradient checkpointing and GradCache change memory only; a smaller per-device batch needs
    more gradient accumulation for the same global batch (and would change a contrastive stage's in-batch
    negatives, so it is offered for MNTP only). ``checkpointed(tokens)``: the activations of a micro-batch of
    that many tokens under gradient checkpointing; ``texts``: the step's texts (rows for MNTP)."""
    budget = size_gb * 1e9 * USABLE_FRACTION - fixed
    if budget <= 0:
        return {"set": {}, "why": "the weights and the LoRA's optimizer states alone do not fit: shard them over "
                                  "several GPUs (configs/accelerate/fsdp.yaml or deepspeed_zero3.yaml)"}
    with_checkpointing = activations["with_gradient_checkpointing"]
    if not checkpointing and with_checkpointing <= budget:
        return {"set": {"gradient_checkpointing": True}, "why": "activations kept per layer input only"}
    # the most texts of max_seq_length whose checkpointed activations fit (not linear in the texts: padding-free
    # calls are capped, so a smaller micro-batch may rebuild as large a layer)
    low, high = 0, texts
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if checkpointed(middle * length) <= budget else (low, middle - 1)
    fitting_texts = low
    also = {} if checkpointing else {"gradient_checkpointing": True}
    if fitting_texts < 1:
        return {"set": {}, "why": f"not even one text of max_seq_length {length} fits: lower max_seq_length"}
    if stage != "mntp":
        return {"set": {**also, "use_gradcache": True, "gradcache_mini_batch_size": fitting_texts},
                "why": "GradCache: the same loss and gradients, a mini-batch of texts at a time"}
    return {"set": {**also, "per_device_train_batch_size": fitting_texts},
            "why": "raise gradient_accumulation_steps by the same factor to keep the global batch"}
