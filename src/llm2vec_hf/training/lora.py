"""Loading the model a stage trains: the base, earlier adapters merged in order, a fresh LoRA on top.

LoRA as LLM2Vec trains it: rank ``lora_r`` on q, k, v, o, gate, up and down projections, alpha = 2 * r,
dropout 0.05, no task type (so the adapter loads onto the bare encoder as well as onto the MNTP head model).
"""

from __future__ import annotations

import logging

from ..loading import apply_adapter, load_bidirectional

logger = logging.getLogger(__name__)


def lora_config(model_args):
    from peft import LoraConfig

    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha if model_args.lora_alpha is not None else 2 * model_args.lora_r,
        lora_dropout=model_args.lora_dropout,
        target_modules=list(model_args.lora_target_modules),
        bias="none",
        task_type=None,
    )


def load_model_for_stage(model_args, for_mntp: bool):
    """Returns ``(model, tokenizer, base_folder)``: the bidirectional encoder (or MNTP model) with the adapters
    of ``peft_model_name_or_path`` merged. An adapter made for another base raises ``AdapterMismatchError`` here,
    before any training starts."""
    adapters = list(model_args.peft_model_name_or_path or [])
    hf_kwargs = {}
    if model_args.attn_implementation:
        hf_kwargs["attn_implementation"] = model_args.attn_implementation
    if for_mntp:
        # Adapters are saved (and applied) on the encoder's module names; the MNTP model holds the encoder as
        # `.model`, so earlier adapters are merged there.
        model, tokenizer, folders = load_bidirectional(
            model_args.model_name_or_path, for_mntp=True, dtype=model_args.dtype, **hf_kwargs
        )
        for adapter in adapters:
            from ..loading import resolve_local

            model.model = apply_adapter(model.model, resolve_local(adapter), merge=True)
    else:
        model, tokenizer, folders = load_bidirectional(
            model_args.model_name_or_path, adapters, dtype=model_args.dtype, **hf_kwargs
        )
    if adapters:
        logger.info("Merged %d adapter(s) into %s: %s", len(adapters), model_args.model_name_or_path, adapters)
    return model, tokenizer, folders[0]


def add_lora(model, model_args):
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora_config(model_args))
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info("LoRA r=%d on %s: %s trainable of %s parameters (%.2f%%)", model_args.lora_r,
                ",".join(model_args.lora_target_modules), f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return peft_model


def enable_gradient_checkpointing(model) -> None:
    """Gradient checkpointing under LoRA: non-reentrant, and the frozen embeddings' output requires grad so that
    recomputed blocks still propagate gradients to the adapters."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    if hasattr(model, "config"):
        model.config.use_cache = False
