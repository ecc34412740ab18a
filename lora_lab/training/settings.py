"""Settings as objects: how a run optimises, how it is evaluated, and each objective's own
knobs (as litgpt's ``TrainArgs`` / ``EvalArgs`` and tinker-cookbook's ``Config``).

Each object checks itself when built, so there is one validation path: a run spec builds
the same objects the trainers take, and ``train(lr=..., steps=...)`` builds them from its
keywords. The training loop and the worker pass objects, never twenty loose arguments.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from lora_lab.training.optim import ADAM_BETAS, MOE_AUX_LOSS_COEF, SCHEDULES


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < (0 if allow_zero else 1):
        need = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {need} integer, got {value!r}")


def check_lr(lr: Any) -> None:
    if not (_is_number(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")


@dataclass(frozen=True)
class OptimSettings:
    """How a run optimises: AdamW at peak ``lr`` for ``steps`` optimizer steps (or
    ``epochs`` over the data) of ``grad_accum`` micro-batches of ``batch_size`` examples,
    ``schedule`` after ``warmup_steps`` of linear warmup (decaying to ``min_lr_ratio`` of
    the peak), optional gradient clipping, the MoE load-balancing weight."""

    lr: float
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 32
    grad_accum: int = 1
    schedule: str = "constant"
    warmup_steps: int = 0
    betas: tuple[float, float] = ADAM_BETAS
    weight_decay: float = 0.0
    aux_loss_coef: float = MOE_AUX_LOSS_COEF
    min_lr_ratio: float = 0.0
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))
        check_lr(self.lr)
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps or epochs")
        if self.steps is not None:
            check_positive_int("steps", self.steps)
        if self.epochs is not None and not (_is_number(self.epochs) and self.epochs > 0):
            raise ValueError(f"epochs must be a positive number, got {self.epochs!r}")
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("grad_accum", self.grad_accum)
        check_positive_int("warmup_steps", self.warmup_steps, allow_zero=True)
        if self.steps is not None and self.warmup_steps > self.steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) is longer than the run ({self.steps} steps)"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        betas = self.betas
        if not (isinstance(betas, tuple) and len(betas) == 2
                and all(_is_number(b) and 0.0 <= b < 1.0 for b in betas)):  # fmt: skip
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        for name in ("weight_decay", "aux_loss_coef", "min_lr_ratio"):
            v = getattr(self, name)
            if not (_is_number(v) and v >= 0):
                raise ValueError(f"{name} must be a non-negative number, got {v!r}")
        if self.clip_grad_norm is not None and not (
            _is_number(self.clip_grad_norm) and self.clip_grad_norm > 0
        ):  # fmt: skip
            raise ValueError(
                f"clip_grad_norm must be positive or None, got {self.clip_grad_norm!r}"
            )

    def for_data(self, n_examples: int) -> OptimSettings:
        """The same settings in steps: ``epochs`` over ``n_examples`` become whole steps."""
        if self.steps is not None:
            return self
        per_step = self.batch_size * self.grad_accum
        return replace(self, steps=max(1, math.ceil(self.epochs * n_examples / per_step)),
                       epochs=None)  # fmt: skip

    @property
    def examples_per_step(self) -> int:
        return self.batch_size * self.grad_accum

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


@dataclass(frozen=True)
class EvalSettings:
    """When and on how much a run is evaluated: at 0, ``evals_per_decade`` log-spaced steps
    per decade and the last step, on the first ``eval_limit`` held-out examples (None: all);
    ``accuracy_limit`` > 0 adds greedy accuracy on that many (tasks with a verifier)."""

    evals_per_decade: int = 4
    eval_limit: int | None = 512
    accuracy_limit: int = 0

    def __post_init__(self) -> None:
        check_positive_int("evals_per_decade", self.evals_per_decade)
        check_positive_int("accuracy_limit", self.accuracy_limit, allow_zero=True)
        if self.eval_limit is not None:
            check_positive_int("eval_limit", self.eval_limit)

    def steps(self, total: int) -> list[int]:
        """Steps 0, then round(10 ** (k / per_decade)) up to ``total``, then ``total``: one
        lattice whatever ``total`` is, so runs of different lengths share evaluation steps
        (with 4 per decade: 1, 2, 3, 6, 10, 18, 32, 56, 100, ...)."""
        k_max = int(math.floor(math.log10(max(total, 1)) * self.evals_per_decade + 1e-9))
        steps = {round(10 ** (k / self.evals_per_decade)) for k in range(k_max + 1)}
        return sorted({0, total, *(s for s in steps if s <= total)})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RLSettings:
    """Policy gradient's own knobs: ``group_size`` samples per prompt of at most
    ``max_new_tokens``, at ``temperature``, and the KL penalty to the start (k3)."""

    group_size: int = 8
    max_new_tokens: int = 48
    temperature: float = 1.0
    kl_coef: float = 0.0

    def __post_init__(self) -> None:
        for name, v, low in (("group_size", self.group_size, 2),
                             ("max_new_tokens", self.max_new_tokens, 1)):  # fmt: skip
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                why = ": a group-mean advantage needs a group" if name == "group_size" else ""
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}{why}")
        # a temperature of 0 samples greedily: every group all right or all wrong, no signal
        if not (_is_number(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}")
        if not (_is_number(self.kl_coef) and self.kl_coef >= 0):
            raise ValueError(f"kl_coef must be a non-negative number, got {self.kl_coef!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DPOSettings:
    """DPO's own knobs: ``beta`` (the KL leash; TRL's and the paper's usual 0.1) and
    ``sft_coef``, the weight of an optional NLL term on the chosen completions."""

    beta: float = 0.1
    sft_coef: float = 0.0

    def __post_init__(self) -> None:
        if not (_is_number(self.beta) and self.beta > 0):
            raise ValueError(f"dpo_beta must be a positive number, got {self.beta!r}")
        if not (_is_number(self.sft_coef) and self.sft_coef >= 0):
            raise ValueError(f"sft_coef must be a non-negative number, got {self.sft_coef!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"dpo_beta": self.beta, "sft_coef": self.sft_coef}
