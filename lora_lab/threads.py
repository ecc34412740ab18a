"""How many CPU threads torch uses: one rule, applied where work starts (the CLI, a panel's
Run, ``train``, a sweep, building or loading a model), never on import.

torch defaults to one thread per core. On a 2-core machine that is fine while nothing else
runs and collapses as soon as anything does: the threads spin-wait on each other while the
other process holds a core. Measured on the project's 2-core machine, 10 LoRA steps on
`tiny` beside a 2-worker sweep took 3.0 s at 1 thread and 59.8 s at 2 (20x);
``benchmarks/threads.py`` measures it on yours. So:

1. an explicit count (``configure_threads(4)``, ``--threads 4``);
2. ``LORA_LAB_THREADS``, then ``OMP_NUM_THREADS``;
3. 1 thread on a shared JupyterHub (many kernels share the cores) or where this process
   may use at most 2 CPUs (its affinity or its cgroup quota);
4. otherwise half the usable CPUs, at most 8: fast on an idle laptop, with room for the
   notebook server, the browser and a sweep worker.

Importing lora_lab changes nothing: a program that imports it keeps its own torch settings.
The rule runs once per process where lora_lab starts work (:func:`apply_default_threads`);
after an explicit :func:`configure_threads` it never overrides the caller.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch

ENV_VARS = ("LORA_LAB_THREADS", "OMP_NUM_THREADS")
HUB_VARS = ("JUPYTERHUB_USER", "JUPYTERHUB_API_TOKEN")
MAX_DEFAULT_THREADS = 8
_state = {"applied": False}


def _positive(value: object, source: str) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1 or isinstance(value, bool):
        raise ValueError(f"{source} must be a positive whole number of threads, got {value!r}")
    return n


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs this process's cgroup may use (cgroup v2 ``cpu.max`` or v1 quota / period), or
    None where no quota is set or none can be read (macOS, Windows)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def on_shared_hub() -> bool:
    """Whether this runs inside a JupyterHub single-user server (it sets these variables)."""
    return any(os.environ.get(v) for v in HUB_VARS)


def choose_threads(explicit: int | None = None) -> tuple[int, str]:
    """The thread count to use and why (for messages, ``lora-lab check`` and records)."""
    if explicit is not None:
        return _positive(explicit, "threads"), "explicit"
    for var in ENV_VARS:
        value = os.environ.get(var)
        if value not in (None, ""):
            return _positive(value, var), var
    if on_shared_hub():
        return 1, "1 on a shared JupyterHub (many kernels share its cores)"
    cpus = usable_cpus()
    if cpus <= 2:
        return 1, f"1: this process may use {cpus} CPU(s), and 2 threads collapse when busy"
    n = min(MAX_DEFAULT_THREADS, cpus // 2)
    return n, f"half of {cpus} usable CPUs (at most {MAX_DEFAULT_THREADS})"


def configure_threads(explicit: int | None = None) -> int:
    """Set torch's intra-op thread count by the rule above and return it. An explicit call
    wins for the rest of the process: :func:`apply_default_threads` then does nothing."""
    n, _ = choose_threads(explicit)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    _state["applied"] = True
    return n


def apply_default_threads() -> int:
    """Apply the rule once per process, where lora_lab starts work; later calls, and calls
    after :func:`configure_threads`, leave torch as it is. A malformed environment variable
    warns and falls back to 1 thread rather than stopping the work."""
    if _state["applied"]:
        return torch.get_num_threads()
    try:
        return configure_threads()
    except ValueError as bad:
        warnings.warn(f"{bad}; using 1 thread", stacklevel=2)
        return configure_threads(1)


def set_threads(n: int) -> None:
    """Set torch's thread count for lora_lab's own work (a sweep worker, a rerun) and mark
    the rule applied, so :func:`apply_default_threads` never overrides it."""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    _state["applied"] = True
