"""Finding 2, continued (notebook 07): what sets LoRA's learning rate relative to FullFT's.

Starts from the post's invariance argument. With Adam and eps -> 0, LoRA's training depends
on (alpha, LR_A, LR_B) only through alpha * LR_B (with B = 0 at the start, B's updates have
size LR_B whatever its gradient's scale, and the weight update is alpha / r * B A) and LR_A.
So (alpha, LR_A, LR_B) -> (k alpha, LR_A, LR_B / k) leaves the whole training curve
unchanged, while changing alpha with one shared LR cannot keep both fixed: the best shared
LR then moves as alpha^-p with 0 < p < 1. :func:`invariance_curves` shows both.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lora_lab.findings.learning_rate import LR_RULE
from lora_lab.lora import LoraConfig, inject_lora, lora_layers
from lora_lab.sweeps.experiment import Experiment, grid, lr_grid
from lora_lab.sweeps.lr_search import LRSearch
from lora_lab.tasks.base import SFTDataset
from lora_lab.training.evaluation import masked_nll
from lora_lab.training.optim import ADAM_BETAS

# Adam's eps in the eps -> 0 limit the argument needs: far below any gradient's scale (so it
# changes no float32 result), yet non-zero, so A's first update (its gradient is exactly 0
# while B = 0) is 0 / eps = 0 and not 0 / 0.
EPS_TO_ZERO = 1e-30


@dataclass(frozen=True)
class Parametrization:
    """LoRA's alpha and separate Adam learning rates for A and B."""

    lora_alpha: float
    lr_a: float
    lr_b: float

    @property
    def label(self) -> str:
        lrs = (f"one LR {self.lr_a:.3g}" if self.lr_a == self.lr_b
               else f"LR_A {self.lr_a:.3g}, LR_B {self.lr_b:.3g}")  # fmt: skip
        return f"alpha {self.lora_alpha:g}, {lrs}"


def invariance_settings(lora_alpha: float, lr: float, k: float) -> list[Parametrization]:
    """The three runs of the invariance demonstration: (alpha, lr, lr); the rescaled
    (k alpha, lr, lr / k), which the argument says is the same run; and (k alpha, lr, lr),
    what changing alpha does when A and B share one LR."""
    return [Parametrization(lora_alpha, lr, lr), Parametrization(k * lora_alpha, lr, lr / k),
            Parametrization(k * lora_alpha, lr, lr)]  # fmt: skip


def lora_curve(
    base: torch.nn.Module, data: SFTDataset, r: int, p: Parametrization, steps: int = 30,
    batch_size: int = 16, seed: int = 0, eps: float = EPS_TO_ZERO,
) -> np.ndarray:  # fmt: skip
    """Training loss at every step of LoRA rank ``r`` on all layers under ``p`` (Adam, no
    weight decay, constant LRs). ``seed`` fixes A's initialisation and the batches, so two
    parametrizations see the same start and the same data."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = inject_lora(copy.deepcopy(base), LoraConfig(r=r, lora_alpha=p.lora_alpha))
    layers = lora_layers(model).values()
    opt = torch.optim.Adam(
        [{"params": [m.lora_A.weight for m in layers], "lr": p.lr_a},
         {"params": [m.lora_B.weight for m in layers], "lr": p.lr_b}],
        betas=ADAM_BETAS, eps=eps,
    )  # fmt: skip
    inputs, targets, mask = data.tensors()
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(data), (batch_size,), generator=gen)
        loss, _ = masked_nll(model, inputs[idx], targets[idx], mask[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return np.array(losses)


def invariance_curves(
    base: torch.nn.Module, data: SFTDataset, r: int = 4, lora_alpha: float = 32.0,
    lr: float = 2e-3, k: float = 4.0, steps: int = 30, batch_size: int = 16, seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    """The curves of :func:`invariance_settings` in long form (``label``, ``step``,
    ``loss``), plus each curve's largest absolute difference from the first
    (``max_abs_diff``): zero to float precision for the rescaled run, not for one shared LR.
    A power-of-two ``k`` makes every rescaling exact in floating point."""
    frames, first = [], None
    for p in invariance_settings(lora_alpha, lr, k):
        loss = lora_curve(base, data, r, p, steps, batch_size, seed)
        first = loss if first is None else first
        diff = float(np.abs(loss - first).max())
        frames.append(pd.DataFrame({"label": p.label, "step": np.arange(1, steps + 1),
                                    "loss": loss, "max_abs_diff": diff}))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- experiments
# Both sweeps use lr_rule's design exactly (tiny, instruct 16k, 300 steps at batch 32, constant
# LR, 3 seeds, the same evaluations) so they read beside lr_rule's alpha = 32, no-warmup runs
# with seeds paired. Starting grids (2.15x apart) are centred where a pilot's
# LR_opt ~ alpha^-0.63 puts each optimum; the LR search extends and refines them to 1.47x.
LR_RULE_DESIGN = {"base": LR_RULE.base, "task": LR_RULE.task, "task_kwargs": LR_RULE.task_kwargs,
                  "defaults": LR_RULE.defaults}  # fmt: skip
RATIO_SEEDS = (0, 1, 2)
ALPHAS = (4.0, 8.0, 128.0)  # alpha = 32 is lr_rule's
ALPHA_GRIDS = {  # (rank, alpha) -> starting LRs
    (16, 4.0): lr_grid(2.15e-3, 2.15e-2), (16, 8.0): lr_grid(2.15e-3, 1e-2),
    (16, 128.0): lr_grid(4.64e-4, 2.15e-3),
    (1, 4.0): lr_grid(1e-3, 1e-2), (1, 8.0): lr_grid(1e-3, 4.64e-3),
    (1, 128.0): lr_grid(2.15e-4, 1e-3),
}  # fmt: skip
LR_ALPHA = Experiment(
    name="lr_alpha",
    description="optimal LR of LoRA r=16 and r=1 at lora_alpha 4, 8, 128 (lr_rule has 32), "
    "lr_rule's design, 3 seeds, LR searched to 1.47x",
    **LR_RULE_DESIGN,
    grids={
        "full": [spec for seed in RATIO_SEEDS for (r, alpha), lrs in ALPHA_GRIDS.items()
                 for spec in grid(method="lora", r=r, lora_alpha=alpha, target_modules="all",
                                  lr=lrs, seed=seed)],
        "ci": grid(method="lora", r=4, lora_alpha=[8.0, 128.0], target_modules="all",
                   lr=[2.15e-3, 4.64e-3], seed=0, steps=10, evals_per_decade=2),
    },
    lr_search=LRSearch(),
)  # fmt: skip

# Linear warmup over the first 10 % of the steps, FullFT and r=16: what the schedule does to
# each optimum, and so to the ratio (lr_rule is the same design without warmup).
WARMUP_FRACTION = 0.1
LR_WARMUP = Experiment(
    name="lr_warmup",
    description="optimal LR of FullFT and LoRA r=16 with linear warmup over the first 10 % "
    "of lr_rule's 300 steps, 3 seeds, LR searched to 1.47x",
    **LR_RULE_DESIGN,
    grids={
        "full": [spec for seed in RATIO_SEEDS
                 for spec in grid(method="full", lr=lr_grid(1e-3, 1e-2), seed=seed,
                                  warmup_steps=round(WARMUP_FRACTION * 300))
                 + grid(method="lora", r=16, target_modules="all", lr=lr_grid(2.15e-3, 1e-2),
                        seed=seed, warmup_steps=round(WARMUP_FRACTION * 300))],
        "ci": grid(method=["full", "lora"], r=16, target_modules="all", lr=2.15e-3, seed=0,
                   steps=10, warmup_steps=2, evals_per_decade=2),
    },
    lr_search=LRSearch(),
)  # fmt: skip

# Run length: with a constant LR and the same batches, the loss at step 32 of any run is the
# final loss of a 32-step run. rank_curves (lr_rule's design at 1,000 steps, evaluated 6 times
# per decade) already locates FullFT's, r=1's and r=16's optima at 316 and 1,000 steps; at 32
# steps FullFT's best sits on its grid's low edge and r=1's on its high edge. Short runs of
# 100 steps, searched at 32 and 100 steps, locate the short budgets for a few minutes of CPU.
LENGTH_BUDGETS = (32, 100, 316, 1000)
LR_LENGTH = Experiment(
    name="lr_length",
    description="optimal LR of FullFT, LoRA r=1 and r=16 at 32 and 100 steps (100-step runs "
    "of lr_rule's design; rank_curves has 316 and 1,000), 3 seeds, LR searched to 1.47x at both",
    base=LR_RULE.base, task=LR_RULE.task, task_kwargs=LR_RULE.task_kwargs,
    defaults={**LR_RULE.defaults, "steps": 100, "evals_per_decade": 6},
    grids={
        "full": [spec for seed in RATIO_SEEDS
                 for spec in grid(method="full", lr=lr_grid(1e-4, 1e-3), seed=seed)
                 + grid(method="lora", r=[1, 16], target_modules="all",
                        lr=lr_grid(1e-3, 1e-2), seed=seed)],
        "ci": grid(method=["full", "lora"], r=1, target_modules="all", lr=1e-3, seed=0,
                   steps=10, evals_per_decade=2),
    },
    lr_search=LRSearch(budgets=(None, 32)),
)  # fmt: skip

EXPERIMENTS = (LR_ALPHA, LR_WARMUP, LR_LENGTH)
