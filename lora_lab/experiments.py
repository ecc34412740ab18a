"""Experiments: named grids of fine-tuning runs, resumable sweeps over them.

An experiment is a base preset, a task and a grid of run specs. Each spec is a plain dict
that says everything needed to redo the run (method, r, targets, lr, batch size, steps,
seed, task settings), so its hash is the key of its record in the results store. Every
experiment has a ``full`` grid (the shipped results) and a ``ci`` grid that runs in well
under a minute. ``lora-lab sweep NAME`` runs whatever is not yet in the store.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from lora_lab.store import ResultStore, provenance, spec_hash

Spec = dict[str, Any]


def grid(**axes: Any) -> list[Spec]:
    """Cartesian product of the given axes; scalars are fixed values.

    ``grid(method="full", lr=[1e-4, 1e-3], seed=[0, 1])`` -> 4 specs.
    """
    keys = list(axes)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in axes.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def method_grid(
    *,
    seeds: list[int] | tuple[int, ...],
    full_lrs: list[float],
    ranks: list[int],
    lora_lrs: list[float],
    target_modules: Any = "all",
    **fixed: Any,
) -> list[Spec]:
    """FullFT over ``full_lrs`` and LoRA over ``ranks`` x ``lora_lrs``, for each seed in turn.

    Seeds are the outer loop, so a sweep stopped part-way already holds complete seeds.
    ``fixed`` values (scalars or lists, as in :func:`grid`) apply to every spec.
    """
    return [
        spec
        for seed in seeds
        for spec in grid(method="full", lr=full_lrs, seed=seed, **fixed)
        + grid(
            method="lora", r=ranks, target_modules=target_modules, lr=lora_lrs, seed=seed, **fixed
        )
    ]


def lr_grid(low: float, high: float, per_decade: int = 3) -> list[float]:
    """Learning rates 10**(k / per_decade) from ``low`` to ``high`` (3 significant digits).

    The points sit on one lattice for every call with the same ``per_decade``, so grids for
    different methods share their common learning rates exactly.
    """
    import math

    k0 = round(math.log10(low) * per_decade)
    k1 = round(math.log10(high) * per_decade)
    return [float(f"{10 ** (k / per_decade):.3g}") for k in range(k0, k1 + 1)]


@dataclass
class Experiment:
    """A named sweep. ``grids`` maps a grid name (``full``, ``ci``) to its run specs; every
    spec is completed with ``base``, ``task``, ``task_kwargs`` and ``defaults``."""

    name: str
    description: str
    base: str
    task: str
    task_kwargs: dict[str, Any]
    grids: dict[str, list[Spec]]
    defaults: dict[str, Any] = field(default_factory=dict)
    eval_split: str = "test"

    def specs(self, grid_name: str = "full") -> list[Spec]:
        if grid_name not in self.grids:
            raise ValueError(
                f"experiment {self.name!r} has grids {sorted(self.grids)}, not {grid_name!r}"
            )
        out = []
        for s in self.grids[grid_name]:
            spec = {
                "experiment": self.name,
                "base": self.base,
                "task": self.task,
                "task_kwargs": self.task_kwargs,
                "eval_split": self.eval_split,
                **self.defaults,
                **s,
            }
            if spec.get("method", "full") == "full":
                for k in ("r", "target_modules", "lora_alpha"):
                    spec.pop(k, None)
            out.append(spec)
        # drop duplicates (e.g. FullFT crossed with a rank axis), keep order
        seen, unique = set(), []
        for spec in out:
            key = spec_hash(spec)
            if key not in seen:
                seen.add(key)
                unique.append(spec)
        return unique


EXPERIMENTS: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    EXPERIMENTS[exp.name] = exp
    return exp


def get_experiment(name: str) -> Experiment:
    from lora_lab import registry  # noqa: F401  (fills EXPERIMENTS)

    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def results_dir(experiment: str, grid_name: str = "full", root: str | Path | None = None) -> Path:
    """Shipped results live in ``data/results/<name>``; other grids in
    ``reports/results/<name>-<grid>`` so quick runs never mix with the shipped ones."""
    if root is not None:
        return Path(root) / (experiment if grid_name == "full" else f"{experiment}-{grid_name}")
    from lora_lab.bases import data_dir

    if grid_name == "full":
        return data_dir() / "results" / experiment
    return data_dir().parent / "reports" / "results" / f"{experiment}-{grid_name}"


# ----------------------------------------------------------------------------- running


@lru_cache(maxsize=8)
def _task(name: str, kwargs_items: tuple) -> Any:
    from lora_lab.tasks import make_task

    return make_task(name, **dict(kwargs_items))


@lru_cache(maxsize=4)
def _base(preset: str) -> Any:
    from lora_lab.bases import load_base

    return load_base(preset)


def _freeze(d: dict[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


TRAIN_KEYS = (
    "lr",
    "steps",
    "batch_size",
    "grad_accum",
    "schedule",
    "warmup_steps",
    "seed",
    "evals_per_decade",
    "eval_limit",
    "accuracy_limit",
    "weight_decay",
)


def run_spec(spec: Spec, progress: bool = False) -> dict[str, Any]:
    """Train one spec and return its record (spec, result, provenance)."""
    from lora_lab.lora import LoraConfig
    from lora_lab.training import train

    task = _task(spec["task"], _freeze(spec.get("task_kwargs", {})))
    split = spec.get("eval_split", "test")
    eval_data = task.extra[split] if split in task.extra else getattr(task, split)
    if spec.get("method", "full") == "full":
        method: Any = "full"
    else:
        method = LoraConfig(
            r=spec["r"],
            target_modules=spec.get("target_modules", "all"),
            lora_alpha=spec.get("lora_alpha", 32.0),
        )
    kwargs = {k: spec[k] for k in TRAIN_KEYS if k in spec}
    measure_bits = bool(spec.get("measure_bits", False))
    metrics = None
    if measure_bits:
        from lora_lab.capacity import sample_bits_metric

        metrics = sample_bits_metric(eval_data, limit=spec.get("eval_limit") or 512)
    t0 = time.perf_counter()
    result = train(
        _base(spec["base"]),
        task.train,
        method,
        eval_data=eval_data,
        progress=progress,
        keep_model=measure_bits,
        device=spec.get("device", "auto"),
        eval_metrics=metrics,
        **kwargs,
    )
    if measure_bits and not result.diverged:
        from lora_lab.capacity import bits_stored

        # exact, on every fact (the curve's points are estimated on a sample)
        result.final.update(bits_stored(result.model, eval_data))
    result.model = None
    return {
        "key": spec_hash(spec),
        "spec": spec,
        "result": result.to_dict(),
        "provenance": {**provenance(), "wall_time_s": round(time.perf_counter() - t0, 2)},
    }


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _run_and_store(spec: Spec, folder: str) -> tuple[str, bool, str]:
    """Worker body: train, then write the record atomically (a killed parent loses nothing
    that finished). Returns (key, diverged, error message or '')."""
    key = spec_hash(spec)
    try:
        record = run_spec(spec)
    except Exception as e:  # a crash in one run must not end the sweep
        return key, False, f"{type(e).__name__}: {e}"
    ResultStore(folder).write(key, record)
    return key, bool(record["result"]["diverged"]), ""


@dataclass
class SweepSummary:
    total: int
    skipped: int
    ran: int
    failed: dict[str, str]
    redone_unreadable: list[str]
    wall_time_s: float
    folder: Path
    keys: list[str] = field(default_factory=list)  # the grid's spec hashes

    def __str__(self) -> str:
        s = (
            f"{self.folder}: {self.total} specs, {self.skipped} already done, {self.ran} ran, "
            f"{len(self.failed)} failed, {self.wall_time_s:.0f} s"
        )
        if self.redone_unreadable:
            s += f"; redid {len(self.redone_unreadable)} unreadable records"
        return s


def run_sweep(
    experiment: Experiment | str,
    grid_name: str = "full",
    jobs: int = 1,
    root: str | Path | None = None,
    progress: bool = True,
    on_record: Callable[[str], None] | None = None,
) -> SweepSummary:
    """Run every spec of ``experiment``'s grid that is not yet in its store.

    ``jobs`` worker processes each get ``cores // jobs`` torch threads (2 x 1 beat 1 x 2 on a
    2-core machine). Finished runs are never redone; unreadable records are reported and redone.
    """
    from tqdm.auto import tqdm

    exp = get_experiment(experiment) if isinstance(experiment, str) else experiment
    if jobs < 1:
        raise ValueError("jobs must be >= 1")
    folder = results_dir(exp.name, grid_name, root)
    store = ResultStore(folder)
    done, bad = store.scan()
    specs = exp.specs(grid_name)
    todo = [s for s in specs if spec_hash(s) not in done]
    failed: dict[str, str] = {}
    t0 = time.perf_counter()
    bar = tqdm(
        total=len(specs),
        initial=len(specs) - len(todo),
        desc=f"sweep {exp.name}",
        disable=not progress,
    )
    threads = max(1, (os.cpu_count() or 1) // jobs)
    if jobs == 1 or len(todo) <= 1:
        for spec in todo:
            key, _, err = _run_and_store(spec, str(folder))
            if err:
                failed[key] = err
            elif on_record:
                on_record(key)
            bar.update(1)
    else:
        ctx = get_context("spawn")
        with ProcessPoolExecutor(
            jobs, mp_context=ctx, initializer=_worker_init, initargs=(threads,)
        ) as pool:
            futures = [pool.submit(_run_and_store, s, str(folder)) for s in todo]
            for fut in as_completed(futures):
                key, _, err = fut.result()
                if err:
                    failed[key] = err
                elif on_record:
                    on_record(key)
                bar.update(1)
    bar.close()
    keys = [spec_hash(s) for s in specs]
    return SweepSummary(
        len(specs),
        len(specs) - len(todo),
        len(todo) - len(failed),
        failed,
        [p.stem for p in bad if p.stem in keys],  # unreadable records of this grid: redone
        time.perf_counter() - t0,
        folder,
        keys,
    )
