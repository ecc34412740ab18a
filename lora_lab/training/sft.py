"""Supervised fine-tuning: one function for full fine-tuning and LoRA, so the two differ
only in what is trainable. Both methods see exactly the same batches for a given seed."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from lora_lab.lora import lora_layers
from lora_lab.model import CompactLM
from lora_lab.tasks.base import SFTDataset, Task
from lora_lab.training.evaluation import sampled_accuracy
from lora_lab.training.loop import (
    LoopResult,
    check_lr,
    check_positive_int,
    resolve_device,
    run_loop,
)
from lora_lab.training.methods import FullFT, apply_method, as_method, method_label
from lora_lab.training.objectives import SupervisedObjective
from lora_lab.training.optim import ADAM_BETAS, MOE_AUX_LOSS_COEF, SCHEDULES
from lora_lab.training.pretrain import load_base


def log_spaced_steps(total: int, per_decade: int = 4) -> list[int]:
    """Steps 0, then round(10 ** (k / per_decade)) up to ``total``, then ``total``.

    The points sit on one lattice whatever ``total`` is, so runs of different lengths are
    evaluated at the same steps (with 4 per decade: 1, 2, 3, 6, 10, 18, 32, 56, 100, ...).
    """
    check_positive_int("per_decade", per_decade)
    k_max = int(math.floor(math.log10(max(total, 1)) * per_decade + 1e-9))
    steps = {round(10 ** (k / per_decade)) for k in range(k_max + 1)}
    return sorted({0, total, *(s for s in steps if s <= total)})


@dataclass
class RunResult:
    """Everything a sweep records about one fine-tuning run."""

    config: dict[str, Any]
    curves: pd.DataFrame
    final: dict[str, float]
    trainable_params: int
    wall_time_s: float
    tokens_per_s: float
    diverged: bool = False
    model: CompactLM | None = field(default=None, repr=False)

    @property
    def final_loss(self) -> float:
        return self.final["eval_loss"]

    @property
    def label(self) -> str:
        return self.config.get("label", "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (the model itself is not included)."""
        return dict(
            config=self.config,
            curves=self.curves.to_dict(orient="list"),
            final=self.final,
            trainable_params=self.trainable_params,
            wall_time_s=self.wall_time_s,
            tokens_per_s=self.tokens_per_s,
            diverged=self.diverged,
        )

    @classmethod
    def from_loop(cls, out: LoopResult, config: dict[str, Any], curves: pd.DataFrame,
                  final: dict[str, float], keep_model: bool) -> RunResult:  # fmt: skip
        """What every trainer (SFT, RL) returns from one run of the loop."""
        return cls(
            config=config,
            curves=curves,
            final=final,
            trainable_params=out.trainable_params,
            wall_time_s=out.wall_time_s,
            tokens_per_s=out.tokens / max(out.wall_time_s, 1e-9),
            diverged=out.diverged,
            model=out.model.cpu() if keep_model else None,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        return cls(
            config=d["config"],
            curves=pd.DataFrame(d["curves"]),
            final=d["final"],
            trainable_params=d["trainable_params"],
            wall_time_s=d["wall_time_s"],
            tokens_per_s=d["tokens_per_s"],
            diverged=d["diverged"],
        )


def lora_layer_names(model: nn.Module) -> str:
    """Which LoRA layer classes ran (reference or fused: same maths, other kernels)."""
    return ", ".join(sorted({type(m).__name__ for m in lora_layers(model).values()}))


def _check_dataset(name: str, data: Any) -> None:
    if isinstance(data, SFTDataset):
        if len(data) == 0:
            raise ValueError(f"the {name} dataset is empty")
        return
    hint = ""
    if isinstance(data, Task):
        hint = f"; pass one split, e.g. task.train (task {data.name!r})"
    elif isinstance(data, str):
        hint = f"; build it first, e.g. make_task({data!r}).train"
    raise TypeError(f"{name} must be an SFTDataset, got {type(data).__name__}{hint}")


def check_train_args(
    lr, steps, epochs, batch_size, grad_accum, schedule, warmup_steps, betas, weight_decay,
    evals_per_decade, eval_limit, accuracy_limit, aux_loss_coef,
) -> None:  # fmt: skip
    """Every optimisation and evaluation setting of :func:`train`, checked before any work
    (also used to check a run spec when it is declared, not when it runs)."""
    check_lr(lr)
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps or epochs")
    if steps is not None:
        check_positive_int("steps", steps)
    if epochs is not None and not (
        isinstance(epochs, (int, float)) and not isinstance(epochs, bool) and epochs > 0
        and math.isfinite(epochs)
    ):  # fmt: skip
        raise ValueError(f"epochs must be a positive number, got {epochs!r}")
    check_positive_int("batch_size", batch_size)
    check_positive_int("grad_accum", grad_accum)
    check_positive_int("warmup_steps", warmup_steps, allow_zero=True)
    if steps is not None and warmup_steps > steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) is longer than the run ({steps} steps)")
    check_positive_int("evals_per_decade", evals_per_decade)
    check_positive_int("accuracy_limit", accuracy_limit, allow_zero=True)
    if eval_limit is not None:
        check_positive_int("eval_limit", eval_limit)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not (
        isinstance(betas, (tuple, list)) and len(betas) == 2
        and all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas)
    ):  # fmt: skip
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    for name, v in (("weight_decay", weight_decay), ("aux_loss_coef", aux_loss_coef)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 <= v < math.inf):
            raise ValueError(f"{name} must be a non-negative number, got {v!r}")


def train(
    model: CompactLM | str,
    data: SFTDataset,
    method: Any = "full",
    *,
    lr: float,
    steps: int | None = None,
    epochs: float | None = None,
    batch_size: int = 32,
    grad_accum: int = 1,
    eval_data: SFTDataset | None = None,
    schedule: str = "constant",
    warmup_steps: int = 0,
    betas: tuple[float, float] = ADAM_BETAS,
    weight_decay: float = 0.0,
    evals_per_decade: int = 4,
    eval_limit: int | None = 512,
    accuracy_limit: int = 0,
    aux_loss_coef: float = MOE_AUX_LOSS_COEF,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    keep_model: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    lora_layer: str | None = None,
    eval_metrics: Callable[[nn.Module], dict[str, float]] | None = None,
) -> RunResult:
    """Fine-tune a copy of ``model`` (a :class:`CompactLM` or a shipped base's preset name).

    ``method``: ``"full"`` / ``FullFT()`` trains every weight, ``FullFT("all")`` only the
    block matrices, a :class:`LoraConfig` freezes the base and trains only the adapters.
    Evaluation (mean NLL per completion token on ``eval_data``, default ``data``'s own
    examples) happens at ``evals_per_decade`` log-spaced steps per decade and at the end;
    ``accuracy_limit > 0`` adds greedy sampled accuracy for tasks with a verifier at the
    end. A run whose loss turns non-finite or climbs far above its start stops early and is
    returned with ``diverged=True`` rather than raising, so sweeps keep going.
    ``callback(step, row)`` is called after each evaluation (live plots use it).
    ``eval_metrics(model)`` returns extra named numbers logged at every evaluation (e.g.
    bits stored on ``facts``); they become columns of ``curves``. ``lora_layer`` picks the
    LoRA layer kind ("reference" or "fused", same maths; default ``$LORA_LAB_LORA_LAYER``).
    """
    method = as_method(method)
    check_train_args(
        lr, steps, epochs, batch_size, grad_accum, schedule, warmup_steps, betas, weight_decay,
        evals_per_decade, eval_limit, accuracy_limit, aux_loss_coef,
    )  # fmt: skip
    _check_dataset("data", data)
    eval_data = eval_data if eval_data is not None else data
    _check_dataset("eval_data", eval_data)
    if isinstance(model, str):
        model = load_base(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a CompactLM or a preset name, got {type(model).__name__}")
    dev = resolve_device(device)
    if steps is None:
        steps = max(1, math.ceil(epochs * len(data) / (batch_size * grad_accum)))
    objective = SupervisedObjective(
        data,
        eval_data,
        batch_size=batch_size,
        seed=seed,
        eval_limit=eval_limit,
        aux_loss_coef=aux_loss_coef,
        eval_metrics=eval_metrics,
    )
    out = run_loop(
        model,
        objective,
        lr=lr,
        steps=steps,
        prepare=lambda m: apply_method(m, method, lora_layer),
        grad_accum=grad_accum,
        schedule=schedule,
        warmup_steps=warmup_steps,
        betas=tuple(betas),
        weight_decay=weight_decay,
        eval_steps=log_spaced_steps(steps, evals_per_decade),
        seed=seed,
        device=dev,
        progress=progress,
        callback=callback,
    )
    curves = pd.DataFrame(out.rows)
    final: dict[str, float] = {
        "eval_loss": float("nan") if out.diverged else float(curves.eval_loss.iloc[-1]),
        "train_loss": float(curves.train_loss.iloc[-1]),
        "steps_done": float(out.steps_done),
    }
    if not out.diverged:  # the last evaluation's other metrics (router balance, bits estimate)
        extra = curves.iloc[-1].drop(["step", "examples", "train_loss", "eval_loss"])
        final.update({k: float(v) for k, v in extra.items() if pd.notna(v)})
    if accuracy_limit and not out.diverged and eval_data.verifier is not None:
        final["accuracy"] = sampled_accuracy(out.model, eval_data, limit=accuracy_limit, device=dev)
    is_full = isinstance(method, FullFT)
    targets = method.target_modules
    run_config = {
        "method": "full" if is_full else "lora",
        "label": method_label(method),
        "lora": None if is_full else method.to_dict(),
        "full_targets": (list(targets) if isinstance(targets, tuple) else targets)
        if is_full
        else None,
        "model": getattr(getattr(model, "config", None), "name", None),
        # which LoRA layer implementation ran (reference or fused: same maths, other kernels)
        "lora_layer_class": None if is_full else lora_layer_names(out.model),
        "lora_layer_kind": None if is_full else out.model.lora_layer_kind,
        "task": data.name,
        "data_fingerprint": data.fingerprint(),
        "eval_data": f"{eval_data.name}/{eval_data.split}",
        "lr": lr,
        "steps": steps,
        "epochs": epochs,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "schedule": schedule,
        "warmup_steps": warmup_steps,
        "betas": list(betas),
        "weight_decay": weight_decay,
        "aux_loss_coef": aux_loss_coef,
        "evals_per_decade": evals_per_decade,
        "eval_limit": eval_limit,
        "accuracy_limit": accuracy_limit,
        "seed": seed,
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
    }
    return RunResult.from_loop(out, run_config, curves, final, keep_model)
