"""The one interface through which a restoration method plugs into sharpstack.

A method is a folder ``methods/<name>/`` whose subclass of :class:`Method` (networks, data,
task and packaging beside it) is named by one line in the registry
(:mod:`sharpstack.methods`). It declares

- its **settings**: a pydantic model (``extra="forbid"``, bounded fields) holding everything
  that defines a training run; a zoo recipe's ``training:`` section loads into it and a run
  folder records it as JSON;
  The generic loop's options (epochs, steps per epoch, batch size, lr, schedule, patience,
  seed, device) are declared once, in :class:`~sharpstack.training.LoopSettings` (and its
  ``LrSchedule`` / ``EarlyStopping`` parts), which the model subclasses;
- its **inputs** and **options**: what ``sharpstack train <name>`` takes (positional files or
  folders, and options that set settings keys): its own options plus
  :func:`loop_options` (the shared :data:`LOOP_OPTIONS` its settings have); the CLI builds
  the command from them;
- its **data** and **task**: :meth:`Method.train` reads the user's files (axes checked by the
  one validator), builds tensors or datasets and fits a :class:`~sharpstack.training.TrainTask`
  with the generic loop;
- its **deployables**: named deploy modules with the consumers each claims, and
  :meth:`Method.package_request`, which describes one deployable of a trained run as a
  :class:`~sharpstack.export.package.PackageRequest` (deploy module, architecture file, axes
  and halos, test input, covers, card template and fields); the one exporter
  (:func:`~sharpstack.export.package.spec_from_request`, through :meth:`Method.package_spec`)
  adds what every package shares;
- optionally **synthetic data** (:meth:`Method.synthesize`, behind ``sharpstack synth``),
  a **demo** (:attr:`Method.demo`, behind ``sharpstack demo``) and a **benchmark**
  (:meth:`Method.bench`, behind ``sharpstack bench <name>``).

``workflows``, ``cli`` and ``zoo`` reach methods only through the registry; ``training``,
``predict`` and ``export/package`` know no method at all.

Methods never write files except through the training loop's ``out_dir`` (checkpoints) and
never parse CLI arguments: they return arrays and objects, and ``workflows`` writes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import BaseModel

from ..errors import InputError
from ..training import TrainResult

if TYPE_CHECKING:
    from ..export.package import PackageRequest, PackageSpec

__all__ = ["Input", "Option", "LOOP_OPTIONS", "loop_options", "Deployable", "Trained",
           "SynthResult", "Demo", "Method",
           "settings_from", "option_default"]


@dataclass(frozen=True)
class Input:
    """A positional input of ``sharpstack train <method>`` (in order)."""

    name: str
    """Argument name shown in the CLI's usage line (upper-cased there), e.g. ``stack``."""
    help: str
    kind: Literal["file", "folder", "file_or_folder"] = "file"


@dataclass(frozen=True)
class Option:
    """A CLI option that sets one key of a settings model.

    ``key`` is a field name of the model, dotted for nested models (``"psf.sigma_xy"``).
    ``type`` is the Python type Typer parses (``int``, ``float``, ``str``, ``bool``,
    ``list[str]``); ``parse`` optionally turns the parsed value into the field's value (e.g.
    ``"64,128,128"`` -> a tuple). The default shown in ``--help`` comes from the model, so an
    option the user does not give leaves the model's default (or, on ``--resume``, the
    run's recorded value) in place.

    A ``bool`` option is the pair ``--FLAG/--no-FLAG``; ``--help`` shows the one that gives
    the model's default (through ``parse``: ``Option("deep-first", "depth_increases_with_z",
    bool, ..., parse=lambda v: not v)`` shows ``no-deep-first`` for a default of True).
    """

    flag: str
    key: str
    type: Any
    help: str
    parse: Callable[[Any], Any] | None = None
    default: Any = ...
    """For a command without a settings model (``bench``): the value it uses when the option
    is not given, shown in ``--help`` (``...``: none shown). Ignored where a model exists."""


LOOP_OPTIONS: tuple[Option, ...] = (
    Option("epochs", "epochs", int, "Epochs."),
    Option("steps-per-epoch", "steps_per_epoch", int, "Batches per epoch."),
    Option("batch-size", "batch_size", int, "Batch size."),
    Option("lr", "lr", float, "Adam learning rate."),
    Option("lr-schedule", "lr_schedule", str, "constant or cosine."),
    Option("patience", "patience", int, "Stop after this many epochs without validation "
           "improvement."),
    Option("seed", "seed", int, "Random seed."),
    Option("device", "device", str, "cpu, cuda, cuda:1 ...; default: GPU if present."),
    Option("precision", "precision", str, "auto, fp32, bf16 or fp16: auto trains in bf16 "
           "autocast + channels-last on GPUs and AMX CPUs, in float32 channels-last on other "
           "CPUs; bf16 on a CPU with AVX-512 BF16 helps some networks (see the README); weights "
           "and packages stay float32."),
)
"""The CLI options of the generic loop's settings (:class:`~sharpstack.training.LoopSettings`,
``LrSchedule``, ``EarlyStopping``), declared once for every method's ``train`` command."""


def loop_options(model: type[BaseModel], **help: str) -> tuple[Option, ...]:
    """The :data:`LOOP_OPTIONS` whose keys are fields of ``model`` (a method's settings), in
    that order; ``help`` replaces an option's help text by settings key where the method has
    something of its own to say (``epochs="Epochs (the paper: 100)."``)."""
    known = {o.key for o in LOOP_OPTIONS}
    unknown = set(help) - known
    if unknown:
        raise TypeError(f"no loop option {sorted(unknown)}; loop options: {sorted(known)}")
    missing = set(help) - set(model.model_fields)
    if missing:
        raise TypeError(f"{model.__name__} has no field {sorted(missing)}")
    return tuple(replace(o, help=help.get(o.key, o.help)) for o in LOOP_OPTIONS
                 if o.key in model.model_fields)


@dataclass(frozen=True)
class Deployable:
    """One exportable form of a trained model."""

    name: str
    summary: str
    """Input -> output in a few words, for ``--help`` and the demo summary."""
    claims: tuple[str, ...]
    """Consumers the package must pass ``sharpstack check`` for (the export fails otherwise):
    from ``bioimageio``, ``deepimagej``, ``ilastik``, ``qupath``."""


@dataclass
class Trained:
    """A trained run of one method, as :meth:`Method.train` returns it and
    :meth:`Method.load` rebuilds it from a run folder."""

    settings: BaseModel
    model: Any
    """The method's own trained object (networks, normaliser ...)."""
    result: TrainResult
    record: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable facts of the run that export and the model card need (training data
    description, normalisation, PSF text, voxel size used, ...)."""
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    """What ``model.pt`` stores: name -> dict of tensors (network state dicts, buffers,
    arrays). Read back with ``torch.load(weights_only=True)``."""


@dataclass
class SynthResult:
    """Synthetic data of a method's protocol, to be written by ``workflows.synthesize``.

    ``arrays`` maps a name to a DataArray (written as ``<name>.tif``) or a list of them
    (written as a folder ``<name>/000.tif, 001.tif, ...``), or to an existing ``Path`` (used as
    it is, e.g. shared real data). ``inputs`` names the entries that are the training inputs,
    in the order of :attr:`Method.inputs`; ``sample`` the entry the demo exports and restores.
    ``settings`` are training settings the data imply (e.g. IsoNet's PSF and factor): the
    demo and zoo recipes train with them unless they say otherwise.
    """

    arrays: dict[str, Any]
    inputs: tuple[str, ...]
    sample: str
    settings: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable facts (PSF text, factor, ...) for summaries and model cards."""
    references: dict[str, Any] = field(default_factory=dict)
    """In-memory ground truths for scoring (not written)."""


@dataclass(frozen=True)
class Demo:
    """What ``sharpstack demo <method>`` runs: synthesise with ``synth`` (options of
    :meth:`Method.synthesize`), train with ``settings``, export every deployable, restore the
    sample with the ``predict_with`` package and score it with :meth:`Method.score`."""

    synth: Mapping[str, Any]
    settings: Mapping[str, Any]
    predict_with: str
    about: str
    """One paragraph for the summary: what the demo shows and its budget."""
    deployables: tuple[str, ...] = ()
    """Deployables to export (default: all)."""


class Method:
    """Base class of every restoration method (see the module docstring)."""

    name: ClassVar[str]
    title: ClassVar[str]
    """Human name with the paper, e.g. ``"IsoNet (Weigert et al., MICCAI 2017)"``."""
    summary: ClassVar[str]
    """One line: what it restores (CLI help)."""
    citations: ClassVar[tuple[dict[str, str], ...]] = ()
    recorded_before: ClassVar[dict[str, Any]] = {}
    """Settings added after runs were recorded, with the value that runs recorded without
    them were trained with (their behaviour before the setting existed): a run folder read
    back (``load_run``, ``--resume``) takes these for absent keys, not today's defaults, so
    an old run is never silently rebuilt as another network."""
    settings_model: ClassVar[type[BaseModel]]
    inputs: ClassVar[tuple[Input, ...]]
    options: ClassVar[tuple[Option, ...]] = ()
    deployables: ClassVar[tuple[Deployable, ...]]
    """The first is the default of ``sharpstack export``."""
    synth_model: ClassVar[type[BaseModel] | None] = None
    synth_options: ClassVar[tuple[Option, ...]] = ()
    demo: ClassVar[Demo | None] = None
    bench_options: ClassVar[tuple[Option, ...]] = ()
    bench_threads: ClassVar[int | None] = None
    """Default of ``sharpstack bench <name> --threads`` (torch CPU threads; None: torch's)."""

    # ------------------------------------------------------------------ required hooks
    def train(self, inputs: Sequence[Path], settings: BaseModel, *, out_dir: Path,
              resume: bool = False, progress: bool = False,
              voxel_size: Mapping[str, float] | None = None) -> Trained:
        """Read the inputs, build training data and fit; checkpoints go to ``out_dir``.

        ``voxel_size`` (micrometres per axis, from ``--voxel-size``) overrides or completes
        the calibration read from the files.
        """
        raise NotImplementedError

    def load(self, settings: BaseModel, record: dict[str, Any],
             tensors: dict[str, dict[str, torch.Tensor]], result: TrainResult) -> Trained:
        """Rebuild a trained run from what :meth:`train` returned (read back from disk)."""
        raise NotImplementedError

    def package_request(self, trained: Trained, sample: Path, deployable: str, *,
                        workdir: Path) -> PackageRequest:
        """What the package of one deployable holds that is the method's own.

        ``sample`` is a file of the training kind: the test input is cut from it. Covers
        (and any other file the request names) are written into ``workdir``, a temporary
        folder that lives until the package is built.
        """
        raise NotImplementedError(f"{self.name} has no packages")

    def package_spec(self, trained: Trained, sample: Path, deployable: str | None, *,
                     workdir: Path, name: str | None = None,
                     authors: list[dict[str, str]] | None = None, license: str = "MIT",
                     quality: Mapping[str, Any] | None = None,
                     attachments: Sequence[Path] = (), runtimes_text: str = "") -> PackageSpec:
        """The :class:`~sharpstack.export.package.PackageSpec` of one deployable: the
        method's :meth:`package_request`, completed by the one exporter with the deployable's
        claims, the method's citations and the keyword arguments (see
        :func:`~sharpstack.export.package.spec_from_request`)."""
        from ..export.package import spec_from_request

        d = self.deployable(deployable)
        request = self.package_request(trained, Path(sample), d.name, workdir=Path(workdir))
        return spec_from_request(
            request, claims=d.claims, cite=self.citations, name=name, authors=authors,
            license=license, quality=quality, attachments=attachments,
            runtimes_text=runtimes_text,
            retrain=f"sharpstack train {self.name} YOUR_STACKS NEW_RUN/")

    # ------------------------------------------------------------------ optional hooks
    def consumer_input(self, trained: Trained, stack: Any, deployable: str) -> Any | None:
        """What a program (Fiji/deepImageJ, ilastik, QuPath) must be given to run the package
        of one deployable, made from ``stack`` (a DataArray of the training kind, voxel size
        in its attrs), as a DataArray with its voxel size; None: ``stack`` as it is. The demo
        writes it beside the packages (nothing is written here)."""
        return None

    def synthesize(self, options: BaseModel) -> SynthResult:
        """Synthetic data of the method's protocol (arrays; nothing written here)."""
        raise InputError(f"{self.name} has no synthetic data protocol")

    def score(self, synth: SynthResult, restored: Any) -> dict[str, float]:
        """Quality of a restoration of the demo's sample (``restored``: the DataArray that
        ``sharpstack predict`` wrote), against the synthetic references."""
        return {}

    def evaluate(self, trained: Trained, synth: SynthResult) -> dict[str, Any]:
        """In-process quality for the model card (before export)."""
        return {}

    def figure(self, synth: SynthResult, restored: Any) -> list[tuple[str, Any]]:
        """Panels (title, array) of the demo figure: input, restoration, reference."""
        return []

    def bench(self, out_dir: Path, *, progress: bool = False, **options: Any) -> dict[str, Any]:
        """Run the method's benchmark (tables, CSV, figures into ``out_dir``)."""
        raise InputError(f"{self.name} has no benchmark")

    # ------------------------------------------------------------------ helpers
    @property
    def has_synth(self) -> bool:
        return self.synth_model is not None

    @property
    def has_bench(self) -> bool:
        return type(self).bench is not Method.bench

    def deployable(self, name: str | None) -> Deployable:
        """The named deployable (the default when None); errors list the choices."""
        if name is None:
            return self.deployables[0]
        for d in self.deployables:
            if d.name == name:
                return d
        raise InputError(f"{self.name} has no deployable {name!r}; choose one of "
                         f"{', '.join(d.name for d in self.deployables)} (--deployable)")


def _flag_of(options: Sequence[Option], loc: Sequence[Any]) -> str:
    key = ".".join(str(p) for p in loc)
    for o in options:
        if o.key == key:
            return f"--{o.flag}"
    return key


def settings_from(model: type[BaseModel], values: Mapping[str, Any], *,
                  options: Sequence[Option] = (), base: Mapping[str, Any] | None = None,
                  what: str = "settings") -> BaseModel:
    """Validate ``values`` (dotted keys allowed, ``None`` = not given) into ``model``.

    ``base`` (e.g. a run's recorded settings on resume) is applied first. Validation errors
    become one :class:`~sharpstack.errors.InputError` naming each offending CLI option (or
    recipe key) and what it must be.
    """
    from pydantic import ValidationError

    merged: dict[str, Any] = _deep_copy(dict(base or {}))
    for k, v in values.items():
        if v is None:
            continue
        node = merged
        parts = k.split(".")
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = {} if nxt is None else (nxt.model_dump() if isinstance(nxt, BaseModel)
                                              else nxt)
                node[p] = nxt
            node = nxt
        node[parts[-1]] = v
    try:
        return model(**merged)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            lines.append(f"{_flag_of(options, err['loc'])}: {err['msg']}"
                         + (f" (got {err['input']!r})" if "input" in err
                            and not isinstance(err["input"], dict) else ""))
        raise InputError(f"invalid {what}:\n  " + "\n  ".join(lines)) from None
    except TypeError as exc:
        raise InputError(f"invalid {what}: {exc}") from None


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def option_default(model: type[BaseModel], key: str) -> Any:
    """The default of a (dotted) settings key, for ``--help``; ``...`` when required."""
    from pydantic_core import PydanticUndefined

    cls: Any = model
    parts = key.split(".")
    for i, p in enumerate(parts):
        f = cls.model_fields[p]
        if i == len(parts) - 1:
            if f.default is PydanticUndefined:
                return f.default_factory() if f.default_factory else ...
            return f.default
        ann = f.annotation
        cls = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if cls is None:
            return ...
    return ...
