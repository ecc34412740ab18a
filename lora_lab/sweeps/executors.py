"""Executors: where a sweep's runs happen. One contract for all of them: ``map(specs)``
yields ``(key, record, error)`` as runs finish; the driver writes the records.

- :class:`SerialExecutor`: in this process (debugging, notebooks).
- :class:`ProcessExecutor`: a local pool of spawned processes, ``threads`` torch threads each
  (2 x 1 beats 1 x 2 on a 2-core machine).
- :class:`RayExecutor`: a Ray cluster (``pip install "lora_lab[ray]"``), or a local Ray when
  no address is given. Ray does the scheduling; lora_lab writes no scheduler of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import torch

from lora_lab.sweeps.spec import RunSpec
from lora_lab.sweeps.worker import execute

Outcome = tuple[str, "dict[str, Any] | None", str]


def default_threads(jobs: int) -> int:
    """Torch threads per worker so that ``jobs`` workers share the cores without oversubscribing."""
    return max(1, (os.cpu_count() or 1) // jobs)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


@dataclass
class SerialExecutor:
    threads: int | None = None
    name = "serial"

    def map(self, specs: Sequence[RunSpec]) -> Iterator[Outcome]:
        before = torch.get_num_threads()
        try:
            for spec in specs:
                yield execute(spec.to_dict(), self.threads)
        finally:
            torch.set_num_threads(before)


@dataclass
class ProcessExecutor:
    jobs: int = 2
    threads: int | None = None
    name = "process"

    def map(self, specs: Sequence[RunSpec]) -> Iterator[Outcome]:
        threads = self.threads or default_threads(self.jobs)
        with ProcessPoolExecutor(
            self.jobs,
            mp_context=get_context("spawn"),
            initializer=_init_worker,
            initargs=(threads,),
        ) as pool:
            futures = [pool.submit(execute, s.to_dict(), threads) for s in specs]
            for fut in as_completed(futures):
                yield fut.result()


@dataclass
class RayExecutor:
    """Runs each spec as a Ray task of ``cpus_per_run`` CPUs. ``address=None`` starts a
    local Ray with ``jobs`` CPUs (and stops it afterwards); ``"auto"`` or ``"ray://host:10001"``
    joins a running cluster, whose nodes need lora_lab installed."""

    address: str | None = None
    jobs: int = 2
    threads: int = 1
    cpus_per_run: float = 1.0
    name = "ray"

    def map(self, specs: Sequence[RunSpec]) -> Iterator[Outcome]:
        try:
            import ray  # optional dependency: pip install "lora_lab[ray]"
        except ImportError as e:
            raise ImportError('the Ray executor needs Ray: pip install "lora_lab[ray]"') from e
        started = not ray.is_initialized()
        if started:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address is None:
                kwargs["num_cpus"] = self.jobs
            ray.init(address=self.address, **kwargs)
        try:
            remote = ray.remote(num_cpus=self.cpus_per_run)(execute)
            pending = [remote.remote(s.to_dict(), self.threads) for s in specs]
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])
        finally:
            if started:
                ray.shutdown()


EXECUTORS = ("serial", "process", "ray")


def make_executor(
    kind: str, jobs: int = 2, address: str | None = None, threads: int | None = None
) -> SerialExecutor | ProcessExecutor | RayExecutor:
    """An executor by name: ``serial``, ``process`` or ``ray``."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    if kind == "serial":
        return SerialExecutor(threads)
    if kind == "process":
        return ProcessExecutor(jobs, threads)
    if kind == "ray":
        return RayExecutor(address, jobs, threads or 1)
    raise ValueError(f"executor must be one of {EXECUTORS}, got {kind!r}")
