"""Executors: where a sweep's runs happen. One contract for all of them: ``map(specs)``
yields ``(key, record, error)`` as runs finish; the driver writes the records.

- :class:`SerialExecutor`: in this process (debugging, notebooks).
- :class:`ProcessExecutor`: a local pool of spawned processes, ``threads`` torch threads each
  (2 x 1 beats 1 x 2 on a 2-core machine).
- :class:`RayExecutor`: a Ray cluster (``pip install "lora_lab[ray]"``), or a local Ray when
  no address is given. Ray does the scheduling; lora_lab writes no scheduler of its own.

``map`` reads its specs lazily and keeps at most ``jobs`` runs in flight, so the driver
claims a run (:mod:`lora_lab.sweeps.claims`) only when a worker is free to start it. Every
run carries the driver's code identity; a worker that imported other code refuses it.
Local workers die with their driver: each watches its parent and exits within a second of
the driver's death (SIGKILL included), and exits at once on SIGTERM. Ray fate-shares a
driver's tasks with the driver itself.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

from lora_lab.sweeps.identity import CODE
from lora_lab.sweeps.spec import RunSpec
from lora_lab.sweeps.worker import execute
from lora_lab.threads import apply_default_threads, set_threads

Outcome = tuple[str, "dict[str, Any] | None", str]


def default_threads(jobs: int) -> int:
    """Torch threads per worker so that ``jobs`` workers share the cores without oversubscribing."""
    return max(1, (os.cpu_count() or 1) // jobs)


class MissingExtraError(ImportError):
    """An optional dependency is not installed (a user error: the message says what to install)."""


class ClusterUnreachableError(ConnectionError):
    """The Ray cluster at the given address cannot be reached (a user error, said in a line)."""


def _exit_now(signum: int, _frame: Any) -> None:
    os._exit(128 + signum)


def _watch_parent(parent: int, interval_s: float) -> None:
    """Exit this process as soon as ``parent`` is no longer its parent (it died, and the
    orphan was re-parented): a killed driver must not leave workers training for nobody."""
    stop = threading.Event()
    while not stop.wait(interval_s):
        if os.getppid() != parent:
            os._exit(1)


def _init_worker(threads: int, parent: int, interval_s: float = 1.0) -> None:
    signal.signal(signal.SIGTERM, _exit_now)
    if os.getppid() != parent:  # the driver died before this worker started
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent, interval_s), daemon=True,
                     name="lora-lab-parent-watch").start()  # fmt: skip
    set_threads(threads)


def _windowed(specs: Iterable[RunSpec], window: int, submit: Any, done: Any) -> Iterator[Any]:
    """Keep at most ``window`` of ``specs`` in flight (``submit(spec)`` starts one and
    returns a handle; ``done(handles)`` blocks until some finish and returns (finished,
    outcomes)); yield each outcome as it comes. Specs are drawn only when a slot is free."""
    it = iter(specs)
    pending: list[Any] = []
    while True:
        while len(pending) < window:
            spec = next(it, None)
            if spec is None:
                break
            pending.append(submit(spec))
        if not pending:
            return
        finished, outcomes = done(pending)
        pending = [h for h in pending if h not in finished]
        yield from outcomes


@dataclass
class SerialExecutor:
    threads: int | None = None
    compile: bool = False
    name = "serial"

    def map(self, specs: Iterable[RunSpec]) -> Iterator[Outcome]:
        # the rule first (work starts here), so what is restored afterwards is the rule's
        # count or the caller's explicit one, never torch's one-thread-per-core default
        before = apply_default_threads()
        try:
            for spec in specs:
                yield execute(spec.to_dict(), self.threads, compile=self.compile)
        finally:
            set_threads(before)


@dataclass
class ProcessExecutor:
    jobs: int = 2
    threads: int | None = None
    compile: bool = False
    name = "process"

    def map(self, specs: Iterable[RunSpec]) -> Iterator[Outcome]:
        threads = self.threads or default_threads(self.jobs)
        pool = ProcessPoolExecutor(
            self.jobs, mp_context=get_context("spawn"), initializer=_init_worker,
            initargs=(threads, os.getpid()),
        )  # fmt: skip

        def finished(pending: list[Future]) -> tuple[set, list[Outcome]]:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            return done, [f.result() for f in pending if f in done]

        try:
            yield from _windowed(
                specs, self.jobs,
                lambda s: pool.submit(execute, s.to_dict(), threads, CODE.as_dict(), self.compile),
                finished,
            )  # fmt: skip
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class RayExecutor:
    """Runs each spec as a Ray task of ``cpus_per_run`` CPUs. ``address=None`` starts a
    local Ray with ``jobs`` CPUs (and stops it afterwards); ``"auto"`` or ``"ray://host:10001"``
    joins a running cluster, whose nodes need lora_lab installed."""

    address: str | None = None
    jobs: int = 2
    threads: int = 1
    cpus_per_run: float = 1.0
    compile: bool = False
    name = "ray"

    def map(self, specs: Iterable[RunSpec]) -> Iterator[Outcome]:
        try:
            import ray  # optional dependency: pip install "lora_lab[ray]"
        except ImportError as e:
            raise MissingExtraError(
                'the Ray executor needs Ray: pip install "lora_lab[ray]"'
            ) from e
        started = not ray.is_initialized()
        if started:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address is None:
                kwargs["num_cpus"] = self.jobs
            try:
                ray.init(address=self.address, **kwargs)
            except (ConnectionError, TimeoutError) as e:
                raise ClusterUnreachableError(
                    f"cannot reach a Ray cluster at {self.address!r} ({type(e).__name__}). "
                    "Start one there (`ray start --head` on that machine; a node joins with "
                    "`ray start --address HOST:6379`), give --address auto on a node of a "
                    "running cluster, or leave --address out for a local Ray"
                ) from None
        # as many runs in flight as the cluster has room for (a local Ray: ``jobs`` CPUs)
        cpus = ray.cluster_resources().get("CPU", self.jobs) if self.address else self.jobs
        window = max(1, int(cpus // self.cpus_per_run))

        def finished(pending: list) -> tuple[set, list[Outcome]]:
            done, _ = ray.wait(pending, num_returns=1)
            return set(done), [ray.get(done[0])]

        try:
            remote = ray.remote(num_cpus=self.cpus_per_run)(execute)
            yield from _windowed(
                specs, window,
                lambda s: remote.remote(s.to_dict(), self.threads, CODE.as_dict(), self.compile),
                finished,
            )  # fmt: skip
        finally:
            if started:
                ray.shutdown()


EXECUTORS = ("serial", "process", "ray")


def make_executor(
    kind: str, jobs: int = 2, address: str | None = None, threads: int | None = None,
    compile: bool = False,
) -> SerialExecutor | ProcessExecutor | RayExecutor:
    """An executor by name: ``serial``, ``process`` or ``ray``; ``compile``: its runs train
    compiled (:mod:`lora_lab.training.compiled`)."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    if kind == "serial":
        return SerialExecutor(threads, compile)
    if kind == "process":
        return ProcessExecutor(jobs, threads, compile)
    if kind == "ray":
        return RayExecutor(address, jobs, threads or 1, compile=compile)
    raise ValueError(f"executor must be one of {EXECUTORS}, got {kind!r}")
