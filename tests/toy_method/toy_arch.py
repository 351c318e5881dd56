"""The toy method's network: one 3x3 convolution (imports only torch; shipped in packages)."""

from __future__ import annotations

from torch import nn


class ToyDeploy(nn.Module):
    """A normalised image (batch, 1, y, x) in, the restored image of the same shape out."""

    def __init__(self, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, kernel, padding=kernel // 2, padding_mode="replicate")

    def forward(self, x):
        return self.conv(x)
