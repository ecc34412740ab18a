"""One training loop for every kind of training in the package (minGPT's trainer idea: the
loop knows nothing about the task).

The loop owns what is the same everywhere: seeding, the optimizer and its schedule,
gradient accumulation and clipping, divergence detection, evaluation at chosen steps, the
progress bar and the callback. An :class:`Objective` owns what differs: which batch comes
next, what the loss is, what an evaluation measures. Supervised fine-tuning
(:class:`~lora_lab.training.objectives.SupervisedObjective`) and pretraining
(:class:`~lora_lab.training.objectives.LanguageModelObjective`) are objectives; policy-gradient
RL and DPO implement the same three methods.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from lora_lab.progress import progress_bar
from lora_lab.threads import apply_default_threads
from lora_lab.training.compiled import maybe_compiled
from lora_lab.training.optim import lr_factor, make_adamw
from lora_lab.training.settings import OptimSettings


@dataclass
class MicroBatch:
    """What an objective returns for one micro-batch: the tensor to backpropagate, the
    number to log as the training loss, and how many tokens it processed."""

    loss: torch.Tensor
    value: float
    tokens: int = 0


DIVERGENCE_EXAMPLES = 32  # see run_loop: the loss a blow-up is judged against


class Objective(ABC):
    """What to minimise. ``examples_per_micro_batch`` sets the ``examples`` column."""

    examples_per_micro_batch: int = 1

    def setup(self, model: nn.Module, device: torch.device) -> None:  # noqa: B027
        """Called once, after the model is on ``device`` and before the first step."""

    @abstractmethod
    def micro_batch(self, model: nn.Module) -> MicroBatch:
        """Draw the next micro-batch and return its loss (the loop calls ``backward``)."""

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Held-out numbers for one evaluation row (``eval_loss`` by convention)."""

    def diverged(self, start: float, recent: list[float]) -> bool:
        """Whether training has blown up: the smoothed loss far above where it started.
        Objectives whose logged value is not a loss (RL rewards) override this."""
        smoothed = sum(recent) / len(recent)
        return smoothed > max(1.5 * start, start + 1.0)


@dataclass
class LoopResult:
    rows: list[dict[str, float]]
    diverged: bool
    steps_done: int
    trainable_params: int
    tokens: int
    wall_time_s: float
    model: nn.Module = field(repr=False)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def run_loop(
    model: nn.Module,
    objective: Objective,
    optim: OptimSettings,
    *,
    prepare: Callable[[nn.Module], nn.Module] | None = None,
    param_groups: Callable[[nn.Module], list[dict[str, Any]]] | None = None,
    eval_steps: Iterable[int] = (),
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "train",
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> LoopResult:
    """Train ``prepare(model)`` on ``objective`` as ``optim`` says (its ``steps``: a caller
    with ``epochs`` resolves them first, :meth:`OptimSettings.for_data`).

    Everything random inside (``prepare``'s initialisations, dropout) draws from torch's
    global RNG seeded with ``seed`` in a forked state, so a run is reproducible and leaves
    the caller's RNG untouched. Only parameters with ``requires_grad`` are optimised;
    ``param_groups(model)`` may split them (e.g. no weight decay on norms). Evaluations
    happen at ``eval_steps`` (0 means before training); a row holds ``step``, ``examples``,
    ``train_loss`` (mean of the last 5 steps) and the objective's numbers. A run whose loss
    turns non-finite or blows up stops with ``diverged=True`` and a last row without
    evaluation, so sweeps keep going.
    """
    if not isinstance(optim, OptimSettings) or optim.steps is None:
        raise ValueError("run_loop needs OptimSettings in steps (resolve epochs first)")
    apply_default_threads()  # the thread rule, once per process, where work starts
    lr, steps, grad_accum = optim.lr, optim.steps, optim.grad_accum
    evaluate_at = set(eval_steps)
    device = resolve_device(device)
    examples_per_step = objective.examples_per_micro_batch * grad_accum
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = (prepare(model) if prepare is not None else model).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")
        groups = param_groups(model) if param_groups is not None else params
        opt = make_adamw(groups, lr=lr, betas=optim.betas, weight_decay=optim.weight_decay)
        objective.setup(model, device)
        # inside a long sweep's worker the model's blocks compile in place
        # (lora_lab.training.compiled); elsewhere this is the model, untouched
        stepped = maybe_compiled(model)
        rows: list[dict[str, float]] = []
        start: float | None = None
        recent: list[float] = []  # the last 5 steps: the logged train loss
        # Divergence is judged on losses averaged over >= DIVERGENCE_EXAMPLES examples: the
        # first step's at batch >= 32 (5 steps smoothed), more steps at smaller batches, so
        # one lucky batch of 4 easy examples is not taken for the starting loss.
        judge_steps = max(1, math.ceil(DIVERGENCE_EXAMPLES / examples_per_step))
        judge_window = 5 * judge_steps
        judged: list[float] = []
        diverged, tokens, step = False, 0, 0
        model.train()
        t0 = time.perf_counter()
        bar = progress_bar(total=steps, disable=not progress, desc=desc, leave=False)

        def log(step: int, train_loss: float, evaluate: bool = True) -> None:
            row = {"step": step, "examples": step * examples_per_step, "train_loss": train_loss}
            row.update(objective.evaluate(stepped) if evaluate else {"eval_loss": math.nan})
            rows.append(row)
            if callback is not None and evaluate:
                callback(step, row)

        if 0 in evaluate_at:
            log(0, math.nan)
        for step in range(1, steps + 1):
            factor = lr_factor(step - 1, steps, optim.warmup_steps, optim.schedule,
                               optim.min_lr_ratio)  # fmt: skip
            for group in opt.param_groups:
                group["lr"] = lr * factor
            opt.zero_grad(set_to_none=True)
            value = 0.0
            for _ in range(grad_accum):
                mb = objective.micro_batch(stepped)
                (mb.loss / grad_accum).backward()
                value += mb.value / grad_accum
                tokens += mb.tokens
            recent = (recent + [value])[-5:]
            judged = (judged + [value])[-judge_window:]
            if start is None and step >= judge_steps:
                start = sum(judged) / len(judged)
            if not math.isfinite(value) or (
                start is not None and objective.diverged(start, judged)
            ):
                diverged = True
                log(step, value, evaluate=False)
                break
            if optim.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, optim.clip_grad_norm)
            opt.step()
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}")
            if step in evaluate_at:
                log(step, sum(recent) / len(recent))
        bar.close()
        wall = time.perf_counter() - t0
    return LoopResult(
        rows=rows,
        diverged=diverged,
        steps_done=step,
        trainable_params=sum(p.numel() for p in params),
        tokens=tokens,
        wall_time_s=wall,
        model=model,
    )
