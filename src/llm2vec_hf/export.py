"""``llm2vec-hf export``: one folder that is at once a transformers and a sentence-transformers model.

Layout (docs/architecture.md, "Checkpoint layout"): config.json with ``auto_map``, the serving flags and ``llm2vec``
settings; model.safetensors (adapters merged); tokenizer files; the files of ``modeling/``; modules.json,
sentence_bert_config.json and config_sentence_transformers.json; llm2vec_config.json (read by the official library
too); README.md.

The folder is written under a temporary name next to the target and renamed into place at the end, so an
interrupted export never leaves a folder that looks complete.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import transformers

from .errors import LLM2VecError, TokenizerError, one_line
from .loading import encoding_settings, load_bidirectional
from .model_card import render_model_card
from .serving import warn_if_vllm_runs_causal
from .modeling import modeling_llm2vec
from .modeling.modeling_llm2vec import (
    MIN_TRANSFORMERS_VERSION,
    TOKENIZER_SOURCE_KEYS,
    TokenizerEmbeddingError,
    check_tokenizer_fits,
    family_for,
    resolve_encoding,
)

logger = logging.getLogger(__name__)

MODELING_FILES = ("modeling_llm2vec.py", "sentence_transformers_llm2vec.py")
ST_MODULE_TYPE = "sentence_transformers_llm2vec.LLM2VecTransformer"
#: Keys of llm2vec_config.json, the file the official ``LLM2Vec.from_pretrained`` reads.
OFFICIAL_KEYS = ("pooling_mode", "max_length", "doc_max_length", "skip_instruction")


def export_checkpoint(
    base: str,
    output: str,
    adapters: Iterable[str] = (),
    prompts: dict[str, str] | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    **encoding: Any,
) -> str:
    """Loads ``base``, merges ``adapters`` in order, and writes the checkpoint to ``output``.

    Encoding settings: defaults < base config.json < llm2vec_config.json of base, then of the last adapter
    (official adapter repos carry one) < ``encoding`` keyword arguments that are not None.
    """
    adapters = list(adapters)
    resolve_encoding(**encoding)  # a bad setting fails here, before the model is loaded
    check_output(output, overwrite)
    model, tokenizer, folders = load_bidirectional(base, adapters, dtype=dtype)
    settings = encoding_settings(model, tokenizer, folders, base, **encoding)
    training = {"base_model": base, "adapters": adapters, "base_folder": folders[0], "adapter_folders": folders[1:]}
    return write_checkpoint(model, tokenizer, settings, output, prompts=prompts, overwrite=overwrite, training=training)


def check_output(output: str, overwrite: bool) -> None:
    """Refuses an output that cannot be replaced safely, before anything is loaded or written.

    A symlink is refused (replacing it would either write through it into the folder it points to, or swap the
    link for a folder the user did not ask for); so is an existing file (overwrite replaces checkpoint folders,
    never other files). Left-overs of killed exports to the same output are recovered or removed first.
    """
    path = Path(os.path.abspath(output))
    if path.is_symlink():
        raise LLM2VecError(f"{output} is a symbolic link; give the real folder to write to (links are never followed)")
    if path.exists() and not path.is_dir():
        raise LLM2VecError(f"{output} exists and is a file, not a folder; choose another --output")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LLM2VecError(f"Cannot create {parent}: {error.strerror or error}") from None
    if not os.access(parent, os.W_OK):
        raise LLM2VecError(f"Cannot write to {parent}")
    recover_interrupted(path)
    if path.exists() and os.listdir(path) and not overwrite:
        raise LLM2VecError(f"{output} exists and is not empty; pass --overwrite to replace it")


#: Hidden siblings of the output: ``.NAME.partial-HOST-PID-XXXX`` (being written) and ``.NAME.old-HOST-PID-XXXX``
#: (the replaced copy, during an overwrite). The host and pid tell whether the export that made one still runs.
_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[^/]+$")


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _sibling_prefix(output: Path, kind: str) -> str:
    return f".{output.name}.{kind}-{_host_tag()}-{os.getpid()}-"


def _writer_is_gone(host: str, pid: int) -> bool:
    """True when the export that made a sibling folder is dead. On another host it cannot be checked: kept."""
    if host != _host_tag():
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def recover_interrupted(output: Path) -> None:
    """Cleans up after an export killed on this host: a missing output whose old copy sits in an ``.old-``
    sibling (killed between the two renames of an overwrite) is moved back; ``.partial-`` and ``.old-`` siblings
    of dead exports are removed. Only our own, recognisably named siblings are touched."""
    stale = []
    for entry in output.parent.iterdir():
        match = _SIBLING.match(entry.name)
        if not match or match["name"] != output.name or entry.is_symlink() or not entry.is_dir():
            continue
        if _writer_is_gone(match["host"], int(match["pid"])):
            stale.append((match["kind"], entry))
    for kind, entry in sorted(stale, key=lambda item: item[0] != "old"):
        old_copy = entry / output.name
        if kind == "old" and not os.path.lexists(output) and old_copy.is_dir():
            os.replace(old_copy, output)
            logger.warning("Restored %s from an interrupted overwrite", output)
        shutil.rmtree(entry, ignore_errors=True)
        logger.info("Removed %s, left by an interrupted export", entry)


def write_checkpoint(
    model,
    tokenizer,
    settings: dict[str, Any],
    output: str,
    prompts: dict[str, str] | None = None,
    overwrite: bool = False,
    training: dict[str, Any] | None = None,
) -> str:
    """Writes ``model`` (a bidirectional encoder) and ``tokenizer`` as a complete checkpoint, atomically."""
    check_output(output, overwrite)
    family = family_for(model.config)
    warn_if_vllm_runs_causal(model.config.model_type, logger)
    try:
        check_tokenizer_fits(tokenizer, model.get_input_embeddings().num_embeddings)
    except TokenizerEmbeddingError as error:
        raise TokenizerError(str(error)) from None
    settings = resolve_encoding(model.config, tokenizer, **settings)
    output_path = Path(os.path.abspath(output))
    staging = Path(tempfile.mkdtemp(prefix=_sibling_prefix(output_path, "partial"), dir=output_path.parent))
    try:
        # mkdtemp makes the folder 0700; a checkpoint is for serving containers and other users too, so it gets
        # the mode save_pretrained's folders get (0777 minus the umask).
        os.chmod(staging, 0o777 & ~_umask())
        config = model.config
        modeling_llm2vec.make_config_bidirectional(config)
        config.auto_map = {k: v for k, v in family.auto_map().items() if k != "AutoModelForCausalLM"}
        config.llm2vec = dict(settings)
        model.save_pretrained(staging, safe_serialization=True)
        # Serving engines pick their class from `architectures` and know the native names only; save_pretrained
        # writes our class name there, so it is set afterwards.
        config_json = json.loads((staging / "config.json").read_text())
        config_json["architectures"] = [family.native_model_name]
        _write_json(staging / "config.json", config_json)
        tokenizer.save_pretrained(staging)
        make_tokenizer_portable(staging, getattr(tokenizer, "llm2vec_source_config", None))
        for name in MODELING_FILES:
            shutil.copyfile(resources.files("llm2vec_hf.modeling").joinpath(name), staging / name)
        _write_json(staging / "llm2vec_config.json", {k: settings[k] for k in OFFICIAL_KEYS})
        _write_sentence_transformers_files(staging, settings, prompts or {})
        (staging / "README.md").write_text(render_model_card(model, settings, prompts or {}, training or {}))
        _apply_umask(staging)
        _move_into_place(staging, output_path)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, Exception) and not isinstance(error, LLM2VecError) and _is_write_failure(error):
            raise LLM2VecError(
                f"Could not write the checkpoint next to {output_path}: {_describe_write_failure(error)}; "
                f"{'the existing ' + str(output_path) + ' is unchanged' if output_path.exists() else 'nothing was written'}"
            ) from None
        raise
    logger.info("Wrote %s", output_path)
    return str(output_path)


def _apply_umask(folder: Path) -> None:
    """Gives every file 0666 and every folder 0777, minus the umask, as plain ``open``/``mkdir`` do: some writers
    (transformers' weights, via a temporary file) leave 0600 behind, which serving containers cannot read."""
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_write_failure(error: Exception) -> bool:
    """Failures of the writers (safetensors, tokenizers and plain files raise their own exception types)."""
    from safetensors import SafetensorError

    if isinstance(error, (OSError, SafetensorError)):
        return True
    # tokenizers raises a bare Exception carrying the OS error's text
    return type(error) is Exception or "No space left" in str(error) or "Disk quota" in str(error)


def _describe_write_failure(error: Exception) -> str:
    text = one_line(error)
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left" in text:
        return "the disk is full (no space left on device)"
    if getattr(error, "errno", None) == errno.EDQUOT or "Disk quota" in text:
        return "the disk quota is exceeded"
    return f"{type(error).__name__}: {text}"


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
        config = json.loads(config_path.read_text())
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
        _write_json(config_path, config)
    if tokenizer_path.is_file():
        data = json.loads(tokenizer_path.read_text())
        merges = data.get("model", {}).get("merges")
        if merges and isinstance(merges[0], list) and not any(" " in part for pair in merges for part in pair):
            data["model"]["merges"] = [" ".join(pair) for pair in merges]
            tokenizer_path.write_text(json.dumps(data, ensure_ascii=False))


def _drop_special_token(path: Path, key: str, keep: bool) -> None:
    if keep or not path.is_file():
        return
    data = json.loads(path.read_text())
    if data.pop(key, None) is not None:
        _write_json(path, data)


def _move_into_place(staging: Path, output: Path) -> None:
    """Renames the finished ``staging`` folder to ``output``, swapping it with an existing one.

    On Linux the swap is one atomic ``renameat2(RENAME_EXCHANGE)``: at every instant ``output`` is either the
    old or the new checkpoint. Elsewhere the old folder is first renamed to an ``.old-`` sibling; an export
    killed between the two renames leaves the old copy there, and the next export to ``output``
    (`recover_interrupted`) moves it back.
    """
    if not os.path.lexists(output):
        os.replace(staging, output)
        return
    if _exchange(staging, output):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old copy
        return
    trash = Path(tempfile.mkdtemp(prefix=_sibling_prefix(output, "old"), dir=output.parent))
    os.replace(output, trash / output.name)
    os.replace(staging, output)
    shutil.rmtree(trash, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two paths with Linux's renameat2(RENAME_EXCHANGE); False where that is unavailable."""
    if not sys.platform.startswith("linux") or os.environ.get("LLM2VEC_HF_NO_RENAME_EXCHANGE"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange)
    if result != 0:
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the file system cannot exchange
            return False
        raise OSError(code, os.strerror(code), str(b))
    return True


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _write_sentence_transformers_files(folder: Path, settings: dict[str, Any], prompts: dict[str, str]) -> None:
    import torch

    _write_json(folder / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": ST_MODULE_TYPE}])
    _write_json(
        folder / "sentence_bert_config.json",
        {
            "transformer_task": "feature-extraction",
            "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
            "module_output_name": "token_embeddings",
            "max_seq_length": settings["max_length"],
        },
    )
    versions = {"pytorch": torch.__version__, "transformers": transformers.__version__}
    try:
        import sentence_transformers

        versions["sentence_transformers"] = sentence_transformers.__version__
    except ImportError:
        pass
    _write_json(
        folder / "config_sentence_transformers.json",
        {
            "__version__": versions,
            "model_type": "SentenceTransformer",
            "prompts": {"document": "", **prompts},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
            "requirements": {
                "transformers": {
                    "specifier": f">={MIN_TRANSFORMERS_VERSION}",
                    "reason": "older transformers ignore config.is_causal=False and would run causal attention",
                },
                "sentence_transformers": {
                    "specifier": ">=6.0",
                    "reason": "the LLM2Vec module subclasses the sentence-transformers 6 Transformer module",
                },
            },
        },
    )


def add_arguments(parser) -> None:
    from .modeling.modeling_llm2vec import POOLING_MODES

    parser.add_argument("base", help="decoder checkpoint: local folder or Hub repo id")
    parser.add_argument("--output", required=True, help="folder to write")
    parser.add_argument("--adapter", action="append", default=[], help="PEFT LoRA adapter, merged in the order given")
    parser.add_argument("--pooling", choices=POOLING_MODES, help="pooling mode (default: the checkpoint's, or mean)")
    parser.add_argument("--max-length", type=int, help="max tokens per input (default 512)")
    parser.add_argument("--doc-max-length", type=int, help="cut texts word-wise to this many tokens (default 400)")
    parser.add_argument("--no-skip-instruction", action="store_true", help="pool instruction and BOS tokens too")
    parser.add_argument("--prompt", action="append", type=_named_prompt, default=[], metavar="NAME=TEXT",
                        help="named prompt (instruction) stored for sentence-transformers; repeatable")
    parser.add_argument("--text-template", help='wrapper applied to each input, e.g. "[INST] {text} [/INST]"')
    parser.add_argument("--eos-text", help='text appended for eos_token pooling (default: what llm2vec 0.2.3 appends, '
                        'e.g. " </s>" for Llama/Mistral; "" appends nothing)')
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def _named_prompt(value: str) -> tuple[str, str]:
    import argparse

    name, sep, text = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=TEXT, got {value!r}")
    return name, text


def main(args) -> int:
    path = export_checkpoint(
        args.base,
        args.output,
        adapters=args.adapter,
        prompts=dict(args.prompt),
        dtype=args.dtype,
        overwrite=args.overwrite,
        pooling_mode=args.pooling,
        max_length=args.max_length,
        doc_max_length=args.doc_max_length,
        skip_instruction=False if args.no_skip_instruction else None,
        text_template=args.text_template,
        eos_text=args.eos_text,
    )
    print(f"Exported {path}")
    return 0
