"""The model a stage starts from: the bidirectional base (encoder, or MNTP model) with the earlier stages'
adapters merged in order. The stage's own fresh LoRA is added on top by ``lora.add_lora``.
"""

from __future__ import annotations

import logging

from ..loading.adapters import apply_adapter, check_adapter_family
from ..loading.models import load_bidirectional, load_config
from ..loading.paths import resolve_local
from ..modeling.modeling_llm2vec import family_for

logger = logging.getLogger(__name__)


def load_model_for_stage(model_args, for_mntp: bool):
    """Returns ``(model, tokenizer, base_folder)``: the bidirectional encoder (or MNTP model) with the adapters
    of ``peft_model_name_or_path`` merged. An adapter made for another base raises ``AdapterMismatchError`` here,
    before any training starts."""
    adapters = list(model_args.peft_model_name_or_path or [])
    if adapters:
        base_type = load_config(model_args.model_name_or_path).model_type
        for adapter in adapters:
            check_adapter_family(resolve_local(adapter), base_type, model_args.model_name_or_path)
    hf_kwargs = {}
    if model_args.attn_implementation:
        hf_kwargs["attn_implementation"] = model_args.attn_implementation
    router = router_settings(model_args)
    if router:
        hf_kwargs["config_overrides"] = router
    if for_mntp:
        # Adapters are saved (and applied) on the encoder's module names; the MNTP model holds the encoder as
        # `.model`, so earlier adapters are merged there.
        model, tokenizer, folders = load_bidirectional(
            model_args.model_name_or_path, for_mntp=True, dtype=model_args.dtype, **hf_kwargs
        )
        for adapter in adapters:
            model.model = apply_adapter(model.model, resolve_local(adapter), merge=True)
    else:
        model, tokenizer, folders = load_bidirectional(
            model_args.model_name_or_path, adapters, dtype=model_args.dtype, **hf_kwargs
        )
    if adapters:
        logger.info("Merged %d adapter(s) into %s: %s", len(adapters), model_args.model_name_or_path, adapters)
    return model, tokenizer, folders[0]


def router_settings(model_args) -> dict:
    """The recipe's router settings as config overrides (``output_router_logits``, ``router_aux_loss_coef``);
    refused for a base without routers, where they would do nothing."""
    settings = {key: getattr(model_args, key) for key in ("output_router_logits", "router_aux_loss_coef")
                if getattr(model_args, key) is not None}
    if settings and not family_for(load_config(model_args.model_name_or_path)).expert_parameters:
        raise ValueError(f"{', '.join(settings)} set, but {model_args.model_name_or_path} is not a "
                         "mixture-of-experts model: it has no router")
    return settings
