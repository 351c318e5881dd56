"""Zoo recipes: strict loading and an end-to-end build of a tiny recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sharpstack.errors import InputError
from sharpstack.zoo import load_recipe, run_recipe

ZOO = Path(__file__).resolve().parents[1] / "zoo"


def test_shipped_recipes_load():
    recipes = sorted(ZOO.glob("*.yaml"))
    assert recipes
    for r in recipes:
        rec = load_recipe(r)
        assert rec.id == r.stem


def test_unknown_key_is_rejected_by_name(tmp_path):
    p = tmp_path / "r.yaml"
    good = {"id": "x", "name": "x", "method": "isonet", "data": {"synth": {}}}
    p.write_text(yaml.safe_dump({**good, "epochz": 3}))
    with pytest.raises(InputError, match="epochz"):
        load_recipe(p)
    p.write_text(yaml.safe_dump({**good, "data": {"synth": {"psf": {"sigma_zz": 3}}}}))
    with pytest.raises(InputError, match="sigma_zz"):
        load_recipe(p)


def test_tiny_recipe_builds_tested_packages(tmp_path):
    from tests.conftest import TINY

    rec = {"id": "tiny", "name": "tiny", "method": "isonet",
           "data": {"synth": {"shape": [32, 48, 48], "factor": 4,
                              "psf": {"sigma_xy": 1.0, "sigma_z": 3.0}}},
           "training": dict(TINY), "deployables": ["isotropic"]}
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(rec))
    summary = run_recipe(p, tmp_path / "out")
    pkg = Path(summary["packages"]["isotropic"])
    assert pkg.exists() and pkg.suffix == ".zip"
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["id"] == "tiny"
    # a synthetic recipe measures its quality on the protocol's ground truth, for the card
    q = written["quality"]
    assert any(k.startswith("PSNR") for k in q) and all(
        isinstance(v, (int, float, str)) for v in q.values())
    import zipfile

    card = zipfile.ZipFile(pkg).read("README.md").decode()
    psnr = next(k for k in q if k.startswith("PSNR") and isinstance(q[k], float))
    assert psnr in card and "Not measured" not in card
