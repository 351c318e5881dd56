"""Does running a package execute code that came with it?

TorchScript and ONNX weights are data: loading them runs no Python from the package.
``pytorch_state_dict`` weights are rebuilt by *importing* an architecture: a ``.py`` file inside
the package (or a module named by it), which executes whatever that file contains. sharpstack
therefore runs state-dict weights only when

- the architecture is sharpstack's own: the package's file is byte-for-byte (sha256) a file of
  the installed ``sharpstack.nn`` package or of a method's folder ``sharpstack/methods/<name>/``,
  or it names a module under ``sharpstack.nn``; or
- the user said so (``--trust-code``).

This module reads the package's rdf (format 0.4 or 0.5, zip, folder or rdf.yaml) with a YAML
parser only; it imports nothing from the package. The decision must concern the description
that will actually run: bioimageio.spec loads the first file (sorted) of a zip or folder whose
name is, or ends in ``.``, one of ``rdf.yaml``, ``bioimageio.yaml``, ``model.yaml``, so a
package holding several such descriptions is refused (:func:`refuse_several_descriptions`), and
a loaded description is checked as loaded (:func:`descr_code`).
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

__all__ = ["CodeCheck", "state_dict_code", "descr_code", "TRUST_FLAG", "RDF_NAMES", "find_rdf",
           "refuse_several_descriptions", "parse_rdf", "check_format", "preflight",
           "weight_files"]

TRUST_FLAG = "--trust-code"
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
_BIOIMAGEIO_NAMES = ("rdf.yaml", "bioimageio.yaml", "model.yaml")  # bioimageio.spec's, in order


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


def _descriptions(names: list[str]) -> list[str]:
    """The names bioimageio.spec would take for the package's description."""
    return sorted(n for n in names
                  if any(n == b or n.endswith("." + b) for b in _BIOIMAGEIO_NAMES))


def refuse_several_descriptions(path: str | Path) -> None:
    """Refuse a package zip or folder holding more than one description: bioimageio.spec
    would load the first in sorted order, which need not be the one a reader (or a trust
    check) looks at. A path to one rdf file is that file and always fine."""
    p = Path(path)
    if p.is_dir():
        names = [q.name for q in p.iterdir() if q.is_file()]
    elif p.is_file() and zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
    else:
        return
    found = _descriptions(names)
    if len(found) > 1:
        raise PackageError(f"{p} holds {len(found)} model descriptions ({', '.join(found)}); "
                           "bioimageio would load the first of them, so sharpstack refuses "
                           "an ambiguous package: keep only its rdf.yaml, or give the path "
                           "of the one description to use (a folder's .yaml file)")


def find_rdf(path: Path) -> tuple[Path | None, str]:
    """(folder, rdf name) of a package folder or rdf path; (None, name) for a zip.
    A zip or folder with several descriptions is refused (:func:`refuse_several_descriptions`).
    """
    refuse_several_descriptions(path)
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
    arch = [*root.glob("*.py"), *root.parent.joinpath("methods").glob("*/*arch.py")]
    return frozenset(hashlib.sha256(p.read_bytes()).hexdigest() for p in arch)


def parse_rdf(data: bytes, where: str) -> dict[str, Any]:
    """An rdf's bytes as a dict of plain YAML values; errors name ``where`` and the fix."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackageError(f"{where} is not UTF-8 text (byte {exc.start}: "
                           f"{data[exc.start:exc.start + 4]!r}); a bioimage.io rdf is UTF-8 "
                           "YAML: the package is damaged, or save the file as UTF-8") from None
    try:
        rdf = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PackageError(f"{where} is not valid YAML ({str(exc).splitlines()[0]}); it is not "
                           "a bioimage.io package, or it is damaged") from None
    if not isinstance(rdf, dict):
        raise PackageError(f"{where} is not a YAML mapping; it is not a bioimage.io package")
    odd = odd_value(rdf, "")
    if odd is not None:
        key, kind = odd
        raise PackageError(f"{where}: `{key}` holds a YAML {kind}; a bioimage.io description "
                           "holds only text, numbers, dates, lists and mappings: write that "
                           "entry as one of those (or get the package again)")
    return rdf


def odd_value(v: Any, key: str) -> tuple[str, str] | None:
    """The first value that is not plain YAML (a set, binary, ...): (key path, its type)."""
    import datetime

    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                return f"{key}", f"{type(k).__name__} key"
            found = odd_value(x, f"{key}.{k}" if key else str(k))
            if found:
                return found
        return None
    if isinstance(v, list):
        for i, x in enumerate(v):
            found = odd_value(x, f"{key}[{i}]")
            if found:
                return found
        return None
    if v is None or isinstance(v, (str, int, float, bool, datetime.date)):
        return None
    return key, {"set": "set (!!set)", "bytes": "binary value (!!binary)"}.get(
        type(v).__name__, type(v).__name__)


_KNOWN_FORMATS = {(0, 4): 10, (0, 5): None}  # minor -> newest patch read (None: any)


def check_format(rdf: dict[str, Any], where: str) -> None:
    """Refuse, naming it, a ``type`` other than model or a ``format_version`` that
    bioimageio.spec cannot read."""
    if rdf.get("type") != "model":
        raise PackageError(f"{where} describes a {rdf.get('type')!r} (`type`), not a model; "
                           "sharpstack runs and validates bioimage.io model packages")
    fv = rdf.get("format_version")
    parts = str(fv).split(".") if isinstance(fv, str) else []
    try:
        nums = tuple(int(x) for x in parts)
    except ValueError:
        nums = ()
    newest = _KNOWN_FORMATS.get(nums[:2], -1) if len(nums) == 3 else -1
    if newest == -1 or (newest is not None and nums[2] > newest):
        try:
            from bioimageio.spec import __version__ as spec_version
        except ImportError:  # pragma: no cover
            spec_version = "?"
        raise PackageError(
            f"{where} has format_version {fv!r}, which the installed bioimageio.spec "
            f"({spec_version}) cannot read (it reads model formats 0.4.0-0.4.10 and 0.5.x, "
            "written as a text like '0.5.4'): if the package is newer, update bioimageio.spec "
            "(pip install -U bioimageio.spec); otherwise fix `format_version` in its rdf.yaml "
            "or get the package again")


def load_rdf(path: str | Path) -> dict[str, Any]:
    """The package's rdf as a dict (YAML only); errors say what is wrong."""
    p = Path(path)
    folder, name = find_rdf(p)
    data = _read(p, folder, name) if folder is None else (folder / name).read_bytes()
    return parse_rdf(data or b"", f"the rdf {name} of {p}" if p.name != name else str(p))


def preflight(path: str | Path) -> dict[str, Any]:
    """What bioimageio.spec would choke on, refused with a clear message before it loads the
    package: several descriptions, non-UTF-8 or odd YAML, another type, an unknown
    format_version. Returns the rdf."""
    rdf = load_rdf(path)
    check_format(rdf, str(path))
    return rdf


def weight_files(path: str | Path, rdf: dict[str, Any]) -> dict[str, str]:
    """Weight formats whose file is not in the package: format -> why (missing, or a URL)."""
    p = Path(path)
    folder, _ = find_rdf(p)
    out: dict[str, str] = {}
    weights = rdf.get("weights") if isinstance(rdf.get("weights"), dict) else {}
    names: set[str] | None = None
    if folder is None:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
    for fmt, entry in weights.items():
        src = entry.get("source") if isinstance(entry, dict) else None
        if not isinstance(src, str) or not src:
            out[fmt] = "its entry names no file (`source`)"
        elif src.startswith(("http://", "https://")):
            out[fmt] = (f"its file is not in the package but at the URL {src}, and sharpstack "
                        "works offline")
        else:
            rel = str(PurePosixPath(src.replace("\\", "/")))
            there = rel in names if names is not None else (folder / rel).is_file()
            if not there:
                out[fmt] = f"its file {src} is missing from the package"
    return out


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


def descr_code(descr: Any) -> CodeCheck:
    """:func:`state_dict_code` for a loaded spec 0.5 model description: the check made on the
    very object that will run (its architecture file read through the description itself)."""
    weights = getattr(descr, "weights", None)
    entry = getattr(weights, "pytorch_state_dict", None)
    if entry is None:
        return CodeCheck(False, False, "")
    arch = getattr(entry, "architecture", None)
    module = getattr(arch, "import_from", None)
    source = getattr(arch, "source", None)
    what = f"{source if source is not None else module}:{getattr(arch, 'callable', '?')}"
    if isinstance(module, str):
        own = module == "sharpstack.nn" or module.startswith("sharpstack.nn.")
        return CodeCheck(True, not own, what)
    if source is None or str(source).startswith(("http://", "https://")):
        return CodeCheck(True, True, what)
    try:
        data = arch.get_reader().read()
    except Exception:  # noqa: BLE001 - unreadable: treated as foreign code, never run
        return CodeCheck(True, True, what)
    own = hashlib.sha256(data).hexdigest() in _own_architecture_hashes()
    return CodeCheck(True, not own, what)
