"""Where a model lives: a local folder or a Hub repo id, and the safetensors-only rule for its weights."""

from __future__ import annotations

import os
import re

from huggingface_hub import snapshot_download

from ..errors import CheckpointError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def looks_like_local_path(name: str) -> bool:
    """A name that can only mean a local folder: not a repo id, an explicit path (./x, /x, ~/x), or ORG/NAME
    where a local folder ORG exists (``runs/model`` when ``runs/`` is here)."""
    if name.startswith((".", "/", "~")) or os.path.isabs(name) or os.sep != "/" and os.sep in name:
        return True
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is None:
        return True
    return "/" in name and os.path.isdir(name.split("/", 1)[0])

def refuse_missing_local(name_or_path: str | os.PathLike) -> None:
    """Raises the "No such model folder" error for a path that does not exist, instead of letting a loader try
    the Hub and blame the network."""
    name = os.fspath(name_or_path)
    if not os.path.isdir(name) and looks_like_local_path(name):
        what = "is a file, not a model folder" if os.path.exists(name) else "does not exist"
        raise CheckpointError(f"No such model folder: {name} ({what})")

def resolve_local(name_or_path: str | os.PathLike) -> str:
    """Returns a local folder for a folder or a Hub repo id (from the cache or the Hub)."""
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        return name
    refuse_missing_local(name)
    try:
        return snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.py", "*.model", "*.txt", "*.md"])
    except Exception as error:  # huggingface_hub raises a family of errors; all mean "not available"
        raise CheckpointError(
            f"Could not find {name!r} as a local folder or a Hub repo id ({type(error).__name__}: {error})"
        ) from None

def refuse_pickle_only(path: str) -> None:
    """Safetensors only: a folder whose weights exist only as pickle files is refused, never unpickled."""
    files = os.listdir(path)
    if not any(f.endswith(".safetensors") for f in files) and any(f.endswith(PICKLE_SUFFIXES) for f in files):
        raise CheckpointError(
            f"{path} holds weights only in pickle format; llm2vec-hf loads safetensors only. "
            "Convert them with transformers (save_pretrained(safe_serialization=True)) in a trusted environment."
        )
