"""Sweeps: run every spec of an experiment's grid that is not yet in its store.

The driver asks the store what is done, hands the rest to an executor and writes each
record the moment it comes back, so a killed sweep resumes where it stopped and a record
is the same whichever executor produced it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lora_lab.paths import results_root
from lora_lab.progress import progress_bar
from lora_lab.sweeps.claims import Claims
from lora_lab.sweeps.executors import (
    ProcessExecutor,
    RayExecutor,
    SerialExecutor,
    make_executor,
)
from lora_lab.sweeps.experiment import Experiment, results_dir
from lora_lab.sweeps.fast import families_first, worth_compiling_sweep
from lora_lab.sweeps.identity import CODE
from lora_lab.sweeps.spec import RunSpec
from lora_lab.sweeps.store import ResultStore
from lora_lab.sweeps.worker import SKEW

Executor = SerialExecutor | ProcessExecutor | RayExecutor


class CodeSkewError(RuntimeError):
    """A worker imported other code than its driver: nothing it returns can be recorded."""


def warn_if_untraceable(folder: Path) -> None:
    """Records written into the shipped results must name code that exists in a commit; a
    driver whose package source differs from its commit warns before the first run."""
    commit = CODE.git_commit or ""
    try:
        shipped = Path(folder).resolve().is_relative_to(results_root().resolve())
    except OSError:
        shipped = False
    if shipped and commit.endswith("-dirty"):
        warnings.warn(
            f"writing into the shipped results ({folder}) from a tree whose lora_lab/ differs "
            f"from commit {commit[:12]}: the records will name that commit but ran other code. "
            "Commit first (git commit -am ...), then start the sweep; each record also carries "
            f"the source's content hash ({CODE.source_hash})",
            stacklevel=3,
        )


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
    compiled: bool = False  # whether its runs trained through torch.compile

    def __str__(self) -> str:
        how = self.executor + (", compiled" if self.compiled else "")
        s = (
            f"{self.folder}: {self.total} specs, {self.skipped} already done, {self.ran} ran, "
            f"{len(self.failed)} failed, {self.wall_time_s:.0f} s ({how})"
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
    poll_s: float = 2.0,
    compile: bool | str = "auto",
) -> SweepSummary:
    """Run every spec of ``experiment``'s grid that is not yet in its store.

    ``executor``: ``"process"`` (``jobs`` local worker processes; one job runs in this
    process), ``"serial"``, ``"ray"`` (a local Ray with ``jobs`` CPUs, or the cluster at
    ``address``), or an executor object. Finished runs are never redone; invalid records
    are reported and redone. Find experiments by name with
    :func:`lora_lab.findings.get_experiment`.

    Several drivers may share one store (a re-launched sweep, two machines on one folder):
    each run is claimed before it starts (:mod:`lora_lab.sweeps.claims`), a driver skips
    runs another live driver holds and waits for their records (checking every ``poll_s``
    seconds), and takes over the claims of a driver that died. A worker whose code differs
    from this driver's stops the sweep at once (:class:`CodeSkewError`).

    ``compile``: train through torch.compile, whose graphs each worker keeps for its next
    runs (:mod:`lora_lab.training.compiled`). ``"auto"`` compiles when each worker has
    enough runs ahead per shape family to earn its compiles back and a compiler is at hand
    (:func:`~lora_lab.sweeps.fast.worth_compiling_sweep`); a record says
    whether its run was compiled. Ignored by an executor object, which carries its own.
    """
    if not isinstance(experiment, Experiment):
        raise TypeError(
            f"run_sweep needs an Experiment, got {type(experiment).__name__}; "
            "look one up with lora_lab.findings.get_experiment(name)"
        )
    folder = results_dir(experiment.name, grid_name, root)
    store = ResultStore(folder)
    done, bad = store.scan()
    bad_keys = {p.stem for p in bad}
    specs = sweep_specs(experiment, grid_name, done)  # the grid, and the search so far
    skipped = sum(s.key in done for s in specs)
    if compile not in (True, False, "auto"):
        raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")
    if compile == "auto":
        compile = worth_compiling_sweep([s for s in specs if s.key not in done], jobs)
    if isinstance(executor, str):
        if executor == "process" and (jobs == 1 or len(specs) - skipped <= 1):
            executor = "serial"
        executor = make_executor(executor, jobs=jobs, address=address, compile=compile)
    failed: dict[str, str] = {}
    ran = 0
    t0 = time.perf_counter()
    warn_if_untraceable(store.folder)
    claims = Claims(store.folder)  # where this sweep writes: the user's mirror if read-only
    compiled = bool(getattr(executor, "compile", False))
    label = f"sweep {experiment.name}" + (", compiled" if compiled else "")
    bar = progress_bar(total=len(specs), initial=skipped, desc=label,
               disable=not progress)  # fmt: skip

    def claimed(todo: list[RunSpec], elsewhere: list[str]) -> Iterator[RunSpec]:
        """``todo`` as this driver claims it; runs another live driver holds go to
        ``elsewhere``, and a run finished by another driver meanwhile is taken as done."""
        for spec in todo:
            if not claims.claim(spec.key):
                elsewhere.append(spec.key)
                continue
            record = store.read(spec.key)
            if record is not None:
                claims.release(spec.key)
                done[spec.key] = record
                bar.update(1)
                continue
            yield spec

    try:
        while True:
            todo = [s for s in specs if s.key not in done and s.key not in failed]
            if compiled:  # workers start on different shape families: see families_first
                todo = families_first(todo)
            elsewhere: list[str] = []
            for key, record, err in executor.map(claimed(todo, elsewhere)) if todo else ():
                if err.startswith(SKEW):
                    raise CodeSkewError(err)
                if err or record is None:
                    failed[key] = err or "no record returned"
                else:
                    store.write(key, record)
                    done[key] = record
                    ran += 1
                    if on_record:
                        on_record(key)
                claims.release(key)  # after the record is in place: no one redoes it
                bar.update(1)
            if elsewhere:  # another driver runs these: wait for its records, or its death
                time.sleep(poll_s)
                for key in elsewhere:
                    record = store.read(key)
                    if record is not None:
                        done[key] = record
                        bar.update(1)
                continue
            new = _search_round(experiment, grid_name, specs, done)
            if not new or failed:
                break
            specs += new
            bar.total = len(specs)
            bar.refresh()
    finally:
        claims.close()
        bar.close()
    keys = [s.key for s in specs]
    return SweepSummary(
        len(specs),
        skipped,
        ran,
        failed,
        [k for k in keys if k in bad_keys],  # invalid records of this sweep: redone
        time.perf_counter() - t0,
        store.folder,
        keys,
        executor.name,
        compiled,
    )


def _search_round(
    experiment: Experiment, grid_name: str, specs: list[RunSpec], records: dict[str, dict]
) -> list[RunSpec]:
    if not experiment.searches(grid_name):
        return []
    known = {s.key for s in specs}
    return [s for s in experiment.lr_search.propose(specs, records) if s.key not in known]


def sweep_specs(experiment: Experiment, grid_name: str, records: dict[str, dict]) -> list[RunSpec]:
    """Every spec a sweep has asked for so far: its grid and, with an LR search, each round
    the search proposed given ``records`` (replayed without running anything). Analysis
    uses it to read exactly the sweep's runs from a folder."""
    specs = experiment.specs(grid_name)
    while True:
        new = _search_round(experiment, grid_name, specs, records)
        if not new:
            return specs
        specs += new
        if any(s.key not in records for s in new):
            return specs  # the search stops here until these have run


def search_finished(experiment: Experiment, grid_name: str, records: dict[str, dict]) -> bool:
    """Whether every spec the sweep asks for has a record and the search wants no more."""
    specs = sweep_specs(experiment, grid_name, records)
    return all(s.key in records for s in specs) and not _search_round(
        experiment, grid_name, specs, records
    )
