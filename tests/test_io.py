"""Tests for sharpstack.io: reading and writing TIFF, OME-TIFF, OME-Zarr and .npy stacks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dask.array as dsa
import numpy as np
import pytest
import tifffile
import xarray as xr

import sharpstack.io as sio
from sharpstack.errors import InputError, OutputExistsError, SharpstackError
from sharpstack.io import (
    as_dataarray,
    check_finite,
    read_stack,
    write_npy,
    write_ome_zarr,
    write_stack,
    write_tiff,
)

from .conftest import needs_shared_data

# the shared sample stacks live next to the project root (see ../shared/data/SOURCES.md)
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

VOXEL = {"z": 0.5, "y": 0.127, "x": 0.127}


def _stack(shape=(4, 6, 5), dtype="uint16", seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(size=shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# ---------------------------------------------------------------------------- public surface

def test_public_names_exist():
    expected = {"read_stack", "write_tiff", "write_npy", "write_stack", "write_ome_zarr",
                "check_finite", "as_dataarray", "parse_voxel_size", "with_voxel_size",
                "require_voxel_size", "describe_voxel_size"}
    assert expected <= set(sio.__all__)
    for name in sio.__all__:
        assert hasattr(sio, name), name


# ---------------------------------------------------------------------------- ImageJ TIFF

@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_imagej_roundtrip_keeps_data_dtype_axes_and_calibration(tmp_path, dtype):
    arr = _stack((2, 4, 6, 5), dtype)
    da = as_dataarray(arr, "CZYX", VOXEL)
    out = write_tiff(tmp_path / "s.tif", da)
    assert out == tmp_path / "s.tif"

    back = read_stack(out)
    assert back.dims == ("c", "z", "y", "x")
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.values, arr)
    for a, v in VOXEL.items():
        assert back.attrs["voxel_size"][a] == pytest.approx(v, rel=1e-6)
    assert back.attrs["calibrated"] is True
    assert back.attrs["unit"] == "micrometer"
    assert back.attrs["source"] == os.fspath(out)

    # what Fiji reads: an ImageJ hyperstack in TZCYX order, unit "um", spacing = z size
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and not tif.is_bigtiff
        assert tif.series[0].axes == "ZCYX"
        meta = tif.imagej_metadata
        assert meta["unit"] == "um"
        assert meta["spacing"] == pytest.approx(0.5)
        assert meta["channels"] == 2 and meta["slices"] == 4
        xres = tif.pages[0].tags["XResolution"].value
        assert xres[0] / xres[1] == pytest.approx(1 / 0.127, rel=1e-6)


def test_write_tiff_reorders_dims_for_imagej(tmp_path):
    arr = _stack((6, 5, 4))  # y, x, z
    da = as_dataarray(arr, "YXZ", {"z": 2.0, "y": 0.3, "x": 0.4})
    back = read_stack(write_tiff(tmp_path / "r.tif", da))
    assert back.dims == ("z", "y", "x")
    np.testing.assert_array_equal(back.values, arr.transpose(2, 0, 1))
    assert back.attrs["voxel_size"] == pytest.approx({"z": 2.0, "y": 0.3, "x": 0.4})


def test_uncalibrated_data_stay_uncalibrated(tmp_path):
    da = as_dataarray(_stack(), "ZYX")
    assert da.attrs["calibrated"] is False
    back = read_stack(write_tiff(tmp_path / "u.tif", da))
    assert back.attrs["calibrated"] is False
    assert back.attrs["voxel_size"] == {}  # unknown axes are absent, never a filler 1.0


def test_write_tiff_refuses_unsupported_dtype_and_writes_nothing(tmp_path):
    da = as_dataarray(_stack(dtype="float32").astype("float64"), "ZYX", VOXEL)
    with pytest.raises(InputError, match="float64.*astype"):
        write_tiff(tmp_path / "f.tif", da)
    assert _listing(tmp_path) == []


def test_write_tiff_needs_a_dataarray(tmp_path):
    with pytest.raises(InputError, match="as_dataarray"):
        write_tiff(tmp_path / "n.tif", _stack())
    assert _listing(tmp_path) == []


# ---------------------------------------------------------------------------- real stacks

@pytest.mark.parametrize("name, shape, dtype, z, xy", [
    ("sample_ovule_raw.tif", (32, 128, 128), "uint8", 0.235, 0.15),
    ("1135_mini_raw.tif", (100, 100, 100), "uint8", 0.284, 0.127),
    ("xyz_calibrated_16bit__golgi_bfa.tif", (25, 137, 147), "uint16", 0.388, 0.351),
    ("xyz_8bit__chromosomes.tif", (40, 152, 126), "uint16", 0.15, 0.034),
])
@needs_shared_data
def test_read_shared_stacks_with_their_calibration(name, shape, dtype, z, xy):
    path = DATA / name
    da = read_stack(path)
    assert da.dims == ("z", "y", "x")
    assert da.shape == shape
    assert da.dtype == np.dtype(dtype)
    assert da.dtype.isnative  # the Golgi and chromosome files are big-endian
    assert da.attrs["calibrated"] is True
    vs = da.attrs["voxel_size"]
    assert vs["z"] == pytest.approx(z, rel=5e-3)
    assert vs["y"] == pytest.approx(xy, rel=5e-3)
    assert vs["x"] == pytest.approx(xy, rel=5e-3)
    np.testing.assert_array_equal(da.values, tifffile.imread(path))


@pytest.mark.parametrize("unit, factor", [
    ("um", 1.0), ("micron", 1.0), ("microns", 1.0), ("micrometer", 1.0),
    ("\\u00B5m", 1.0), ("nm", 1e-3), ("mm", 1e3),
])
def test_imagej_unit_spellings(tmp_path, unit, factor):
    path = tmp_path / "u.tif"
    tifffile.imwrite(path, _stack(), imagej=True, resolution=(5.0, 4.0),
                     metadata={"axes": "ZYX", "spacing": 0.5, "unit": unit})
    da = read_stack(path)
    assert da.attrs["calibrated"] is True
    assert da.attrs["voxel_size"] == pytest.approx(
        {"z": 0.5 * factor, "y": 0.25 * factor, "x": 0.2 * factor})


def test_unicode_micro_signs_are_micrometres():
    for unit in ("\u00b5m", "\u03bcm", "\\u00B5m", "µm", "Micron", "micrometre"):
        assert sio.unit_factor(unit) == 1.0, unit
    assert sio.unit_factor("pixel") is None
    assert sio.unit_factor(None) is None


def test_imagej_without_unit_is_uncalibrated(tmp_path):
    path = tmp_path / "p.tif"
    tifffile.imwrite(path, _stack(), imagej=True, resolution=(5.0, 5.0),
                     metadata={"axes": "ZYX", "spacing": 0.5, "unit": "pixel"})
    da = read_stack(path)
    assert da.attrs["calibrated"] is False
    assert da.attrs["voxel_size"] == {}  # sizes in pixels are no calibration


# ---------------------------------------------------------------------------- other TIFF flavours

def test_ome_tiff_physical_size_read_back(tmp_path):
    arr = _stack((2, 3, 6, 5))
    path = tmp_path / "o.ome.tif"
    tifffile.imwrite(path, arr, metadata={
        "axes": "CZYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.2,
        "PhysicalSizeZ": 700.0, "PhysicalSizeZUnit": "nm"})
    da = read_stack(path)
    assert da.dims == ("c", "z", "y", "x")
    np.testing.assert_array_equal(da.values, arr)
    assert da.attrs["voxel_size"] == pytest.approx({"z": 0.7, "y": 0.2, "x": 0.1})
    assert da.attrs["calibrated"] is True


def test_write_ome_tiff_by_name(tmp_path):
    arr = _stack((3, 6, 5))
    out = write_stack(tmp_path / "w.ome.tiff", as_dataarray(arr, "ZYX", VOXEL))
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome
    back = read_stack(out)
    np.testing.assert_array_equal(back.values, arr)
    assert back.attrs["voxel_size"] == pytest.approx(VOXEL)


def test_plain_multipage_tiff_pages_become_z(tmp_path):
    arr = _stack((3, 6, 5))
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, arr, photometric="minisblack", metadata=None)  # pages: "IYX"
    da = read_stack(path)
    assert da.dims == ("z", "y", "x")
    np.testing.assert_array_equal(da.values, arr)
    assert da.attrs["calibrated"] is False


def test_plain_tiff_resolution_in_centimetres(tmp_path):
    path = tmp_path / "cm.tif"
    tifffile.imwrite(path, _stack((6, 5), "uint8"), resolution=(1e4 / 0.2, 1e4 / 0.25),
                     resolutionunit="CENTIMETER")
    da = read_stack(path)
    assert da.dims == ("y", "x")
    assert da.attrs["voxel_size"] == pytest.approx({"y": 0.25, "x": 0.2})
    assert da.attrs["calibrated"] is True


def test_rgb_samples_become_channels(tmp_path):
    arr = _stack((6, 5, 3), "uint8")
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, arr, photometric="rgb")
    da = read_stack(path)
    assert da.dims == ("c", "y", "x")
    np.testing.assert_array_equal(da.values, arr.transpose(2, 0, 1))


@pytest.mark.parametrize("compression", ["zlib", "zstd", "lzw"])
def test_read_compressed_tiff_written_by_tifffile(tmp_path, compression):
    arr = _stack((3, 16, 16))
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, arr, imagej=True, compression=compression, resolution=(10.0, 10.0),
                     metadata={"axes": "ZYX", "spacing": 0.3, "unit": "um"})
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression != 1  # really compressed
    da = read_stack(path)
    np.testing.assert_array_equal(da.values, arr)
    assert da.attrs["voxel_size"] == pytest.approx({"z": 0.3, "y": 0.1, "x": 0.1})


@pytest.mark.parametrize("compression, code", [("zlib", 8), ("zstd", 50000), ("lzw", 5)])
def test_write_compressed_tiff(tmp_path, compression, code):
    arr = np.zeros((3, 32, 32), np.uint16)  # compresses well
    arr[:, 8:24, 8:24] = 1000
    out = write_tiff(tmp_path / "c.tif", as_dataarray(arr, "ZYX", VOXEL), compression=compression)
    with tifffile.TiffFile(out) as tif:
        assert int(tif.pages[0].compression) == code
        assert tif.is_imagej
    assert out.stat().st_size < arr.nbytes
    np.testing.assert_array_equal(read_stack(out).values, arr)


def test_write_tiff_rejects_unknown_compression(tmp_path):
    with pytest.raises(InputError, match="compression"):
        write_tiff(tmp_path / "c.tif", as_dataarray(_stack(), "ZYX"), compression="rar")
    assert _listing(tmp_path) == []


def test_read_bigtiff(tmp_path):
    arr = _stack((3, 6, 5))
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, arr, bigtiff=True, photometric="minisblack",
                     resolution=(1e4 / 0.2, 1e4 / 0.2), resolutionunit="CENTIMETER")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
    da = read_stack(path)
    np.testing.assert_array_equal(da.values, arr)
    assert da.attrs["voxel_size"]["x"] == pytest.approx(0.2)


def test_bigtiff_chosen_by_size(tmp_path, monkeypatch):
    monkeypatch.setattr(sio.tiff, "_BIGTIFF_BYTES", 100)  # pretend the stack is over 2 GiB
    da = as_dataarray(_stack((3, 16, 16)), "ZYX", VOXEL)
    compressed = write_tiff(tmp_path / "z.tif", da, compression="zlib")
    plain = write_tiff(tmp_path / "p.tif", da)
    with tifffile.TiffFile(compressed) as tif:
        assert tif.is_bigtiff
    with tifffile.TiffFile(plain) as tif:  # uncompressed ImageJ stays classic (tifffile's advice)
        assert not tif.is_bigtiff and tif.is_imagej
    for path in (compressed, plain):
        back = read_stack(path)
        np.testing.assert_array_equal(back.values, da.values)
        assert back.attrs["voxel_size"] == pytest.approx(VOXEL)


# ---------------------------------------------------------------------------- broken inputs

@needs_shared_data
def test_truncated_tiff_raises_input_error_naming_the_file(tmp_path):
    raw = (DATA / "sample_ovule_raw.tif").read_bytes()
    for n in (100, 5000, len(raw) // 2):
        path = tmp_path / f"trunc{n}.tif"
        path.write_bytes(raw[:n])
        with pytest.raises(InputError) as info:
            read_stack(path)
        assert str(path) in str(info.value), n


def test_random_bytes_with_tif_suffix(tmp_path):
    path = tmp_path / "noise.tif"
    path.write_bytes(np.random.default_rng(1).bytes(2000))
    with pytest.raises(InputError, match="not a readable TIFF") as info:
        read_stack(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.tif"
    with pytest.raises(InputError, match="does not exist") as info:
        read_stack(path)
    assert str(path) in str(info.value)


def test_unsupported_suffix_lists_supported_ones(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match=r"\.tif.*\.npy.*\.zarr") as info:
        read_stack(path)
    assert str(path) in str(info.value)


def test_axes_must_fit_the_data(tmp_path):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, _stack(), imagej=True)
    with pytest.raises(InputError, match="names 4 axes but the array has 3"):
        read_stack(path, axes="CZYX")
    da = read_stack(path, axes="tyx")  # an explicit override is honoured
    assert da.dims == ("t", "y", "x")


def test_not_a_zarr_folder(tmp_path):
    folder = tmp_path / "empty.zarr"
    folder.mkdir()
    with pytest.raises(InputError, match="OME-Zarr") as info:
        read_stack(folder)
    assert str(folder) in str(info.value)


# ---------------------------------------------------------------------------- atomic writing

@pytest.mark.parametrize("name", ["s.tif", "s.npy", "s.ome.zarr"])
def test_existing_output_is_not_overwritten(tmp_path, name):
    da = as_dataarray(_stack(), "ZYX", VOXEL)
    path = write_stack(tmp_path / name, da)
    before = {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()} \
        if path.is_dir() else path.read_bytes()
    other = as_dataarray(_stack(seed=5), "ZYX", VOXEL)
    with pytest.raises(OutputExistsError, match="overwrite") as info:
        write_stack(path, other)
    assert str(path) in str(info.value)
    after = {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()} \
        if path.is_dir() else path.read_bytes()
    assert after == before
    assert _listing(tmp_path) == [name]  # no temporary file left behind

    write_stack(path, other, overwrite=True)
    np.testing.assert_array_equal(read_stack(path).values, other.values)
    assert _listing(tmp_path) == [name]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "s.tif"
    path.write_bytes(b"old")

    def broken(file, *args, **kwargs):
        Path(file).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sio.tiff.tifffile, "imwrite", broken)
    with pytest.raises(SharpstackError, match="No space left"):
        write_tiff(path, as_dataarray(_stack(), "ZYX"), overwrite=True)
    assert path.read_bytes() == b"old"
    assert _listing(tmp_path) == ["s.tif"]


# ---------------------------------------------------------------------------- .npy

def test_npy_roundtrip(tmp_path):
    arr = _stack((2, 3, 6, 5), "float32")
    out = write_npy(tmp_path / "a.npy", as_dataarray(arr, "CZYX"))
    da = read_stack(out, axes="CZYX")
    assert da.dims == ("c", "z", "y", "x")
    assert da.dtype == np.float32
    np.testing.assert_array_equal(da.values, arr)
    assert da.attrs["calibrated"] is False


def test_npy_axes_default_only_for_3d(tmp_path):
    np.save(tmp_path / "v.npy", _stack())
    assert read_stack(tmp_path / "v.npy").dims == ("z", "y", "x")
    np.save(tmp_path / "w.npy", _stack((2, 3, 6, 5)))
    with pytest.raises(InputError, match="names its axes") as info:
        read_stack(tmp_path / "w.npy")
    assert str(tmp_path / "w.npy") in str(info.value)


# ---------------------------------------------------------------------------- OME-Zarr

def test_ome_zarr_roundtrip_with_voxel_size(tmp_path):
    arr = _stack((2, 5, 6, 7), "uint16")
    da = as_dataarray(arr, "CZYX", {"z": 0.7, "y": 0.11, "x": 0.12})
    out = write_ome_zarr(tmp_path / "img.ome.zarr", da, chunks={"z": 2, "y": 4})

    attrs = json.loads((out / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4"
    assert [a["name"] for a in ms["axes"]] == ["c", "z", "y", "x"]
    assert ms["axes"][0]["type"] == "channel"
    assert ms["axes"][1] == {"name": "z", "type": "space", "unit": "micrometer"}
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == \
        pytest.approx([1.0, 0.7, 0.11, 0.12])
    zarray = json.loads((out / "0" / ".zarray").read_text())
    assert zarray["zarr_format"] == 2
    assert zarray["dimension_separator"] == "/"
    assert zarray["chunks"] == [1, 2, 4, 7]

    back = read_stack(out)
    assert isinstance(back.data, dsa.Array)  # lazy
    assert back.dims == ("c", "z", "y", "x")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back.values, arr)
    assert back.attrs["voxel_size"] == pytest.approx({"z": 0.7, "y": 0.11, "x": 0.12})
    assert back.attrs["calibrated"] is True

    # dask-backed data stream into a new OME-Zarr
    again = read_stack(write_ome_zarr(tmp_path / "copy.zarr", back))
    np.testing.assert_array_equal(again.values, arr)


def test_ome_zarr_nanometre_units_and_singleton_channel(tmp_path):
    import zarr

    path = tmp_path / "nm.zarr"
    group = zarr.open_group(os.fspath(path), mode="w", zarr_format=2)
    group.create_array("0", shape=(1, 3, 4, 5), dtype="float32")[...] = 1.5
    group.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": "c", "type": "channel"}] + [
            {"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1, 300, 100, 100]}]}],
    }]
    da = read_stack(path)
    assert da.dims == ("z", "y", "x")  # singleton c dropped
    assert da.attrs["voxel_size"] == pytest.approx({"z": 0.3, "y": 0.1, "x": 0.1})
    assert float(da.values.mean()) == 1.5


# ---------------------------------------------------------------------------- helpers

def test_check_finite_counts_nans_and_infs():
    arr = np.ones((3, 4, 4), np.float32)
    arr[0, 0, :3] = np.nan
    arr[1, 1, 1] = np.inf
    with pytest.raises(InputError, match=r"input stack contains 3 NaN values and 1 infinite"
                                         r".*Remove NaNs"):
        check_finite(as_dataarray(arr, "ZYX"), "input stack")
    with pytest.raises(InputError, match="3 NaN values"):
        check_finite(dsa.from_array(arr, chunks=(1, 4, 4)), "lazy stack")
    check_finite(np.ones(4, np.float32), "clean")  # no error
    check_finite(np.arange(4), "ints")  # integers are always finite


def test_as_dataarray_conventions():
    da = as_dataarray(np.zeros((2, 3, 4)), "zyx", {"Z": 0.4, "x": 0.1})
    assert isinstance(da, xr.DataArray)
    assert da.dims == ("z", "y", "x")
    assert da.attrs == {"voxel_size": {"z": 0.4, "x": 0.1}, "unit": "micrometer",
                        "calibrated": False,
                        "voxel_size_source": {"z": "given", "x": "given"}}
    with pytest.raises(InputError, match="voxel size"):
        as_dataarray(np.zeros((2, 3)), "YX", {"y": -1, "x": 1})
    with pytest.raises(InputError, match="only 'z', 'y' and 'x'"):
        as_dataarray(np.zeros((2, 3)), "YX", {"c": 1})
    with pytest.raises(InputError, match="names 2 axes"):
        as_dataarray(np.zeros((2, 3, 4)), "YX")


def test_write_stack_unknown_suffix(tmp_path):
    with pytest.raises(InputError, match=r"\.tif.*\.npy.*\.zarr"):
        write_stack(tmp_path / "x.png", as_dataarray(_stack(), "ZYX"))
    assert _listing(tmp_path) == []
