"""``llm2vec-hf export``: one folder that is at once a transformers and a sentence-transformers model.

Layout (docs/architecture.md, "Checkpoint layout"): config.json with ``auto_map``, the serving flags and ``llm2vec``
settings; model.safetensors (adapters merged); tokenizer files; the files of ``modeling/``; modules.json,
sentence_bert_config.json and config_sentence_transformers.json; llm2vec_config.json (read by the official library
too); README.md.

The folder is written under a temporary name next to the target and renamed into place at the end, so an
interrupted export never leaves a folder that looks complete.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from transformers.utils import logging as transformers_logging

from ..errors import LLM2VecError, TokenizerError
from ..loading.json_files import read_json, write_config_json, write_json
from ..loading.models import (
    DTYPES,
    check_checkpoint_files,
    encoding_settings,
    load_bidirectional,
    load_config,
    load_tokenizer,
    tokenizer_folder,
)
from ..loading.paths import refuse_pickle_only, resolve_local
from ..modeling.encoding_settings import EncodingSettings, check_encoding, write_encoding_settings
from ..modeling.modeling_llm2vec import family_for, make_config_bidirectional
from ..modeling.sentence_transformers_llm2vec import write_modeling_files
from ..modeling.tokenization_llm2vec import TOKENIZER_SOURCE_KEYS, TokenizerEmbeddingError, check_tokenizer_fits
from ..output_paths import refuse_overlap
from ..serving import warn_if_vllm_runs_causal
from . import merged_weights
from .model_card import VLLM_CPU_MIN_HEAD_DIM, head_dim, render_model_card
from .st_layout import report_stock_layout, write_sentence_transformers_files
from .staging import (
    apply_umask,
    check_output,
    describe_write_failure,
    is_write_failure,
    move_into_place,
    sibling_prefix,
    umask,
)

logger = logging.getLogger(__name__)


def export_checkpoint(
    base: str,
    output: str,
    adapters: Iterable[str] = (),
    prompts: dict[str, str] | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
    st_modules: str = "auto",
    max_shard_size: str | int | None = None,
    **encoding: Any,
) -> str:
    """Merges ``adapters`` in order into ``base`` and writes the checkpoint to ``output``.

    ``dtype``: the weights' dtype; by default the base's own (`merged_weights.stored_dtype`). The weights are
    streamed, tensor by tensor, from the base's files into shards of at most ``max_shard_size`` (default:
    transformers'), so memory stays at one tensor and the adapters (docs/architecture.md, "Export at scale"),
    in the base's checkpoint layout (mixture-of-experts bases too: transformers converts the export on load as it
    converts the base); a quantized base, or an adapter with parts a streamed merge does not add, is merged by
    PEFT on the loaded model instead.

    Encoding settings are resolved once by `loading.encoding_settings`: defaults < base config.json's ``llm2vec``
    < the base's llm2vec_config.json < each adapter's config.json block and llm2vec_config.json, in order
    (official adapter repos carry the file) < ``encoding`` keyword arguments that are not None. ``st_modules``: the
    sentence-transformers layout (`ST_LAYOUTS`).
    """
    adapters = list(adapters)
    check_encoding({k: v for k, v in encoding.items() if v is not None})  # fails here, before the model loads
    refuse_overlap(output, [("base", base), *(("adapter", adapter) for adapter in adapters)])
    check_output(output, overwrite)
    if dtype is not None and dtype not in DTYPES:
        raise LLM2VecError(f"Unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    path = resolve_local(base)
    config = load_config(path)
    family = family_for(config)
    refuse_pickle_only(path)
    check_checkpoint_files(path)  # the streamed merge reads the files itself, so the loaders' check runs here too
    config = family.config.from_pretrained(path)
    out_dtype = DTYPES[dtype] if dtype else merged_weights.stored_dtype(path, config)
    folders, updates = [path], []
    try:
        merged_weights.check_streamable(config)
        model = merged_weights.skeleton(family, config, out_dtype)
        weights = merged_weights.BaseWeights(path, base, model)
        for adapter in adapters:
            folders.append(resolve_local(adapter))
            updates.append(weights.written_updates(merged_weights.lora_updates(model, folders[-1])))
    except merged_weights.UnsupportedForStreaming as why:
        logger.info("Merging through PEFT on the loaded model (not tensor by tensor: %s); memory holds the whole "
                    "model", why)
        model, tokenizer, folders = load_bidirectional(base, adapters, dtype=out_dtype)
        write_weights = None
    else:
        tokenizer = load_tokenizer(tokenizer_folder(folders), model)

        def write_weights(folder: Path) -> None:
            merged_weights.write_merged_weights(str(folder), weights, updates, out_dtype, max_shard_size)

    settings = encoding_settings(model.config, tokenizer, folders, base, **encoding)
    training = {"base_model": base, "adapters": adapters, "base_folder": folders[0], "adapter_folders": folders[1:]}
    return write_checkpoint(model, tokenizer, settings, output, prompts=prompts, overwrite=overwrite, training=training,
                            st_modules=st_modules, write_weights=write_weights, max_shard_size=max_shard_size)


def write_checkpoint(
    model,
    tokenizer,
    settings: EncodingSettings,
    output: str,
    prompts: dict[str, str] | None = None,
    overwrite: bool = False,
    training: dict[str, Any] | None = None,
    st_modules: str = "auto",
    write_weights=None,
    max_shard_size: str | int | None = None,
) -> str:
    """Writes ``model`` (a bidirectional encoder) and ``tokenizer`` as a complete checkpoint, atomically.

    ``write_weights(folder)`` writes the weight files when ``model`` is a skeleton on the meta device
    (`merged_weights`); otherwise ``model.save_pretrained`` writes them, in shards of ``max_shard_size``.
    ``output`` may not overlap the folders the model and tokenizer were loaded from (`refuse_overlap`)."""
    sources = [("base", (training or {}).get("base_folder") or getattr(model, "name_or_path", None)),
               *(("adapter", folder) for folder in (training or {}).get("adapter_folders", ())),
               ("tokenizer folder", getattr(tokenizer, "name_or_path", None))]
    refuse_overlap(output, [(role, str(path)) for role, path in sources if path])
    check_output(output, overwrite)
    family = family_for(model.config)
    if getattr(type(model), "_auto_class", None) != "AutoModel":
        raise LLM2VecError(f"A checkpoint holds an llm2vec-hf encoder (such as {family.model.__name__}), not a "
                           f"{type(model).__name__}: load it with enable_bidirectional=True")
    warn_if_vllm_runs_causal(model.config.model_type, logger)
    width = head_dim(model.config)
    if width is not None and width < VLLM_CPU_MIN_HEAD_DIM:
        logger.warning("vLLM's CPU build cannot serve this model: its attention needs head_dim >= %d, this one has "
                       "%d (the server starts, then fails at the first request); GPUs are not affected",
                       VLLM_CPU_MIN_HEAD_DIM, width)
    try:
        check_tokenizer_fits(tokenizer, model.get_input_embeddings().num_embeddings)
    except TokenizerEmbeddingError as error:
        raise TokenizerError(str(error)) from None
    check_resolved(settings)
    output_path = Path(os.path.abspath(output))
    staging = Path(tempfile.mkdtemp(prefix=sibling_prefix(output_path, "partial"), dir=output_path.parent))
    try:
        # mkdtemp makes the folder 0700; a checkpoint is for serving containers and other users too, so it gets
        # the mode save_pretrained's folders get (0777 minus the umask).
        os.chmod(staging, 0o777 & ~umask())
        with _config_copy(model) as config:
            make_config_bidirectional(config)
            # writes the auto_map and copies modeling_llm2vec.py with the files it imports (`register_for_auto_class`);
            # a skeleton saves only its config here (an empty state dict), its weights are streamed next
            with _no_progress_bar(write_weights is not None):  # its bar would show "0it" for the empty state dict
                model.save_pretrained(staging, **({"max_shard_size": max_shard_size} if max_shard_size else {}),
                                      **({"state_dict": {}} if write_weights is not None else {}))
        if write_weights is not None:
            for leftover in staging.glob("model*.safetensors*"):
                leftover.unlink()
            write_weights(staging)
        write_encoding_settings(str(staging), settings)
        tokenizer.save_pretrained(staging)
        make_tokenizer_portable(staging, getattr(tokenizer, "llm2vec_source_config", None))
        write_modeling_files(str(staging))
        stock = write_sentence_transformers_files(staging, settings, prompts or {}, model, tokenizer, st_modules)
        report_stock_layout(stock)
        training = {**(training or {}), "stock_layout": stock}
        (staging / "README.md").write_text(render_model_card(model, settings, prompts or {}, training))
        apply_umask(staging)
        move_into_place(staging, output_path)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, Exception) and not isinstance(error, LLM2VecError) and is_write_failure(error):
            raise LLM2VecError(
                f"Could not write the checkpoint next to {output_path}: {describe_write_failure(error)}; "
                f"{'the existing ' + str(output_path) + ' is unchanged' if output_path.exists() else 'nothing was written'}"
            ) from None
        raise
    logger.debug("Wrote %s", output_path)
    return str(output_path)


def check_resolved(settings: EncodingSettings) -> None:
    """A checkpoint stores settings resolved once (`loading.encoding_settings`, or ``LLM2Vec.settings``): all of
    them, with the reference's name-dependent choices already made, so that the name it is loaded under later
    cannot change how it encodes (docs/architecture.md, "Encoding settings")."""
    if not isinstance(settings, EncodingSettings):
        raise TypeError(f"write_checkpoint takes EncodingSettings (from loading.encoding_settings), got "
                        f"{type(settings).__name__}")
    if not settings.is_resolved:
        raise ValueError("write_checkpoint takes resolved encoding settings; text_template and eos_text must be "
                         "resolved (resolve them with loading.encoding_settings)")


@contextlib.contextmanager
def _no_progress_bar(active: bool):
    was_enabled = transformers_logging.is_progress_bar_enabled()
    if active and was_enabled:
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if active and was_enabled:
            transformers_logging.enable_progress_bar()


@contextlib.contextmanager
def _config_copy(model):
    """Lets ``model.save_pretrained`` write a copy of ``model.config`` that the caller may change, so that
    writing a checkpoint leaves the caller's live config as it was."""
    live = model.config
    model.config = copy.deepcopy(live)
    try:
        yield model.config
    finally:
        model.config = live


def make_tokenizer_portable(folder: str | Path, source_config: dict[str, Any] | None = None) -> None:
    """Writes tokenizer files that transformers 4.x and tokenizers < 0.20 read too (so the official llm2vec can),
    and that 4.44 reads exactly as it read the source folder.

    transformers 5 names the generic fast tokenizer ``TokenizersBackend`` (``PreTrainedTokenizerFast`` is the
    same class under its old name), and tokenizers >= 0.20 writes BPE merges as pairs, which older releases
    cannot parse; merges written as "a b" strings read the same in every release when no token has a space.
    ``source_config`` holds the source tokenizer_config.json's class, ``add_bos_token``/``add_eos_token`` and pad
    token (`load_reference_tokenizer`): they are written back as they were (absent ones removed), so the export
    declares no class or special token of its own. Without it (a tokenizer built in memory) the generic class
    is written without ``add_bos_token``/``add_eos_token``, from which transformers 5 would rebuild the
    post-processor that tokenizer.json already holds.
    """
    folder = Path(folder)
    config_path, tokenizer_path = folder / "tokenizer_config.json", folder / "tokenizer.json"
    if config_path.is_file():
        config = read_json(config_path)
        if source_config is not None:
            for key in TOKENIZER_SOURCE_KEYS:
                if key in source_config:
                    config[key] = source_config[key]
                else:
                    config.pop(key, None)
            if config.get("tokenizer_class") == "TokenizersBackend":  # a source written by transformers 5
                config["tokenizer_class"] = "PreTrainedTokenizerFast"
            _drop_special_token(folder / "special_tokens_map.json", "pad_token", keep="pad_token" in source_config)
        else:
            if config.get("tokenizer_class") == "TokenizersBackend":
                config["tokenizer_class"] = "PreTrainedTokenizerFast"
            for key in ("add_bos_token", "add_eos_token"):
                config.pop(key, None)
        write_config_json(config_path, config)
    if tokenizer_path.is_file():
        data = read_json(tokenizer_path)
        merges = data.get("model", {}).get("merges")
        if merges and isinstance(merges[0], list) and not any(" " in part for pair in merges for part in pair):
            data["model"]["merges"] = [" ".join(pair) for pair in merges]
            write_json(tokenizer_path, data, ensure_ascii=False)


def _drop_special_token(path: Path, key: str, keep: bool) -> None:
    if keep or not path.is_file():
        return
    data = read_json(path)
    if data.pop(key, None) is not None:
        write_config_json(path, data)


