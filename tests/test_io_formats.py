"""The formats microscopes and analysis tools write: HDF5 (h5py; ``file.h5:/dataset``,
``element_size_um``, lazy windows), Zeiss CZI through bioio (files written here by
pylibCZIrw, several scenes, channels and time points), and the ``PATH:selector`` /
``--scene --channel --time`` selection that reaches train and predict.

Nikon ND2 and Leica LIF have no writer that installs from a package registry (``nd2`` and
``liffile`` only read), so only their dispatch, a damaged file and a missing plugin are
tested here."""

from __future__ import annotations

import importlib
import importlib.util
import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sharpstack.cli import app
from sharpstack.errors import InputError
from sharpstack.io import read_stack, split_source, stack_file, with_selection

from .test_predict import B, C, SCALE_RANGE, PoolNet3D, _package, _space_in, _space_out

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:package .pool net 3d. has no test tensors")]

FORMATS = "needs the optional vendor formats: pip install 'sharpstack[formats]'"
needs_czi = pytest.mark.skipif(importlib.util.find_spec("bioio_czi") is None
                               or importlib.util.find_spec("pylibCZIrw") is None, reason=FORMATS)


def _volume(shape, seed=0, dtype="uint16"):
    return np.random.default_rng(seed).integers(0, 4000, shape).astype(dtype)


# --------------------------------------------------------------------------------------------
# PATH:selector
# --------------------------------------------------------------------------------------------

def test_the_selector_follows_the_file_name(tmp_path: Path) -> None:
    f, sel = split_source("data/cells.h5:/group/raw")
    assert (f, sel.dataset) == (Path("data/cells.h5"), "/group/raw")
    f, sel = split_source("C:/data/plate.CZI:scene=P 2,channel=1,time=0")
    assert f == Path("C:/data/plate.CZI")
    assert (sel.scene, sel.channel, sel.time, sel.dataset) == ("P 2", 1, 0, None)
    assert split_source("plate.czi:scene=3")[1].scene == 3  # an index, not a name
    assert stack_file("a.tif.h5:raw") == Path("a.tif.h5")
    odd = tmp_path / "a.tif:b"  # a file that really has a colon in its name: never split
    odd.write_bytes(b"")
    assert split_source(odd)[0] == odd
    with pytest.raises(InputError, match="channel=N"):
        split_source("x.czi:chanel=1")
    with pytest.raises(InputError, match="index"):
        split_source("x.czi:channel=one")


def test_cli_options_become_the_selector(tmp_path: Path) -> None:
    assert with_selection(tmp_path / "a.czi") == tmp_path / "a.czi"
    got = with_selection(tmp_path / "a.czi", scene="P2", channel=1, time=0)
    assert split_source(got)[1].text() == "scene=P2,channel=1,time=0"
    got = with_selection(f"{tmp_path}/a.h5:/raw", channel=2)
    assert split_source(got)[1].text() == "/raw,channel=2"
    with pytest.raises(InputError, match="folder"):
        with_selection(tmp_path, scene=0)
    with pytest.raises(InputError, match="already chooses channel"):
        with_selection(f"{tmp_path}/a.czi:channel=1", channel=2)
    with pytest.raises(InputError, match="0 or more"):
        with_selection(tmp_path / "a.tif", time=-1)


def test_channel_and_time_select_in_every_format(tmp_path: Path) -> None:
    from sharpstack.io import as_dataarray, write_stack

    data = _volume((3, 2, 4, 8, 9))  # TCZYX
    src = write_stack(tmp_path / "tc.tif", as_dataarray(data, "TCZYX", {"z": 2.0}))
    one = read_stack(f"{src}:channel=1,time=2")
    assert one.dims == ("z", "y", "x") and one.attrs["voxel_size"] == {"z": 2.0}
    np.testing.assert_array_equal(one.values, data[2, 1])
    assert read_stack(f"{src}:time=0").dims == ("c", "z", "y", "x")
    with pytest.raises(InputError, match="2 channels.*choose 0..1"):
        read_stack(f"{src}:channel=2")
    with pytest.raises(InputError, match="--scene chooses a scene of a CZI"):
        read_stack(f"{src}:scene=1")
    with pytest.raises(InputError, match="only HDF5 files hold named datasets"):
        read_stack(f"{src}:/raw")
    plain = write_stack(tmp_path / "zyx.npy", as_dataarray(data[0, 0], "ZYX"))
    assert read_stack(f"{plain}:channel=0").shape == (4, 8, 9)  # one channel: index 0
    with pytest.raises(InputError, match="one time"):
        read_stack(f"{plain}:time=1")


# --------------------------------------------------------------------------------------------
# HDF5
# --------------------------------------------------------------------------------------------

def test_hdf5_one_dataset_with_element_size_um(tmp_path: Path) -> None:
    data = _volume((6, 10, 12))
    path = tmp_path / "plantseg.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("raw", data=data)
        ds.attrs["element_size_um"] = np.array([1.5, 0.25, 0.2])  # ZYX, as PlantSeg writes
        f.create_dataset("meta/ids", data=np.arange(5))  # 1D: not an image
    da = read_stack(path)
    assert da.dims == ("z", "y", "x") and da.dtype == np.uint16
    np.testing.assert_array_equal(da.values, data)
    assert da.attrs["voxel_size"] == pytest.approx({"z": 1.5, "y": 0.25, "x": 0.2})
    assert da.attrs["calibrated"] and da.attrs["voxel_size_source"]["z"] == "file"
    assert da.attrs["source"] == f"{path}:/raw"


def test_hdf5_several_datasets_ask_which_and_are_chosen_by_path(tmp_path: Path) -> None:
    raw, label = _volume((4, 8, 8), 1), _volume((4, 8, 8), 2, "uint8")
    path = tmp_path / "two.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=raw)
        f.create_dataset("seg/label", data=label, chunks=(2, 8, 8), compression="gzip")
    with pytest.raises(InputError) as err:
        read_stack(path)
    msg = str(err.value)
    assert "2 image datasets" in msg and "/raw (4, 8, 8) uint16" in msg and "/seg/label" in msg
    assert f"{path}:/raw" in msg  # the syntax that chooses one
    np.testing.assert_array_equal(read_stack(f"{path}:/seg/label").values, label)
    np.testing.assert_array_equal(read_stack(f"{path}:raw").values, raw)
    with pytest.raises(InputError, match="/nope does not exist.*/raw.*/seg/label"):
        read_stack(f"{path}:/nope")
    with pytest.raises(InputError, match="/seg is a group"):
        read_stack(f"{path}:/seg")
    (tmp_path / "broken.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(InputError, match="not a readable HDF5 file"):
        read_stack(tmp_path / "broken.h5")


def test_hdf5_axes_from_ilastik_axistags_and_channel_choice(tmp_path: Path) -> None:
    data = _volume((5, 8, 9, 2))  # ilastik's zyxc
    path = tmp_path / "ilastik.h5"
    tags = {"axes": [{"key": k, "typeFlags": 2, "resolution": 0, "description": ""}
                     for k in "zyxc"]}
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("exported_data", data=data)
        ds.attrs["axistags"] = json.dumps(tags)
        ds.attrs["element_size_um"] = [2.0, 0.5, 0.5]
    da = read_stack(path)
    assert da.dims == ("c", "z", "y", "x")
    np.testing.assert_array_equal(da.values, np.moveaxis(data, -1, 0))
    assert da.attrs["voxel_size"] == pytest.approx({"z": 2.0, "y": 0.5, "x": 0.5})
    np.testing.assert_array_equal(read_stack(f"{path}:channel=1").values, data[..., 1])
    with h5py.File(path, "a") as f:
        f.create_dataset("plain4d", data=data)
    with pytest.raises(InputError, match=r"does not say which axes.*attrs\['axes'\] = 'CZYX'"):
        read_stack(f"{path}:/plain4d")


def test_large_hdf5_is_read_window_by_window(tmp_path: Path, monkeypatch) -> None:
    import dask

    import sharpstack.io.hdf5 as h5mod

    data = _volume((12, 40, 36))
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("vol", data=data, chunks=(4, 20, 18))
    monkeypatch.setattr(h5mod, "_LAZY_H5_BYTES", 1000)
    monkeypatch.setattr(h5mod, "_BLOCK_BYTES", 4 * 20 * 18 * 2)
    da = read_stack(path)
    assert hasattr(da.data, "dask") and len(da.data.chunks[0]) > 1  # lazy, several windows
    np.testing.assert_array_equal(np.asarray(da.data[3:7, 5:30, 1:2]), data[3:7, 5:30, 1:2])
    # a dask worker in another process gets the array by pickling: no open file handle
    again = pickle.loads(pickle.dumps(da.data))
    np.testing.assert_array_equal(dask.compute(again, scheduler="synchronous")[0], data)


# --------------------------------------------------------------------------------------------
# HDF5 end to end: predict (CLI, with --channel) and the stack reader of train
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("fpkgs") / "pool3d"
    return _package(folder, "pool net 3d", PoolNet3D(),
                    [B, C] + [_space_in(a, 16, 8) for a in "zyx"],
                    [B, C] + [_space_out(a, 6) for a in "zyx"], [SCALE_RANGE])


def test_predict_reads_an_hdf5_dataset_lazily_with_its_calibration(tmp_path: Path, pool_pkg,
                                                                    monkeypatch) -> None:
    import sharpstack.io.hdf5 as h5mod
    from sharpstack.io import as_dataarray
    from sharpstack.predict import predict_array

    data = _volume((2, 20, 40, 36))  # CZYX
    path = tmp_path / "in.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("noise", data=data[0])
        ds = f.create_dataset("raw", data=data, chunks=(1, 8, 16, 16))
        ds.attrs["axes"] = "CZYX"
        ds.attrs["element_size_um"] = [1.2, 0.3, 0.3]
    monkeypatch.setattr(h5mod, "_LAZY_H5_BYTES", 1000)
    monkeypatch.setattr(h5mod, "_BLOCK_BYTES", 8 * 16 * 16 * 2)
    out = tmp_path / "out.tif"
    res = CliRunner().invoke(app, ["predict", str(pool_pkg), f"{path}:/raw", str(out),
                                   "--channel", "1", "--tile", "24", "--no-check"])
    assert res.exit_code == 0, res.output
    got = read_stack(out)
    ref = predict_array(pool_pkg, as_dataarray(data[1], "ZYX"), tile=24)
    np.testing.assert_array_equal(got.values, ref.values)
    assert got.attrs["voxel_size"] == pytest.approx({"z": 1.2, "y": 0.3, "x": 0.3})
    # without a dataset the file asks which one, before any output
    res = CliRunner().invoke(app, ["predict", str(pool_pkg), str(path), str(tmp_path / "o.tif")])
    assert res.exit_code == 2 and "2 image datasets" in res.output
    assert f"{path}:/noise" in res.output.replace("\n", "")
    assert not (tmp_path / "o.tif").exists()


def test_train_reads_an_hdf5_dataset_through_the_selector(tmp_path: Path) -> None:
    from sharpstack import methods
    from sharpstack.workflows import train_run

    data = np.random.default_rng(0).gamma(2.0, 50.0, (3, 24, 24)).astype(np.float32)
    path = tmp_path / "train.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a", data=data)
        f.create_dataset("b", data=data[:, ::-1])
    methods.REGISTRY["toy"] = "tests.toy_method:Toy"
    try:
        res = train_run("toy", [f"{path}:/b"], tmp_path / "run",
                        settings={"epochs": 1, "steps_per_epoch": 1})
        with pytest.raises(InputError, match="does not exist"):
            train_run("toy", [f"{tmp_path}/missing.h5:/b"], tmp_path / "run2")
    finally:
        methods.REGISTRY.pop("toy", None)
        methods._CACHE.pop("toy", None)
    assert res["trained"].record["training_data"].endswith("shape (3, 24, 24)")
    assert (tmp_path / "run" / "model.pt").exists()


# --------------------------------------------------------------------------------------------
# CZI through bioio (written by pylibCZIrw), ND2 and LIF dispatch
# --------------------------------------------------------------------------------------------

def _write_czi(path: Path, planes: np.ndarray, scenes: tuple[str, ...] = (),
               scale_um=(1.0, 0.25, 0.25)) -> None:
    """``planes``: (S, T, C, Z, Y, X) uint16; scene names go into the metadata as ZEN writes
    them (pylibCZIrw writes the subblocks of each scene, not their names)."""
    from pylibCZIrw import czi

    with czi.create_czi(str(path), exist_ok=True) as w:
        for s, scene in enumerate(planes):
            for t, c, z in np.ndindex(*scene.shape[:3]):
                w.write(scene[t, c, z][..., None], plane={"T": t, "C": c, "Z": z}, scene=s,
                        location=(s * 1000, 0))
        w.write_metadata(scale_z=scale_um[0] * 1e-6, scale_y=scale_um[1] * 1e-6,
                         scale_x=scale_um[2] * 1e-6)
    if scenes:
        entries = "".join(f'<Scene Index="{i}" Name="{n}"/>' for i, n in enumerate(scenes))
        with czi.edit_czi(str(path)) as e, e.edit_session() as b:
            b.set_xml(b.get_xml().replace("<Dimensions>",
                                          f"<Dimensions><S><Scenes>{entries}</Scenes></S>", 1))


@needs_czi
def test_czi_volume_channels_time_and_calibration(tmp_path: Path) -> None:
    planes = _volume((1, 2, 3, 5, 16, 20))  # one scene, T=2, C=3
    path = tmp_path / "stack.czi"
    _write_czi(path, planes, scale_um=(1.5, 0.2, 0.2))
    da = read_stack(path)
    assert da.dims == ("t", "c", "z", "y", "x")
    np.testing.assert_array_equal(da.values, planes[0])
    assert da.attrs["voxel_size"] == pytest.approx({"z": 1.5, "y": 0.2, "x": 0.2})
    assert da.attrs["calibrated"]
    one = read_stack(f"{path}:channel=2,time=1")
    assert one.dims == ("z", "y", "x")
    np.testing.assert_array_equal(one.values, planes[0, 1, 2])
    with pytest.raises(InputError, match="3 channels"):
        read_stack(f"{path}:channel=3")


@needs_czi
def test_multi_scene_czi_asks_which_scene(tmp_path: Path) -> None:
    planes = _volume((2, 1, 1, 4, 12, 14))
    path = tmp_path / "plate.czi"
    _write_czi(path, planes, scenes=("A1", "B2"))
    with pytest.raises(InputError) as err:
        read_stack(path)
    msg = str(err.value)
    assert "2 scenes" in msg and "0 ('A1')" in msg and "1 ('B2')" in msg and "--scene" in msg
    np.testing.assert_array_equal(read_stack(f"{path}:scene=1").values, planes[1, 0, 0])
    by_name = read_stack(with_selection(path, scene="A1"))
    np.testing.assert_array_equal(by_name.values, planes[0, 0, 0])
    assert by_name.attrs["source"] == f"{path}:scene=A1"
    with pytest.raises(InputError, match="no scene named 'C3'.*'A1'"):
        read_stack(f"{path}:scene=C3")
    with pytest.raises(InputError, match="scene 2 does not exist"):
        read_stack(f"{path}:scene=2")


@needs_czi
def test_train_on_one_scene_of_a_czi_from_the_cli(tmp_path: Path) -> None:
    """``sharpstack train isonet plate.czi --scene B2``: the scene's stack, its voxel size from
    the file (so the anisotropy factor 4 = 1.0 / 0.25 is the file's)."""
    rng = np.random.default_rng(0)
    planes = (rng.gamma(2.0, 300.0, (2, 1, 1, 8, 48, 48))).astype(np.uint16)
    path = tmp_path / "plate.czi"
    _write_czi(path, planes, scenes=("A1", "B2"), scale_um=(1.0, 0.25, 0.25))
    run = tmp_path / "run"
    common = ["--epochs", "1", "--steps-per-epoch", "1", "--patch-size", "16",
              "--patches", "8", "--batch-size", "4", "--sigma-xy", "1", "--sigma-z", "3",
              "--threads", "1"]
    res = CliRunner().invoke(app, ["train", "isonet", str(path), str(run), *common])
    assert res.exit_code == 2 and "--scene" in res.output and "'B2'" in res.output
    assert not run.exists()
    res = CliRunner().invoke(app, ["train", "isonet", str(path), str(run), "--scene", "B2",
                                   *common])
    assert res.exit_code == 0, res.output
    record = json.loads((run / "run.json").read_text())
    text = json.dumps(record)
    assert record["settings"]["factor"] == 4, text
    assert "voxel size 1 x 0.25 x 0.25" in text or "0.25" in text, text


def test_a_missing_plugin_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    real = importlib.import_module

    def without_plugins(name, *args, **kwargs):
        if name.startswith(("bioio_czi", "bioio_nd2", "bioio_lif")):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", without_plugins)
    for suffix, plugin in ((".czi", "bioio-czi"), (".nd2", "bioio-nd2"), (".lif", "bioio-lif")):
        path = tmp_path / f"scan{suffix}"
        path.write_bytes(b"\0" * 64)
        with pytest.raises(InputError, match=rf"{plugin}.*pip install 'sharpstack\[formats\]'"):
            read_stack(path)


@pytest.mark.skipif(importlib.util.find_spec("bioio_nd2") is None
                    or importlib.util.find_spec("bioio_lif") is None, reason=FORMATS)
@pytest.mark.parametrize("suffix, what", [(".nd2", "Nikon ND2"), (".lif", "Leica LIF"),
                                          (".czi", "Zeiss CZI")])
def test_a_damaged_vendor_file_is_the_users_problem(tmp_path: Path, suffix, what) -> None:
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(b"\x89garbage" * 20)
    with pytest.raises(InputError, match=f"not a readable {what} file"):
        read_stack(path)
