"""The worker side of a sweep: train one spec and return its record. It writes nothing, so
a record is the same whichever executor ran it, and the driver alone owns the store."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch

from lora_lab.sweeps.identity import CODE
from lora_lab.sweeps.spec import RunSpec, as_spec
from lora_lab.sweeps.store import provenance
from lora_lab.tasks import Task, make_task
from lora_lab.threads import set_threads
from lora_lab.training.bits import bits_stored, sample_bits_metric
from lora_lab.training.compiled import compiled_steps, ran_compiled
from lora_lab.training.dpo import train_dpo_with
from lora_lab.training.rl import train_rl_with
from lora_lab.training.sft import RunResult, train_with
from lora_lab.training.warm_start import WARM_STARTS, resolve_base


def _freeze(d: dict[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


@lru_cache(maxsize=8)
def _task(name: str, kwargs_items: tuple) -> Task:
    return make_task(name, **dict(kwargs_items))


@lru_cache(maxsize=4)
def _base(preset: str) -> torch.nn.Module:
    return resolve_base(preset)


def eval_split(task: Task, split: str):
    """A task's split by name: ``train``, ``test`` or one of ``task.extra`` (``recall``)."""
    if split in task.extra:
        return task.extra[split]
    if split in ("train", "test"):
        return getattr(task, split)
    raise ValueError(
        f"task {task.name!r} has splits train, test, {sorted(task.extra)}, not {split!r}"
    )


def _train_sft(spec: RunSpec, task: Task, eval_data: Any, metrics: Any, progress: bool,
               device: str) -> RunResult:  # fmt: skip
    return train_with(
        _base(spec.base), task.train, spec.method, spec.optim, spec.evaluation,
        eval_data=eval_data, seed=spec.seed, device=device, progress=progress,
        keep_model=spec.measure_bits, eval_metrics=metrics, lora_layer=spec.lora_layer,
    )  # fmt: skip


def _train_rl(spec: RunSpec, task: Task, eval_data: Any, metrics: Any, progress: bool,
              device: str) -> RunResult:  # fmt: skip
    return train_rl_with(
        _base(spec.base), task.train, spec.method, spec.optim, spec.evaluation, spec.rl,
        eval_data=eval_data, seed=spec.seed, device=device, progress=progress,
        keep_model=False, lora_layer=spec.lora_layer,
    )  # fmt: skip


def _train_dpo(spec: RunSpec, task: Task, eval_data: Any, metrics: Any, progress: bool,
               device: str) -> RunResult:  # fmt: skip
    return train_dpo_with(
        _base(spec.base), task.train, spec.method, spec.optim, spec.evaluation, spec.dpo,
        eval_data=eval_data, seed=spec.seed, device=device, progress=progress,
        keep_model=False, lora_layer=spec.lora_layer,
    )  # fmt: skip


# one trainer per objective: a new objective adds its entry here and its spec fields
TRAINERS: dict[str, Callable[..., RunResult]] = {
    "sft": _train_sft,
    "rl": _train_rl,
    "dpo": _train_dpo,
}


def run_spec(spec: RunSpec | dict[str, Any], progress: bool = False, device: str = "auto") -> dict:
    """Train one spec and return its record (key, spec, result, provenance). Every field of
    the spec reaches :func:`~lora_lab.training.train`; ``result.config`` says what ran."""
    spec = as_spec(spec)
    task = _task(spec.task, _freeze(spec.task_kwargs))
    eval_data = eval_split(task, spec.eval_split)
    metrics = (
        sample_bits_metric(eval_data, limit=spec.eval_limit or 512) if spec.measure_bits else None
    )
    t0 = time.perf_counter()
    result = TRAINERS[spec.objective](spec, task, eval_data, metrics, progress, device)
    if spec.measure_bits and not result.diverged:
        # exact, on every fact (the curve's points are estimated on a sample)
        result.final.update(bits_stored(result.model, eval_data))
    result.model = None
    result.config.update(
        task_kwargs=dict(spec.task_kwargs),
        eval_split=spec.eval_split,
        measure_bits=spec.measure_bits,
        base=spec.base,
        objective=spec.objective,
        warm_start=WARM_STARTS[spec.base].to_dict() if spec.base in WARM_STARTS else None,
        experiment=spec.experiment,
    )
    return {
        "key": spec.key,
        "spec": spec.to_dict(),
        "result": result.to_dict(),
        "provenance": {**provenance(), "compiled": ran_compiled(),
                       "wall_time_s": round(time.perf_counter() - t0, 2)},  # fmt: skip
    }


SKEW = "CodeSkew"  # the error name of a worker that refuses its driver's work


def execute(spec: dict[str, Any], threads: int | None = None,
            expect: dict[str, Any] | None = None,
            compile: bool = False) -> tuple[str, dict | None, str]:  # fmt: skip
    """Executor entry point: (key, record or None, error or ''). A crash in one run is
    returned with its traceback, not raised, so it cannot end the sweep. ``expect`` is the
    driver's code identity: a worker that imported other code (another version, spec format
    or source) refuses before running anything, with an error starting with ``CodeSkew``.
    ``compile``: train through torch.compile (:mod:`lora_lab.training.compiled`; graphs stay
    in this process for the next run of the same shapes)."""
    if threads:
        set_threads(threads)
    key = RunSpec.from_dict(spec).key
    if expect is not None:
        why = CODE.mismatch(expect)
        if why:
            return key, None, (f"{SKEW}: this worker's code is not its driver's ({why}); "
                               "the package changed while the sweep ran: restart it")
    try:
        with compiled_steps(compile):
            return key, run_spec(spec), ""
    except Exception as e:
        return key, None, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
