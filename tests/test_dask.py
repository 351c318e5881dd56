"""Prediction as a Dask graph: a LocalCluster of 2 workers gives the single-process output,
on a third-party package (rdf.yaml written by hand, not by sharpstack's exporter) and on ours;
every worker loads the package once."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from sharpstack.io import as_dataarray, read_stack, write_stack
from sharpstack.predict import predict_file

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore:Port .* is already in use:UserWarning")]

RDF = """\
type: model
format_version: 0.5.4
name: third-party smoothing conv
description: one 3x3x3 convolution, packaged by hand as a third party would
authors: [{name: someone else}]
cite: [{text: none, doi: 10.1000/xyz}]
license: MIT
documentation: README.md
inputs:
  - id: raw
    axes:
      - type: batch
      - type: channel
        channel_names: [c0]
      - {type: space, id: z, size: {min: 8, step: 4}}
      - {type: space, id: y, size: {min: 16, step: 8}}
      - {type: space, id: x, size: {min: 16, step: 8}}
    test_tensor: {source: test_input.npy}
    preprocessing:
      - id: zero_mean_unit_variance
        kwargs: {axes: [z, y, x]}
outputs:
  - id: smoothed
    axes:
      - type: batch
      - type: channel
        channel_names: [c0]
      - {type: space, id: z, halo: 1, size: {tensor_id: raw, axis_id: z}}
      - {type: space, id: y, halo: 1, size: {tensor_id: raw, axis_id: y}}
      - {type: space, id: x, halo: 1, size: {tensor_id: raw, axis_id: x}}
    test_tensor: {source: test_output.npy}
weights:
  torchscript: {source: conv.pt, pytorch_version: "2.0"}
"""


@pytest.fixture(scope="module")
def third_party(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("thirdparty")
    torch.manual_seed(1)
    net = torch.nn.Conv3d(1, 1, 3, padding=1).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(net, torch.zeros(1, 1, 8, 16, 16)).save(str(folder / "conv.pt"))
    x = np.random.default_rng(0).random((1, 1, 8, 16, 16), dtype=np.float32)
    np.save(folder / "test_input.npy", x)
    with torch.no_grad():
        y = net(torch.from_numpy((x - x.mean()) / (x.std() + 1e-6))).numpy()
    np.save(folder / "test_output.npy", y)
    (folder / "README.md").write_text("# third-party smoothing conv\n")
    (folder / "rdf.yaml").write_text(RDF)
    return folder / "rdf.yaml"


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cl = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None)
    yield cl
    cl.close()


def _stack(shape, seed=0):
    rng = np.random.default_rng(seed)
    return as_dataarray(rng.gamma(2.0, 300.0, size=shape).astype(np.uint16), "ZYX",
                        {"z": 2.0, "y": 0.5, "x": 0.5})


def test_local_cluster_equals_single_process(tmp_path: Path, third_party: Path,
                                             package_isotropic: Path, cluster) -> None:
    from distributed import Client

    src = write_stack(tmp_path / "in.ome.zarr", _stack((20, 72, 64)))
    for name, pkg, tile in (("third", third_party, {"z": 12, "y": 32, "x": 32}),
                            ("ours", package_isotropic, 88)):
        single = read_stack(predict_file(pkg, src, tmp_path / f"{name}_1.ome.zarr", tile=tile,
                                         weight_format="torchscript"))
        dist = read_stack(predict_file(pkg, src, tmp_path / f"{name}_dask.ome.zarr", tile=tile,
                                       weight_format="torchscript",
                                       scheduler=cluster.scheduler_address))
        assert dist.shape == single.shape
        np.testing.assert_allclose(dist.values, single.values, atol=1e-5, rtol=0)
        assert dist.attrs["voxel_size"] == pytest.approx(single.attrs["voxel_size"])
    with Client(cluster.scheduler_address) as client:  # the package was loaded once per worker
        loads = client.run(lambda: __import__("sharpstack.predict.dask_graph").predict.dask_graph._LOADS)
    assert set(loads.values()) <= {0, 1, 2} and sum(loads.values()) <= 4  # 2 runs x 2 workers
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".sharpstack")] == []


def test_threads_scheduler_and_cli(tmp_path: Path, third_party: Path) -> None:
    from typer.testing import CliRunner

    from sharpstack.cli import app

    src = write_stack(tmp_path / "in.ome.zarr", _stack((12, 40, 48), seed=2))
    single = read_stack(predict_file(third_party, src, tmp_path / "s.ome.zarr", tile=24))
    res = CliRunner().invoke(app, ["predict", str(third_party), str(src),
                                   str(tmp_path / "d.ome.zarr"), "--tile", "24", "--dask",
                                   "--workers", "2"])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(read_stack(tmp_path / "d.ome.zarr").values, single.values,
                               atol=1e-5, rtol=0)
    res = CliRunner().invoke(app, ["predict", str(third_party), str(src),
                                   str(tmp_path / "d.tif"), "--scheduler", "threads"])
    assert res.exit_code == 2 and "OME-Zarr" in res.output and not (tmp_path / "d.tif").exists()


def test_unreachable_scheduler_is_a_clear_error(tmp_path: Path, third_party: Path) -> None:
    import dask

    from sharpstack.errors import InputError

    src = write_stack(tmp_path / "in.ome.zarr", _stack((12, 32, 32)))
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(InputError, match="no Dask scheduler"):
        predict_file(third_party, src, tmp_path / "o.ome.zarr",
                     scheduler="tcp://127.0.0.1:1")
    assert not (tmp_path / "o.ome.zarr").exists()
