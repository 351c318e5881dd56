"""Tests for sharpstack.predict: tiny TorchScript packages built here, run tiled and untiled."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from bioimageio.spec import save_bioimageio_package
from bioimageio.spec.model import v0_5 as m

from sharpstack.errors import InputError, OutputExistsError, PackageError
from sharpstack.io import as_dataarray, read_stack, write_stack
from sharpstack.predict import predict_array, predict_file
from sharpstack.predict.tiling import AxisGeom as _AxisGeom
from sharpstack.predict.tiling import plan_axis as _plan_axis

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: one thread is fastest and does not fight other processes for cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# tiny networks
# --------------------------------------------------------------------------------------------


class PoolNet3D(torch.nn.Module):
    """3D net with a 2x down/up-sampling: only tiles on the step grid reproduce untiled output.

    Receptive field radius 5 voxels (the halo used below is 6)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv3d(1, 4, 3, padding=1)
        self.b = torch.nn.Conv3d(4, 4, 3, padding=1)
        self.c = torch.nn.Conv3d(4, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        y = torch.relu(self.b(torch.nn.functional.avg_pool3d(y, 2)))
        y = torch.nn.functional.interpolate(y, scale_factor=2.0, mode="nearest")
        return self.c(y) + x


class ZUp4(torch.nn.Module):
    """Upsamples z 4x (repeat) between two 3x3x3 convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv3d(1, 2, 3, padding=1)
        self.b = torch.nn.Conv3d(2, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.repeat_interleave(torch.relu(self.a(x)), 4, dim=2))


class Net2D(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x)


class Valid2D(torch.nn.Module):
    """Unpadded 3x3 convolution: the output is 2 pixels smaller than the input per axis."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(1, 1, 3, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x)


def _save_torchscript(module: torch.nn.Module, path: Path) -> torch.jit.ScriptModule:
    torch.manual_seed(0)
    for p in module.parameters():
        torch.nn.init.uniform_(p, -0.3, 0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script in torch >= 2.10
        scripted = torch.jit.script(module.eval())
    scripted.save(str(path))
    return scripted


# --------------------------------------------------------------------------------------------
# package builders
# --------------------------------------------------------------------------------------------

B, C = m.BatchAxis(), m.ChannelAxis(channel_names=[m.Identifier("c0")])
RAW = m.TensorId("raw")


def _space_in(axis: str, mn: int, step: int, scale: float = 1.0) -> m.SpaceInputAxis:
    return m.SpaceInputAxis(id=m.AxisId(axis), size=m.ParameterizedSize(min=mn, step=step),
                            scale=scale)


def _space_out(axis: str, halo: int, scale: float = 1.0) -> m.SpaceOutputAxisWithHalo:
    return m.SpaceOutputAxisWithHalo(id=m.AxisId(axis), halo=halo, scale=scale,
                                     size=m.SizeReference(tensor_id=RAW, axis_id=m.AxisId(axis)))


def _package(folder: Path, name: str, module: torch.nn.Module, in_axes: list, out_axes: list,
             preprocessing: list | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _save_torchscript(module, folder / "weights.pt")
    descr = m.ModelDescr(
        name=name, description="tiny test model", authors=[m.Author(name="sharpstack tests")],
        cite=[m.CiteEntry(text="test", doi=m.Doi("10.1000/xyz"))], license=m.LicenseId("MIT"),
        inputs=[m.InputTensorDescr(id=RAW, axes=in_axes, preprocessing=preprocessing or [])],
        outputs=[m.OutputTensorDescr(id=m.TensorId("restored"), axes=out_axes)],
        weights=m.WeightsDescr(torchscript=m.TorchscriptWeightsDescr(
            source=folder / "weights.pt", pytorch_version=m.Version("2.0"))),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return save_bioimageio_package(descr, output_path=folder.with_suffix(".zip"))


SCALE_RANGE = m.ScaleRangeDescr(kwargs=m.ScaleRangeKwargs(
    axes=[m.AxisId("z"), m.AxisId("y"), m.AxisId("x")], min_percentile=1.0, max_percentile=99.8))


@pytest.fixture(scope="module")
def pool_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pkgs") / "pool3d"
    return _package(folder, "pool net 3d", PoolNet3D(),
                    [B, C] + [_space_in(a, 16, 8) for a in "zyx"],
                    [B, C] + [_space_out(a, 6) for a in "zyx"], [SCALE_RANGE])


@pytest.fixture(scope="module")
def zup_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pkgs") / "zup4"
    return _package(folder, "z upsampler", ZUp4(),
                    [B, C, _space_in("z", 8, 4), _space_in("y", 16, 8), _space_in("x", 16, 8)],
                    [B, C, _space_out("z", 8, scale=0.25), _space_out("y", 2), _space_out("x", 2)])


@pytest.fixture(scope="module")
def net2d_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pkgs") / "net2d"
    return _package(folder, "plane net 2d", Net2D(), [B, C, _space_in("y", 16, 8),
                                                       _space_in("x", 16, 8)],
                    [B, C, _space_out("y", 1), _space_out("x", 1)])


@pytest.fixture(scope="module")
def valid2d_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output cropped by the model (offset -2) and normalised with its own percentiles."""
    folder = tmp_path_factory.mktemp("pkgs") / "valid2d"
    out_axes = [B, C] + [m.SpaceOutputAxis(id=m.AxisId(a), size=m.SizeReference(
        tensor_id=RAW, axis_id=m.AxisId(a), offset=-2)) for a in "yx"]
    folder.mkdir(parents=True, exist_ok=True)
    _save_torchscript(Valid2D(), folder / "weights.pt")
    post = m.ScaleRangeDescr(kwargs=m.ScaleRangeKwargs(
        axes=[m.AxisId("y"), m.AxisId("x")], min_percentile=5.0, max_percentile=95.0))
    descr = m.ModelDescr(
        name="valid conv 2d", description="tiny test model",
        authors=[m.Author(name="sharpstack tests")],
        cite=[m.CiteEntry(text="test", doi=m.Doi("10.1000/xyz"))], license=m.LicenseId("MIT"),
        inputs=[m.InputTensorDescr(id=RAW, axes=[B, C, _space_in("y", 16, 8),
                                                 _space_in("x", 16, 8)])],
        outputs=[m.OutputTensorDescr(id=m.TensorId("restored"), axes=out_axes,
                                     postprocessing=[post])],
        weights=m.WeightsDescr(torchscript=m.TorchscriptWeightsDescr(
            source=folder / "weights.pt", pytorch_version=m.Version("2.0"))),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return save_bioimageio_package(descr, output_path=folder.with_suffix(".zip"))


def _stack(shape: tuple[int, ...], axes: str = "ZYX", seed: int = 0,
           voxel_size: dict | None = None) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    data = rng.gamma(2.0, 300.0, size=shape).astype(np.uint16)
    vs = voxel_size or {a.lower(): v for a, v in (("Z", 1.2), ("Y", 0.3), ("X", 0.3)) if a in axes}
    return as_dataarray(data, axes, vs)


# --------------------------------------------------------------------------------------------
# tiling
# --------------------------------------------------------------------------------------------

def test_tiled_equals_untiled_with_percentile_normalisation(pool_pkg: Path) -> None:
    data = _stack((32, 96, 96))
    calls: list[tuple[int, int]] = []
    tiled = predict_array(pool_pkg, data, tile={"z": 16, "y": 32, "x": 32},
                          progress=lambda done, total: calls.append((done, total)))
    whole = predict_array(pool_pkg, data, tile=128)
    assert calls[-1][0] == calls[-1][1] >= 8  # really tiled, progress reported per window
    assert [c[0] for c in calls] == list(range(1, len(calls) + 1))
    assert tiled.dims == ("z", "y", "x") and tiled.shape == (32, 96, 96)
    assert tiled.dtype == np.float32
    assert float(abs(tiled - whole).max()) < 1e-4
    # normalisation happened once over the whole stack: the output is in normalised units
    assert float(whole.std()) < 5.0
    assert tiled.attrs["voxel_size"] == data.attrs["voxel_size"]


def test_untiled_matches_bioimageio_core(pool_pkg: Path) -> None:
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline
    from bioimageio.spec import load_model_description

    data = _stack((32, 48, 40), seed=3)
    ours = predict_array(pool_pkg, data, tile={"z": 16, "y": 24, "x": 24})
    pipeline = create_prediction_pipeline(load_model_description(pool_pkg,
                                                                 perform_io_checks=False))
    sample = Sample(members={RAW: Tensor(data.values[None, None],
                                         dims=("batch", "channel", "z", "y", "x"))},
                    stat={}, id=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pipeline.predict_sample_without_blocking(sample, skip_input_padding=True,
                                                       skip_output_cropping=True)
    expected = ref.members[m.TensorId("restored")].data.values[0, 0]
    np.testing.assert_allclose(ours.values, expected, atol=1e-4)


def test_dask_input_gives_same_result(pool_pkg: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    data = _stack((16, 40, 40), seed=1)
    lazy = data.chunk({"z": 8, "y": 20, "x": 20})
    a = predict_array(pool_pkg, data, tile=24)
    b = predict_array(pool_pkg, lazy, tile=24, progress=True)
    np.testing.assert_array_equal(a.values, b.values)
    assert "tile" in capsys.readouterr().err  # the tqdm bar


def test_small_stack_is_padded_and_cropped(pool_pkg: Path) -> None:
    data = _stack((5, 11, 20), seed=2)  # smaller than the minimum (16) and not a valid size
    out = predict_array(pool_pkg, data)
    assert out.shape == (5, 11, 20)
    assert np.isfinite(out.values).all()


@pytest.mark.parametrize("n", [16, 40, 57, 96, 203])
@pytest.mark.parametrize("tile", [16, 32, 45])
@pytest.mark.parametrize("geom", [
    _AxisGeom("x", min=16, step=8, halo=3),
    _AxisGeom("z", min=8, step=4, halo=8, scale=Fraction(4)),
    _AxisGeom("y", min=32, step=0, halo=3),
    _AxisGeom("x", min=16, step=8, halo=2, offset=-4),
    _AxisGeom("y", min=16, step=8, halo=2, scale=Fraction(1, 2)),
])
def test_plan_axis_covers_output_with_valid_windows(n: int, tile: int, geom: _AxisGeom) -> None:
    wins = _plan_axis(n, geom, tile)
    s = geom.scale
    out_n = math.floor(n * s)
    margin = int(-geom.offset // 2 / s)
    assert wins[0].dst.start == 0 and wins[-1].dst.stop == out_n
    for a, b in zip(wins[:-1], wins[1:]):
        assert a.dst.stop == b.dst.start  # contiguous, no gaps or double writes
    for i, w in enumerate(wins):
        assert geom.smallest_valid(w.size) == w.size  # a size the model accepts
        out_len = math.floor(w.size * s) + geom.offset
        assert w.src + (w.dst.stop - w.dst.start) <= out_len
        if i > 0:
            assert w.src >= geom.halo  # halo cropped where the window meets another one
            assert w.start >= -margin
        if i < len(wins) - 1:
            assert out_len - (w.src + w.dst.stop - w.dst.start) >= geom.halo
            if geom.step:
                assert (w.start + margin) % geom.step == 0  # on the step grid
    if len(wins) > 1:  # big enough: windows shifted inward, no padding beyond the margin
        n_pad = -(-n // s.denominator) * s.denominator  # (and a pixel to make n*s whole)
        # the last window ends where one window over the whole axis would end: at the
        # smallest valid length (reflect-padded beyond the data), so both agree at the border
        full = geom.smallest_valid(n_pad + 2 * margin) or n_pad + 2 * margin
        assert wins[0].start == -margin and wins[-1].start + wins[-1].size == full - margin


# --------------------------------------------------------------------------------------------
# geometry: scale change, 2D models, format 0.4
# --------------------------------------------------------------------------------------------

def test_z_upsampling_model_scales_output_and_voxel_size(zup_pkg: Path) -> None:
    data = _stack((8, 32, 32), voxel_size={"z": 2.0, "y": 0.5, "x": 0.5})
    tiled = predict_array(zup_pkg, data, tile={"z": 8, "y": 16, "x": 16})
    whole = predict_array(zup_pkg, data, tile=64)
    assert tiled.shape == (32, 32, 32)
    assert tiled.attrs["voxel_size"] == {"z": 0.5, "y": 0.5, "x": 0.5}
    assert tiled.attrs["calibrated"] is True
    assert float(abs(tiled - whole).max()) < 1e-4 * float(abs(whole).max())
    net = torch.jit.load(str(zup_pkg.parent / "zup4" / "weights.pt"))
    with torch.no_grad():
        ref = net(torch.from_numpy(data.values.astype(np.float32))[None, None])[0, 0].numpy()
    np.testing.assert_allclose(whole.values, ref, rtol=1e-5, atol=1e-3)


def test_2d_model_runs_plane_by_plane(net2d_pkg: Path) -> None:
    data = _stack((3, 16, 24), seed=4)
    out = predict_array(net2d_pkg, data, tile={"z": 8, "y": 16, "x": 16})  # z: one plane each
    assert out.dims == ("z", "y", "x") and out.shape == (3, 16, 24)
    net = torch.jit.load(str(net2d_pkg.parent / "net2d" / "weights.pt"))
    with torch.no_grad():  # each plane on its own, as a batch
        ref = net(torch.from_numpy(data.values.astype(np.float32))[:, None])[:, 0].numpy()
    np.testing.assert_allclose(out.values, ref, rtol=1e-5, atol=1e-3)
    single = predict_array(net2d_pkg, data.isel(z=1, drop=True))  # a 2D image works too
    assert single.dims == ("y", "x")
    np.testing.assert_allclose(single.values, ref[1], rtol=1e-5, atol=1e-3)


def test_2d_model_normalises_all_planes_alike(tmp_path: Path) -> None:
    scale_yx = m.ScaleRangeDescr(kwargs=m.ScaleRangeKwargs(
        axes=[m.AxisId("y"), m.AxisId("x")], min_percentile=1.0, max_percentile=99.8))
    pkg = _package(tmp_path / "net2d_norm", "plane net 2d normalised", Net2D(),
                   [B, C, _space_in("y", 16, 8), _space_in("x", 16, 8)],
                   [B, C, _space_out("y", 1), _space_out("x", 1)], [scale_yx])
    data = _stack((3, 16, 24), seed=7).astype(np.float32)
    data = data * xr.DataArray([1.0, 10.0, 100.0], dims="z")  # planes of different brightness
    out = predict_array(pkg, data, tile=16)
    lo, hi = np.percentile(data.values, [1.0, 99.8])  # over the whole stack, not per plane
    net = torch.jit.load(str(tmp_path / "net2d_norm" / "weights.pt"))
    with torch.no_grad():
        x = torch.from_numpy(((data.values - lo) / (hi - lo + 1e-6)).astype(np.float32))
        ref = net(x[:, None])[:, 0].numpy()
    np.testing.assert_allclose(out.values, ref, rtol=1e-5, atol=1e-4)


_RDF04_HEAD = """\
format_version: 0.4.10
type: model
name: {name}
description: tiny test model
authors: [{{name: sharpstack tests}}]
cite: [{{text: test, doi: 10.1000/xyz}}]
license: MIT
documentation: README.md
timestamp: 2024-01-01T00:00:00
test_inputs: [in.npy]
test_outputs: [out.npy]
"""


def test_format_04_package_gives_same_result(tmp_path: Path, zup_pkg: Path) -> None:
    folder = tmp_path / "zup04"
    folder.mkdir()
    (folder / "weights.pt").write_bytes((zup_pkg.parent / "zup4" / "weights.pt").read_bytes())
    x = np.random.default_rng(0).random((1, 1, 8, 16, 16), dtype=np.float32)
    net = torch.jit.load(str(zup_pkg.parent / "zup4" / "weights.pt"))
    with torch.no_grad():  # real test tensors: predict's self-check compares them
        y = net(torch.from_numpy(x)).numpy()
    np.save(folder / "in.npy", x)
    np.save(folder / "out.npy", y)
    (folder / "README.md").write_text("# z upsampler\n")
    (folder / "rdf.yaml").write_text(_RDF04_HEAD.format(name="z upsampler 04") + """\
inputs:
  - name: raw
    axes: bczyx
    data_type: float32
    shape: {min: [1, 1, 8, 16, 16], step: [0, 0, 4, 8, 8]}
outputs:
  - name: restored
    axes: bczyx
    data_type: float32
    shape: {reference_tensor: raw, scale: [1, 1, 4, 1, 1], offset: [0, 0, 0, 0, 0]}
    halo: [0, 0, 8, 2, 2]
weights:
  torchscript: {source: weights.pt, pytorch_version: "2.0"}
""")
    data = _stack((8, 24, 32), seed=5)
    old = predict_array(folder / "rdf.yaml", data, tile={"y": 16})
    new = predict_array(zup_pkg, data, tile={"y": 16})
    assert old.shape == (32, 24, 32)
    np.testing.assert_allclose(old.values, new.values, atol=1e-5)


def test_model_cropping_its_output_and_output_statistics(valid2d_pkg: Path) -> None:
    data = _stack((64, 80), axes="YX", seed=6)
    tiled = predict_array(valid2d_pkg, data, tile=24)
    whole = predict_array(valid2d_pkg, data, tile=256)
    assert tiled.shape == whole.shape == (64, 80)  # borders padded for the cropping model
    np.testing.assert_allclose(tiled.values, whole.values, atol=1e-4)
    # scale_range on the output used the whole output's percentiles (5th -> 0, 95th -> 1)
    assert np.percentile(whole.values, 5) == pytest.approx(0.0, abs=1e-3)
    assert np.percentile(whole.values, 95) == pytest.approx(1.0, abs=1e-3)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------

def test_2d_image_on_3d_model_is_a_clear_error(pool_pkg: Path) -> None:
    with pytest.raises(InputError, match=r"expects 3D \(z,y,x\) input but .* has axes yx; "
                                         r"give a z-stack"):
        predict_array(pool_pkg, _stack((32, 32), axes="YX"))


def test_nan_input_is_rejected(pool_pkg: Path) -> None:
    data = _stack((16, 16, 16)).astype(np.float32)
    data[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        predict_array(pool_pkg, data)


def test_bad_package_tile_and_weights(tmp_path: Path, pool_pkg: Path) -> None:
    data = _stack((16, 16, 16))
    with pytest.raises(PackageError, match="not found"):
        predict_array(tmp_path / "missing.zip", data)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(PackageError, match="not a valid"):
        predict_array(tmp_path / "junk.zip", data)
    with pytest.raises(PackageError, match="no onnx weights"):
        predict_array(pool_pkg, data, weight_format="onnx")
    with pytest.raises(InputError, match="tile names axis 't'"):
        predict_array(pool_pkg, data, tile={"t": 4})
    with pytest.raises(InputError, match="channel"):
        predict_array(pool_pkg, _stack((2, 16, 16, 16), axes="CZYX"))


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------

def test_predict_file_writes_calibrated_tiff_and_refuses_existing(tmp_path: Path,
                                                                   zup_pkg: Path) -> None:
    src = tmp_path / "stack.tif"
    write_stack(src, _stack((6, 24, 16), voxel_size={"z": 1.6, "y": 0.4, "x": 0.4}))
    dst = tmp_path / "out" / "restored.tif"
    assert predict_file(zup_pkg, src, dst) == dst
    out = read_stack(dst)
    assert out.shape == (24, 24, 16) and out.dtype == np.float32
    assert out.attrs["voxel_size"]["z"] == pytest.approx(0.4)
    assert out.attrs["voxel_size"]["x"] == pytest.approx(0.4)

    before = dst.read_bytes()
    with pytest.raises(OutputExistsError, match="overwrite"):
        predict_file(zup_pkg, src, dst)
    assert dst.read_bytes() == before
    with pytest.raises(InputError, match="input stack itself"):
        predict_file(zup_pkg, src, src, overwrite=True)
    predict_file(zup_pkg, src, dst, overwrite=True, tile={"y": 16})
    np.testing.assert_allclose(read_stack(dst).values, out.values, atol=1e-3)


def test_predict_never_imports_methods_or_nn() -> None:
    """predict runs third-party packages: it must not depend on sharpstack's own networks."""
    import ast

    import sharpstack.predict as mod

    tree = ast.parse(Path(mod.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [i for i in imported if i.split(".")[0] in ("methods", "nn")
                or i.startswith(("sharpstack.methods", "sharpstack.nn"))]
    assert set(mod.__all__) >= {"predict_array", "predict_file"}


def test_format_04_fixed_size_output_with_halo(tmp_path: Path) -> None:
    # a valid 0.4 package bioimageio.core runs: fixed input and output shape (32x32) and a
    # halo of 4 on the output; tiled over a larger image it must equal the network applied
    # to the whole image (receptive radius 1 < halo), and the package's own test passes
    from bioimageio.core import test_model

    folder = tmp_path / "fixed04"
    folder.mkdir()
    net = _save_torchscript(Net2D(), folder / "weights.pt")
    x = np.random.default_rng(0).random((1, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        np.save(folder / "out.npy", net(torch.from_numpy(x)).numpy())
    np.save(folder / "in.npy", x)
    (folder / "README.md").write_text("# fixed 2D\n")
    (folder / "rdf.yaml").write_text(_RDF04_HEAD.format(name="fixed 04") + """\
inputs:
  - name: raw
    axes: bcyx
    data_type: float32
    shape: [1, 1, 32, 32]
outputs:
  - name: restored
    axes: bcyx
    data_type: float32
    shape: [1, 1, 32, 32]
    halo: [0, 0, 4, 4]
weights:
  torchscript: {source: weights.pt, pytorch_version: "2.0"}
""")
    summary = test_model(str(folder / "rdf.yaml"))
    assert summary.status == "passed", summary.display() if hasattr(summary, "display") else summary
    data = _stack((70, 90), axes="YX", seed=8)
    out = predict_array(folder / "rdf.yaml", data)
    assert out.shape == (70, 90)
    with torch.no_grad():
        whole = net(torch.from_numpy(data.values.astype(np.float32))[None, None])[0, 0].numpy()
    np.testing.assert_allclose(out.values, whole, rtol=1e-5, atol=1e-3)  # values ~ 1e3
