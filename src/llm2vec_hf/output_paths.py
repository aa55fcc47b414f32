"""The one rule every command that writes follows for its output (docs/reliability.md, "Outputs").

* An output never equals, contains or lies inside one of the command's inputs (the base, an adapter, the input
  file, a task folder…): replacing or writing into it would lose or change the input.
* An output that already exists and holds something is replaced only with ``--overwrite``.

Paths are compared by the files they name (symbolic links followed, hard links and case-insensitive file systems
included), not by their spelling.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .errors import LLM2VecError


def _existing_ancestors(path: Path) -> Iterable[Path]:
    """``path`` and its parents, those that exist."""
    for candidate in (path, *path.parents):
        if os.path.exists(candidate):
            yield candidate


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def overlap(output: str | os.PathLike, source: str | os.PathLike) -> str | None:
    """How ``output`` overlaps the existing path ``source``: "is", "lies inside", "contains", or None."""
    # realpath: a link (even a dangling one) writes where it points
    if not os.path.exists(source):
        return None
    out, src = Path(os.path.realpath(output)), Path(os.path.realpath(source))
    if os.path.exists(out) and _same(out, src):
        return "is"
    if any(_same(ancestor, src) for ancestor in _existing_ancestors(out.parent)):
        return "lies inside"
    if os.path.isdir(out) and any(_same(ancestor, out) for ancestor in _existing_ancestors(src.parent)):
        return "contains"
    return None


def refuse_overlap(output: str | os.PathLike, inputs: Iterable[tuple[str, str | os.PathLike | None]],
                   option: str = "--output") -> None:
    """Refuses ``output`` when it equals, contains or lies inside one of ``inputs`` (``(role, path)``; a path that
    is not on this machine, such as a Hub repo id, cannot overlap and is skipped)."""
    for role, source in inputs:
        if source is None or not os.path.exists(source):
            continue
        how = overlap(output, source)
        if how:
            raise LLM2VecError(f"{option} {output} {how} the {role} {source}: writing there would change or lose "
                               f"an input; choose an output outside every input")


def refuse_existing(output: str | os.PathLike, overwrite: bool, option: str = "--overwrite") -> None:
    """Refuses an existing output that holds something (a file, or a folder that is not empty) unless
    ``overwrite``."""
    path = Path(output)
    if overwrite or not os.path.lexists(path):
        return
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return
    what = "is not empty" if path.is_dir() else "exists"
    raise LLM2VecError(f"{output} {what}; pass {option} to replace it")
