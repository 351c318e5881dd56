"""Shared, session-scoped fixtures: one tiny synthetic dataset, one tiny trained IsoNet and
its two exported packages, reused by the IsoNet, export, compat, predict and CLI tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("SHARPSTACK_TEST_THREADS", "2")))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"needs the project's real example data at {SHARED_DATA} (../shared/data beside "
           f"the repository; a public clone has none, CI has it)")
"""Marks a test that reads the real example stacks; it is skipped, with this reason, where the
folder is absent."""

# a small U-Net (kernel 3, base 4): receptive radius 16, so halos and the minimal tile sizes
# stay small and bioimageio.core's test runs take seconds
TINY = {"kernel": 3, "base": 4, "depth": 2, "dropout": 0.0, "patch_size": 32,
        "n_patches": 64, "batch_size": 8, "epochs": 2, "steps_per_epoch": 3,
        "patience": None}


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    from sharpstack.workflows import synthesize

    out = tmp_path_factory.mktemp("synth")
    return synthesize("isonet", out, kind="nuclei", shape=(64, 64, 64), factor=8,
                      psf={"kind": "gaussian", "sigma_xy": 2.0, "sigma_z": 8.0}, seed=3)


@pytest.fixture(scope="session")
def isonet_run(synth_data, tmp_path_factory):
    from sharpstack.workflows import train_run

    run = tmp_path_factory.mktemp("run")
    res = train_run("isonet", [synth_data["paths"]["anisotropic"]], run,
                    settings={"psf": {"kind": "gaussian", "sigma_xy": 2.0, "sigma_z": 8.0},
                              **TINY}, overwrite=True)
    return run, res["model"]


@pytest.fixture(scope="session")
def package_upsample(isonet_run, synth_data, tmp_path_factory):
    from sharpstack.workflows import export_run

    run, _ = isonet_run
    out = tmp_path_factory.mktemp("pkg_up") / "isonet_up.zip"
    return export_run(run, synth_data["paths"]["anisotropic"], out, deployable="upsample")


@pytest.fixture(scope="session")
def package_isotropic(isonet_run, synth_data, tmp_path_factory):
    from sharpstack.workflows import export_run

    run, _ = isonet_run
    out = tmp_path_factory.mktemp("pkg_iso") / "isonet_iso"
    return export_run(run, synth_data["paths"]["anisotropic"], out, deployable="isotropic",
                      as_folder=True)


@pytest.fixture(scope="session")
def package_slice2d(isonet_run, synth_data, tmp_path_factory):
    from sharpstack.workflows import export_run

    run, _ = isonet_run
    out = tmp_path_factory.mktemp("pkg_2d") / "isonet_2d.zip"
    return export_run(run, synth_data["paths"]["anisotropic"], out, deployable="slice2d")
