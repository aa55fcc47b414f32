"""Serving llm2vec-hf checkpoints on inference engines with the exact LLM2Vec vectors.

- `llm2vec_hf.serving.pooling`: the engine-independent part: the token ids LLM2Vec builds for each input and
  the LLM2Vec pooling of per-token states an engine returns for them (both from ``modeling/``).
- `llm2vec_hf.serving.vllm`: an offline client on ``vllm.LLM`` (``LLM2VecVLLM``) and the vLLM IO-processor plugin
  ``llm2vec`` that returns the same vectors from a vLLM server's ``/pooling`` route. vLLM is imported there
  only: the core package never needs it.

See docs/serving.md.
"""

from __future__ import annotations

import logging

from ..modeling.serving_engines import (
    VLLM_BIDIRECTIONAL_IMPL,
    VLLM_CAUSAL_FAMILIES,
    VLLM_REFUSED,
    VLLM_RUNS_BIDIRECTIONAL,
)


def vllm_status(model_type: str | None) -> str:
    """What vLLM does with an export of this family (docs/serving.md, docs/families.md)."""
    if model_type in VLLM_RUNS_BIDIRECTIONAL:
        return "bidirectional (measured)"
    if model_type in VLLM_CAUSAL_FAMILIES:
        return f"--model-impl {VLLM_BIDIRECTIONAL_IMPL}" + (" (GPU: soft-capping)" if model_type == "gemma2" else "")
    if model_type in VLLM_REFUSED:
        return "not the LLM2Vec vectors (measured): the llm2vec plugin refuses"
    return "not measured: the llm2vec plugin refuses"


def check_vllm_family(model_type: str | None) -> None:
    """Refuses a family that vLLM was measured to run otherwise than LLM2Vec, or was not measured on: vLLM might
    return other vectors than LLM2Vec's without an error."""
    if model_type in VLLM_RUNS_BIDIRECTIONAL + VLLM_CAUSAL_FAMILIES:
        return
    served = ", ".join(VLLM_RUNS_BIDIRECTIONAL + VLLM_CAUSAL_FAMILIES)
    why = (f"{VLLM_REFUSED[model_type]} (measured)" if model_type in VLLM_REFUSED
           else f"vLLM was not measured on {model_type} checkpoints")
    raise ValueError(f"vLLM cannot serve the LLM2Vec vectors of a {model_type} checkpoint: {why}. vLLM serves "
                     f"{served}; encode with llm2vec_hf.LLM2Vec or sentence-transformers instead (docs/families.md)")


def vllm_model_impl(model_type: str | None) -> str | None:
    """The ``model_impl`` (``--model-impl``) vLLM needs to run a checkpoint of this family bidirectionally, or None
    when its default does."""
    return VLLM_BIDIRECTIONAL_IMPL if model_type in VLLM_CAUSAL_FAMILIES else None


def vllm_causal_warning(model_type: str | None) -> str | None:
    """The warning `export` logs for a checkpoint that vLLM runs causal, by default or always, or None when vLLM runs
    it as exported (bidirectionally) or was not measured on it."""
    if model_type in VLLM_REFUSED:
        return (f"vLLM does not give this {model_type} checkpoint's LLM2Vec vectors: {VLLM_REFUSED[model_type]} "
                "(measured). Serve it with sentence-transformers or llm2vec_hf.LLM2Vec (docs/serving.md)")
    if model_type not in VLLM_CAUSAL_FAMILIES:
        return None
    return (
        f"vLLM runs {model_type} checkpoints causal by default (its {model_type} code ignores is_causal), which "
        f"gives other vectors than LLM2Vec's: serve this checkpoint on vLLM with --model-impl "
        f"{VLLM_BIDIRECTIONAL_IMPL} (docs/serving.md)"
    )


def warn_if_vllm_runs_causal(model_type: str | None, logger: logging.Logger) -> None:
    """Logs `vllm_causal_warning` on ``logger`` when it applies."""
    message = vllm_causal_warning(model_type)
    if message:
        logger.warning(message)
