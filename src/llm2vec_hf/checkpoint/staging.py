"""Writing a checkpoint folder so that no moment leaves a half-written one: the folder is written under a hidden
sibling name and swapped into place at the end; left-overs of killed writers are recovered or removed."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from safetensors import SafetensorError

from ..errors import LLM2VecError, one_line
from ..output_paths import refuse_existing

logger = logging.getLogger(__name__)


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


def host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def sibling_prefix(output: Path, kind: str) -> str:
    return f".{output.name}.{kind}-{host_tag()}-{os.getpid()}-"


def _writer_is_gone(host: str, pid: int) -> bool:
    """True when the export that made a sibling folder is dead. On another host it cannot be checked: kept."""
    if host != host_tag():
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


def apply_umask(folder: Path) -> None:
    """Gives every file 0666 and every folder 0777, minus the umask, as plain ``open``/``mkdir`` do: some writers
    (transformers' weights, via a temporary file) leave 0600 behind, which serving containers cannot read."""
    mask = umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_write_failure(error: Exception) -> bool:
    """Failures of the writers (safetensors, tokenizers and plain files raise their own exception types)."""
    if isinstance(error, (OSError, SafetensorError)):
        return True
    # tokenizers raises a bare Exception carrying the OS error's text
    return type(error) is Exception or "No space left" in str(error) or "Disk quota" in str(error)


def describe_write_failure(error: Exception) -> str:
    text = one_line(error)
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left" in text:
        return "the disk is full (no space left on device)"
    if getattr(error, "errno", None) == errno.EDQUOT or "Disk quota" in text:
        return "the disk quota is exceeded"
    return f"{type(error).__name__}: {text}"


def move_into_place(staging: Path, output: Path) -> None:
    """Renames the finished ``staging`` folder to ``output``, swapping it with an existing one.

    On Linux the swap is one atomic ``renameat2(RENAME_EXCHANGE)``: at every instant ``output`` is either the
    old or the new checkpoint. Elsewhere the old folder is first renamed to an ``.old-`` sibling; an export
    killed between the two renames leaves the old copy there, and the next export to ``output``
    (`recover_interrupted`) moves it back.
    """
    if not os.path.lexists(output):
        os.replace(staging, output)
        return
    if exchange(staging, output):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old copy
        return
    trash = Path(tempfile.mkdtemp(prefix=sibling_prefix(output, "old"), dir=output.parent))
    os.replace(output, trash / output.name)
    os.replace(staging, output)
    shutil.rmtree(trash, ignore_errors=True)


def exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two paths with Linux's renameat2(RENAME_EXCHANGE); False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
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
