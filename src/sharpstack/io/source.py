"""What to read from a file: ``PATH[:SELECTOR]``, e.g. ``cells.h5:/raw`` (an HDF5 dataset) or
``plate.czi:scene=1,channel=0,time=2`` (a scene, channel and time point of a vendor file).

The selector travels inside the path string, so a selection made on the command line
(``--scene``, ``--channel``, ``--time``, composed by :func:`with_selection`) reaches every
reader unchanged: the methods' training data, export's sample and predict (including Dask
workers in other processes, which read the stack again from its path)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr

from ..errors import InputError

# file endings a selector may follow (everything read_stack reads)
_ENDINGS = ("h5", "hdf5", "hdf", "he5", "czi", "nd2", "lif", "tif", "tiff", "btf", "tf8",
            "npy", "zarr")
_SPEC = re.compile(r"^(?P<file>.*?\.(?:" + "|".join(_ENDINGS) + r"))(?::(?P<sel>.*))?$",
                   re.IGNORECASE | re.DOTALL)
_KEYS = ("scene", "channel", "time")


@dataclass(frozen=True)
class Selection:
    """A part of a file: an HDF5 ``dataset``; a ``scene`` (index or name), a ``channel`` and a
    ``time`` point (indices from 0). None: not chosen."""

    dataset: str | None = None
    scene: int | str | None = None
    channel: int | None = None
    time: int | None = None

    def text(self) -> str:
        """The selector as written after ``PATH:`` (empty when nothing is chosen)."""
        items = [self.dataset] if self.dataset is not None else []
        items += [f"{k}={getattr(self, k)}" for k in _KEYS if getattr(self, k) is not None]
        return ",".join(items)


def split_source(path: str | os.PathLike) -> tuple[Path, Selection]:
    """Split ``PATH[:SELECTOR]`` into the file and what to read from it.

    A path that exists as given is never split (a file name may contain a colon). The
    selector is a comma-separated list: ``scene=S`` (index from 0 or name), ``channel=N``,
    ``time=N``, and for HDF5 the dataset's path (``/raw`` or ``raw``).

    Examples
    --------
    >>> split_source("cells.h5:/raw")
    (PosixPath('cells.h5'), Selection(dataset='/raw', scene=None, channel=None, time=None))
    >>> split_source("plate.czi:scene=P2,channel=1")[1]
    Selection(dataset=None, scene='P2', channel=1, time=None)
    """
    text = os.fspath(path)
    match = _SPEC.match(text)
    if match is None or match.group("sel") is None or Path(text).exists():
        return Path(text), Selection()
    file, sel = Path(match.group("file")), match.group("sel").replace("\\", "/")
    values: dict[str, Any] = {}
    for item in (s.strip() for s in sel.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq:
            if "dataset" in values:
                raise InputError(f"{text}: two dataset paths ({values['dataset']!r} and "
                                 f"{item!r}); name one, e.g. {file}:{values['dataset']}")
            values["dataset"] = item
        elif key in _KEYS and key not in values:
            values[key] = _index(key, value.strip(), text)
        else:
            raise InputError(f"{text}: {item!r} is not a selection; after '{file}:' write a "
                             f"dataset path (HDF5) and/or scene=S, channel=N, time=N separated "
                             f"by commas, each once (e.g. {file}:scene=0,channel=1)")
    return file, Selection(**values)


def _index(key: str, value: str, where: str) -> int | str:
    if value.lstrip("-").isdigit():
        number = int(value)
        if number < 0:
            raise InputError(f"{where}: {key}={value} must be 0 or more (the first is 0)")
        return number
    if key == "scene" and value:
        return value  # a scene's name
    raise InputError(f"{where}: {key}={value!r} must be an index (0 for the first)")


def stack_file(path: str | os.PathLike) -> Path:
    """The file (or folder) of ``PATH[:SELECTOR]``, without the selector."""
    return split_source(path)[0]


def with_selection(path: str | os.PathLike, *, scene: int | str | None = None,
                   channel: int | None = None, time: int | None = None) -> Path:
    """``path`` with a scene, channel and/or time point chosen (the CLI's ``--scene``,
    ``--channel``, ``--time``), as ``PATH:scene=S,channel=N,time=N``; ``path`` unchanged
    when nothing is chosen.

    Raises
    ------
    InputError
        ``path`` is a folder (a choice is made within one file), or a value is negative, or
        the path already chooses the same thing.
    """
    chosen = {k: v for k, v in (("scene", scene), ("channel", channel), ("time", time))
              if v is not None}
    if not chosen:
        return Path(path)
    file, sel = split_source(path)
    options = ", ".join(f"--{k}" for k in chosen)
    if file.is_dir() and not file.name.lower().endswith(".zarr"):
        raise InputError(f"{options} choose(s) within one file, but {file} is a folder; give "
                         f"the file (or leave out {options})")
    values = {k: getattr(sel, k) for k in ("dataset", *_KEYS)}
    for key, value in chosen.items():
        if values[key] is not None:
            raise InputError(f"{path} already chooses {key}={values[key]}; leave out --{key}")
        values[key] = _index(key, str(value).strip(), f"--{key}")
    return Path(f"{file}:{Selection(**values).text()}")


def select_planes(data: xr.DataArray, sel: Selection, path: Path) -> xr.DataArray:
    """Keep the channel ``sel.channel`` and the time point ``sel.time`` of ``data`` (lazily
    for dask data); the chosen axis is dropped. A file without that axis has one: index 0."""
    for key, dim in (("channel", "c"), ("time", "t")):
        index = getattr(sel, key)
        if index is None:
            continue
        n = int(data.sizes.get(dim, 1))
        if index >= n:
            what = f"{n} {key}s" if n > 1 else f"one {key}"
            raise InputError(f"{path} has {what}; --{key} {index} is out of range (indices "
                             f"start at 0: choose 0{f'..{n - 1}' if n > 1 else ''})")
        if dim in data.dims:
            attrs = dict(data.attrs)
            data = data.isel({dim: index})
            data.attrs = attrs
    return data
