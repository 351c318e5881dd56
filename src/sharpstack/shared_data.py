"""Where the project's real example data lie, and whether a file comes from there.

The data (``../shared/data`` beside the repository: the ZSE-GAN paper's z-scans, a bead stack,
a defocus series, small confocal stacks; see its ``SOURCES.md``) are read in place and never
copied into runs or packages: several of them may not be redistributed. ``$SHARPSTACK_DATA``
names another folder of the same layout. A clone without the folder still works; whatever
needs a dataset says which one is missing and where it was looked for.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError

__all__ = ["ENV", "shared_data_root", "shared_dataset", "is_shared_data"]

ENV = "SHARPSTACK_DATA"


def shared_data_root() -> Path:
    """``$SHARPSTACK_DATA``, else ``../shared/data`` beside the repository (it may not exist)."""
    env = os.environ.get(ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


def shared_dataset(name: str, *required: str) -> Path:
    """The dataset folder ``name`` of :func:`shared_data_root`, which must hold the
    sub-folders ``required``; an :class:`InputError` naming the folder and ``$SHARPSTACK_DATA``
    when it does not."""
    root = shared_data_root() / name
    missing = [r for r in required if not (root / r).is_dir()]
    if not root.is_dir() or missing:
        what = ", ".join(f"{r}/" for r in (missing or required)) or "the folder"
        raise InputError(f"the example data {name!r} ({what}) is not at {root}; set {ENV} to "
                         f"the folder that holds {name}/ (the project's shared/data)")
    return root


def is_shared_data(path: str | os.PathLike) -> bool:
    """Is ``path`` inside :func:`shared_data_root` (files that may not be redistributed)?"""
    try:
        Path(path).resolve().relative_to(shared_data_root().resolve())
        return True
    except (ValueError, OSError):
        return False
