"""Streamed prediction: windows read lazily, written straight into OME-Zarr / memory-mapped
TIFF / .npy, whole-stack statistics from a streaming pass, atomic outputs, resume, and
every mismatch between package and input refused before any output exists."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr
from bioimageio.spec.model import v0_5 as m
from typer.testing import CliRunner

from sharpstack.errors import InputError, OutputExistsError, PackageError
from sharpstack.io import as_dataarray, read_stack, write_stack
from sharpstack.cli import app
from sharpstack.predict import load_model, predict_array, predict_file
from sharpstack.predict import stats as _stats

from .test_predict import (B, C, SCALE_RANGE, Net2D, PoolNet3D, _package, _space_in, _space_out,
                           _stack)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pool_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("spkgs") / "pool3d"
    return _package(folder, "pool net 3d", PoolNet3D(),
                    [B, C] + [_space_in(a, 16, 8) for a in "zyx"],
                    [B, C] + [_space_out(a, 6) for a in "zyx"], [SCALE_RANGE])


@pytest.fixture(scope="module")
def plane_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scale_yx = m.ScaleRangeDescr(kwargs=m.ScaleRangeKwargs(
        axes=[m.AxisId("y"), m.AxisId("x")], min_percentile=1.0, max_percentile=99.8))
    folder = tmp_path_factory.mktemp("spkgs") / "net2d"
    return _package(folder, "plane net 2d", Net2D(), [B, C, _space_in("y", 16, 8),
                                                       _space_in("x", 16, 8)],
                    [B, C, _space_out("y", 1), _space_out("x", 1)], [scale_yx])


@pytest.fixture(scope="module")
def raw_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No normalisation: no statistics pass, NaNs are caught window by window."""
    folder = tmp_path_factory.mktemp("spkgs") / "raw3d"
    return _package(folder, "raw net 3d", PoolNet3D(),
                    [B, C] + [_space_in(a, 16, 8) for a in "zyx"],
                    [B, C] + [_space_out(a, 6) for a in "zyx"])


VS = {"z": 1.5, "y": 0.25, "x": 0.25}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".sharpstack"))


# --------------------------------------------------------------------------------------------
# streamed outputs equal the in-memory run
# --------------------------------------------------------------------------------------------

def test_streamed_outputs_equal_the_in_memory_run(tmp_path: Path, pool_pkg: Path) -> None:
    data = _stack((40, 72, 64), voxel_size=VS)
    src = write_stack(tmp_path / "in.ome.zarr", data)
    lines: list[str] = []
    ref = predict_array(pool_pkg, data, tile=32)
    out = predict_file(pool_pkg, src, tmp_path / "out.ome.zarr", tile=32, log=lines.append)
    got = read_stack(out)
    assert isinstance(got.data, type(read_stack(src).data))  # read back lazily, too
    np.testing.assert_array_equal(got.values, ref.values)
    assert got.attrs["voxel_size"] == pytest.approx(VS)
    # the statistics are reported: exact percentiles of the whole stack
    lo, hi = np.quantile(data.values, [0.01, 0.998])
    text = "\n".join(lines)
    assert "quantile 0.01" in text and f"{lo:.6g}" in text and f"{hi:.6g}" in text
    # OME-Zarr chunks are the windows' cores: every window writes whole chunks
    arr = zarr.open_array(out / "0", mode="r")
    from sharpstack.predict.model import digest as _digest
    from sharpstack.predict.model import layout_of as _layout
    from sharpstack.predict.tiling import plan as _plan_windows

    model = _digest(load_model(pool_pkg))
    plan = _plan_windows(model.space, dict(data.sizes), 32, _layout(model, data).loop_z)
    assert arr.chunks == tuple(plan.chunks[d] for d in "zyx")
    for d, c in zip("zyx", arr.chunks):
        for w in plan.axes[d]:
            assert w.dst.start % c == 0 and (w.dst.stop % c == 0 or w.dst.stop == arr.shape["zyx".index(d)])
    assert len(plan) > 8
    # memory-mapped ImageJ TIFF (calibrated, display range) and .npy: the same values
    tif = predict_file(pool_pkg, src, tmp_path / "out.tif", tile=32)
    back = read_stack(tif)
    np.testing.assert_array_equal(back.values, ref.values)
    assert back.attrs["voxel_size"] == pytest.approx(VS)
    with tifffile.TiffFile(tif) as t:
        meta = t.imagej_metadata
    assert meta["unit"] == "um" and meta["spacing"] == pytest.approx(1.5)
    assert meta["min"] == pytest.approx(float(ref.min())) and meta["max"] == pytest.approx(float(ref.max()))
    np.testing.assert_array_equal(np.load(predict_file(pool_pkg, src, tmp_path / "o.npy",
                                                       tile=32)), ref.values)
    assert _leftovers(tmp_path) == []


def test_lazy_tiff_input_and_ome_tiff_output(tmp_path: Path, pool_pkg: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import sharpstack.io.tiff as sio

    data = _stack((24, 48, 40), voxel_size=VS)
    src = write_stack(tmp_path / "in.tif", data)
    monkeypatch.setattr(sio, "_LAZY_TIFF_BYTES", 1000)  # read through tifffile's zarr store
    lazy = read_stack(src)
    assert hasattr(lazy.data, "dask")
    out = predict_file(pool_pkg, src, tmp_path / "out.ome.tif", tile=24)
    np.testing.assert_array_equal(read_stack(out).values, predict_array(pool_pkg, data, tile=24).values)
    assert read_stack(out).attrs["voxel_size"] == pytest.approx(VS)


def test_plane_by_plane_and_whole_output_postprocessing_stream_alike(
        tmp_path: Path, plane_pkg: Path) -> None:
    data = _stack((7, 40, 32), seed=3, voxel_size=VS)
    src = write_stack(tmp_path / "planes.ome.zarr", data)
    ref = predict_array(plane_pkg, data, tile={"z": 3, "y": 16, "x": 16})
    out = read_stack(predict_file(plane_pkg, src, tmp_path / "p.ome.zarr",
                                  tile={"z": 3, "y": 16, "x": 16}))
    np.testing.assert_array_equal(out.values, ref.values)
    assert out.attrs["voxel_size"] == pytest.approx(VS)  # z carried for a 2D model
    assert zarr.open_array(tmp_path / "p.ome.zarr" / "0").chunks[0] == 3  # planes per window


def test_output_statistics_postprocessing_streams(tmp_path: Path) -> None:
    from .test_predict import RAW, Valid2D, _save_torchscript

    folder = tmp_path / "valid2d"

    folder.mkdir()
    _save_torchscript(Valid2D(), folder / "weights.pt")
    out_axes = [B, C] + [m.SpaceOutputAxis(id=m.AxisId(a), size=m.SizeReference(
        tensor_id=RAW, axis_id=m.AxisId(a), offset=-2)) for a in "yx"]
    post = m.ScaleRangeDescr(kwargs=m.ScaleRangeKwargs(
        axes=[m.AxisId("y"), m.AxisId("x")], min_percentile=5.0, max_percentile=95.0))
    descr = m.ModelDescr(
        name="valid conv 2d", description="tiny", authors=[m.Author(name="t")],
        cite=[m.CiteEntry(text="t", doi=m.Doi("10.1000/xyz"))], license=m.LicenseId("MIT"),
        inputs=[m.InputTensorDescr(id=RAW, axes=[B, C, _space_in("y", 16, 8),
                                                 _space_in("x", 16, 8)])],
        outputs=[m.OutputTensorDescr(id=m.TensorId("restored"), axes=out_axes,
                                     postprocessing=[post])],
        weights=m.WeightsDescr(torchscript=m.TorchscriptWeightsDescr(
            source=folder / "weights.pt", pytorch_version=m.Version("2.0"))))
    data = _stack((64, 80), axes="YX", seed=6)
    src = write_stack(tmp_path / "img.tif", data)
    ref = predict_array(descr, data, tile=24)
    got = read_stack(predict_file(descr, src, tmp_path / "o.tif", tile=24))
    np.testing.assert_allclose(got.values, ref.values, atol=1e-6)
    assert np.percentile(got.values, 95) == pytest.approx(1.0, abs=1e-3)


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["uint16", "float32", "int16"])
def test_streaming_statistics_are_exact(dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from bioimageio.core import Sample, Tensor
    from bioimageio.core.stat_calculators import compute_measures
    from bioimageio.core.stat_measures import SampleMean, SampleQuantile, SampleStd

    rng = np.random.default_rng(4)
    x = (rng.gamma(2.0, 300.0, size=(1, 1, 12, 40, 36)) - (200 if dtype == "int16" else 0))
    x = x.astype(dtype)
    monkeypatch.setattr(_stats, "BLOCK_VOXELS", 2000)  # many blocks
    monkeypatch.setattr(_stats, "COLLECT_LIMIT", 500)  # force the histogram refinement
    axes = tuple(m.AxisId(a) for a in "zyx")
    measures = [SampleQuantile(q=0.01, axes=axes, member_id="raw"),
                SampleQuantile(q=0.998, axes=axes, member_id="raw"),
                SampleMean(axes=axes, member_id="raw"), SampleStd(axes=axes, member_id="raw")]
    sample = Sample(members={"raw": Tensor(x, dims=("batch", "channel", "z", "y", "x"))},
                    stat={}, id=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = compute_measures(set(measures), [sample])
    st = _stats.StackStats(lambda i: x[0][i], x.shape[1:], x.dtype, per_channel=True,
                           quantiles={(0.01, "linear"), (0.998, "linear")}, moments=True,
                           name="t")
    assert st.passes == (1 if dtype != "float32" else 3)
    for q, meas in ((0.01, measures[0]), (0.998, measures[1])):
        assert st.quantile(q)[0] == float(ref[meas].data.values.ravel()[0])  # bit for bit
    assert st.mean()[0] == pytest.approx(float(ref[measures[2]].data.values.ravel()[0]), rel=1e-6)
    assert st.std()[0] == pytest.approx(float(ref[measures[3]].data.values.ravel()[0]), rel=1e-6)


def test_statistics_follow_the_storage_chunks() -> None:
    blocks = list(_stats.blocks((64, 1024, 1000), 0, ((64,), (256,) * 4, (256, 256, 256, 232))))
    assert blocks[0] == (slice(0, 64), slice(0, 256), slice(0, 256))  # one whole chunk each
    assert sum((b[1].stop - b[1].start) * (b[2].stop - b[2].start) for b in blocks) == 1024 * 1000


# --------------------------------------------------------------------------------------------
# atomic outputs, interruption, resume
# --------------------------------------------------------------------------------------------

def _interrupt_after(n: int, exc: type[BaseException] = KeyboardInterrupt):
    def progress(done: int, total: int) -> None:
        if done >= n:
            raise exc()
    return progress


def test_interrupted_tiff_leaves_nothing(tmp_path: Path, pool_pkg: Path) -> None:
    src = write_stack(tmp_path / "in.ome.zarr", _stack((32, 64, 64)))
    with pytest.raises(KeyboardInterrupt):
        predict_file(pool_pkg, src, tmp_path / "out.tif", tile=24, progress=_interrupt_after(2))
    assert not (tmp_path / "out.tif").exists() and _leftovers(tmp_path) == []


def test_interrupted_ome_zarr_resumes_to_the_same_output(tmp_path: Path, pool_pkg: Path) -> None:
    src = write_stack(tmp_path / "in.ome.zarr", _stack((32, 64, 64), voxel_size=VS))
    full = predict_file(pool_pkg, src, tmp_path / "full.ome.zarr", tile=24)
    dst = tmp_path / "out.ome.zarr"
    with pytest.raises(KeyboardInterrupt):
        predict_file(pool_pkg, src, dst, tile=24, progress=_interrupt_after(3))
    assert not dst.exists()
    partial = tmp_path / ".sharpstack-partial-out.ome.zarr"
    assert partial.is_dir()  # kept for --resume, never at the destination
    with pytest.raises(OutputExistsError, match="--resume"):
        predict_file(pool_pkg, src, dst, tile=24)
    with pytest.raises(InputError, match="other settings"):
        predict_file(pool_pkg, src, dst, tile=32, resume=True)
    seen: list[int] = []
    predict_file(pool_pkg, src, dst, tile=24, resume=True,
                 progress=lambda done, total: seen.append(done))
    assert seen[0] >= 3  # the windows written before the interruption were not redone
    np.testing.assert_array_equal(read_stack(dst).values, read_stack(full).values)
    assert read_stack(dst).attrs["voxel_size"] == pytest.approx(VS)
    assert _leftovers(tmp_path) == [] and not (dst / ".sharpstack-predict").exists()


def test_a_failure_midway_removes_the_partial_output(tmp_path: Path, raw_pkg: Path) -> None:
    data = _stack((32, 64, 64)).astype(np.float32)
    data[30, 60, 60] = np.nan  # in the last windows: found while predicting
    src = write_stack(tmp_path / "in.ome.zarr", data)
    for name in ("out.ome.zarr", "out.tif"):
        with pytest.raises(InputError, match="NaN"):
            predict_file(raw_pkg, src, tmp_path / name, tile=24)
        assert not (tmp_path / name).exists()
    assert _leftovers(tmp_path) == []


def test_overwrite_replaces_only_when_complete(tmp_path: Path, pool_pkg: Path) -> None:
    src = write_stack(tmp_path / "in.ome.zarr", _stack((16, 40, 40)))
    dst = predict_file(pool_pkg, src, tmp_path / "out.ome.zarr")
    before = read_stack(dst).values
    with pytest.raises(OutputExistsError):
        predict_file(pool_pkg, src, dst)
    with pytest.raises(KeyboardInterrupt):
        predict_file(pool_pkg, src, dst, tile=16, overwrite=True, progress=_interrupt_after(1))
    np.testing.assert_array_equal(read_stack(dst).values, before)  # the old one is intact


# --------------------------------------------------------------------------------------------
# a package that cannot run on the input fails before any output exists
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["channels", "planes", "too small", "3d on 2d", "tiff dtype",
                                  "dask tiff"])
def test_mismatch_fails_before_any_output(tmp_path: Path, pool_pkg: Path, plane_pkg: Path,
                                          case: str) -> None:
    pkg, data, name, kw = pool_pkg, _stack((16, 32, 32)), "out.ome.zarr", {}
    match = {"channels": "channel", "planes": "plane by plane", "too small": "too small",
             "3d on 2d": "give a z-stack", "tiff dtype": "ImageJ TIFF",
             "dask tiff": "OME-Zarr"}[case]
    if case == "channels":
        data = _stack((2, 16, 32, 32), axes="CZYX")
    elif case == "planes":
        pkg, kw = plane_pkg, {"planes": False}
    elif case == "too small":
        data = _stack((1, 32, 32))
        data = as_dataarray(data.values, "ZYX")
    elif case == "3d on 2d":
        data = _stack((32, 32), axes="YX")
    elif case == "tiff dtype":
        pkg = _int_output_package(tmp_path)
        name = "out.tif"
    else:
        name, kw = "out.tif", {"scheduler": "threads"}
    src = write_stack(tmp_path / "in.ome.zarr", data)
    with pytest.raises((InputError, PackageError), match=match):
        predict_file(pkg, src, tmp_path / name, **kw)
    assert not (tmp_path / name).exists() and _leftovers(tmp_path) == []


def _int_output_package(tmp_path: Path) -> Path:
    folder = tmp_path / "intout"
    from .test_predict import RAW

    folder.mkdir()
    module = torch.jit.script(PoolNet3D().eval())
    module.save(str(folder / "weights.pt"))
    descr = m.ModelDescr(
        name="int output", description="tiny", authors=[m.Author(name="t")],
        cite=[m.CiteEntry(text="t", doi=m.Doi("10.1000/xyz"))], license=m.LicenseId("MIT"),
        inputs=[m.InputTensorDescr(id=RAW, axes=[B, C] + [_space_in(a, 16, 8) for a in "zyx"])],
        outputs=[m.OutputTensorDescr(id=m.TensorId("restored"),
                                     axes=[B, C] + [_space_out(a, 6) for a in "zyx"],
                                     data=m.IntervalOrRatioDataDescr(type="int32"))],
        weights=m.WeightsDescr(torchscript=m.TorchscriptWeightsDescr(
            source=folder / "weights.pt", pytorch_version=m.Version("2.0"))))
    from bioimageio.spec import save_bioimageio_package

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return save_bioimageio_package(descr, output_path=folder.with_suffix(".zip"))


def test_cli_refuses_before_writing_and_reports_statistics(tmp_path: Path, pool_pkg: Path) -> None:
    from sharpstack.cli import app

    runner = CliRunner()
    src = write_stack(tmp_path / "in.ome.zarr", _stack((16, 40, 40)))
    res = runner.invoke(app, ["predict", str(pool_pkg), str(src), str(tmp_path / "o.ome.zarr"),
                              "--device", "cuda" if not torch.cuda.is_available() else "nope"])
    assert res.exit_code == 2 and "device" in res.output and not (tmp_path / "o.ome.zarr").exists()
    res = runner.invoke(app, ["predict", str(pool_pkg), str(src), str(tmp_path / "o.ome.zarr"),
                              "--tile", "16", "--batch", "4", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "quantile 0.998" in res.output and "written:" in res.output
    res = runner.invoke(app, ["predict", str(pool_pkg), str(src), str(tmp_path / "o.tif"),
                              "--resume"])
    assert res.exit_code == 2 and "OME-Zarr" in res.output


# --------------------------------------------------------------------------------------------
# speed: batches of windows, the weight format for the device
# --------------------------------------------------------------------------------------------

def test_windows_are_batched_when_the_model_takes_a_batch(pool_pkg: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from sharpstack.predict import engine as _engine

    calls: list[tuple[int, ...]] = []
    modes: list[bool] = []
    original = _engine._TorchNet.__init__

    def spy_init(self, module, device):
        def spied(x):
            calls.append(tuple(x.shape))
            modes.append(torch.is_inference_mode_enabled())
            return module(x)
        original(self, spied, device)

    monkeypatch.setattr(_engine._TorchNet, "__init__", spy_init)
    data = _stack((32, 64, 64))
    out = predict_array(pool_pkg, data, tile=16, batch=4)
    assert len(calls) < 27 and max(c[0] for c in calls) == 4  # 4 windows per forward call
    assert all(modes)  # torch.inference_mode
    calls.clear()
    one = predict_array(pool_pkg, data, tile=16, batch=1)
    assert all(c[0] == 1 for c in calls)
    np.testing.assert_allclose(out.values, one.values, atol=1e-5)


def test_the_cpu_runs_onnx_when_the_package_has_it(package_isotropic: Path) -> None:
    from sharpstack.predict.engine import choose_format

    descr = load_model(package_isotropic)
    assert choose_format(descr, "m", None, "cpu") == "onnx"
    assert choose_format(descr, "m", None, "cuda") == "torchscript"
    assert choose_format(descr, "m", "torchscript", "cpu") == "torchscript"


def test_progress_counts_every_window_once(pool_pkg: Path) -> None:
    seen: list[tuple[int, int]] = []
    predict_array(pool_pkg, _stack((32, 64, 64)), tile=16, progress=lambda d, t: seen.append((d, t)))
    assert [d for d, _ in seen] == list(range(1, len(seen) + 1)) and seen[-1][0] == seen[-1][1]


def test_partial_log_is_json(tmp_path: Path, pool_pkg: Path) -> None:
    src = write_stack(tmp_path / "in.ome.zarr", _stack((32, 64, 64)))
    with pytest.raises(KeyboardInterrupt):
        predict_file(pool_pkg, src, tmp_path / "o.ome.zarr", tile=24, progress=_interrupt_after(2))
    log = (tmp_path / ".sharpstack-partial-o.ome.zarr" / ".sharpstack-predict").read_text()
    head, *done = log.splitlines()
    assert json.loads(head)["weights"] == "torchscript" and len(done) >= 2


def test_state_dict_code_from_the_package_never_runs_unasked(tmp_path: Path) -> None:
    """A third party's pytorch_state_dict architecture is code: not imported without trust."""
    from sharpstack.predict.engine import choose_format
    from sharpstack.predict.job import state_dict_refusal as _code_reason

    folder = tmp_path / "sd"
    folder.mkdir()
    (folder / "arch.py").write_text("import torch\nclass Net(torch.nn.Conv2d):\n"
                                    "    def __init__(self):\n        super().__init__(1, 1, 1)\n")
    torch.save(torch.nn.Conv2d(1, 1, 1).state_dict(), folder / "w.pt")
    descr = m.ModelDescr(
        name="state dict only", description="tiny", authors=[m.Author(name="t")],
        cite=[m.CiteEntry(text="t", doi=m.Doi("10.1000/xyz"))], license=m.LicenseId("MIT"),
        inputs=[m.InputTensorDescr(id=m.TensorId("raw"), axes=[B, C, _space_in("y", 16, 8),
                                                               _space_in("x", 16, 8)])],
        outputs=[m.OutputTensorDescr(id=m.TensorId("out"), axes=[B, C, _space_out("y", 1),
                                                                 _space_out("x", 1)])],
        weights=m.WeightsDescr(pytorch_state_dict=m.PytorchStateDictWeightsDescr(
            source=folder / "w.pt", pytorch_version=m.Version("2.0"),
            architecture=m.ArchitectureFromFileDescr(source=folder / "arch.py",
                                                     callable=m.Identifier("Net")))))
    from bioimageio.spec import save_bioimageio_package

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pkg = save_bioimageio_package(descr, output_path=tmp_path / "sd.zip")
    reason = _code_reason(pkg, trust_code=False)
    assert reason and "--trust-code" in reason
    with pytest.raises(PackageError, match="--trust-code"):
        choose_format(load_model(pkg), "m", None, "cpu", reason)
    src = write_stack(tmp_path / "img.tif", _stack((32, 32), axes="YX"))
    with pytest.raises(PackageError, match="--trust-code"):
        predict_file(pkg, src, tmp_path / "o.tif")
    assert not (tmp_path / "o.tif").exists()
    assert _code_reason(pkg, trust_code=True) is None
    out = predict_file(pkg, src, tmp_path / "o.tif", trust_code=True)
    assert read_stack(out).shape == (32, 32)


def _damaged_package(folder: Path) -> Path:
    """PoolNet3D whose TorchScript weights hold one NaN (a damaged download), with the test
    tensors of the healthy network: bioimageio's own test fails, the output is all NaN."""
    from bioimageio.spec import save_bioimageio_package

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = PoolNet3D().eval()
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        np.save(folder / "in.npy", x.numpy())
        np.save(folder / "out.npy", net(x).numpy())
        net.a.weight[0, 0, 1, 1, 1] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(net).save(str(folder / "weights.pt"))
    descr = m.ModelDescr(
        name="damaged", description="weights with a NaN", authors=[m.Author(name="tests")],
        cite=[m.CiteEntry(text="test", doi=m.Doi("10.1000/xyz"))], license=m.LicenseId("MIT"),
        inputs=[m.InputTensorDescr(id=m.TensorId("raw"), axes=[B, C] + [
            _space_in(a, 16, 8) for a in "zyx"], test_tensor=m.FileDescr(source=folder / "in.npy"))],
        outputs=[m.OutputTensorDescr(id=m.TensorId("restored"), axes=[B, C] + [
            _space_out(a, 6) for a in "zyx"], test_tensor=m.FileDescr(source=folder / "out.npy"))],
        weights=m.WeightsDescr(torchscript=m.TorchscriptWeightsDescr(
            source=folder / "weights.pt", pytorch_version=m.Version("2.0"))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return save_bioimageio_package(descr, output_path=folder.with_suffix(".zip"))


def test_damaged_weights_fail_before_an_output_exists(tmp_path: Path) -> None:
    pkg = _damaged_package(tmp_path / "pkgs" / "damaged")
    work = tmp_path / "work"
    work.mkdir()
    src = write_stack(work / "in.ome.zarr", _stack((24, 40, 40)).astype(np.float32))
    for name in ("out.ome.zarr", "out.tif", "out.npy"):
        with pytest.raises(PackageError, match="NaN or infinite.*torchscript weights"):
            predict_file(pkg, src, work / name, tile=24, check=False)
    with pytest.raises(PackageError, match="torchscript weights do not reproduce.*damaged"):
        predict_file(pkg, src, work / "checked.tif")
    res = CliRunner().invoke(app, ["predict", str(pkg), str(src), str(work / "cli.tif")])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "weights do not reproduce" in res.output and "damaged" in res.output
    assert sorted(p.name for p in work.iterdir()) == ["in.ome.zarr"]


def test_check_runs_the_package_test_first(tmp_path: Path, package_isotropic: Path,
                                           synth_data) -> None:
    from sharpstack.methods.isonet import acquisition

    raw = read_stack(synth_data["paths"]["anisotropic"])
    iso = as_dataarray(acquisition.upsample_linear(raw.values.astype(np.float32), 8, axis=0), "ZYX")
    src = write_stack(tmp_path / "iso.tif", iso)
    res = CliRunner().invoke(app, ["predict", str(package_isotropic), str(src),
                                   str(tmp_path / "out.tif"), "--tile", "40,40,40"])
    assert res.exit_code == 0, res.output
    assert "self-check: the package's test output is reproduced" in res.output
    assert "windows along z, y, x agree with one window" in res.output
    assert read_stack(tmp_path / "out.tif").shape == iso.shape


def test_output_inside_the_input_or_around_it_is_refused(tmp_path: Path, pool_pkg: Path) -> None:
    src = write_stack(tmp_path / "in.ome.zarr", _stack((16, 32, 32)))
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(InputError, match="inside the input"):
        predict_file(pool_pkg, src, src / "out.ome.zarr")
    nested = write_stack(tmp_path / "outer.ome.zarr" / "in.ome.zarr", _stack((16, 32, 32)))
    with pytest.raises(InputError, match="would delete the input"):
        predict_file(pool_pkg, nested, tmp_path / "outer.ome.zarr", overwrite=True)
    assert nested.exists() and read_stack(nested).shape == (16, 32, 32)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                  if "outer.ome.zarr" not in str(p)) == before
