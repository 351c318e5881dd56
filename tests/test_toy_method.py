"""Adding a method takes one folder and one registry line: a toy fifth method
(``tests/toy_method/``: settings, data from a stack, a one-convolution deploy module with its
own architecture file, one deployable and its package request) is registered for this
module, trained for two steps with the normal ``train_run``, exported with ``export_run``
(bioimageio.core's test passes for every weight format) and run with ``predict_file``."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
import yaml


@pytest.fixture(scope="module")
def toy_registered():
    from sharpstack import methods

    methods.REGISTRY["toy"] = "tests.toy_method:Toy"  # the one registry line
    try:
        yield methods.get_method("toy")
    finally:
        methods.REGISTRY.pop("toy", None)
        methods._CACHE.pop("toy", None)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from sharpstack.io import as_dataarray, write_tiff

    rng = np.random.default_rng(0)
    data = rng.gamma(2.0, 50.0, size=(3, 48, 48)).astype(np.float32)
    path = tmp_path_factory.mktemp("toy_data") / "stack.tif"
    write_tiff(path, as_dataarray(data, "ZYX"))
    return path


@pytest.fixture(scope="module")
def toy_run(toy_registered, stack, tmp_path_factory):
    from sharpstack.workflows import train_run

    run = tmp_path_factory.mktemp("toy_run") / "run"
    res = train_run("toy", [stack], run, settings={"epochs": 1, "steps_per_epoch": 2})
    return run, res


@pytest.fixture(scope="module")
def toy_package(toy_run, stack, tmp_path_factory):
    from sharpstack.workflows import export_run

    run, _ = toy_run
    return export_run(run, stack, tmp_path_factory.mktemp("toy_pkg") / "toy.zip",
                      quality={"mse": 0.0123})


def test_the_toy_method_trains_through_the_generic_loop(toy_run):
    import json

    run, res = toy_run
    info = json.loads((run / "run.json").read_text())
    assert info["method"] == "toy" and info["status"] == "trained"
    assert len(res["history"]) == 1 and (run / "model.pt").exists()


def test_the_toy_package_is_tested_and_holds_the_request(toy_package):
    # export_run wrote it, so bioimageio.core's test_model passed for every weight format
    with zipfile.ZipFile(toy_package) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        card = z.read("README.md").decode()
        names = set(z.namelist())
    assert rdf["name"] == "Toy smoother"
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] == "ToyDeploy"
    assert rdf["cite"][0]["text"] == "sharpstack developers. A toy method."
    assert rdf["authors"] == [{"name": "sharpstack developers"}]
    assert {"toy_arch.py", "cover0.png", "test_input.npy"} <= names
    assert "Halo 8 px" in card and "| mse | 0.0123 |" in card


def test_predict_file_runs_the_toy_package(toy_package, toy_run, stack, tmp_path):
    from sharpstack.io import as_dataarray, read_stack, write_tiff
    from sharpstack.normalize import PercentileNormalizer
    from sharpstack.predict import predict_file
    from sharpstack.workflows import load_run

    image = np.asarray(read_stack(stack).values, dtype=np.float32)[1]
    write_tiff(tmp_path / "plane.tif", as_dataarray(image, "YX"))
    out = predict_file(toy_package, tmp_path / "plane.tif", tmp_path / "restored.tif")
    restored = np.asarray(read_stack(out).values)
    net = load_run(toy_run[0]).trained.model
    with torch.no_grad():
        x = torch.from_numpy(PercentileNormalizer().before(image))[None, None]
        expected = net(x)[0, 0].numpy()
    np.testing.assert_allclose(restored, expected, atol=1e-4)
    stack_out = predict_file(toy_package, stack, tmp_path / "restored_stack.tif")  # by plane
    assert read_stack(stack_out).shape == read_stack(stack).shape
