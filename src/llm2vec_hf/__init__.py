"""llm2vec-hf: LLM2Vec text encoders as native Hugging Face models.

Data flows: text → tokens (``modeling.input_formatting``) → bidirectional model (``modeling.modeling_llm2vec``)
→ pooled vector (``modeling.pooling``) → checkpoint (``checkpoint.export``) → Hub (``checkpoint.hub``).

Importing this package registers the bidirectional classes with ``AutoModel`` / ``AutoModelForCausalLM``.
"""

from .modeling.encoding_settings import POOLING_MODES
from .modeling.modeling_llm2vec import FAMILIES, family_for
from .registration import register_auto_classes
from .llm2vec import LLM2Vec, compile_for_inference

__version__ = "0.1.0"

register_auto_classes()

__all__ = ["LLM2Vec", "compile_for_inference", "FAMILIES", "POOLING_MODES", "family_for", "register_auto_classes", "__version__"]
