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
import errno
import hashlib
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
from .json_files import read_json, write_json
from . import merged_weights
from .loading import (
    DTYPES,
    check_checkpoint_files,
    encoding_settings,
    load_bidirectional,
    load_config,
    load_tokenizer,
    refuse_pickle_only,
    resolve_local,
    tokenizer_folder,
)
from .model_card import VLLM_CPU_MIN_HEAD_DIM, head_dim, render_model_card
from .output_paths import refuse_existing, refuse_overlap
from .serving import warn_if_vllm_runs_causal
from .modeling import modeling_llm2vec
from .modeling.sentence_transformers_llm2vec import TEI_POOLING, requirements, write_pooling_config
from .modeling.modeling_llm2vec import (
    DEFAULT_ENCODING,
    TOKENIZER_SOURCE_KEYS,
    TokenizerEmbeddingError,
    check_encoding,
    check_tokenizer_fits,
    family_for,
)

logger = logging.getLogger(__name__)

ST_MODULE_FILE = "sentence_transformers_llm2vec.py"
ST_MODULE_TYPE = "sentence_transformers_llm2vec.LLM2VecTransformer"


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
    transformers'), so memory stays at one tensor and the adapters (docs/architecture.md, "Export at scale");
    an adapter with parts a streamed merge does not add is merged by PEFT on the loaded model instead.

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
            updates.append(merged_weights.lora_updates(model, folders[-1]))
    except merged_weights.UnsupportedForStreaming as why:
        logger.info("Merging through PEFT on the loaded model (not tensor by tensor: %s); memory holds the whole "
                    "model", why)
        model, tokenizer, folders = load_bidirectional(base, adapters, dtype=out_dtype)
        write_weights = None
    else:
        tokenizer = load_tokenizer(tokenizer_folder(folders), model)

        def write_weights(folder: Path) -> None:
            merged_weights.write_merged_weights(str(folder), weights, updates, out_dtype, max_shard_size)

    settings = encoding_settings(model, tokenizer, folders, base, **encoding)
    training = {"base_model": base, "adapters": adapters, "base_folder": folders[0], "adapter_folders": folders[1:]}
    return write_checkpoint(model, tokenizer, settings, output, prompts=prompts, overwrite=overwrite, training=training,
                            st_modules=st_modules, write_weights=write_weights, max_shard_size=max_shard_size)


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
    refuse_existing(path, overwrite)


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
    staging = Path(tempfile.mkdtemp(prefix=_sibling_prefix(output_path, "partial"), dir=output_path.parent))
    try:
        # mkdtemp makes the folder 0700; a checkpoint is for serving containers and other users too, so it gets
        # the mode save_pretrained's folders get (0777 minus the umask).
        os.chmod(staging, 0o777 & ~_umask())
        with _config_copy(model) as config:
            modeling_llm2vec.make_config_bidirectional(config)
            # writes the auto_map and copies modeling_llm2vec.py (`register_for_auto_class` in that file); a
            # skeleton saves only its config here (an empty state dict), its weights are streamed next
            with _no_progress_bar(write_weights is not None):  # its bar would show "0it" for the empty state dict
                model.save_pretrained(staging, **({"max_shard_size": max_shard_size} if max_shard_size else {}),
                                      **({"state_dict": {}} if write_weights is not None else {}))
        if write_weights is not None:
            for leftover in staging.glob("model*.safetensors*"):
                leftover.unlink()
            write_weights(staging)
        modeling_llm2vec.write_encoding_settings(str(staging), settings)
        tokenizer.save_pretrained(staging)
        make_tokenizer_portable(staging, getattr(tokenizer, "llm2vec_source_config", None))
        # The sentence-transformers module is not imported by the model class, so save_pretrained does not copy it.
        shutil.copyfile(resources.files("llm2vec_hf.modeling").joinpath(ST_MODULE_FILE), staging / ST_MODULE_FILE)
        stock = _write_sentence_transformers_files(staging, settings, prompts or {}, model, tokenizer, st_modules)
        _report_stock_layout(stock)
        training = {**(training or {}), "stock_layout": stock}
        (staging / "README.md").write_text(render_model_card(model, settings, prompts or {}, training))
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
    logger.debug("Wrote %s", output_path)
    return str(output_path)


def check_resolved(settings: dict[str, Any]) -> None:
    """A checkpoint stores settings resolved once (`loading.encoding_settings`, or ``LLM2Vec.settings``): all of
    them, with the reference's name-dependent choices already made, so that the name it is loaded under later
    cannot change how it encodes (docs/architecture.md, "Encoding settings")."""
    check_encoding(dict(settings))
    unresolved = [key for key in DEFAULT_ENCODING if settings.get(key) is None]
    if unresolved:
        raise ValueError(f"write_checkpoint takes resolved encoding settings; {', '.join(unresolved)} not resolved "
                         "(resolve them with loading.encoding_settings)")


@contextlib.contextmanager
def _no_progress_bar(active: bool):
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if active and was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if active and was_enabled:
            hf_logging.enable_progress_bar()


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


def _report_stock_layout(stock: dict[str, Any] | None) -> None:
    if stock is None:
        return
    figures = (f"mean cosine {stock['mean_cosine']:.6f}, min cosine {stock['min_cosine']:.6f}, max |difference| "
               f"{stock['max_abs']:.2e} to the exact LLM2Vec vectors on {stock['inputs']} sample inputs")
    if stock["layout"] == "stock" and (stock["why_not_exact"] or stock["max_abs"] > STOCK_TOLERANCE):
        logger.warning("sentence-transformers: stock modules (no remote code), NOT the exact LLM2Vec vectors: %s%s",
                       figures, f"; {stock['why_not_exact']}" if stock["why_not_exact"] else "")
    else:
        logger.info("sentence-transformers: %s modules; %s", stock["layout"], figures)


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
        _write_json(config_path, config)
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
    write_json(path, data, indent=2, ensure_ascii=False)


#: sentence-transformers layouts `export` writes (docs/architecture.md, "sentence-transformers layout"): ``remote``
#: is the LLM2Vec module (exact, needs trust_remote_code); ``stock`` is sentence-transformers' own Transformer +
#: Pooling (no remote code; exact only for some settings); ``auto`` writes stock where it is exact, else remote.
ST_LAYOUTS = ("auto", "remote", "stock")
#: The stock Pooling mode that pools what each LLM2Vec mode pools, over the tokens it is given.
STOCK_POOLING = {"mean": "mean", "weighted_mean": "weightedmean", "last_token": "lasttoken", "eos_token": "lasttoken",
                 "bos_token": "cls"}
#: Largest |difference| from the exact vectors at which the stock layout counts as exact (the loading-path tolerance).
STOCK_TOLERANCE = 1e-4
#: Inputs on which the stock layout is measured against the exact vectors: plain texts and instruction pairs,
#: ASCII and not, short and long.
STOCK_SAMPLE = [
    "The quick brown fox jumps over the lazy dog.",
    "a",
    "Ünïcödé naïve café — 日本語のテキスト 😀",
    "Transformers read every token at once; bidirectional attention lets each token see the whole text.",
    ["Given a web search query, retrieve relevant passages", "how do transformers attend to tokens?"],
    ["Given a web search query, retrieve relevant passages", "x"],
    ["Classify the sentiment of the review ", "I loved every minute of it, and the ending too."],
]


#: Texts on which the tokenizer stock modules load must give the exact path's ids (`stock_tokenizer_differs`):
#: digits (runs, decimals, grouped), punctuation runs, whitespace runs, several scripts, combining marks and
#: ligatures (normalizers), emoji; the tokenizer's own special and added tokens are added per tokenizer.
TOKENIZER_PROBES = [
    "0 7 42 123 2026 1234567 3.14159 1,000,000 -17 1e-5 v2.0.1 0x1F 12:30 2026-12-07 ①²",
    "Hello, world! (a) [b] {c} <d> \"e\" 'f' ... ?! ;: -- — – / \\ | @ # $ % ^ & * _ + = ~ `",
    "a  b   c    d\t\te\n\nf \r\n g  ",
    "   leading and trailing   ",
    "Ünïcödé naïve café Straße ÆØÅ e\u0301 \ufb01 日本語のテキスト 中文 한국어 Ελληνικά русский עברית العربية हिन्दी",
    "😀 👍🏽 👨‍👩‍👧 🇫🇷 ★ → ∑ ∞",
    "CamelCaseWords snake_case_words https://example.com/a?b=c&d=1 user@example.org #hashtag",
    "don't won't it's I'm y'all 'quoted' \"double\"",
]


def tokenizer_probes(tokenizer) -> list[str]:
    """`TOKENIZER_PROBES` plus each special and added token of ``tokenizer`` alone, glued to words and spaced."""
    specials = sorted({str(token) for token in [*tokenizer.all_special_tokens, *tokenizer.get_added_vocab()]})
    return TOKENIZER_PROBES + [f"{token}" for token in specials] + [f"x{token}y {token} z" for token in specials]


#: Families whose registered tokenizer class some transformers release loads whatever the folder's
#: tokenizer_config.json says (5.24 and later: qwen2), besides those the installed release lists.
FORCED_TOKENIZER_FAMILIES = ("qwen2",)


def registered_tokenizer(folder: Path, model_type: str):
    """``folder``'s tokenizer loaded with the class transformers registers for ``model_type``, where a release
    forces that class on such folders (None elsewhere, and when the class is the generic one, which reads
    tokenizer.json as it is)."""
    from transformers.models.auto import tokenization_auto
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES, tokenizer_class_from_name

    forced = set(FORCED_TOKENIZER_FAMILIES) | set(getattr(tokenization_auto, "MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS", ()))
    name = TOKENIZER_MAPPING_NAMES.get(model_type) if model_type in forced else None
    tokenizer_class = tokenizer_class_from_name(name) if name else None
    if tokenizer_class is None or tokenizer_class.__name__ in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        return None
    return tokenizer_class.from_pretrained(str(folder))


def stock_tokenizer_differs(stock_tokenizer, reference, texts: Iterable[str]) -> str | None:
    """None when ``stock_tokenizer`` gives ``reference``'s ids (special tokens added, as both encode) on every
    text, else which text differs and how."""
    for text in texts:
        got, want = stock_tokenizer(text)["input_ids"], reference(text)["input_ids"]
        if list(got) != list(want):
            return (f"the tokenizer sentence-transformers loads ({type(stock_tokenizer).__name__}) gives other ids "
                    f"than the exact path on {text[:40]!r} ({len(got)} vs {len(want)} tokens)")
    return None


def stock_is_exact(settings: dict[str, Any]) -> str | None:
    """None when stock Transformer + Pooling modules (and TEI, which pools the same way) compute what LLM2Vec
    computes for these settings, else why not.

    Stock modules read ``prompt + text`` and pool over all of it, BOS included; LLM2Vec pools only the text's own
    tokens (``skip_instruction``), cuts texts word-wise to doc_max_length, wraps them in the text template and
    appends eos_text. The last token, the first token (BOS) and, without skip_instruction, the mean over all
    tokens are the same in both when none of the rest applies.
    """
    mode = settings["pooling_mode"]
    if mode in ("mean", "weighted_mean") and settings["skip_instruction"]:
        return f"{mode} pooling over the text's own tokens (stock pooling also pools BOS and the instruction)"
    if mode == "eos_token" and settings.get("eos_text"):
        return f"eos_token pooling appends {settings['eos_text']!r} to each text, which stock modules do not"
    if settings.get("text_template"):
        return "the text template wraps each input, which stock modules do not"
    if settings["doc_max_length"] < settings["max_length"]:
        return (f"texts are cut word-wise to doc_max_length={settings['doc_max_length']} tokens, which stock modules "
                f"do not (exact with --doc-max-length {settings['max_length']} or more)")
    return None


def _write_sentence_transformers_files(
    folder: Path,
    settings: dict[str, Any],
    prompts: dict[str, str],
    model=None,
    tokenizer=None,
    st_modules: str = "remote",
) -> dict[str, Any] | None:
    """Writes the sentence-transformers files in the layout ``st_modules`` asks for (see `ST_LAYOUTS`), and
    1_Pooling/config.json whenever TEI has a pooling for the mode. Returns the measured deviation of the stock
    layout from the exact vectors when stock modules were written or tried, else None.

    A stock layout is loaded back with sentence-transformers (no remote code) and measured on `STOCK_SAMPLE`
    against ``model``'s exact vectors; ``auto`` keeps it only when it is exact.
    """
    if st_modules not in ST_LAYOUTS:
        raise LLM2VecError(f"Unknown sentence-transformers layout {st_modules!r}; choose one of {', '.join(ST_LAYOUTS)}")
    mode = settings["pooling_mode"]
    if mode in TEI_POOLING:
        write_pooling_config(str(folder / "1_Pooling"), model.config.hidden_size if model is not None else None,
                             TEI_POOLING[mode])
    why_not = stock_is_exact(settings)
    if st_modules == "remote" or (st_modules == "auto" and why_not):
        if st_modules == "auto":
            logger.info("sentence-transformers: the LLM2Vec module (trust_remote_code=True), because %s", why_not)
        write_remote_layout(folder, settings, prompts)
        return None
    if model is None:
        raise LLM2VecError("A stock sentence-transformers layout is measured against the model; none was given")
    write_stock_layout(folder, settings, prompts, model.config.hidden_size)
    deviation = measure_stock_layout(folder, model, tokenizer, settings)
    deviation["exact_by_settings"] = why_not is None
    tokenizer_differs = deviation.pop("tokenizer_differs")
    # exact by rule: the settings allow it and the tokenizer stock modules load gives the exact ids on every probe
    why_not = why_not or tokenizer_differs
    deviation["why_not_exact"] = why_not
    if st_modules == "auto" and (why_not or deviation["max_abs"] > STOCK_TOLERANCE):
        logger.info("sentence-transformers: the LLM2Vec module, because %s",
                    why_not or f"stock modules differ by {deviation['max_abs']:.2e} on the sample")
        write_remote_layout(folder, settings, prompts)
        deviation["layout"] = "remote"
    else:
        deviation["layout"] = "stock"
    return deviation


def _model_config(prompts: dict[str, str], stock: bool) -> dict[str, Any]:
    """config_sentence_transformers.json: the keys ``SentenceTransformer.save`` writes, plus the ``requirements``
    guard (read by sentence-transformers on load, but it has no API to declare one, so it is added here)."""
    import sentence_transformers
    import torch

    # stored as LLM2Vec reads an instruction (instruction.strip() + " " + text): what the LLM2Vec module reads either
    # way, and what stock modules and TEI, which prepend the prompt as it is, then read too
    prompts = {name: (text.strip() + " " if text.strip() else "") for name, text in prompts.items()}
    return {
        "__version__": {"pytorch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
                        "transformers": transformers.__version__},
        "default_prompt_name": None,
        "model_type": "SentenceTransformer",
        "prompts": {"document": "", **prompts},
        "requirements": requirements(stock),
        "similarity_fn_name": "cosine",
    }


def _transformer_config(settings: dict[str, Any]) -> dict[str, Any]:
    """sentence_bert_config.json: what ``Transformer.save_config`` writes for a text feature-extraction module,
    plus ``max_seq_length``, which TEI and sentence-transformers read (sentence-transformers writes it only into
    the tokenizer's ``model_max_length``, and the tokenizer files stay as the source had them)."""
    return {
        "transformer_task": "feature-extraction",
        "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
        "module_output_name": "token_embeddings",
        "max_seq_length": settings["max_length"],
    }


# sentence-transformers writes modules.json, config_sentence_transformers.json and sentence_bert_config.json only
# from a loaded model in `SentenceTransformer.save`, which also rewrites the weights; export has written those
# already, so it writes the same keys itself (tests/test_export.py checks them against sentence-transformers' own
# save of the exported checkpoint).
def write_remote_layout(folder: Path, settings: dict[str, Any], prompts: dict[str, str]) -> None:
    _write_json(folder / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": ST_MODULE_TYPE}])
    _write_json(folder / "sentence_bert_config.json", _transformer_config(settings))
    _write_json(folder / "config_sentence_transformers.json", _model_config(prompts, stock=False))


def write_stock_layout(folder: Path, settings: dict[str, Any], prompts: dict[str, str], dimension: int) -> None:
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    mode = STOCK_POOLING[settings["pooling_mode"]]
    write_pooling_config(str(folder / "1_Pooling"), dimension, mode)
    _write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": f"{Transformer.__module__}.{Transformer.__name__}"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": f"{Pooling.__module__}.{Pooling.__name__}"},
    ])
    config = _transformer_config(settings)
    tokenizer_config = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    if not tokenizer_config.get("pad_token") and tokenizer_config.get("eos_token"):
        # stock modules pad with the tokenizer's pad token; LLM2Vec pads with EOS (padded positions are masked),
        # and the tokenizer files keep the source's special tokens, so the pad token is given at load
        eos = tokenizer_config["eos_token"]
        config["processor_kwargs"] = {"pad_token": eos.get("content") if isinstance(eos, dict) else eos}
    _write_json(folder / "sentence_bert_config.json", config)
    _write_json(folder / "config_sentence_transformers.json", _model_config(prompts, stock=True))


def measure_stock_layout(folder: Path, model, tokenizer, settings: dict[str, Any]) -> dict[str, Any]:
    """Loads ``folder``'s stock layout with sentence-transformers (no remote code) and compares its vectors on
    `STOCK_SAMPLE` with ``model``'s exact LLM2Vec vectors: cosine (mean, min) and the largest |difference|."""
    import torch
    from sentence_transformers import SentenceTransformer

    from .modeling.modeling_llm2vec import encode_with, load_reference_tokenizer

    model_type = model.config.model_type
    reference = load_reference_tokenizer(str(folder), model_type) or tokenizer
    if next(model.parameters()).is_meta:  # a streamed export: the weights are in ``folder`` already
        model = load_bidirectional(str(folder), dtype=next(model.parameters()).dtype)[0]
    exact = encode_with(model, reference, STOCK_SAMPLE, settings)
    del model  # a model loaded here is freed before sentence-transformers loads its own copy
    stock = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    probes = tokenizer_probes(reference)
    # what sentence-transformers loads here, and the family's own class, which other transformers releases load
    # for the same folder (5.25 forces Qwen2Tokenizer on qwen2 where 5.2 reads tokenizer.json as it is)
    loaded = [stock[0].tokenizer, registered_tokenizer(folder, model_type)]
    tokenizer_differs = next(filter(None, (stock_tokenizer_differs(candidate, reference, probes)
                                           for candidate in loaded if candidate is not None)), None)
    # one batch per instruction (its prompt), so that padding is part of what is measured
    by_instruction: dict[str, list[int]] = {}
    for i, item in enumerate(STOCK_SAMPLE):
        by_instruction.setdefault(item[0].strip() if isinstance(item, list) else "", []).append(i)
    rows: dict[int, Any] = {}
    try:
        for instruction, indices in by_instruction.items():
            texts = [STOCK_SAMPLE[i][1] if isinstance(STOCK_SAMPLE[i], list) else STOCK_SAMPLE[i] for i in indices]
            vectors = stock.encode(texts, prompt=instruction + " " if instruction else None, convert_to_tensor=True)
            rows.update(zip(indices, vectors.float().cpu()))
    finally:
        del stock
    got = torch.stack([rows[i] for i in range(len(STOCK_SAMPLE))])
    cosine = torch.nn.functional.cosine_similarity(got, exact, dim=-1)
    return {"inputs": len(STOCK_SAMPLE), "mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
            "max_abs": float((got - exact).abs().max()), "tokenizer_differs": tokenizer_differs}
