"""Zoo recipes: one YAML per published model, run end to end.

A recipe (``zoo/*.yaml``) names the data, the training settings and the deployables of one
model; :func:`run_recipe` synthesises (or reads) the data, trains, exports every deployable as
a tested package and writes a summary. Unknown keys are rejected by name (pydantic
``extra="forbid"``), so a typo in a recipe is an error, not a silently ignored setting.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InputError
from .workflows import PsfSpec

__all__ = ["ZooRecipe", "load_recipe", "run_recipe"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataRecipe(_Strict):
    """Synthetic data (the IsoNet protocol) or a stack file."""

    kind: Literal["nuclei", "membranes", "nuclei+membranes", "file"] = "nuclei"
    path: str | None = None
    shape: tuple[int, int, int] = (128, 128, 128)
    factor: int = Field(8, ge=2)
    photons: float | None = 200.0
    read_noise: float = 0.01
    pixel_um: float = 0.2
    seed: int = 0


class ZooRecipe(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str
    description: str = ""
    authors: list[dict[str, str]] = Field(default_factory=lambda: [{"name": "sharpstack developers"}])
    license: str = "MIT"
    method: Literal["isonet"] = "isonet"
    data: DataRecipe = Field(default_factory=DataRecipe)
    psf: PsfSpec = Field(default_factory=PsfSpec)
    """The PSF (``workflows.PsfSpec`` fields); its pixel size is taken from ``data``."""
    training: dict[str, Any] = Field(default_factory=dict)
    deployables: list[Literal["upsample", "isotropic", "slice2d"]] = ["upsample", "isotropic"]


def load_recipe(path: str | Path) -> ZooRecipe:
    """Read and validate a recipe; errors name the offending key."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"recipe {p} does not exist")
    try:
        return ZooRecipe(**(yaml.safe_load(p.read_text()) or {}))
    except ValidationError as exc:
        raise InputError(f"recipe {p} is invalid:\n{exc}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"recipe {p} is not valid YAML: {exc}") from None


def run_recipe(recipe: str | Path | ZooRecipe, out_dir: str | Path, *, overwrite: bool = False,
               progress: bool = False) -> dict[str, Any]:
    """Data -> train -> export (every deployable, tested) -> ``OUT/summary.json``."""
    import dataclasses

    from .workflows import _write_json_atomic, export_run, synthesize, train_from_file

    r = recipe if isinstance(recipe, ZooRecipe) else load_recipe(recipe)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    psf = dataclasses.replace(r.psf, pixel_um=r.data.pixel_um)
    times: dict[str, float] = {}
    t = time.perf_counter()
    if r.data.kind == "file":
        if not r.data.path:
            raise InputError("data.kind 'file' needs data.path")
        stack = Path(r.data.path)
    else:
        syn = synthesize(out / "data", kind=r.data.kind, shape=r.data.shape, psf=psf,
                         factor=r.data.factor, poisson_peak=r.data.photons,
                         gauss_sigma=r.data.read_noise, pixel_um=r.data.pixel_um,
                         seed=r.data.seed, overwrite=overwrite)
        stack = syn["paths"]["anisotropic"]
    times["data"] = time.perf_counter() - t
    t = time.perf_counter()
    cfg = {"factor": r.data.factor, **r.training}
    train_from_file(stack, out / "run", psf=psf, config=cfg, overwrite=overwrite,
                    progress=progress)
    times["train"] = time.perf_counter() - t
    packages = {}
    for d in r.deployables:
        t = time.perf_counter()
        target = out / f"{r.id}-{d}.zip"
        packages[d] = str(export_run(out / "run", stack, target, deployable=d,
                                     overwrite=overwrite, authors=r.authors, license=r.license,
                                     name=f"{r.name} ({d})"))
        times[f"export_{d}"] = time.perf_counter() - t
    summary = {"id": r.id, "packages": packages,
               "seconds": {k: round(v, 1) for k, v in times.items()}}
    _write_json_atomic(out / "summary.json", summary)
    return summary
