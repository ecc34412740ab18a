"""How many CPU threads torch uses: one place decides, for notebooks, panels and the CLI.

torch defaults to one thread per core. On a 2-core machine that is fine while nothing else
runs and collapses as soon as anything does: the threads spin-wait on each other while the
other process holds a core. Measured on the project's 2-core machine, 10 LoRA steps on
`tiny` beside a 2-worker sweep took 3.0 s at 1 thread and 59.8 s at 2 (20x);
``benchmarks/threads.py`` measures it on yours. A classroom runs many kernels on one
server, so the default is 1 thread: a little slower on an idle machine, never 20x slower on
a busy one.

Precedence: an explicit count (``configure_threads(4)``, ``--threads 4``), then the
``LORA_LAB_THREADS`` environment variable, then ``OMP_NUM_THREADS``, then 1.
"""

from __future__ import annotations

import os

import torch

ENV_VARS = ("LORA_LAB_THREADS", "OMP_NUM_THREADS")
DEFAULT_THREADS = 1


def _positive(value: object, source: str) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1 or isinstance(value, bool):
        raise ValueError(f"{source} must be a positive whole number of threads, got {value!r}")
    return n


def choose_threads(explicit: int | None = None) -> tuple[int, str]:
    """The thread count to use and where it came from (for messages and records)."""
    if explicit is not None:
        return _positive(explicit, "threads"), "explicit"
    for var in ENV_VARS:
        value = os.environ.get(var)
        if value not in (None, ""):
            return _positive(value, var), var
    return DEFAULT_THREADS, "default (1: safe on a shared machine)"


def configure_threads(explicit: int | None = None) -> int:
    """Set torch's intra-op thread count by the rule above and return it."""
    n, _ = choose_threads(explicit)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
