"""Issue 20's IsoNet tooling: measured defaults, non-integer z/xy factors, the resampling to
isotropic voxels (``sharpstack resample``, ``predict --resample``) and PSFs measured from beads
(``sharpstack psf``). Tiny synthetic data, seeded."""

from __future__ import annotations

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from sharpstack.cli import app

runner = CliRunner()


def _plain(text: str) -> str:
    """Help text without Rich's box drawing and line breaks."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


# ------------------------------------------------------------------------------ 1. defaults
def test_defaults_are_the_measured_ones_and_the_papers_stay_reachable():
    from sharpstack.methods.isonet.settings import IsoNetConfig, IsoNetSettings

    cfg = IsoNetConfig(factor=4)
    assert cfg.lr == 1e-3 and cfg.dropout == 0.0
    assert IsoNetSettings().lr == 1e-3 and IsoNetSettings().dropout == 0.0
    paper = IsoNetConfig(factor=4, lr=5e-3, dropout=0.2)
    assert paper.arch_kwargs()["dropout"] == 0.2 and paper.lr == 5e-3


def test_train_help_names_units_and_the_papers_values():
    res = runner.invoke(app, ["train", "isonet", "--help"], terminal_width=200)
    assert res.exit_code == 0
    text = _plain(res.output)
    assert "sigma, in lateral pixels" in text and "axial sigma, in lateral pixels" in text
    assert "--lr 5e-3" in text and "--dropout 0.2" in text
    assert "(default: 0.001)" in text and "(default: 0.0)" in text


def test_card_template_states_the_defaults_and_the_papers_values():
    from importlib import resources

    card = resources.files("sharpstack.methods.isonet").joinpath("card.md").read_text("utf-8")
    assert "--lr 5e-3 --dropout 0.2" in card
