"""Registers the bidirectional classes with transformers' Auto classes.

The config classes keep their native ``model_type`` (``llama``, ``mistral``…) so that exported checkpoints stay
loadable without remote code and by serving engines. ``AutoConfig.register`` needs a new, unique model_type, so
configs are not registered with ``AutoConfig``; models are registered by config class, which is what
``AutoModel.from_config(BidirectionalLlamaConfig(...))`` needs. Checkpoints reach these classes through the
``auto_map`` that ``export`` writes.
"""

from transformers import AutoModel, AutoModelForCausalLM

from .modeling.modeling_llm2vec import FAMILIES


def register_auto_classes() -> None:
    for family in FAMILIES.values():
        AutoModel.register(family.config, family.model, exist_ok=True)
        AutoModelForCausalLM.register(family.config, family.mntp, exist_ok=True)
