"""Default prediction windows sized to a memory budget (issue: fixed small windows were 3-4x
slower than one window on stacks that fitted in memory)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import xarray as xr

from sharpstack.errors import InputError
from sharpstack.predict import load_model, predict_array
from sharpstack.predict.budget import (bytes_per_voxel, memory_budget, memory_tile,
                                       window_cost)
from sharpstack.predict.model import digest
from sharpstack.predict.tiling import AxisGeom, plan

WHOLE = 1 << 30
SPACE = {a: AxisGeom(a, min=16, step=4, scale=Fraction(1), halo=8) for a in "zyx"}
SIZES = {"z": 64, "y": 256, "x": 256}


def test_the_whole_stack_is_one_window_when_it_fits():
    bpv = 1000
    cost = window_cost(SPACE, SIZES, bpv, SIZES)
    # a whole axis costs its smallest valid length (no halo: reflection only)
    assert cost == 64 * 256 * 256 * (bpv + 4) + 64 * 256 * 256 * 4
    req = memory_tile(SPACE, SIZES, False, cost, bpv)
    assert req == {"z": WHOLE, "y": WHOLE, "x": WHOLE}
    p = plan(SPACE, SIZES, req, False)
    assert len(p) == 1


@pytest.mark.parametrize("fraction", [0.6, 0.2, 0.05, 0.01])
def test_smaller_budgets_give_smaller_windows_within_the_budget(fraction):
    bpv = 1000
    budget = int(fraction * window_cost(SPACE, SIZES, bpv, SIZES))
    req = memory_tile(SPACE, SIZES, False, budget, bpv)
    kept = {a: req[a] - 16 if req[a] != WHOLE else SIZES[a] for a in "zyx"}
    assert window_cost(SPACE, kept, bpv, SIZES) <= budget
    assert any(v != WHOLE for v in req.values())
    p = plan(SPACE, SIZES, req, False)
    assert len(p) > 1
    if fraction == 0.6:  # one halving of the longest axis (y or x) is enough
        assert sorted(len(p.axes[a]) for a in "zyx") == [1, 1, 2]
    else:  # the longest axes are cut first: z (the shortest) is cut last
        assert len(p.axes["z"]) <= min(len(p.axes["y"]), len(p.axes["x"]))


def test_a_budget_below_the_smallest_window_stops_at_the_smallest():
    req = memory_tile(SPACE, SIZES, False, 1, 1000)
    assert req == {"z": 32, "y": 32, "x": 32}  # 16 kept + 2 x 8 halo


def test_planes_of_a_2d_model_are_cut_first_when_they_are_the_longest():
    space = {a: AxisGeom(a, min=8, step=8, halo=4) for a in "yx"}
    sizes = {"z": 400, "y": 64, "x": 64}
    bpv = 100
    budget = window_cost(space, {"z": 50, "y": 64, "x": 64}, bpv)
    req = memory_tile(space, sizes, True, budget, bpv)
    assert req["y"] == WHOLE and req["x"] == WHOLE and req["z"] == 50


def test_memory_option_is_checked():
    assert memory_budget(2) == 2 << 30
    assert 0 < memory_budget(None) <= 8 << 30
    for bad in (0, -1.0, float("nan"), True, "4"):
        with pytest.raises(InputError, match="memory must be a positive number of GB"):
            memory_budget(bad)


def test_bytes_per_voxel_grows_with_the_network(package_isotropic):
    descr = load_model(package_isotropic)
    bpv = bytes_per_voxel(descr)
    # the tiny test U-Net (base 4, depth 2): 4+8+16+8+4+1 = 41 conv output channels
    assert bpv == int(1.0 * 4 * 41)


def test_default_windows_fit_the_budget_and_agree_with_one_window(package_isotropic):
    descr = load_model(package_isotropic)
    model = digest(descr)
    rng = np.random.default_rng(0)
    shape = tuple(3 * model.space[a].min + 5 for a in "zyx")  # room for several windows
    stack = xr.DataArray(rng.random(shape, dtype=np.float32), dims=("z", "y", "x"))
    logs: list[str] = []
    whole = predict_array(package_isotropic, stack, log=logs.append, check=False)
    assert "1 window(s)" in logs[0] and "GB per window" in logs[0]
    # a budget of a fifth of one whole-stack window: several windows, the same output
    bpv = bytes_per_voxel(descr)
    sizes = dict(stack.sizes)
    one = window_cost(model.space, sizes, bpv, sizes)
    logs.clear()
    tiled = predict_array(package_isotropic, stack, memory=one / 5 / 2**30, log=logs.append,
                          check=False)
    n = int(logs[0].split(" window(s)")[0])
    assert n > 1
    scale = float(np.abs(whole.values).max())
    assert float(np.abs(tiled.values - whole.values).max()) <= 1e-4 * scale
    assert (stack.values == np.random.default_rng(0).random(shape, dtype=np.float32)).all()


def test_a_window_never_exceeds_the_voxel_cap():
    from sharpstack.predict.budget import MAX_WINDOW_VOXELS

    space = {a: AxisGeom(a, min=8, step=8) for a in "zyx"}
    sizes = {"z": 2048, "y": 4096, "x": 4096}  # 2**35 voxels, a cheap network, a big budget
    req = memory_tile(space, sizes, False, 1 << 50, 4)
    assert np.prod([req[a] if req[a] != WHOLE else sizes[a] for a in "zyx"]) \
        <= MAX_WINDOW_VOXELS
