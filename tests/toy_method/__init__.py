"""A toy fifth method, registered by tests only: what adding a method to sharpstack takes.

One folder (this one: settings, data, task, deploy module, package request) and one registry
line (``REGISTRY["toy"] = "tests.toy_method:Toy"``). It learns a 3x3 smoothing of the
planes of one stack with a single convolution, and packages that convolution as a 2D model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from sharpstack.errors import InputError
from sharpstack.export.package import AxisSpec, PackageRequest
from sharpstack.methods import Method
from sharpstack.methods._base import Deployable, Input, Option, Trained
from sharpstack.normalize import PercentileNormalizer
from sharpstack.training import TrainConfig, TrainTask, fit

from .toy_arch import ToyDeploy

__all__ = ["Toy", "ToySettings"]

ARCH_SOURCE = Path(__file__).with_name("toy_arch.py")
PATCH = 16


class ToySettings(BaseModel):
    """Everything that defines a toy run."""

    model_config = ConfigDict(extra="forbid")
    kernel: int = Field(3, ge=1, le=7)
    lr: float = Field(1e-2, gt=0)
    epochs: int = Field(1, ge=1, le=10)
    steps_per_epoch: int | None = Field(2, ge=1)
    batch_size: int = Field(4, ge=1)
    seed: int = 0


def training_pairs(stack: np.ndarray, normalizer: PercentileNormalizer
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches of the normalised planes (input) and their 3x3 box-smoothed versions
    (target)."""
    x = normalizer.before(stack)
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    y = sum(pad[:, i:i + x.shape[1], j:j + x.shape[2]] for i in range(3) for j in range(3)) / 9
    xs, ys = [], []
    for z in range(x.shape[0]):
        for r in range(0, x.shape[1] - PATCH + 1, PATCH):
            for c in range(0, x.shape[2] - PATCH + 1, PATCH):
                xs.append(x[z, r:r + PATCH, c:c + PATCH])
                ys.append(y[z, r:r + PATCH, c:c + PATCH])
    as_t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32)[:, None])  # noqa: E731
    return as_t(xs), as_t(ys)


class ToyTask(TrainTask):
    def __init__(self, net: ToyDeploy, lr: float) -> None:
        self.models = {"net": net}
        self.lr = lr

    def make_optimizers(self):
        return {"net": torch.optim.Adam(self.models["net"].parameters(), lr=self.lr)}

    def train_step(self, batch, optimizers):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.models["net"](x), y)
        optimizers["net"].zero_grad()
        loss.backward()
        optimizers["net"].step()
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def val_step(self, batch):
        x, y = batch
        return {"loss": float(torch.nn.functional.mse_loss(self.models["net"](x), y))}


class Toy(Method):
    """A one-convolution smoother: the smallest method that trains, exports and predicts."""

    name = "toy"
    title = "Toy smoother (a test of the method interface)"
    summary = "learns a 3x3 smoothing of the planes of one stack"
    citations = ({"text": "sharpstack developers. A toy method.",
                  "url": "https://example.org/sharpstack-toy"},)
    settings_model = ToySettings
    inputs = (Input("stack", "One-channel stack (ZYX) or image (YX)."),)
    options = (Option("kernel", "kernel", int, "Convolution size."),)
    deployables = (Deployable("plane", "one 2D plane in, the smoothed plane out",
                              ("bioimageio",)),)

    def train(self, inputs: Sequence[Path], settings: ToySettings, *, out_dir: Path,
              resume: bool = False, progress: bool = False,
              voxel_size: Mapping[str, float] | None = None) -> Trained:
        from sharpstack.io import read_stack

        (path,) = inputs
        data = read_stack(path)
        if tuple(data.dims) not in (("z", "y", "x"), ("y", "x")):
            raise InputError(f"{path} has axes {''.join(data.dims).upper()}; give ZYX or YX")
        stack = np.asarray(data.values, dtype=np.float32).reshape((-1,) + data.shape[-2:])
        normalizer = PercentileNormalizer()
        torch.manual_seed(settings.seed)
        net = ToyDeploy(kernel=settings.kernel)
        result = fit(ToyTask(net, settings.lr), training_pairs(stack, normalizer),
                     TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size,
                                 steps_per_epoch=settings.steps_per_epoch, patience=None,
                                 seed=settings.seed, device="cpu"),
                     out_dir=out_dir, resume=resume, progress=progress,
                     config_record={"toy": settings.model_dump(mode="json")})
        net.eval()
        record = {"training_data": f"{Path(path).name}, shape {tuple(data.shape)}"}
        return Trained(settings=settings, model=net, result=result, record=record,
                       tensors={"net": net.state_dict()})

    def load(self, settings: ToySettings, record: dict[str, Any], tensors, result) -> Trained:
        net = ToyDeploy(kernel=settings.kernel)
        net.load_state_dict(tensors["net"])
        return Trained(settings=settings, model=net.eval(), result=result, record=record,
                       tensors=tensors)

    def package_request(self, trained: Trained, sample: Path, deployable: str, *,
                        workdir: Path) -> PackageRequest:
        from sharpstack.export.covers import panels_png
        from sharpstack.io import read_stack

        net: ToyDeploy = trained.model
        halo = 8  # the 3x3..7x7 kernel's radius, rounded up to the step
        axes = [AxisSpec(id=a, min=24, step=8, halo=halo) for a in ("y", "x")]
        data = np.asarray(read_stack(sample).values, dtype=np.float32)
        plane = data if data.ndim == 2 else data[data.shape[0] // 2]
        size = [a.min + (min(n, 64) - a.min) // a.step * a.step for a, n in zip(axes, plane.shape)]
        test_input = np.ascontiguousarray(plane[:size[0], :size[1]])
        normalizer = PercentileNormalizer()
        with torch.no_grad():
            shown = normalizer.before(test_input)
            out = net(torch.from_numpy(shown)[None, None])[0, 0].numpy()
        cover = panels_png([shown, out], ["input", "toy"], Path(workdir) / "cover.png")
        return PackageRequest(
            name="Toy smoother", description="Smooths a 2D image with one learnt convolution.",
            module=net, arch_source=ARCH_SOURCE, arch_callable="ToyDeploy",
            arch_kwargs={"kernel": trained.settings.kernel}, axes=axes,
            test_input=test_input, normalizer=normalizer,
            card_template=resources.files(__package__).joinpath("card.md").read_text("utf-8"),
            card_fields={"halo": halo, "training_data": trained.record["training_data"],
                         "epochs": len(trained.result.history)},
            covers=[cover], tags=["toy", "restoration", "sharpstack", "2d"],
            input_description="2D image", output_description="smoothed image",
            training_data=trained.record["training_data"])
