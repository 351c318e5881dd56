"""Calibration is never lost and never invented (issue 13, library half).

Per axis, a voxel size is either read from the file (or given) or unknown; an unknown axis is
absent from ``attrs["voxel_size"]``, every writer keeps what is known and writes nothing it
was not told, and predict scales the known sizes by the model's output axes.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

import sharpstack.io as sio
from sharpstack.errors import InputError
from sharpstack.io import (
    as_dataarray,
    describe_voxel_size,
    parse_voxel_size,
    read_stack,
    require_voxel_size,
    with_voxel_size,
    write_stack,
)

from .conftest import needs_shared_data

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

FULL = {"z": 2.0, "y": 0.24, "x": 0.24}
STATES = {  # what the input file knows
    "full": FULL,
    "lateral": {"y": 0.24, "x": 0.24},  # the confocal stack of the issue: no z spacing
    "axial": {"z": 2.0},
    "none": {},
}
FORMATS = (".tif", ".ome.tif", ".ome.zarr", ".npy")


def _values(shape=(3, 8, 10)) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.uint16).reshape(shape)


def _imagej_file(path: Path, sizes: dict, unit: str = "um") -> Path:
    """An ImageJ TIFF as Fiji or tifffile would write it for these known sizes."""
    meta: dict = {"axes": "ZYX"}
    kwargs: dict = {}
    if "x" in sizes:
        kwargs["resolution"] = (1 / sizes["x"], 1 / sizes["y"])
        meta["unit"] = unit
    if "z" in sizes:
        meta["spacing"] = sizes["z"]
        meta.setdefault("unit", unit)
        if "x" not in sizes:
            meta.update(unit="pixel", zunit=unit)
    tifffile.imwrite(path, _values(), imagej=True, metadata=meta, **kwargs)
    return path


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# ---------------------------------------------------------------------------- reading

def test_imagej_tiff_without_spacing_reads_with_z_unknown(tmp_path):
    path = _imagej_file(tmp_path / "confocal.tif", STATES["lateral"])
    with tifffile.TiffFile(path) as tif:  # what tifffile wrote: unit and resolution only
        description = tif.pages[0].tags["ImageDescription"].value
    assert "unit=um" in description and "spacing" not in description

    da = read_stack(path)
    assert da.attrs["voxel_size"] == pytest.approx({"y": 0.24, "x": 0.24})
    assert "z" not in da.attrs["voxel_size"]  # not ImageJ's default depth of 1.0
    assert da.attrs["calibrated"] is False
    assert da.attrs["voxel_size_source"] == {"y": "file", "x": "file"}
    assert describe_voxel_size(da) == "z unknown, y 0.24 µm (file), x 0.24 µm (file)"


def test_imagej_tiff_with_spacing_reads_z(tmp_path):
    da = read_stack(_imagej_file(tmp_path / "full.tif", FULL))
    assert da.attrs["voxel_size"] == pytest.approx(FULL)
    assert da.attrs["calibrated"] is True
    assert da.attrs["voxel_size_source"] == {"z": "file", "y": "file", "x": "file"}


@pytest.mark.parametrize("unit", ["um", "micron", "\\u00B5m"])
@pytest.mark.parametrize("state", ["full", "lateral"])
def test_the_three_micrometre_spellings(tmp_path, unit, state):
    da = read_stack(_imagej_file(tmp_path / "s.tif", STATES[state], unit=unit))
    assert da.attrs["voxel_size"] == pytest.approx(STATES[state])
    assert da.attrs["calibrated"] is (state == "full")


@pytest.mark.parametrize("name, unit, z, xy", [
    ("sample_ovule_raw.tif", "um", 0.235, 0.15),
    ("xyz_calibrated_16bit__golgi_bfa.tif", "micron", 0.388, 0.351),
    ("xyz_8bit__chromosomes.tif", "\\u00B5m", 0.15, 0.034),
])
@needs_shared_data
def test_real_stacks_round_trip_through_every_format(tmp_path, name, unit, z, xy):
    path = DATA / name
    with tifffile.TiffFile(path) as tif:  # the spelling really is in the file
        assert tif.imagej_metadata["unit"] == unit
    da = read_stack(path)
    assert da.attrs["voxel_size"] == pytest.approx({"z": z, "y": xy, "x": xy}, rel=5e-3)
    for suffix in FORMATS[:3]:
        back = read_stack(write_stack(tmp_path / f"copy{suffix}", da))
        assert back.attrs["voxel_size"] == pytest.approx(da.attrs["voxel_size"], rel=1e-6)
        assert back.attrs["calibrated"] is True
        np.testing.assert_array_equal(back.values, da.values)


@needs_shared_data
def test_real_stack_without_calibration_stays_unknown(tmp_path):
    path = sorted((DATA / "zse_gan" / "zscans").glob("*.tif"))[0]  # "no voxel size given"
    da = read_stack(path)
    assert da.attrs["voxel_size"] == {} and da.attrs["calibrated"] is False
    back = read_stack(write_stack(tmp_path / "z.tif", da))
    assert back.attrs["voxel_size"] == {}
    with tifffile.TiffFile(tmp_path / "z.tif") as tif:
        assert "unit" not in tif.imagej_metadata and "spacing" not in tif.imagej_metadata


@pytest.mark.parametrize("unit, factor", [
    ("\u00b5m", 1.0), ("um", 1.0), ("nm", 1e-3), ("mm", 1e3), ("cm", 1e4), ("m", 1e6),
    ("pm", 1e-6), ("\u00c5", 1e-4), ("Mm", 1e12), ("Pm", 1e21), ("km", 1e9), ("in", 25400.0),
    ("thou", 25.4), ("pixel", None), ("reference frame", None),
])
def test_ome_units_are_understood(tmp_path, unit, factor):
    path = tmp_path / "u.ome.tif"
    tifffile.imwrite(path, _values(), metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeXUnit": unit,
        "PhysicalSizeY": 0.25, "PhysicalSizeYUnit": "\u00b5m"})  # no PhysicalSizeZ
    vs = read_stack(path).attrs["voxel_size"]
    assert "z" not in vs
    assert vs["y"] == pytest.approx(0.25)
    if factor is None:
        assert "x" not in vs
    else:
        assert vs["x"] == pytest.approx(0.5 * factor)


def test_every_ome_units_length_name_is_known():
    # OME UnitsLength (ome.xsd 2016-06): all lengths; "pixel"/"reference frame" are not
    lengths = ["Ym", "Zm", "Em", "Pm", "Tm", "Gm", "Mm", "km", "hm", "dam", "m", "dm", "cm",
               "mm", "\u00b5m", "nm", "pm", "fm", "am", "zm", "ym", "\u00c5", "thou", "li",
               "in", "ft", "yd", "mi", "ua", "ly", "pc", "pt"]
    factors = {u: sio.unit_factor(u) for u in lengths}
    assert all(f is not None and f > 0 for f in factors.values()), factors
    assert len(set(factors.values())) == len(lengths)  # case matters: mm != Mm, pm != Pm
    assert sio.unit_factor("MM") is None  # ambiguous between mm and Mm: unknown, not a guess
    # the UDUNITS names OME-Zarr uses
    for name, f in (("micrometer", 1.0), ("nanometer", 1e-3), ("millimeter", 1e3),
                    ("angstrom", 1e-4), ("picometer", 1e-6), ("meter", 1e6),
                    ("micrometre", 1.0), ("microns", 1.0)):
        assert sio.unit_factor(name) == pytest.approx(f), name


def test_imagej_inch_and_pixel_units_are_not_a_calibration(tmp_path):
    for unit in ("inch", "pixel", "pixels"):
        path = tmp_path / f"{unit}.tif"
        tifffile.imwrite(path, _values(), imagej=True, resolution=(72.0, 72.0),
                         metadata={"axes": "ZYX", "unit": unit, "spacing": 3.0})
        assert read_stack(path).attrs["voxel_size"] == {}, unit


def test_imagej_centimetre_resolution_with_um_unit_as_fiji_reads_it(tmp_path):
    # Fiji's FileOpener: ResolutionUnit cm + unit=um -> pixel width x 10000
    path = tmp_path / "cm.tif"
    tifffile.imwrite(path, _values(), imagej=True, resolution=(1e4 / 0.24, 1e4 / 0.24),
                     resolutionunit="CENTIMETER", metadata={"axes": "ZYX", "unit": "um"})
    assert read_stack(path).attrs["voxel_size"] == pytest.approx({"y": 0.24, "x": 0.24})


def test_ome_zarr_axis_without_unit_is_unknown(tmp_path):
    import zarr

    path = tmp_path / "u.zarr"
    group = zarr.open_group(os.fspath(path), mode="w", zarr_format=2)
    group.create_array("0", shape=(3, 4, 5), dtype="uint8")[...] = 1
    group.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": "z", "type": "space"},
                 {"name": "y", "type": "space", "unit": "nanometer"},
                 {"name": "x", "type": "space", "unit": "nanometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [4.0, 240, 240]}]}],
    }]
    da = read_stack(path)
    assert da.attrs["voxel_size"] == pytest.approx({"y": 0.24, "x": 0.24})


def test_plain_tiff_pages_have_no_z_size(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, _values(), photometric="minisblack", resolution=(1e4 / 0.2,) * 2,
                     resolutionunit="CENTIMETER", metadata=None)
    da = read_stack(path)
    assert da.attrs["voxel_size"] == pytest.approx({"y": 0.2, "x": 0.2})
    assert da.attrs["calibrated"] is False


# ---------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("state", list(STATES))
def test_read_write_read_keeps_what_is_known(tmp_path, state, suffix):
    da = read_stack(_imagej_file(tmp_path / "in.tif", STATES[state]))
    assert da.attrs["voxel_size"] == pytest.approx(STATES[state])
    out = write_stack(tmp_path / f"out{suffix}", da)
    back = read_stack(out)
    np.testing.assert_array_equal(back.values, _values())
    if suffix == ".npy":  # .npy stores no calibration: all unknown, nothing invented
        assert back.attrs["voxel_size"] == {} and back.attrs["calibrated"] is False
        return
    assert back.attrs["voxel_size"] == pytest.approx(STATES[state], rel=1e-9)
    assert set(back.attrs["voxel_size"]) == set(STATES[state])
    assert back.attrs["calibrated"] is (state == "full")


@pytest.mark.parametrize("state, expected", [
    ("full", {"unit": "um", "spacing": 2.0}),
    ("lateral", {"unit": "um", "zunit": "pixel"}),  # Fiji: depth "1 pixel", not 1 µm
    ("axial", {"unit": "pixel", "zunit": "um", "spacing": 2.0}),
    ("none", {}),
])
def test_imagej_writer_marks_unknown_axes_in_pixels(tmp_path, state, expected):
    out = write_stack(tmp_path / "o.tif", as_dataarray(_values(), "ZYX", STATES[state]))
    with tifffile.TiffFile(out) as tif:
        meta = tif.imagej_metadata
        page = tif.pages[0]
        xres = page.tags["XResolution"].value
    calibration = {k: meta[k] for k in ("unit", "yunit", "zunit", "spacing") if k in meta}
    assert calibration == pytest.approx(expected)
    lateral = 1 / 0.24 if "x" in STATES[state] else 1.0
    assert xres[0] / xres[1] == pytest.approx(lateral, rel=1e-6)


def test_imagej_writer_x_known_y_unknown(tmp_path):
    out = write_stack(tmp_path / "o.tif", as_dataarray(_values(), "ZYX", {"x": 0.3}))
    with tifffile.TiffFile(out) as tif:
        meta = tif.imagej_metadata
    assert (meta["unit"], meta["yunit"], meta["zunit"]) == ("um", "pixel", "pixel")
    assert read_stack(out).attrs["voxel_size"] == pytest.approx({"x": 0.3})


@pytest.mark.parametrize("state", list(STATES))
def test_ome_tiff_writes_physical_sizes_of_known_axes_only(tmp_path, state):
    out = write_stack(tmp_path / "o.ome.tif", as_dataarray(_values(), "ZYX", STATES[state]))
    with tifffile.TiffFile(out) as tif:
        xml = tif.ome_metadata
    for a in "ZYX":
        known = a.lower() in STATES[state]
        assert (f'PhysicalSize{a}="' in xml) is known
        assert (f'PhysicalSize{a}Unit="\u00b5m"' in xml) is known


@pytest.mark.parametrize("state", list(STATES))
def test_ome_zarr_unknown_axis_has_scale_1_and_no_unit(tmp_path, state):
    da = as_dataarray(_values((2, 3, 8, 10)), "CZYX", STATES[state])
    out = write_stack(tmp_path / "o.ome.zarr", da)
    ms = json.loads((out / ".zattrs").read_text())["multiscales"][0]
    scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert ms["axes"][0] == {"name": "c", "type": "channel"} and scale[0] == 1.0
    for entry, s in zip(ms["axes"][1:], scale[1:]):
        size = STATES[state].get(entry["name"])
        if size is None:
            assert entry == {"name": entry["name"], "type": "space"}  # no unit
            assert s == 1.0
        else:
            assert entry["unit"] == "micrometer" and s == pytest.approx(size)


def test_npy_stores_values_only(tmp_path):
    out = write_stack(tmp_path / "o.npy", as_dataarray(_values(), "ZYX", FULL))
    ref = tmp_path / "ref.npy"
    np.save(ref, _values())
    assert out.read_bytes() == ref.read_bytes()


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf"), "abc", True])
@pytest.mark.parametrize("suffix", FORMATS)
def test_writers_refuse_broken_voxel_sizes(tmp_path, bad, suffix):
    da = as_dataarray(_values(), "ZYX", {"y": 0.24, "x": 0.24})
    da.attrs["voxel_size"]["z"] = bad
    with pytest.raises(InputError, match="voxel size for axis 'z'"):
        write_stack(tmp_path / f"o{suffix}", da)
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "x"])
def test_as_dataarray_refuses_broken_voxel_sizes(bad):
    with pytest.raises(InputError, match="voxel size for axis 'z'"):
        as_dataarray(_values(), "ZYX", {"z": bad, "y": 0.2, "x": 0.2})
    # None is how a caller says "unknown"
    da = as_dataarray(_values(), "ZYX", {"z": None, "y": 0.2, "x": 0.2})
    assert da.attrs["voxel_size"] == {"y": 0.2, "x": 0.2}


# ---------------------------------------------------------------------------- helpers

@pytest.mark.parametrize("text, expected", [
    ("0.5,0.24,0.24", {"z": 0.5, "y": 0.24, "x": 0.24}),
    ("0.5,0.24,0.24um", {"z": 0.5, "y": 0.24, "x": 0.24}),
    ("0.5, 0.24, 0.24 \u00b5m", {"z": 0.5, "y": 0.24, "x": 0.24}),
    ("500,240,240nm", {"z": 0.5, "y": 0.24, "x": 0.24}),
    ("0.5um,240nm,240nm", {"z": 0.5, "y": 0.24, "x": 0.24}),
    ("2e0,2.4e-1,.24micron", {"z": 2.0, "y": 0.24, "x": 0.24}),
    ("z=0.5", {"z": 0.5}),
    ("x=0.24,y=0.24", {"y": 0.24, "x": 0.24}),
    ("Z=500nm", {"z": 0.5}),
])
def test_parse_voxel_size(text, expected):
    got = parse_voxel_size(text)
    assert got == pytest.approx(expected)
    assert list(got) == [a for a in "zyx" if a in expected]  # z, y, x order


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("0.24,0.24", "has 2 size"),
    ("z=0.5,0.24", "mixes named"),
    ("0.5um,0.24,0.24", "one unit after the last size"),
    ("0,0.24,0.24", "positive"),
    ("-1,0.24,0.24", "positive"),
    ("nan,0.24,0.24", "cannot read"),
    ("1,2,3px", "'px' is not a length unit"),
    ("1,2,3 pixel", "'pixel' is not a length unit"),
    ("c=1", "not a spatial axis"),
    ("z=1,z=2", "twice"),
])
def test_parse_voxel_size_errors_name_the_option(text, message):
    with pytest.raises(InputError, match=message) as info:
        parse_voxel_size(text, option="--voxel-size")
    assert str(info.value).startswith("--voxel-size")


def test_with_voxel_size_completes_and_overrides(tmp_path):
    da = read_stack(_imagej_file(tmp_path / "confocal.tif", STATES["lateral"]))
    done = with_voxel_size(da, parse_voxel_size("z=2"))
    assert done.attrs["voxel_size"] == pytest.approx(FULL)
    assert done.attrs["calibrated"] is True
    assert done.attrs["voxel_size_source"] == {"z": "given", "y": "file", "x": "file"}
    assert done.attrs["source"] == da.attrs["source"]
    assert describe_voxel_size(done) == "z 2 µm (given), y 0.24 µm (file), x 0.24 µm (file)"
    assert "z" not in da.attrs["voxel_size"]  # the input is not modified
    assert np.shares_memory(done.values, da.values)

    fixed = with_voxel_size(done, parse_voxel_size("0.5,0.2,0.2"))  # override what was read
    assert fixed.attrs["voxel_size"] == pytest.approx({"z": 0.5, "y": 0.2, "x": 0.2})
    assert fixed.attrs["voxel_size_source"] == {"z": "given", "y": "given", "x": "given"}
    assert with_voxel_size(da, None).attrs["voxel_size"] == da.attrs["voxel_size"]

    # a given size travels to the output file
    back = read_stack(write_stack(tmp_path / "done.tif", done))
    assert back.attrs["voxel_size"] == pytest.approx(FULL)


def test_with_voxel_size_errors(tmp_path):
    image = as_dataarray(np.zeros((8, 8), np.uint8), "YX")
    with pytest.raises(InputError, match="--voxel-size gives a z size but .* no z axis"):
        with_voxel_size(image, {"z": 1.0, "y": 0.2, "x": 0.2})
    with pytest.raises(InputError, match="voxel size for axis 'y'"):
        with_voxel_size(image, {"y": 0.0})
    nm = as_dataarray(_values(), "ZYX", {"x": 240.0})
    nm.attrs["unit"] = "nm"  # a foreign unit is converted, not mislabelled
    assert with_voxel_size(nm, {"z": 1.0}).attrs["voxel_size"] == pytest.approx(
        {"z": 1.0, "x": 0.24})


def test_require_voxel_size_names_axis_purpose_and_option(tmp_path):
    da = read_stack(_imagej_file(tmp_path / "confocal.tif", STATES["lateral"]))
    assert require_voxel_size(da, "yx", purpose="the PSF") == pytest.approx(
        {"y": 0.24, "x": 0.24})
    with pytest.raises(InputError) as info:
        require_voxel_size(da, "zyx", purpose="IsoNet's axial factor",
                           option="--voxel-size", alternative="--factor")
    message = str(info.value)
    assert "confocal.tif" in message
    assert "z voxel size (z spacing) is unknown" in message
    assert "known: y 0.24 µm, x 0.24 µm" in message
    assert "IsoNet's axial factor needs it" in message
    assert "--voxel-size 2.0,0.24,0.24 if the z step was 2.0 µm" in message
    assert message.endswith("or --factor")
    # the completed stack passes
    assert require_voxel_size(with_voxel_size(da, {"z": 2.0}), "zyx", purpose="x") == \
        pytest.approx(FULL)

    nothing = read_stack(_imagej_file(tmp_path / "none.tif", {}))
    with pytest.raises(InputError, match=r"z and x voxel sizes .* are unknown \(no voxel size "
                                         r"is known\); the PSF needs them.*pixel size was 0.1"):
        require_voxel_size(nothing, "zx", purpose="the PSF")
    with pytest.raises(InputError, match="has no z axis"):
        require_voxel_size(as_dataarray(np.zeros((4, 4)), "YX", {"y": 1, "x": 1}), "z",
                           purpose="the PSF")
    # attrs alone (e.g. recorded in a run folder) work too
    assert require_voxel_size(dict(da.attrs), "x", purpose="p") == pytest.approx({"x": 0.24})


# ---------------------------------------------------------------------------- predict

def _model(**scales):
    space = {a: SimpleNamespace(scale=None if s is None else Fraction(s))
             for a, s in scales.items()}
    return SimpleNamespace(space=space, name="m")


def test_output_attrs_scale_known_sizes_and_keep_unknown_unknown():
    from sharpstack.predict.model import output_attrs as _output_attrs

    up8 = _model(z=8, y=1, x=1)
    full = as_dataarray(_values(), "ZYX", FULL).attrs
    out = _output_attrs(full, up8)
    assert out["voxel_size"] == pytest.approx({"z": 0.25, "y": 0.24, "x": 0.24})
    assert out["calibrated"] is True and out["unit"] == "micrometer" and out["model"] == "m"
    assert out["voxel_size_source"] == {"z": "given", "y": "given", "x": "given"}

    lateral = as_dataarray(_values(), "ZYX", STATES["lateral"]).attrs
    out = _output_attrs(lateral, up8)
    assert out["voxel_size"] == pytest.approx({"y": 0.24, "x": 0.24})  # no z: not 1/8
    assert out["calibrated"] is False

    assert _output_attrs(as_dataarray(_values(), "ZYX").attrs, up8)["voxel_size"] == {}

    plane = _model(y=1, x=1)  # a 2D model run plane by plane keeps z as it is
    assert _output_attrs(full, plane)["voxel_size"] == pytest.approx(FULL)
    assert _output_attrs(full, plane)["calibrated"] is True
    assert _output_attrs(lateral, plane)["voxel_size"] == pytest.approx(STATES["lateral"])
    assert _output_attrs(lateral, plane)["calibrated"] is False

    nm = dict(full, voxel_size={"z": 2000.0, "y": 240.0, "x": 240.0}, unit="nanometer")
    out = _output_attrs(nm, up8)  # the unit is carried with the sizes
    assert out["unit"] == "nanometer" and out["voxel_size"]["z"] == pytest.approx(250.0)


def test_predict_user_story_with_the_upsampling_package(package_upsample, synth_data,
                                                         tmp_path):
    from sharpstack.predict import predict_array, predict_file

    raw = read_stack(synth_data["paths"]["anisotropic"]).values
    src = tmp_path / "confocal.tif"  # lateral 0.24 µm, no z spacing
    tifffile.imwrite(src, raw, imagej=True, resolution=(1 / 0.24, 1 / 0.24),
                     metadata={"axes": "ZYX", "unit": "um"})

    # no z given: the restored stack keeps the lateral size and says z is unknown
    out = read_stack(predict_file(package_upsample, src, tmp_path / "restored.tif"))
    assert out.shape[0] == 8 * raw.shape[0]
    assert out.attrs["voxel_size"] == pytest.approx({"y": 0.24, "x": 0.24})
    with tifffile.TiffFile(tmp_path / "restored.tif") as tif:
        meta = tif.imagej_metadata
    assert meta["unit"] == "um" and meta["zunit"] == "pixel" and "spacing" not in meta

    # z given (what --voxel-size z=2 does): z = 2.0 / 8 in the written file
    data = with_voxel_size(read_stack(src), {"z": 2.0})
    result = predict_array(package_upsample, data)
    for suffix in (".tif", ".ome.tif", ".ome.zarr"):
        back = read_stack(write_stack(tmp_path / f"given{suffix}", result))
        assert back.attrs["voxel_size"] == pytest.approx({"z": 0.25, "y": 0.24, "x": 0.24})
        assert back.attrs["calibrated"] is True


def test_cli_predict_voxel_size_completes_the_calibration(package_upsample, synth_data,
                                                          tmp_path):
    # the stack of the user story (lateral 0.24 µm from the file, z unknown) predicted from
    # the command line with the z spacing given: z = 2.0 / 8 in every output format, the
    # lateral size read from the file; a size that is not a number is refused before output
    from typer.testing import CliRunner

    from sharpstack.cli import app

    raw = read_stack(synth_data["paths"]["anisotropic"]).values
    src = tmp_path / "confocal.tif"
    tifffile.imwrite(src, raw, imagej=True, resolution=(1 / 0.24, 1 / 0.24),
                     metadata={"axes": "ZYX", "unit": "um"})
    runner = CliRunner()
    for suffix in (".tif", ".ome.zarr"):
        dst = tmp_path / f"restored{suffix}"
        res = runner.invoke(app, ["predict", str(package_upsample), str(src), str(dst),
                                  "--voxel-size", "z=2"])
        assert res.exit_code == 0, res.output
        back = read_stack(dst)
        assert back.attrs["voxel_size"] == pytest.approx({"z": 0.25, "y": 0.24, "x": 0.24})
        assert back.attrs["voxel_size_source"]["z"] in ("file", "given")
    bad = tmp_path / "bad.tif"
    res = runner.invoke(app, ["predict", str(package_upsample), str(src), str(bad),
                              "--voxel-size", "z=abc"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "--voxel-size" in res.output
    assert not bad.exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["confocal.tif", "restored.tif", "restored.ome.zarr"])
