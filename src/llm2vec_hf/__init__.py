"""llm2vec-hf: LLM2Vec text encoders as native Hugging Face models.

Data flows: text → tokens (``modeling.modeling_llm2vec.tokenize_inputs``) → bidirectional model
(``modeling``) → pooled vector (``pool``) → checkpoint (``export``) → Hub.

Importing this package registers the bidirectional classes with ``AutoModel`` / ``AutoModelForCausalLM``.
"""

from .modeling.modeling_llm2vec import FAMILIES, POOLING_MODES, family_for
from .registration import register_auto_classes
from .llm2vec import LLM2Vec, compile_for_inference

__version__ = "0.1.0"

register_auto_classes()

__all__ = ["LLM2Vec", "compile_for_inference", "FAMILIES", "POOLING_MODES", "family_for", "register_auto_classes", "__version__"]
