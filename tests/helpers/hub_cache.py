"""A local folder laid out as huggingface_hub's cache holds a downloaded repo."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path


def hub_cache_with(repo_id: str, folder: Path, cache_root: Path) -> Path:
    """Lays ``folder`` out as the Hub cache does (models--org--name/snapshots/<sha>/, refs/main)."""
    repo_dir = cache_root / ("models--" + repo_id.replace("/", "--"))
    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / revision
    shutil.copytree(folder, snapshot)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return cache_root
