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
    try:  # a killed process its parent has not reaped yet (a zombie) is dead too
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
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
    """Remove the temporaries that dead sharpstack processes left beside ``dest`` (in its
    folder, for any destination there; a process that is gone or a zombie is dead).

    If a destination is missing and a dead process left its previous output
    (``.sharpstack-old-``) during a replace, it is renamed back first. Returns what was removed or
    restored.
    """
    d = Path(dest)
    folder = d.parent if str(d.parent) else Path(".")
    if not folder.is_dir():
        return []
    done = []
    # every dead process's temporaries in the folder, whatever destination they were for
    for p in sorted(folder.iterdir()):
        m = _NAME.match(p.name)
        if m is None or _alive(int(m.group(2))):
            continue
        target = folder / m.group(3)
        if m.group(1) == "old" and not (target.exists() or target.is_symlink()):
            os.replace(p, target)
        else:
            remove_path(p)
        done.append(p)
    return done


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``);
    False where the system or file system cannot (then nothing changed)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                   ctypes.c_uint]
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    import errno

    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), os.fspath(b))


def replace_atomically(candidate: Path, dest: Path) -> Path:
    """Move the finished ``candidate`` to ``dest``; an existing ``dest`` is replaced only
    after the new content is complete, so that at every instant the old or the new content
    is at ``dest`` (files: one atomic ``os.replace``; folders: one atomic exchange where
    Linux offers it, else two renames, the old folder kept under ``.sharpstack-old-`` and
    put back by :func:`clean_stale` if a kill falls between them)."""
    dest = Path(dest)
    if not (dest.exists() or dest.is_symlink()):
        os.replace(candidate, dest)
        return dest
    if not candidate.is_dir() and not dest.is_dir():
        os.replace(candidate, dest)
        return dest
    if not candidate.name.startswith(TMP_PREFIX):
        # the old content will sit at the candidate's name: give it a temporary name first,
        # so that a kill leaves debris clean_stale recognises (not, e.g., a partial output)
        tmp = temp_path(dest)
        os.replace(candidate, tmp)
        candidate = tmp
    if _exchange(candidate, dest):
        remove_path(candidate)  # now the old content
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
