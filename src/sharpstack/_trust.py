"""Does running a package execute code that came with it?

TorchScript and ONNX weights are data: loading them runs no Python from the package.
``pytorch_state_dict`` weights are rebuilt by *importing* an architecture: a ``.py`` file inside
the package (or a module named by it), which executes whatever that file contains. sharpstack
therefore runs state-dict weights only when

- the architecture is sharpstack's own: the package's file is byte-for-byte (sha256) a file of
  the installed ``sharpstack.nn`` package, or it names a module under ``sharpstack.nn``; or
- the user said so (``--trust-code``).

This module reads the package's rdf (format 0.4 or 0.5, zip, folder or rdf.yaml) with a YAML
parser only; it imports nothing from the package.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from .errors import PackageError

__all__ = ["CodeCheck", "state_dict_code", "TRUST_FLAG", "RDF_NAMES", "find_rdf"]

TRUST_FLAG = "--trust-code"
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")


@dataclass(frozen=True)
class CodeCheck:
    """What the package's ``pytorch_state_dict`` weights would import."""

    has_state_dict: bool
    runs_package_code: bool
    """Loading the state-dict weights imports code that is not sharpstack's own."""
    what: str
    """The architecture, e.g. ``arch.py:UNet`` or ``some.module.Net``."""

    @property
    def reason(self) -> str:
        return (f"its pytorch_state_dict weights import the architecture {self.what} from the "
                f"package, which would run that file's code; pass {TRUST_FLAG} if you trust "
                "its author")


def find_rdf(path: Path) -> tuple[Path | None, str]:
    """(folder, rdf name) of a package folder or rdf path; (None, name) for a zip."""
    if path.is_dir():
        for n in RDF_NAMES:
            if (path / n).is_file():
                return path, n
        others = sorted(p.name for p in path.glob("*.yaml")) + sorted(
            p.name for p in path.glob("*.yml"))
        hint = (f"; it has {', '.join(others)}: give that file's path instead" if others
                else "")
        raise PackageError(f"folder {path} has no rdf.yaml (or bioimageio.yaml){hint}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
        for n in RDF_NAMES:
            if n in names:
                return None, n
        raise PackageError(f"{path} is a zip without an rdf.yaml at its top level; give a "
                           "bioimage.io model package")
    if path.suffix.lower() in (".yaml", ".yml"):
        return path.parent, path.name
    raise PackageError(f"{path} is neither a package zip, a folder nor an rdf.yaml")


def _read(path: Path, folder: Path | None, rel: str) -> bytes | None:
    name = str(PurePosixPath(rel.replace("\\", "/")))
    try:
        if folder is None:
            with zipfile.ZipFile(path) as z:
                return z.read(name)
        p = (folder / name).resolve()
        if not str(p).startswith(str(folder.resolve())):  # no paths out of the package
            return None
        return p.read_bytes()
    except (KeyError, OSError):
        return None


@lru_cache(maxsize=1)
def _own_architecture_hashes() -> frozenset[str]:
    from . import nn

    root = Path(nn.__file__).parent
    return frozenset(hashlib.sha256(p.read_bytes()).hexdigest() for p in root.glob("*.py"))


def load_rdf(path: str | Path) -> dict[str, Any]:
    """The package's rdf as a dict (YAML only); errors say what is wrong."""
    p = Path(path)
    folder, name = find_rdf(p)
    data = _read(p, folder, name) if folder is None else (folder / name).read_bytes()
    try:
        rdf = yaml.safe_load(data or b"")
    except yaml.YAMLError as exc:
        raise PackageError(f"the rdf of {p} is not valid YAML ({str(exc).splitlines()[0]}); "
                           "it is not a bioimage.io package, or it is damaged") from None
    if not isinstance(rdf, dict):
        raise PackageError(f"the rdf of {p} is not a YAML mapping; it is not a bioimage.io "
                           "package")
    return rdf


def state_dict_code(package: str | Path) -> CodeCheck:
    """Would running ``package``'s pytorch_state_dict weights execute code from the package?

    Parameters
    ----------
    package : str or Path
        A package ``.zip``, folder, or its ``rdf.yaml`` (format 0.4 or 0.5).
    """
    p = Path(package)
    folder, name = find_rdf(p)
    rdf = load_rdf(p)
    weights = rdf.get("weights") or {}
    entry = weights.get("pytorch_state_dict") if isinstance(weights, dict) else None
    if not isinstance(entry, dict):
        return CodeCheck(False, False, "")
    arch = entry.get("architecture")
    source: str | None = None
    module: str | None = None
    if isinstance(arch, dict):  # format 0.5
        what = f"{arch.get('source') or arch.get('import_from')}:{arch.get('callable')}"
        source = arch.get("source") if isinstance(arch.get("source"), str) else None
        module = arch.get("import_from") if isinstance(arch.get("import_from"), str) else None
    elif isinstance(arch, str):  # format 0.4: "file.py:Callable" or "package.module.Callable"
        what = arch
        if ":" in arch and arch.split(":", 1)[0].endswith(".py"):
            source = arch.split(":", 1)[0]
        else:
            module = arch.rsplit(".", 1)[0]
    else:
        return CodeCheck(True, True, "an unreadable architecture entry")
    if module is not None:
        own = module == "sharpstack.nn" or module.startswith("sharpstack.nn.")
        return CodeCheck(True, not own, what)
    if source is None or source.startswith(("http://", "https://")):
        return CodeCheck(True, True, what)
    data = _read(p, folder, source)
    if data is None:
        return CodeCheck(True, True, what)
    own = hashlib.sha256(data).hexdigest() in _own_architecture_hashes()
    return CodeCheck(True, not own, what)
