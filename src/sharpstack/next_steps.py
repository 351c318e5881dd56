"""The user's next step after ``sharpstack demo``: which files to open, which package runs in
which program and exactly how (menu paths as in the packages' model cards), and how to do the
same on one's own stack. Pure text; nothing is read or written here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["PROGRAMS", "demo_next_steps"]

PROGRAMS = {"deepimagej": "Fiji/deepImageJ", "ilastik": "ilastik", "qupath": "QuPath"}
"""Consumer id (a deployable's claims) -> the program's name."""


def _how(consumer: str, package: str, stack: str) -> str:
    if consumer == "deepimagej":
        return (f"Plugins > DeepImageJ > DeepImageJ Install Model, choose {package}; "
                f"File > Open {stack}; Plugins > DeepImageJ > DeepImageJ Run, choose the model "
                "and press Run")
    if consumer == "ilastik":
        return (f"the Neural Network Classification workflow: add {stack} as raw data, load "
                f"{package} in its \"Neural Network\" applet and press Live Predict")
    return (f"unzip {package} into a folder, open {stack} in a project, then Extensions > "
            "Bioimage Model Zoo and choose that folder")


def demo_next_steps(method: str, *, restored: str, figure: str | None,
                    packages: Mapping[str, Mapping[str, Any]], predict_with: str,
                    deployables: Sequence[str]) -> dict[str, Any]:
    """The ``next_steps`` of a demo's summary.

    ``packages`` maps a deployable to ``{"path", "runs_in", "input"}`` (``input``: the stack
    that package takes, the demo's sample or one it wrote for it, e.g. resampled to isotropic
    voxels). Returns ``open`` (restored stack, figure), ``programs`` (per program: package,
    input stack, how), ``own_stack`` (the commands for one's own data) and ``text`` (the lines
    the CLI prints last).
    """
    programs = []
    order = [predict_with, *[d for d in deployables if d != predict_with]]
    for consumer, program in PROGRAMS.items():
        for d in order:
            p = packages[d]
            if consumer in p["runs_in"]:
                programs.append({"program": program, "package": p["path"],
                                 "input": p["input"],
                                 "how": _how(consumer, p["path"], p["input"])})
                break
    fiji = next((p for p in programs if p["program"] == PROGRAMS["deepimagej"]), None)
    own = [f"sharpstack train {method} MY_STACK.tif my_run/",
           f"sharpstack export my_run/ MY_STACK.tif my_model.zip --deployable {predict_with}",
           "sharpstack predict my_model.zip MY_STACK.tif my_restored.tif"]
    fiji_d = next((d for d in order if "deepimagej" in packages[d]["runs_in"]), None)
    if fiji_d is not None and fiji_d != predict_with:
        own.insert(2, f"sharpstack export my_run/ MY_STACK.tif my_model_fiji.zip "
                      f"--deployable {fiji_d}")
    text = ["next steps:",
            f"  open the restored stack: {restored}  (Fiji: File > Open; calibrated)"]
    if figure:
        text.append(f"  open the figure (input | restored | reference): {figure}")
    for p in programs:
        text.append(f"  {p['program']}: {p['package']}")
        text.append(f"    on {p['input']}: {p['how']}")
    if fiji is None:
        text.append("  Fiji/deepImageJ: no package of this demo runs there")
    text.append("  your own stack: " + "; then ".join(own))
    return {"open": {"restored": restored, "figure": figure}, "programs": programs,
            "own_stack": own, "text": text}
