"""Live-training time on an idle machine and beside one competing CPU-bound process, for
each torch thread count: why lora_lab uses 1 thread unless told otherwise.

    python benchmarks/threads.py [--threads 1 2] [--steps 10] [--repeats 3]

Prints a Markdown table (seconds for one notebook-style training cell: LoRA r=4 on `tiny`,
`instruct`, batch 32) and whether the default meets the target: at most 2.5x slower when
another process competes for a core. Run it on an otherwise idle machine; the competitor
is a pure-Python busy loop, i.e. one other kernel or process doing work.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from lora_lab import LoraConfig, load_base, train
from lora_lab.tasks import make_task
from lora_lab.threads import DEFAULT_THREADS

TARGET_SLOWDOWN = 2.5


def cell_seconds(base, data, steps: int, threads: int, repeats: int) -> float:
    """Median wall time of one training cell at ``threads`` torch threads."""
    torch.set_num_threads(threads)
    times = []
    for seed in range(repeats):
        t0 = time.perf_counter()
        train(base, data, LoraConfig(r=4), lr=2e-3, steps=steps, batch_size=32,
              evals_per_decade=1, eval_limit=64, seed=seed, progress=False)  # fmt: skip
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="counts to compare")
    p.add_argument("--steps", type=int, default=10, help="training steps per cell")
    p.add_argument("--repeats", type=int, default=3, help="cells per measurement (median)")
    args = p.parse_args()
    base = load_base("tiny")
    task = make_task("instruct", n_train=2000, n_test=200, seed=0)
    cell_seconds(base, task.train, 2, 1, 1)  # warm-up: imports, allocator, caches
    rows = []
    for threads in args.threads:
        idle = cell_seconds(base, task.train, args.steps, threads, args.repeats)
        rival = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)
            loaded = cell_seconds(base, task.train, args.steps, threads, args.repeats)
        finally:
            rival.kill()
            rival.wait()
        rows.append((threads, idle, loaded, loaded / idle))
    print("| torch threads | idle (s) | beside 1 busy process (s) | slowdown |")
    print("|---|---|---|---|")
    for threads, idle, loaded, ratio in rows:
        mark = " (default)" if threads == DEFAULT_THREADS else ""
        print(f"| {threads}{mark} | {idle:.2f} | {loaded:.2f} | {ratio:.1f}x |")
    default = [r for r in rows if r[0] == DEFAULT_THREADS]
    if default:
        ok = default[0][3] <= TARGET_SLOWDOWN
        print(f"\ndefault ({DEFAULT_THREADS} thread): {default[0][3]:.1f}x slower when loaded; "
              f"target <= {TARGET_SLOWDOWN}x: {'met' if ok else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
