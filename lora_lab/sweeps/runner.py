"""Sweeps: run every spec of an experiment's grid that is not yet in its store.

The driver asks the store what is done, hands the rest to an executor and writes each
record the moment it comes back, so a killed sweep resumes where it stopped and a record
is the same whichever executor produced it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from lora_lab.sweeps.executors import (
    ProcessExecutor,
    RayExecutor,
    SerialExecutor,
    make_executor,
)
from lora_lab.sweeps.experiment import Experiment, results_dir
from lora_lab.sweeps.store import ResultStore

Executor = SerialExecutor | ProcessExecutor | RayExecutor


@dataclass
class SweepSummary:
    total: int
    skipped: int
    ran: int
    failed: dict[str, str]
    redone_unreadable: list[str]
    wall_time_s: float
    folder: Path
    keys: list[str] = field(default_factory=list)  # the grid's spec keys
    executor: str = "serial"

    def __str__(self) -> str:
        s = (
            f"{self.folder}: {self.total} specs, {self.skipped} already done, {self.ran} ran, "
            f"{len(self.failed)} failed, {self.wall_time_s:.0f} s ({self.executor})"
        )
        if self.redone_unreadable:
            s += f"; redid {len(self.redone_unreadable)} unreadable records"
        return s


def run_sweep(
    experiment: Experiment,
    grid_name: str = "full",
    jobs: int = 1,
    root: str | Path | None = None,
    progress: bool = True,
    on_record: Callable[[str], None] | None = None,
    executor: str | Executor = "process",
    address: str | None = None,
) -> SweepSummary:
    """Run every spec of ``experiment``'s grid that is not yet in its store.

    ``executor``: ``"process"`` (``jobs`` local worker processes; one job runs in this
    process), ``"serial"``, ``"ray"`` (a local Ray with ``jobs`` CPUs, or the cluster at
    ``address``), or an executor object. Finished runs are never redone; invalid records
    are reported and redone. Find experiments by name with
    :func:`lora_lab.findings.get_experiment`.
    """
    if not isinstance(experiment, Experiment):
        raise TypeError(
            f"run_sweep needs an Experiment, got {type(experiment).__name__}; "
            "look one up with lora_lab.findings.get_experiment(name)"
        )
    folder = results_dir(experiment.name, grid_name, root)
    store = ResultStore(folder)
    specs = experiment.specs(grid_name)
    done, bad = store.scan()
    todo = [s for s in specs if s.key not in done]
    if isinstance(executor, str):
        if executor == "process" and (jobs == 1 or len(todo) <= 1):
            executor = "serial"
        executor = make_executor(executor, jobs=jobs, address=address)
    failed: dict[str, str] = {}
    t0 = time.perf_counter()
    bar = tqdm(
        total=len(specs),
        initial=len(specs) - len(todo),
        desc=f"sweep {experiment.name}",
        disable=not progress,
    )
    try:
        for key, record, err in executor.map(todo) if todo else ():
            if err or record is None:
                failed[key] = err or "no record returned"
            else:
                store.write(key, record)
                if on_record:
                    on_record(key)
            bar.update(1)
    finally:
        bar.close()
    keys = [s.key for s in specs]
    return SweepSummary(
        len(specs),
        len(specs) - len(todo),
        len(todo) - len(failed),
        failed,
        [p.stem for p in bad if p.stem in keys],  # invalid records of this grid: redone
        time.perf_counter() - t0,
        folder,
        keys,
        executor.name,
    )
