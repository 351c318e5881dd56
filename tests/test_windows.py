"""Default windows == one window == the package's sample output, for every IsoNet deployable
(the other methods' packages run the same check in their own test modules), and the
self-check that stops a prediction whose windows or weights are at fault."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sharpstack.errors import InputError, PackageError
from sharpstack.predict import predict_array

from ._windows import assert_windows_agree


def test_isotropic_package_default_windows_match_one_window_and_sample(package_isotropic):
    shapes = assert_windows_agree(package_isotropic)
    assert shapes["large"][0] > 64 and shapes["large"][1] > 256


def test_upsample_package_windows_match_one_window_and_sample(package_upsample):
    shapes = assert_windows_agree(package_upsample, tile={"z": 16})
    assert shapes["large"][0] > 16 and shapes["large"][2] > 256


def test_slice2d_package_default_windows_match_one_window_and_sample(package_slice2d):
    shapes = assert_windows_agree(package_slice2d)
    assert len(shapes["large"]) == 2 and min(shapes["large"]) > 256
