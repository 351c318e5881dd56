"""Trainings of a benchmark run in this process or in worker processes.

``concurrent.futures`` gives the pool; what it lacks is an executor that runs each job at
submission in this process (``jobs=1``: no worker start-up, the same code path as with
workers), written here.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import Future
from typing import Any, Callable

__all__ = ["InlineExecutor", "job_executor", "stderr_log", "card_mode"]


class InlineExecutor:
    """The part of ``concurrent.futures.Executor`` the benchmarks use, running each job at
    submission in this process."""

    def submit(self, fn: Callable, *args: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as e:  # re-raised by .result(), as a pool would
            fut.set_exception(e)
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        return None


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(int(threads))


def job_executor(jobs: int) -> Any:
    """``jobs == 1``: an :class:`InlineExecutor`; more: a spawn-context process pool whose
    workers use this process's torch thread count (on 2 cores, two single-thread trainings
    each ran as fast as one alone)."""
    if int(jobs) == 1:
        return InlineExecutor()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    return ProcessPoolExecutor(max_workers=int(jobs),
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(torch.get_num_threads(),))


def stderr_log() -> Callable[[str], None]:
    """An ``on_step`` callback of the benchmarks: each message on stderr after the seconds
    since this call (written through tqdm, so that a progress bar stays intact)."""
    t0 = time.time()

    def log(msg: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(f"[{time.time() - t0:7.0f} s] {msg}", file=sys.stderr)

    return log


def card_mode(card: Any, built: Any, options: dict[str, Any], out: Any,
              card_quality: Callable[..., dict[str, Any]]) -> dict[str, Any] | None:
    """``bench <method> --card RECIPE [--built DIR]``: the quality of a built zoo model
    (``card_quality(card, out, built=built)``) instead of the benchmark, which takes none of
    the benchmark's ``options``; ``None`` when no card was asked for."""
    from ..errors import InputError

    if card is not None:
        if options:
            raise InputError(f"--card scores a built zoo model; the benchmark's options "
                             f"({', '.join(sorted(options))}) do not apply to it")
        return card_quality(card, out, built=built)
    if built is not None:
        raise InputError("--built goes with --card RECIPE")
    return None
