"""Atomic writing: a temporary file (or folder) beside the target, renamed into place; an
existing output is replaced only when asked."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError, OutputExistsError, SharpstackError

def prepare_target(path: Path, overwrite: bool, what: str) -> None:
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"{path} already exists; pass overwrite=True (CLI: "
                                    f"--overwrite) to replace it, or choose another path")
        if path.is_dir() and what != "zarr":
            raise InputError(f"{path} is a folder; cannot write a {what} file over it")
        if not path.is_dir() and what == "zarr":
            raise InputError(f"{path} is a file; cannot write an OME-Zarr folder over it")


def temp_name(path: Path) -> Path:
    """Beside ``path``, under the one recognisable temporary name (``sharpstack._files``), so
    that the next run to the same destination cleans what a killed run left."""
    from .._files import temp_path

    return temp_path(path)


def write_file_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write via ``write(tmp)`` to a temporary file next to ``path``, then rename into place."""
    from .._files import clean_stale

    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = temp_name(path)  # created by ``write`` with the usual permissions (not mkstemp's 0600)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def write_error(path: Path, exc: OSError) -> SharpstackError:
    return SharpstackError(f"could not write {path} ({exc.strerror or exc}); check that the "
                           f"folder is writable and has enough free space")
