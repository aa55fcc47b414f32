"""``llm2vec-hf push``: upload an exported checkpoint folder to the Hugging Face Hub.

Before anything goes over the network the folder is checked (``check_checkpoint``): its config loads, its
safetensors weights cover every parameter the config asks for, its sentence-transformers files parse and name
files that exist, and its model card parses. Pickle files, ``.env`` files and anything that looks like a
credential (by name, or by content: token and private-key patterns, or the very token used to push) are refused.

The token comes from ``HF_TOKEN`` or the login cache (``huggingface_hub.get_token``); it is passed to the
``HfApi`` calls only, and scrubbed from any error message. Hub failures (bad repo id, no token, unreachable or
refusing Hub) raise ``PushError``, which the CLI prints as one line with a non-zero exit.

Upload: ``create_repo(exist_ok=True)``, ``create_branch`` for ``--revision`` (other than main), then one
``create_commit`` with every file of the folder. The uploaded README.md has its usage snippets pointed at the
repo id (the folder itself is left untouched).
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError, LLM2VecError, one_line
from .loading import PICKLE_SUFFIXES
from .model_card import MODEL_ID_PLACEHOLDER, with_model_id

#: Folders never uploaded (as huggingface_hub's upload_folder skips .git and its own cache).
SKIPPED_DIRS = {".git", ".cache", "__pycache__", ".ipynb_checkpoints"}
#: Every suffix of a file name is compared: "weights.pkl.gz" is a pickle too.
PICKLE_EXTRA = (".pickle", ".joblib", ".dill", ".pyc", ".pyo", ".sav", ".pdparams", ".npz", ".mar",
                ".nemo", ".keras", ".h5", ".hdf5", ".msgpack", ".onnx", ".pb", ".tflite")
#: File names that hold credentials by convention (compared lower-cased).
CREDENTIAL_NAMES = {
    ".netrc", "_netrc", ".git-credentials", ".pypirc", ".npmrc", ".dockercfg", "credentials", "credentials.json",
    "token", "hf_token", ".hf_token", "stored_tokens", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519",
    "client_secret.json", "service_account.json", ".htpasswd",
}
CREDENTIAL_SUFFIXES = (".pem", ".key", ".p12", ".pfx", ".jks", ".keystore", ".kdbx", ".ppk", ".asc", ".gpg")
#: Content patterns of secrets (never printed: only the kind is named).
SECRET_PATTERNS = [
    ("a Hugging Face token", re.compile(rb"\bhf_[A-Za-z0-9]{30,}")),
    ("a private key", re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("an AWS access key", re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a GitHub token", re.compile(rb"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})")),
    ("an API key", re.compile(rb"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{32,}")),
    ("a Slack token", re.compile(rb"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
]
#: Files are scanned for secrets in blocks of this size (any size of file; memory holds one block).
SCAN_BLOCK = 8 * 1024 * 1024
#: Blocks overlap by this much, so a secret that straddles two blocks is still seen whole.
SCAN_OVERLAP = 4096
MODULE_PY = re.compile(r"^(?P<module>[A-Za-z_][\w]*)\.[A-Za-z_]\w*$")


class PushError(LLM2VecError):
    """The Hub could not be reached, refused the upload, or no token was available."""


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


# ----------------------------------------------------------------------------------------------------------
# checks (no network)


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


def refused_by_name(relpath: str) -> str | None:
    name = relpath.rsplit("/", 1)[-1]
    lowered = name.lower()
    suffixes = {"." + part for part in lowered.split(".")[1:]}  # ".pkl" and "a.pkl.gz" alike
    if suffixes & set(PICKLE_SUFFIXES + PICKLE_EXTRA):
        return "pickle file or other non-safetensors weights; only safetensors are uploaded"
    if lowered.startswith(".env.") or lowered.endswith(".env") or lowered == ".envrc":
        return "environment file"
    if lowered in CREDENTIAL_NAMES or lowered.endswith(CREDENTIAL_SUFFIXES) or lowered.startswith("id_rsa"):
        return "credential file"
    return None


def refused_by_content(path: Path) -> str | None:
    """Pickles under any name: the pickle protocol 2-5 header, or a torch zip archive holding ``data.pkl``."""
    with open(path, "rb") as handle:
        head = handle.read(4)
        if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
            return "a pickle (by its content); only safetensors are uploaded"
    if head.startswith(b"PK\x03\x04"):
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                if any(n.endswith(".pkl") for n in archive.namelist()):
                    return "an archive holding a pickle (a torch.save file); only safetensors are uploaded"
        except (zipfile.BadZipFile, OSError):
            return None
    return None


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


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The raw JSON header (tensor entries and ``__metadata__``): the file's only free text."""
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path.name} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", raw)
        if length <= 0 or length > 100 * 1024 * 1024:
            raise CheckpointError(f"{path.name} is not a safetensors file (bad header length)")
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path.name} is not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name} is not a safetensors file (unreadable header)")
    return header


def _views(blob: bytes) -> list[bytes]:
    """``blob`` and, when it holds NUL bytes, its every-2nd and every-4th byte views: ASCII text stored as
    UTF-16 (LE or BE) or UTF-32 becomes plain ASCII in one of them."""
    if b"\x00" not in blob:
        return [blob]
    return [blob] + [blob[i::2] for i in range(2)] + [blob[i::4] for i in range(4)]


def _find_secret(blob: bytes, token_bytes: bytes | None) -> str | None:
    for view in _views(blob):
        if token_bytes and token_bytes in view:
            return "contains the token used to push"
        for kind, pattern in SECRET_PATTERNS:
            if pattern.search(view):
                return f"contains what looks like {kind}"
    return None


def _blocks(path: Path):
    """The file in overlapping blocks (streamed: a file of any size is scanned in bounded memory)."""
    with open(path, "rb") as handle:
        tail = b""
        while True:
            block = handle.read(SCAN_BLOCK)
            if not block:
                return
            yield tail + block
            tail = block[-SCAN_OVERLAP:]


def find_secrets(folder: Path, files: list[tuple[str, int]], token: str | None) -> list[str]:
    """'path (what it looks like)' for each file whose name or content looks like a credential."""
    found = []
    token_bytes = token.encode() if token else None
    for relpath, _ in files:
        path = folder / relpath
        why = _find_secret(relpath.encode(), token_bytes)
        if why:  # the name is shown scrubbed: printing it would leak what it holds
            found.append(f"{_scrub(relpath, token)} (its name {why[len('contains '):]})")
            continue
        if relpath.endswith(".safetensors"):
            # only the header holds free text: tensor names and __metadata__; the rest is numbers
            blobs: Any = [json.dumps(_safetensors_header(path), ensure_ascii=False).encode()]
        else:
            blobs = _blocks(path)
        for blob in blobs:
            why = _find_secret(blob, token_bytes)
            if why:
                found.append(f"{relpath} ({why})")
                break
    return found


def check_encoding_files(folder: Path, config, official: Any) -> None:
    """The settings are config.json's ``llm2vec`` block, valid, and llm2vec_config.json is derived from it
    (docs/architecture.md, "Encoding settings"): where the two disagree, the official loader would encode
    otherwise than transformers and sentence-transformers."""
    from .modeling.modeling_llm2vec import OFFICIAL_KEYS, resolve_encoding

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


def _read_json_file(folder: Path, name: str) -> Any:
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a complete checkpoint: {name} is missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{folder}/{name} does not parse as JSON: {one_line(error)}") from None


def _count_weights(folder: Path, names: set[str]) -> tuple[dict[str, list[int]], list[str]]:
    """{tensor name: shape} over model.safetensors or the shards its index names."""
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


def _expected_weights(config) -> dict[str, list[int]]:
    """Parameter names and shapes the encoder of ``config`` has, built on the meta device (no memory)."""
    import torch

    from .modeling.modeling_llm2vec import family_for

    family = family_for(config)
    with torch.device("meta"):
        model = family.model._from_config(config)
    return {name: list(tensor.shape) for name, tensor in model.state_dict().items()}


def check_checkpoint(folder: str | os.PathLike, token: str | None = None) -> CheckpointSummary:
    """Checks that ``folder`` is a complete exported checkpoint that is safe to publish; raises CheckpointError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"No such checkpoint folder: {folder}")
    files = list_files(folder)
    names = {name for name, _ in files}
    refused = [f"{_scrub(name, token)} ({why})" for name, _ in files
               if (why := refused_by_name(name) or refused_by_content(folder / name))]
    refused += find_secrets(folder, [(n, s) for n, s in files if not refused_by_name(n)], token)
    if refused:
        raise CheckpointError(f"Refusing to upload {folder}: " + "; ".join(refused))

    from .loading import load_config
    from .modeling.modeling_llm2vec import family_for

    config = load_config(str(folder))
    try:
        family = family_for(config)
    except ValueError as error:
        raise CheckpointError(f"{folder}: {error}") from None
    for auto_class, reference in (getattr(config, "auto_map", None) or {}).items():
        module = str(reference).split("--")[-1].rsplit(".", 1)[0]
        if f"{module}.py" not in names:
            raise CheckpointError(f"{folder} is not a complete checkpoint: config.json maps {auto_class} to "
                                  f"{module}.py, which is missing")

    shapes, shards = _count_weights(folder, names)
    expected = _expected_weights(config)
    stored = shapes
    prefix = "model."
    if not set(expected) & set(stored) and all(k.startswith(prefix) for k in stored):
        stored = {k[len(prefix):]: v for k, v in stored.items()}
    missing = sorted(set(expected) - set(stored))
    if missing:
        raise CheckpointError(f"{folder} is not a complete checkpoint: {len(missing)} of the {len(expected)} tensors "
                              f"the config asks for are not in its weights (e.g. {missing[0]})")
    wrong = [k for k in expected if list(stored[k]) != expected[k]]
    if wrong:
        raise CheckpointError(f"{folder}: tensor {wrong[0]} has shape {stored[wrong[0]]}, the config asks for "
                              f"{expected[wrong[0]]}")
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
    _read_json_file(folder, "sentence_bert_config.json")
    st_config = _read_json_file(folder, "config_sentence_transformers.json")
    prompts = st_config.get("prompts") or {} if isinstance(st_config, dict) else {}
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


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PushError(f"Invalid repo id {repo_id!r}: {error}") from None
    if repo_id.count("/") != 1:
        raise PushError(f"Invalid repo id {repo_id!r}: expected ORG/NAME")


# ----------------------------------------------------------------------------------------------------------
# upload


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def describe(summary: CheckpointSummary, repo_id: str, revision: str | None, endpoint: str) -> str:
    import yaml

    lines = [
        f"Would upload {len(summary.files)} files ({_human(summary.total_bytes)}) from {summary.folder} "
        f"to {endpoint.rstrip('/')}/{repo_id} (revision {revision or 'main'}):",
    ]
    width = max(len(_human(size)) for _, size in summary.files)
    lines += [f"  {_human(size):>{width}}  {name}" for name, size in summary.files]
    lines.append(
        f"Checkpoint: {summary.family}, {summary.parameters:,} parameters in {summary.tensors} tensors "
        f"({', '.join(summary.weight_files)}); sentence-transformers modules: {', '.join(summary.st_modules)}; "
        f"prompts: {', '.join(summary.prompts) or 'none'}"
    )
    lines.append("Model card metadata:")
    lines += ["  " + line for line in yaml.safe_dump(summary.metadata, sort_keys=False).rstrip().splitlines()]
    return "\n".join(lines)


def _scrub(message: str, token: str | None) -> str:
    message = " ".join(str(message).split())
    if token:
        message = message.replace(token, "***")
    return re.sub(r"\bhf_[A-Za-z0-9]{30,}", "hf_***", message)


def _explain(error: Exception, repo_id: str, endpoint: str, token: str | None) -> str:
    """One line for a failure of the Hub call ``error``; never the token."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(error, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set: unset it to push"
    if isinstance(error, HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", None)
        server = _scrub(getattr(error, "server_message", None) or "", token)
        detail = f" ({server})" if server else ""
        if status == 401:
            return f"the Hub at {endpoint} rejected the token (401 Unauthorized){detail}: check HF_TOKEN or `hf auth login`"
        if status == 403:
            return f"the token may not write to {repo_id} (403 Forbidden){detail}: it needs write access to that namespace"
        if isinstance(error, RevisionNotFoundError):
            return f"revision not found on {repo_id}{detail}"
        if isinstance(error, RepositoryNotFoundError) or status == 404:
            return f"{repo_id} was not found and could not be created (404){detail}"
        if status == 409:
            return f"conflict while pushing to {repo_id} (409){detail}"
        return f"the Hub answered {status or 'an error'} for {repo_id}{detail}"
    if _is_transport_error(error):
        return f"cannot reach the Hub at {endpoint} ({type(error).__name__}: {_scrub(str(error), token) or 'no answer'})"
    return f"{type(error).__name__}: {_scrub(str(error), token)}"


def _is_transport_error(error: BaseException) -> bool:
    names = {cls.__name__ for cls in type(error).__mro__}
    modules = {cls.__module__.split(".")[0] for cls in type(error).__mro__}
    return bool(names & {"TransportError", "ConnectError", "TimeoutException", "ConnectionError", "NetworkError"}) or (
        bool(modules & {"httpx", "httpx2", "requests", "urllib3"}) and "RequestError" in names
    ) or isinstance(error, (ConnectionError, TimeoutError))


def get_token() -> str | None:
    """The token from HF_TOKEN or the login cache (huggingface_hub's own lookup); None when there is none."""
    from huggingface_hub import get_token as hf_get_token

    try:
        return hf_get_token()
    except Exception:  # a broken token file or OIDC exchange: treated as no token, with the same message
        return None


def push(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    api=None,
    endpoint: str | None = None,
    out=print,
) -> str | None:
    """Checks ``folder`` and uploads it to ``repo_id``; returns the commit URL (None for a dry run)."""
    from huggingface_hub import constants

    check_repo_id(repo_id)
    endpoint = endpoint or (api.endpoint if api is not None and getattr(api, "endpoint", None) else constants.ENDPOINT)
    token = None if dry_run else get_token()
    summary = check_checkpoint(folder, token=token)
    if dry_run:
        out(describe(summary, repo_id, revision, endpoint))
        return None
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (needs write access)")

    from huggingface_hub import CommitOperationAdd, HfApi

    api = api or HfApi(endpoint=endpoint)
    folder_path = summary.folder
    operations = []
    for name, _ in summary.files:
        if name == "README.md" and MODEL_ID_PLACEHOLDER in summary.card_text:
            content: Any = with_model_id(summary.card_text, repo_id).encode()
        else:
            content = upload_path(folder_path, name)
        operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=content))
    message = commit_message or f"Upload LLM2Vec encoder ({summary.family}, {summary.parameters:,} parameters)"
    try:
        api.create_repo(repo_id, token=token, private=True if private else None, repo_type="model", exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, token=token, repo_type="model", exist_ok=True)
        info = api.create_commit(repo_id, operations=operations, commit_message=message, token=token,
                                 repo_type="model", revision=revision)
    except (KeyboardInterrupt, LLM2VecError):
        raise
    except Exception as error:  # every Hub failure becomes one line; the token never appears in it
        raise PushError(_explain(error, repo_id, endpoint, token)) from None
    url = getattr(info, "commit_url", None) or f"{endpoint.rstrip('/')}/{repo_id}"
    out(f"Pushed {len(operations)} files ({_human(summary.total_bytes)}) to {url}")
    return url


# ----------------------------------------------------------------------------------------------------------
# command line


def add_arguments(parser) -> None:
    parser.add_argument("folder", metavar="DIR", help="exported checkpoint folder (llm2vec-hf export)")
    parser.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="Hub model repo; created if missing")
    parser.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)")
    parser.add_argument("--revision", metavar="R", help="branch to push to; created from main if missing")
    parser.add_argument("--commit-message", metavar="M", help="commit message")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the folder and print the files, sizes and card metadata; no network")


def main(args) -> int:
    push(args.folder, args.repo_id, private=args.private, revision=args.revision,
         commit_message=args.commit_message, dry_run=args.dry_run)
    return 0
