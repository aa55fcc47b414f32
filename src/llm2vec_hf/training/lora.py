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


def check_adapter_family(adapter: str, base: str) -> None:
    """Refuses an adapter whose config names a model class of another family than ``base`` (PEFT records the class
    it was trained on in ``auto_mapping``). Shape checks alone miss this when two bases have the same sizes."""
    import os

    from ..errors import AdapterMismatchError
    from ..json_files import read_json
    from ..loading import load_config, resolve_local
    from ..modeling.modeling_llm2vec import FAMILIES

    config_file = os.path.join(resolve_local(adapter), "adapter_config.json")
    if not os.path.isfile(config_file):
        return  # apply_adapter names the problem
    trained_on = ((read_json(config_file).get("auto_mapping") or {}).get("base_model_class")) or ""
    family_of_class = {cls.__name__: model_type for model_type, f in FAMILIES.items() for cls in (f.model, f.mntp)}
    base_type = load_config(base).model_type
    if trained_on in family_of_class and family_of_class[trained_on] != base_type:
        raise AdapterMismatchError(
            f"Adapter {adapter} was made for another base model: it was trained on a {trained_on} "
            f"({family_of_class[trained_on]}), but {base} is a {base_type} model"
        )


def load_model_for_stage(model_args, for_mntp: bool):
    """Returns ``(model, tokenizer, base_folder)``: the bidirectional encoder (or MNTP model) with the adapters
    of ``peft_model_name_or_path`` merged. An adapter made for another base raises ``AdapterMismatchError`` here,
    before any training starts."""
    adapters = list(model_args.peft_model_name_or_path or [])
    for adapter in adapters:
        check_adapter_family(adapter, model_args.model_name_or_path)
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
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.24; the old name warns there
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    if hasattr(model, "config"):
        model.config.use_cache = False


def take_gradient_checkpointing(args) -> bool:
    """Whether the recipe asks for gradient checkpointing; clears the request so that the Trainer does not enable it
    a second time its own way (we enable it the LoRA-compatible way). Reads both the old and the new name
    (``gradient_checkpointing``, ``activation_checkpointing`` from transformers 5.x on)."""
    names = ("gradient_checkpointing", "activation_checkpointing")
    wanted = any(bool(getattr(args, name, False)) for name in names)
    for name in names:
        if hasattr(args, name):
            setattr(args, name, False)
    return wanted
