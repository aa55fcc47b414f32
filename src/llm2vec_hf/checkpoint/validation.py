"""Checks, with no network, that a folder is a complete exported checkpoint that is safe to publish
(`check_checkpoint`): the files it would upload, its config, weights, tokenizer, sentence-transformers files and
model card; pickles and secrets are refused through `secret_scan`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, name_some, one_line
from ..loading.json_files import read_json
from ..loading.models import load_config
from ..modeling.encoding_settings import OFFICIAL_KEYS, check_unambiguous_weights, resolve_encoding
from ..modeling.modeling_llm2vec import family_for
from .secret_scan import find_secrets, refused_by_content, refused_by_name, scrub

#: Folders never uploaded (as huggingface_hub's upload_folder skips .git and its own cache).
SKIPPED_DIRS = {".git", ".cache", "__pycache__", ".ipynb_checkpoints"}
#: ``from .name import …`` in a remote-code file: ``name``.py must ship beside it.
RELATIVE_IMPORT = re.compile(r"^\s*from \.(\w+) import", re.MULTILINE)
MODULE_PY = re.compile(r"^(?P<module>[A-Za-z_][\w]*)\.[A-Za-z_]\w*$")


@dataclass
class CheckpointSummary:
    folder: Path
    files: list[tuple[str, int]]
    family: str
    tensors: int
    parameters: int
    weight_files: list[str]
    st_modules: list[str]
    prompts: dict[str, str]
    metadata: dict[str, Any]
    card_text: str
    problems: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


def list_files(folder: Path) -> list[tuple[str, int]]:
    """(path relative to ``folder`` with '/' separators, size) of every file that would be uploaded, sorted.

    Symbolic links: a link to a file inside the folder is uploaded as that file; a link that points outside the
    folder (or that is broken, or a linked folder, which would be uploaded only partly) is refused, so that push
    never reads anything outside the folder it was given.
    """
    root_real = Path(os.path.realpath(folder))
    files, refused = [], []
    for root, dirs, names in os.walk(folder):
        for d in list(dirs):
            if (Path(root) / d).is_symlink() and d not in SKIPPED_DIRS:
                refused.append(f"{(Path(root) / d).relative_to(folder).as_posix()} (a symbolic link to a folder)")
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not (Path(root) / d).is_symlink())
        for name in names:
            path = Path(root) / name
            relpath = path.relative_to(folder).as_posix()
            if path.is_symlink():
                target = Path(os.path.realpath(path))
                if not path.exists():
                    refused.append(f"{relpath} (a broken symbolic link)")
                    continue
                if not target.is_relative_to(root_real) or not target.is_file():
                    refused.append(f"{relpath} (a symbolic link to {target}, outside the folder)")
                    continue
            elif not path.is_file():
                refused.append(f"{relpath} (not a regular file)")
                continue
            files.append((relpath, path.stat().st_size))
    if refused:
        raise CheckpointError(f"Refusing to upload {folder}: " + "; ".join(refused)
                              + " (copy the real files in, e.g. cp -rL, to publish them)")
    return sorted(files)


def upload_path(folder: Path, relpath: str) -> str:
    """The real path of a listed file, checked again to lie inside ``folder`` (a link may have changed since)."""
    real = Path(os.path.realpath(folder / relpath))
    if not real.is_relative_to(Path(os.path.realpath(folder))) or not real.is_file():
        raise CheckpointError(f"Refusing to upload {folder}: {relpath} now points outside the folder")
    return str(real)


def safetensors_header(path: Path) -> tuple[dict[str, list[int]], dict[str, str]]:
    """({tensor name: shape}, metadata) of a safetensors file, read by the safetensors library itself, which
    also checks that every tensor's byte range lies inside the file and matches its shape and dtype (so a file
    truncated after an intact header is refused)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path.name} is not a complete safetensors file: {one_line(error)}") from None
    return shapes, metadata


def check_encoding_files(folder: Path, config, official: Any) -> None:
    """The settings are config.json's ``llm2vec`` block, valid, and llm2vec_config.json is derived from it
    (docs/architecture.md, "Encoding settings"): where the two disagree, the official loader would encode
    otherwise than transformers and sentence-transformers."""
    block = getattr(config, "llm2vec", None)
    if not isinstance(block, dict) or "pooling_mode" not in block:
        raise CheckpointError(f"{folder}/config.json has no llm2vec block with a pooling_mode")
    try:
        resolve_encoding(config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{folder}/config.json: {one_line(error)}") from None
    derived = {key: block[key] for key in OFFICIAL_KEYS if key in block}
    if official != derived:
        raise CheckpointError(f"{folder}/llm2vec_config.json disagrees with config.json's llm2vec block "
                              f"({official!r} vs {derived!r}); export the checkpoint again")


def check_sentence_transformers_files(folder: Path, modules: list[dict[str, Any]]) -> dict[str, str]:
    """Reads the sentence-transformers files as ``SentenceTransformer`` reads them, short of loading the weights:
    config_sentence_transformers.json (an object; prompts text by name; the default prompt among them; a
    similarity function sentence-transformers knows), each stock module's class and configuration (its own
    ``load``, or for the Transformer its constructor's keyword arguments). Returns the prompts."""
    import inspect

    from sentence_transformers import SimilarityFunction
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.util import import_from_string

    def refuse(name: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{folder}/{name}: {problem}; sentence-transformers could not load it")

    st_config = _read_json_file(folder, "config_sentence_transformers.json")
    if not isinstance(st_config, dict):
        raise refuse("config_sentence_transformers.json", f"a JSON object is expected, not {type(st_config).__name__}")
    prompts = st_config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise refuse("config_sentence_transformers.json", "prompts must map names to texts")
    default = st_config.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise refuse("config_sentence_transformers.json", f"default_prompt_name {default!r} is not a stored prompt")
    similarity = st_config.get("similarity_fn_name")
    if similarity is not None and similarity not in [member.value for member in SimilarityFunction]:
        raise refuse("config_sentence_transformers.json", f"unknown similarity_fn_name {similarity!r}")
    transformer_config = _read_json_file(folder, "sentence_bert_config.json")
    if not isinstance(transformer_config, dict):
        raise refuse("sentence_bert_config.json", "a JSON object is expected")
    accepted = set(inspect.signature(Transformer.__init__).parameters) - {"self", "model_name_or_path"}
    unknown = sorted(set(transformer_config) - accepted)
    if unknown:
        raise refuse("sentence_bert_config.json", f"unknown key(s) {', '.join(unknown)}")
    for entry in modules:
        if not entry["type"].startswith("sentence_transformers."):
            continue  # the LLM2Vec module, shipped as remote code and checked above
        try:
            module_class = import_from_string(entry["type"])
        except ImportError:
            raise refuse("modules.json", f"names {entry['type']}, which sentence-transformers does not have") from None
        if entry.get("path") and not issubclass(module_class, Transformer):
            try:
                module_class.load(str(folder / entry["path"]))
            except Exception as error:  # the module's own reader: whatever it raises means it cannot load
                raise refuse(f"{entry['path']}", one_line(error)) from None
    return prompts


def _read_json_file(folder: Path, name: str) -> Any:
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a complete checkpoint: {name} is missing")
    try:
        return read_json(path)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError alike
        raise CheckpointError(f"{folder}/{name} does not parse as JSON: {one_line(error)}") from None


def _count_weights(folder: Path, names: set[str]) -> tuple[dict[str, list[int]], list[str]]:
    """{tensor name: shape} over model.safetensors or the shards its index names."""
    try:
        check_unambiguous_weights(str(folder))
    except ValueError as error:
        raise CheckpointError(str(error)) from None
    if "model.safetensors.index.json" in names:
        index = _read_json_file(folder, "model.safetensors.index.json")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{folder}/model.safetensors.index.json has no weight_map")
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if s not in names]
        if missing:
            raise CheckpointError(f"{folder} is not a complete checkpoint: shard {missing[0]} is missing")
    elif "model.safetensors" in names:
        shards, weight_map = ["model.safetensors"], None
    else:
        raise CheckpointError(f"{folder} is not a complete checkpoint: no model.safetensors (or sharded index)")
    shapes: dict[str, list[int]] = {}
    for shard in shards:
        shard_shapes, _ = safetensors_header(folder / shard)
        shapes.update(shard_shapes)
    if weight_map is not None:
        absent = sorted(set(weight_map) - set(shapes))
        if absent:
            raise CheckpointError(f"{folder}: the shard index names {len(absent)} tensors no shard holds (e.g. {absent[0]})")
    if not shapes:
        raise CheckpointError(f"{folder} is not a complete checkpoint: its weight files hold no tensors")
    return shapes, shards


def check_weights(folder: Path, config, shapes: dict[str, list[int]]) -> None:
    """The stored tensors (``shapes``) are the ones the encoder of ``config`` loads, none missing, none left over,
    each of its shape, matched to the parameters as transformers' loader matches them: through its conversion of
    the checkpoint layout (`merged_weights.match_checkpoint`, which a streamed export writes by), so that a
    mixture-of-experts checkpoint's per-expert matrices count for the fused parameter they build on load.

    The encoder is built on the meta device (no memory)."""
    import torch

    from .merged_weights import UnsupportedForStreaming, match_checkpoint

    with torch.device("meta"):
        model = family_for(config).model._from_config(config)
    try:
        match = match_checkpoint(model, {name: tuple(shape) for name, shape in shapes.items()})
    except UnsupportedForStreaming as why:
        # a converter that splits a tensor decides inside transformers which parameters it feeds: unverifiable
        raise CheckpointError(f"{folder}: its weights cannot be checked against its config: {why}") from None
    if match.missing:
        total = len(match.written) + len(match.missing)
        raise CheckpointError(f"{folder} is not a complete checkpoint: {len(match.missing)} of the {total} tensors "
                              f"the config asks for are not in its weights (e.g. {name_some(match.missing)})")
    shaped = [entry for entry in match.mismatched if isinstance(entry, tuple)]
    more = f" ({len(match.mismatched) - 1} more tensors do not fit)" if len(match.mismatched) > 1 else ""
    if shaped:
        name, shape, wanted = shaped[0]
        raise CheckpointError(f"{folder}: tensor {name} has shape {list(shape)}, the config asks for "
                              f"{list(wanted)}{more}")
    if match.mismatched:
        raise CheckpointError(f"{folder}: its tensors do not build the parameters the config asks for: "
                              f"{match.mismatched[0]}{more}")
    if match.unexpected:
        raise CheckpointError(f"{folder} does not match its config: {len(match.unexpected)} tensors of its weights "
                              f"fit no parameter (e.g. {name_some(match.unexpected)}); the loader would drop them")


def check_checkpoint(folder: str | os.PathLike, token: str | None = None) -> CheckpointSummary:
    """Checks that ``folder`` is a complete exported checkpoint that is safe to publish; raises CheckpointError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"No such checkpoint folder: {folder}")
    files = list_files(folder)
    names = {name for name, _ in files}
    refused = [f"{scrub(name, token)} ({why})" for name, _ in files
               if (why := refused_by_name(name) or refused_by_content(folder / name))]
    refused += find_secrets(folder, [(n, s) for n, s in files if not refused_by_name(n)], token)
    if refused:
        raise CheckpointError(f"Refusing to upload {folder}: " + "; ".join(refused))

    config = load_config(str(folder))
    try:
        family_for(config)  # refuses a family llm2vec-hf cannot encode
    except ValueError as error:
        raise CheckpointError(f"{folder}: {error}") from None
    for auto_class, reference in (getattr(config, "auto_map", None) or {}).items():
        module = str(reference).split("--")[-1].rsplit(".", 1)[0]
        if f"{module}.py" not in names:
            raise CheckpointError(f"{folder} is not a complete checkpoint: config.json maps {auto_class} to "
                                  f"{module}.py, which is missing")
    for name in sorted(n for n in names if n.endswith(".py") and "/" not in n):
        # transformers' remote-code loader follows relative imports; one to a missing file fails only on load
        for imported in RELATIVE_IMPORT.findall((folder / name).read_text(encoding="utf-8", errors="replace")):
            if f"{imported}.py" not in names:
                raise CheckpointError(f"{folder} is not a complete checkpoint: {name} imports {imported}.py, "
                                      "which is missing")

    shapes, shards = _count_weights(folder, names)
    check_weights(folder, config, shapes)
    parameters = 0
    for shape in shapes.values():
        count = 1
        for dim in shape:
            count *= int(dim)
        parameters += count

    if not ({"tokenizer.json", "tokenizer.model"} & names or "vocab.json" in names):
        raise CheckpointError(f"{folder} is not a complete checkpoint: no tokenizer files")
    _read_json_file(folder, "tokenizer_config.json")

    modules = _read_json_file(folder, "modules.json")
    if not isinstance(modules, list) or not modules:
        raise CheckpointError(f"{folder}/modules.json lists no sentence-transformers modules")
    st_modules = []
    for entry in modules:
        if not isinstance(entry, dict) or "type" not in entry:
            raise CheckpointError(f"{folder}/modules.json has an entry without a type: {entry!r}")
        path = entry.get("path", "")
        if path and not (folder / path).is_dir():
            raise CheckpointError(f"{folder} is not a complete checkpoint: module folder {path} is missing")
        match = MODULE_PY.match(entry["type"])
        if match and not entry["type"].startswith("sentence_transformers.") and f"{match['module']}.py" not in names:
            raise CheckpointError(f"{folder} is not a complete checkpoint: modules.json names {entry['type']}, "
                                  f"but {match['module']}.py is missing")
        st_modules.append(entry["type"])
    prompts = check_sentence_transformers_files(folder, modules)
    check_encoding_files(folder, config, _read_json_file(folder, "llm2vec_config.json"))

    if "README.md" not in names:
        raise CheckpointError(f"{folder} is not a complete checkpoint: README.md (model card) is missing")
    from huggingface_hub import ModelCard

    card_text = (folder / "README.md").read_text()
    try:
        metadata = ModelCard(card_text).data.to_dict()
    except Exception as error:  # huggingface_hub raises ValueError / yaml errors for a bad front matter
        detail = one_line(error)
        raise CheckpointError(f"{folder}/README.md: the model card's metadata does not parse: {detail}") from None

    return CheckpointSummary(folder=folder, files=files, family=config.model_type, tensors=len(shapes),
                             parameters=parameters, weight_files=shards, st_modules=st_modules, prompts=prompts,
                             metadata=metadata, card_text=card_text)
