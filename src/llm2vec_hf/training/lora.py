"""The fresh LoRA each stage trains, and gradient checkpointing that works under it.

LoRA as LLM2Vec trains it: rank ``lora_r`` on the family's projections (q, k, v, o, gate, up and down; Phi-3's
fused qkv and gate_up), alpha = 2 * r, dropout 0.05, no task type (so the adapter loads onto the bare encoder as
well as onto the MNTP head model). Mixture-of-experts families also train their experts' 3-D weights through
peft's ``target_parameters`` (``Family.expert_parameters``); routers stay as pretrained.
"""

from __future__ import annotations

import logging

from ..modeling.modeling_llm2vec import family_for

logger = logging.getLogger(__name__)

#: LLM2Vec's LoRA dropout.
DEFAULT_LORA_DROPOUT = 0.05


def lora_targets(model_args, family) -> tuple[list[str], list[str]]:
    """The recipe's ``(target_modules, target_parameters)``, each defaulting to the family's."""
    modules = model_args.lora_target_modules
    parameters = model_args.lora_target_parameters
    return (list(family.lora_targets if modules is None else modules),
            list(family.expert_parameters if parameters is None else parameters))


def lora_config(model_args, family):
    from peft import LoraConfig

    modules, parameters = lora_targets(model_args, family)
    dropout = model_args.lora_dropout
    if dropout is None:
        dropout = 0.0 if parameters else DEFAULT_LORA_DROPOUT
    if parameters and dropout:
        raise ValueError(f"lora_dropout must be 0 when LoRA trains expert weights ({', '.join(parameters)}): peft's "
                         "parameter LoRA has no dropout; set lora_dropout: 0 or lora_target_parameters: []")
    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha if model_args.lora_alpha is not None else 2 * model_args.lora_r,
        lora_dropout=dropout,
        target_modules=modules,
        target_parameters=parameters or None,
        bias="none",
        task_type=None,
    )


def check_rank(model, model_args, target_modules) -> None:
    """Refuses a ``lora_r`` above the width of a layer it targets: such a rank adds parameters (r × the width,
    per layer; enough to exhaust memory) but no rank beyond the width."""
    import torch

    targets = set(target_modules)
    widths = {name.rsplit(".", 1)[-1]: min(module.in_features, module.out_features)
              for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets}
    if widths and model_args.lora_r > min(widths.values()):
        narrowest = min(widths, key=widths.get)
        raise ValueError(f"lora_r {model_args.lora_r} is more than the width of {narrowest} ({widths[narrowest]}): "
                         f"a LoRA rank cannot exceed the smaller side of the layer it adapts")


def add_lora(model, model_args):
    from peft import get_peft_model

    config = lora_config(model_args, family_for(model.config))
    check_rank(model, model_args, config.target_modules)
    peft_model = get_peft_model(model, config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    targets = sorted(config.target_modules) + list(config.target_parameters or ())
    logger.info("LoRA r=%d on %s: %s trainable of %s parameters (%.2f%%)", model_args.lora_r,
                ",".join(targets), f"{trainable:,}", f"{total:,}", 100 * trainable / total)
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
