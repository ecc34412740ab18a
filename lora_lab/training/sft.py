"""Supervised fine-tuning: one function for full fine-tuning and LoRA, so the two differ
only in what is trainable. Both methods see exactly the same batches for a given seed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from lora_lab.lora import lora_layers
from lora_lab.lora.config import LoraConfig
from lora_lab.model import CompactLM
from lora_lab.tasks.base import SFTDataset, Task
from lora_lab.training.evaluation import sampled_accuracy
from lora_lab.training.loop import LoopResult, resolve_device, run_loop
from lora_lab.training.methods import FullFT, apply_method, as_method, method_label
from lora_lab.training.objectives import SupervisedObjective
from lora_lab.training.optim import ADAM_BETAS, MOE_AUX_LOSS_COEF
from lora_lab.training.pretrain import load_base
from lora_lab.training.settings import EvalSettings, OptimSettings

if TYPE_CHECKING:
    import pandas as pd


def log_spaced_steps(total: int, per_decade: int = 4) -> list[int]:
    """Steps 0, then round(10 ** (k / per_decade)) up to ``total``, then ``total``
    (:meth:`EvalSettings.steps`): one lattice whatever ``total`` is."""
    return EvalSettings(evals_per_decade=per_decade).steps(total)


def _frame(rows: Any) -> pd.DataFrame:
    import pandas as pd  # on first result, not on import: lora_lab loads in torch's time

    return pd.DataFrame(rows)


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
            curves=_frame(d["curves"]),
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


def method_config(method: FullFT | LoraConfig, model: nn.Module, trained: nn.Module,
                  data: SFTDataset, eval_data: SFTDataset) -> dict[str, Any]:  # fmt: skip
    """What every trainer's record says about what was trained on what: the method, the
    LoRA layer that ran, the model, the data's fingerprint and the evaluation split."""
    is_full = isinstance(method, FullFT)
    targets = method.target_modules
    return {
        "method": "full" if is_full else "lora",
        "label": method_label(method),
        "lora": None if is_full else method.to_dict(),
        "full_targets": (list(targets) if isinstance(targets, tuple) else targets)
        if is_full
        else None,
        "model": getattr(getattr(model, "config", None), "name", None),
        # which LoRA layer implementation ran (reference or fused: same maths, other kernels)
        "lora_layer_class": None if is_full else lora_layer_names(trained),
        "lora_layer_kind": None if is_full else trained.lora_layer_kind,
        "task": data.name,
        "data_fingerprint": data.fingerprint(),
        "eval_data": f"{eval_data.name}/{eval_data.split}",
    }


def prepared(model: CompactLM | str, data: Any, eval_data: Any) -> tuple[nn.Module, SFTDataset]:
    """The model (a preset name loads the shipped base) and the evaluation split (default:
    ``data``), both checked, for every trainer."""
    _check_dataset("data", data)
    eval_data = eval_data if eval_data is not None else data
    _check_dataset("eval_data", eval_data)
    if isinstance(model, str):
        model = load_base(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a CompactLM or a preset name, got {type(model).__name__}")
    return model, eval_data


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
    eval_metrics: Callable[[nn.Module], dict[str, float]] | None = None,
    lora_layer: str | None = None,
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
    The keywords build an :class:`OptimSettings` and an :class:`EvalSettings` once
    (:func:`train_with` takes those objects directly).
    """
    optim = OptimSettings(lr=lr, steps=steps, epochs=epochs, batch_size=batch_size,
                          grad_accum=grad_accum, schedule=schedule, warmup_steps=warmup_steps,
                          betas=tuple(betas), weight_decay=weight_decay,
                          aux_loss_coef=aux_loss_coef)  # fmt: skip
    evaluation = EvalSettings(evals_per_decade, eval_limit, accuracy_limit)
    return train_with(
        model, data, method, optim, evaluation, eval_data=eval_data, seed=seed, device=device,
        progress=progress, keep_model=keep_model, callback=callback, eval_metrics=eval_metrics,
        lora_layer=lora_layer,
    )  # fmt: skip


def train_with(
    model: CompactLM | str,
    data: SFTDataset,
    method: Any,
    optim: OptimSettings,
    evaluation: EvalSettings | None = None,
    *,
    eval_data: SFTDataset | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    keep_model: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    eval_metrics: Callable[[nn.Module], dict[str, float]] | None = None,
    lora_layer: str | None = None,
) -> RunResult:
    """:func:`train` with its settings as objects (what a run spec holds)."""
    evaluation = evaluation or EvalSettings()
    method = as_method(method)
    model, eval_data = prepared(model, data, eval_data)
    dev = resolve_device(device)
    given, optim = optim, optim.for_data(len(data))  # epochs become steps
    objective = SupervisedObjective(
        data,
        eval_data,
        batch_size=optim.batch_size,
        seed=seed,
        eval_limit=evaluation.eval_limit,
        aux_loss_coef=optim.aux_loss_coef,
        eval_metrics=eval_metrics,
    )
    out = run_loop(
        model,
        objective,
        optim,
        prepare=lambda m: apply_method(m, method, lora_layer),
        eval_steps=evaluation.steps(optim.steps),
        seed=seed,
        device=dev,
        progress=progress,
        callback=callback,
    )
    curves = _frame(out.rows)
    final: dict[str, float] = {
        "eval_loss": float("nan") if out.diverged else float(curves.eval_loss.iloc[-1]),
        "train_loss": float(curves.train_loss.iloc[-1]),
        "steps_done": float(out.steps_done),
    }
    if not out.diverged:  # the last evaluation's other metrics (router balance, bits estimate)
        extra = curves.iloc[-1].drop(["step", "examples", "train_loss", "eval_loss"]).dropna()
        final.update({k: float(v) for k, v in extra.items()})
    if evaluation.accuracy_limit and not out.diverged and eval_data.verifier is not None:
        final["accuracy"] = sampled_accuracy(
            out.model, eval_data, limit=evaluation.accuracy_limit, device=dev
        )
    run_config = {
        **method_config(method, model, out.model, data, eval_data),
        **optim.as_dict(),
        "epochs": given.epochs,
        **evaluation.as_dict(),
        "seed": seed,
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
    }
    return RunResult.from_loop(out, run_config, curves, final, keep_model)
