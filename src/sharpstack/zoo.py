"""Zoo recipes: one YAML per published model, run end to end.

A recipe (``zoo/*.yaml``) names the method, the data (the method's synthetic protocol, or
files), the training settings and the deployables of one model; :func:`run_recipe` makes (or
reads) the data, trains, exports every deployable as a tested package and writes a summary.
Every section is validated strictly when the recipe is loaded: ``data.synth`` by the method's
synthetic-data model, ``training`` by its settings model (both pydantic ``extra="forbid"``),
so a typo in a recipe is an error naming the key, not a silently ignored setting.

Layout (the recipes under ``zoo/`` are examples)::

    id: my-model                # lower case, digits and -
    name: My model
    method: <a registered method>
    data:
      synth: {...}              # options of the method's synthetic data, or
      # inputs: [stack.tif]     # files, relative to the recipe
    training: {...}             # fields of the method's settings
    deployables: [...]          # default: all of the method's
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InputError
from .methods import get_method, method_names
from .methods._base import settings_from

__all__ = ["ZooRecipe", "DataRecipe", "load_recipe", "run_recipe"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataRecipe(_Strict):
    """The method's synthetic protocol (``synth``: its options) or files (``inputs``, paths
    relative to the recipe, in the method's input order, and the ``sample`` the test input
    is cut from; default: the first input)."""

    synth: dict[str, Any] | None = None
    inputs: list[str] | None = None
    sample: str | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.synth is None) == (self.inputs is None):
            raise ValueError("give exactly one of data.synth (synthetic data) or data.inputs "
                             "(files)")
        return self


class ZooRecipe(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str
    description: str = ""
    authors: list[dict[str, str]] = Field(
        default_factory=lambda: [{"name": "sharpstack developers"}])
    license: str = "MIT"
    method: str
    data: DataRecipe
    training: dict[str, Any] = Field(default_factory=dict)
    deployables: list[str] | None = None
    """Default: every deployable of the method."""


def load_recipe(path: str | Path) -> ZooRecipe:
    """Read and validate a recipe; errors name the offending key."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"recipe {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"recipe {p} is not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"recipe {p} cannot be read: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"recipe {p} must be a YAML mapping (id:, name:, method:, data:, "
                         f"training:, ...), not a {type(raw).__name__}")
    try:
        recipe = ZooRecipe(**raw)
    except ValidationError as exc:
        raise InputError(f"recipe {p} is invalid:\n{exc}") from None
    if recipe.method not in method_names():
        raise InputError(f"recipe {p}: unknown method {recipe.method!r}; sharpstack has "
                         f"{', '.join(method_names())}")
    m = get_method(recipe.method)
    if recipe.data.synth is not None:
        settings_from(m.synth_model or _NoSynth, recipe.data.synth,
                      what=f"data.synth of recipe {p}")
    settings_from(m.settings_model, recipe.training, what=f"training of recipe {p}")
    for d in recipe.deployables or []:
        m.deployable(d)
    return recipe


class _NoSynth(_Strict):
    """Stands for a method without synthetic data: any synth key is an error."""


def run_recipe(recipe: str | Path | ZooRecipe, out_dir: str | Path, *, overwrite: bool = False,
               progress: bool = False) -> dict[str, Any]:
    """Data -> train -> export (every deployable, tested) -> ``OUT/summary.json``."""
    from .workflows import write_json_atomic, export_run, synthesize, train_run

    base = Path(recipe).parent if not isinstance(recipe, ZooRecipe) else Path.cwd()
    r = recipe if isinstance(recipe, ZooRecipe) else load_recipe(recipe)
    m = get_method(r.method)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"the output folder {out} is a file; give a folder for the zoo "
                         f"outputs (--out; it is created if missing)")
    from ._files import check_destination

    check_destination(out / "summary.json", "zoo output folder")
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t = time.perf_counter()
    implied: dict[str, Any] = {}
    syn: dict[str, Any] | None = None
    if r.data.synth is not None:
        syn = synthesize(m, out / "data", overwrite=overwrite, **r.data.synth)
        inputs, sample, implied = syn["inputs"], syn["sample"], syn["settings"]
    else:
        inputs = [(base / i) for i in r.data.inputs or []]
        sample = base / r.data.sample if r.data.sample else inputs[0]
    times["data"] = time.perf_counter() - t
    t = time.perf_counter()
    trained = train_run(m, inputs, out / "run", settings={**implied, **r.training},
                        overwrite=overwrite, progress=progress)
    times["train"] = time.perf_counter() - t
    # synthetic recipes hold their ground truth: the cards get the quality measured on the
    # protocol's held-apart test data (the method's own evaluation, as in its demo)
    quality: dict[str, Any] = {}
    if syn is not None:
        t = time.perf_counter()
        quality = dict(m.evaluate(trained["trained"], syn["synth"]))
        times["evaluate"] = time.perf_counter() - t
    packages = {}
    for d in r.deployables or [d.name for d in m.deployables]:
        t = time.perf_counter()
        target = out / f"{r.id}-{d}.zip"
        packages[d] = str(export_run(out / "run", sample, target, deployable=d,
                                     overwrite=overwrite, authors=r.authors, license=r.license,
                                     name=f"{r.name} ({d})", quality=quality or None))
        times[f"export_{d}"] = time.perf_counter() - t
    summary = {"id": r.id, "method": m.name, "packages": packages,
               "quality": {k: (round(v, 4) if isinstance(v, float) else v)
                           for k, v in quality.items()},
               "seconds": {k: round(v, 1) for k, v in times.items()}}
    write_json_atomic(out / "summary.json", summary)
    return summary
