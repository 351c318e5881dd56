"""A package read the way the consumers read it: the raw ``rdf.yaml`` (not bioimageio.spec's
pydantic model) and the bytes of the files inside it, with helpers for tensors and axes
(spec 0.5)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ...errors import InputError, PackageError

_RDF_NAMES = ("rdf.yaml", "bioimageio.yaml", "rdf.yml", "model.yaml")


class RawPackage:
    """Raw access to a package: the parsed rdf.yaml dict and the bytes of files inside it."""

    def __init__(self, source: str | Path):
        path = Path(source)
        if not path.exists():
            raise InputError(f"package {str(path)!r} does not exist; give a .zip, a folder or an "
                             "rdf.yaml path")
        from ..._trust import refuse_several_descriptions

        refuse_several_descriptions(path)  # bioimageio would load the first (sorted) one
        self.source = path
        self.is_zip = False
        self._zip: zipfile.ZipFile | None = None
        if path.is_file() and zipfile.is_zipfile(path):
            self.is_zip = True
            self._zip = zipfile.ZipFile(path)
            names = set(self._zip.namelist())
            rdf = next((n for n in _RDF_NAMES if n in names), None)
            if rdf is None:
                raise InputError(f"{path} is a zip without an rdf.yaml at its top level; "
                                 "give a bioimage.io package zip")
            self.rdf_name = rdf
            self.root = None
        elif path.is_dir():
            rdf = next((path / n for n in _RDF_NAMES if (path / n).is_file()), None)
            if rdf is None:
                raise InputError(f"folder {path} has no rdf.yaml; give a bioimage.io package "
                                 "folder")
            self.root, self.rdf_name = path, rdf.name
        elif path.suffix.lower() in (".yaml", ".yml"):
            self.root, self.rdf_name = path.parent, path.name
        else:
            raise InputError(f"{path} is neither a zip, a folder nor an rdf.yaml; give a "
                             "bioimage.io package")
        try:
            self.rdf = yaml.safe_load(self.read_bytes(self.rdf_name).decode("utf-8"))
        except UnicodeDecodeError as e:
            raise PackageError(f"{self.rdf_name} in {path} is not UTF-8 text (byte {e.start}); "
                               "a bioimage.io rdf is UTF-8 YAML: the package is damaged, or "
                               "save the file as UTF-8") from None
        except yaml.YAMLError as e:
            raise PackageError(f"{self.rdf_name} in {path} is not valid YAML ({e}); re-export "
                               "the package") from e
        if not isinstance(self.rdf, dict):
            raise PackageError(f"{self.rdf_name} in {path} is not a YAML mapping; re-export the "
                               "package")
        fv = str(self.rdf.get("format_version", ""))
        if self.rdf.get("type") != "model" or not fv.startswith("0.5"):
            raise InputError(
                f"{path} describes type={self.rdf.get('type')!r} format_version={fv!r}; "
                "check_package checks bioimage.io *model* packages of spec 0.5; update older "
                "packages with bioimageio.spec (update_format) or re-export them")

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    @property
    def validation_source(self) -> Path:
        """What to hand to bioimageio.spec / bioimageio.core."""
        if self.is_zip:
            return self.source
        return self.root / self.rdf_name

    def _name(self, rel: str) -> str:
        return str(PurePosixPath(rel.replace("\\", "/")))

    def exists(self, rel: str) -> bool:
        if is_url(rel):
            return False
        if self._zip is not None:
            return self._name(rel) in self._zip.namelist()
        return (self.root / rel).is_file()

    def read_bytes(self, rel: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(self._name(rel))
        return (self.root / rel).read_bytes()


def is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def file_source(entry: Any) -> str | None:
    """The file name of a spec-0.5 file entry (plain string or ``{source, sha256}``)."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("source"), str):
        return entry["source"]
    return None


# --------------------------------------------------------------------------------------------
# raw-yaml helpers for tensors and axes (spec 0.5)
# --------------------------------------------------------------------------------------------

_DEFAULT_AXIS_ID = {"batch": "batch", "channel": "channel", "index": "index", "time": "time",
                    "space": "x"}


@dataclass
class Axis:
    id: str
    type: str
    explicit_id: bool
    size: Any
    scale: float
    halo: int
    raw: dict


def axes_of(tensor: dict) -> list[Axis]:
    out = []
    for a in tensor.get("axes") or []:
        if not isinstance(a, dict):
            continue
        typ = str(a.get("type", ""))
        aid = a.get("id")
        size = a.get("size")
        if typ == "channel" and size is None:
            size = len(a.get("channel_names") or []) or 1
        if typ == "batch" and size is None:
            size = None
        out.append(Axis(id=str(aid) if aid is not None else _DEFAULT_AXIS_ID.get(typ, typ),
                         type=typ, explicit_id=aid is not None, size=size,
                         scale=float(a.get("scale", 1.0) or 1.0), halo=int(a.get("halo", 0) or 0),
                         raw=a))
    return out


def tensor_id_of(t: dict, default: str) -> str:
    return str(t.get("id", t.get("name", default)))


def is_param(size: Any) -> bool:
    return isinstance(size, dict) and "min" in size and "step" in size


def is_ref(size: Any) -> bool:
    return isinstance(size, dict) and "tensor_id" in size and "axis_id" in size


def processing_steps(tensor: dict, key: str) -> list[dict]:
    return [p for p in (tensor.get(key) or []) if isinstance(p, dict)]


def processing_id(p: dict) -> str:
    return str(p.get("id", p.get("name", "")))


def torch_version(weights: dict, fmt: str) -> tuple[int, int] | None:
    entry = weights.get(fmt)
    if not isinstance(entry, dict) or entry.get("pytorch_version") is None:
        return None
    parts = str(entry["pytorch_version"]).split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return None
