"""The resumable output of ``encode``: a ``.npy`` whose header is written first and whose rows are filled in chunk by
chunk, the progress record beside it, and the lock that keeps a second run off the same output."""

from __future__ import annotations

import os

import numpy as np

from ..errors import LLM2VecError
from ..loading.json_files import read_json
from .inputs import describe_mismatch

PROGRESS_VERSION = 1
NPY_DTYPE = np.dtype("<f4")


def create_npy(path: str, rows: int, dim: int) -> int:
    """Writes the header of a (rows, dim) float32 .npy (as np.save would) and sizes the file; returns the data
    offset."""
    with open(path, "wb") as handle:
        header = {"descr": np.lib.format.dtype_to_descr(NPY_DTYPE), "fortran_order": False, "shape": (rows, dim)}
        np.lib.format.write_array_header_1_0(handle, header)
        offset = handle.tell()
        handle.truncate(offset + rows * dim * NPY_DTYPE.itemsize)
    return offset


def npy_data_offset(path: str, rows: int, dim: int) -> int | None:
    """The data offset of an existing .npy of that shape and dtype, or None when it is not one."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(handle)
            offset = handle.tell()
        size = os.path.getsize(path)
    except (OSError, ValueError):
        return None
    if shape != (rows, dim) or fortran or dtype != NPY_DTYPE or size != offset + rows * dim * NPY_DTYPE.itemsize:
        return None
    return offset


def check_output_path(output_path: str) -> None:
    """Fails before any encoding when the output cannot be written: a folder, a link, a missing parent."""
    if os.path.isdir(output_path):
        raise LLM2VecError(f"{output_path} is a folder; --output must be a .npy file path")
    if os.path.islink(output_path):
        raise LLM2VecError(f"{output_path} is a symbolic link; give the real file path (links are never followed)")
    parent = os.path.dirname(os.path.abspath(output_path))
    if not os.path.isdir(parent):
        raise LLM2VecError(f"{parent} does not exist; create the folder for {os.path.basename(output_path)} first")
    if not os.access(parent, os.W_OK):
        raise LLM2VecError(f"Cannot write to {parent}")


class output_lock:
    """An exclusive lock on ``OUTPUT.lock`` for the whole run: a second run on the same output fails at once with
    one line, before it touches the partial output or its progress record. Removed when the run ends."""

    def __init__(self, output_path: str):
        self.path = output_path + ".lock"
        self.handle = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform: runs are not guarded against each other
            return self
        for _ in range(3):
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise LLM2VecError(f"another encode is writing {self.path[:-5]} (its lock {self.path} is held); "
                                   "wait for it to finish or choose another --output") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file that the run before us removed while we opened it
                self.handle = handle
                return self
            handle.close()
        raise LLM2VecError(f"could not take the lock {self.path}; another encode keeps replacing it")

    def __exit__(self, *exc):
        if self.handle is not None:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            self.handle.close()


def resumable_state(partial: str, progress_path: str, key: dict) -> dict | None:
    """The progress of a partial output made from ``key``; None when there is none to resume."""
    if not (os.path.isfile(partial) and os.path.isfile(progress_path)):
        return None
    try:
        state = read_json(progress_path)
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("version") != PROGRESS_VERSION:
        return None
    if state.get("key") != key:
        raise LLM2VecError(
            f"{partial} was started from a different {describe_mismatch(state.get('key') or {}, key)}; "
            "rerun with the same input, checkpoint and prompt to resume it, or pass --restart to discard it"
        )
    if state.get("dim") is None or npy_data_offset(partial, state["rows"], state["dim"]) is None:
        return None
    return state
