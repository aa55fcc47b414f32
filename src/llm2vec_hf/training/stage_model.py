"""The model a stage starts from: the bidirectional base (encoder, or MNTP model) with the earlier stages'
adapters merged in order. The stage's own fresh LoRA is added on top by ``lora.add_lora``.
"""

from __future__ import annotations

import logging

from ..loading.adapters import apply_adapter
from ..loading.models import load_bidirectional

logger = logging.getLogger(__name__)


def check_adapter_family(adapter: str, base: str) -> None:
    """Refuses an adapter whose config names a model class of another family than ``base`` (PEFT records the class
    it was trained on in ``auto_mapping``). Shape checks alone miss this when two bases have the same sizes."""
    import os

    from ..errors import AdapterMismatchError
    from ..loading.json_files import read_json
    from ..loading.models import load_config
    from ..loading.paths import resolve_local
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
            from ..loading.paths import resolve_local

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
    from ..loading.models import load_config
    from ..modeling.modeling_llm2vec import family_for

    settings = {key: getattr(model_args, key) for key in ("output_router_logits", "router_aux_loss_coef")
                if getattr(model_args, key) is not None}
    if settings and not family_for(load_config(model_args.model_name_or_path)).expert_parameters:
        raise ValueError(f"{', '.join(settings)} set, but {model_args.model_name_or_path} is not a "
                         "mixture-of-experts model: it has no router")
    return settings
