"""Safe file operations shared by every command that writes: temporary names, atomic
replacement, clean-up of what a killed run left, and signals that unwind like Ctrl-C.

Every temporary file or folder lives beside its destination (same file system, so the final
rename is atomic) under one recognisable name::

    .sharpstack-tmp-<pid>-<random>-<destination name>    work in progress
    .sharpstack-old-<pid>-<random>-<destination name>    the previous output during a replace

A run that ends in any way Python can see (success, error, Ctrl-C, SIGTERM through
:func:`signals_as_interrupts`) removes its own temporaries. A SIGKILL leaves them; the next
command that writes the same destination calls :func:`clean_stale`, which removes the
temporaries of dead processes and, if a replace was killed between its two renames, puts the
previous output back.

Hand-written because no library of the stack offers atomic replacement of folders (zarr,
package folders) with recovery; ``os.replace`` covers files only.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TMP_PREFIX", "OLD_PREFIX", "temp_path", "temp_dir", "clean_stale",
           "replace_atomically", "remove_path", "signals_as_interrupts", "check_destination"]

TMP_PREFIX = ".sharpstack-tmp-"
OLD_PREFIX = ".sharpstack-old-"
_NAME = re.compile(r"^\.sharpstack-(tmp|old)-(\d+)-[0-9a-f]{8}-(.+)$")


def temp_path(dest: str | os.PathLike, prefix: str = TMP_PREFIX) -> Path:
    """A fresh temporary path beside ``dest`` (nothing is created)."""
    d = Path(dest)
    return d.with_name(f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}-{d.name}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def check_destination(dest: str | os.PathLike, what: str = "output") -> None:
    """Stop early when ``dest`` cannot be written: a file where a folder is needed on the way,
    or a folder that is not writable. Nothing is created."""
    from .errors import InputError

    d = Path(dest)
    parent = d.parent if str(d.parent) else Path(".")
    probe = parent
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError(f"cannot write the {what} {dest}: {probe} is a file, not a folder; "
                         f"choose another path")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"cannot write the {what} {dest}: the folder {probe} is not writable; "
                         f"choose another location")


def remove_path(p: Path) -> None:
    """Remove a file, link or folder; missing is fine."""
    with contextlib.suppress(FileNotFoundError):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def clean_stale(dest: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that dead sharpstack processes left beside ``dest``.

    If ``dest`` is missing and a dead process left the previous output (``.sharpstack-old-``)
    during a replace, it is renamed back to ``dest`` first. Returns what was removed or
    restored.
    """
    d = Path(dest)
    folder = d.parent if str(d.parent) else Path(".")
    if not folder.is_dir():
        return []
    done = []
    for p in sorted(folder.iterdir()):
        m = _NAME.match(p.name)
        if m is None or m.group(3) != d.name or _alive(int(m.group(2))):
            continue
        if m.group(1) == "old" and not (d.exists() or d.is_symlink()):
            os.replace(p, d)
        else:
            remove_path(p)
        done.append(p)
    return done


def replace_atomically(candidate: Path, dest: Path) -> Path:
    """Move the finished ``candidate`` to ``dest``; an existing ``dest`` is replaced only
    after the new content is complete, and is kept under a temporary name until the new one
    is in place (files: one atomic ``os.replace``; folders: two renames, recovered by
    :func:`clean_stale` if a kill falls between them)."""
    dest = Path(dest)
    if not (dest.exists() or dest.is_symlink()):
        os.replace(candidate, dest)
        return dest
    if not candidate.is_dir() and not dest.is_dir():
        os.replace(candidate, dest)
        return dest
    old = temp_path(dest, OLD_PREFIX)
    os.replace(dest, old)
    try:
        os.replace(candidate, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    remove_path(old)
    return dest


@contextlib.contextmanager
def temp_dir(dest: str | os.PathLike, *, capture_tempfile: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``dest``, removed on exit (error and Ctrl-C included).

    ``capture_tempfile`` also points Python's :mod:`tempfile` default there for the block, so
    that libraries' own temporaries (bioimageio unpacking a zip, ...) are removed with it
    instead of piling up in TMPDIR when a run is killed.
    """
    import tempfile

    tmp = temp_path(dest)
    tmp.mkdir(parents=False)
    saved = tempfile.tempdir
    try:
        if capture_tempfile:
            (tmp / "tmp").mkdir()
            tempfile.tempdir = str(tmp / "tmp")
        yield tmp
    finally:
        if capture_tempfile:
            tempfile.tempdir = saved
        remove_path(tmp)


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise KeyboardInterrupt like Ctrl-C does, so
    that ``finally`` clauses and context managers remove temporaries before the process ends.
    (Only in the main thread; elsewhere this does nothing.)"""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")

    saved = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            saved[sig] = signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
