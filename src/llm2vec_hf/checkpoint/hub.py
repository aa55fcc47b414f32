"""Uploads an exported checkpoint folder to the Hugging Face Hub, after `checkpoint_check.check_checkpoint`.

The token comes from ``HF_TOKEN`` or the login cache (``huggingface_hub.get_token``); it is passed to the
``HfApi`` calls only, and scrubbed from any error message. Hub failures (bad repo id, no token, unreachable or
refusing Hub) raise ``PushError``, one line. Upload: ``create_repo(exist_ok=True)``, ``create_branch`` for a
revision other than main, then one ``create_commit`` with every file of the folder. The uploaded README.md has
its usage snippets pointed at the repo id (the folder itself is left untouched).
"""

from __future__ import annotations

import os
from typing import Any

from .validation import CheckpointSummary, check_checkpoint, upload_path
from ..errors import LLM2VecError
from .model_card import MODEL_ID_PLACEHOLDER, with_model_id
from .secret_scan import scrub


class PushError(LLM2VecError):
    """The Hub could not be reached, refused the upload, or no token was available."""


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


def _explain(error: Exception, repo_id: str, endpoint: str, token: str | None) -> str:
    """One line for a failure of the Hub call ``error``; never the token."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(error, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set: unset it to push"
    if isinstance(error, HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", None)
        server = scrub(getattr(error, "server_message", None) or "", token)
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
        return f"cannot reach the Hub at {endpoint} ({type(error).__name__}: {scrub(str(error), token) or 'no answer'})"
    return f"{type(error).__name__}: {scrub(str(error), token)}"


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
