"""Notebook 05, "Reinforcement learning": policy gradient with a verifier, and why rank 1 is
enough there.

The post's finding 5: in policy-gradient RL, LoRA down to rank 1 reaches FullFT's reward,
with a wider band of good learning rates, because an episode carries about one bit (the
advantage's sign) while supervised learning on the same problems carries far more. Here:
``arith`` problems (1-2 digit operands, scratchpad answers, verified by the final line),
from ``tiny-arith`` — the ``tiny`` base after 100 SFT steps on the train split (see
:mod:`lora_lab.training.warm_start`: the pretrained base solves only ~7 % when sampling,
too few for group-mean advantages to carry signal). ``rl_rank`` trains FullFT and LoRA
r = 1, 4, 16 (all layers) and r = 1 attention-only with GRPO-style group advantages;
``rl_sft`` is the contrast: supervised fine-tuning from the same start on the same problems'
reference solutions, one example per RL episode.
"""

from __future__ import annotations

from typing import Any

from lora_lab.sweeps.experiment import Experiment, grid, lr_grid
from lora_lab.sweeps.lr_search import LRSearch
from lora_lab.training.warm_start import ARITH_RL_KWARGS

BASE = "tiny-arith"
SEEDS = (0, 1, 2)
STEPS = 100
PROMPTS_PER_STEP, GROUP_SIZE = 8, 8
EPISODES = STEPS * PROMPTS_PER_STEP * GROUP_SIZE  # 6,400: also the SFT contrast's examples
ADAPTERS = ((1, "all"), (4, "all"), (16, "all"), (1, "attn"))
# Rewards are noisy (200 held-out problems; neighbouring LRs at 1.47x differ by less than a
# seed's spread in the pilot), so the RL search steps 2.15x; the SFT search (smooth losses) 1.47x.
RL_SEARCH = LRSearch(per_decade=3, extend_step=1, max_points=8)
SFT_SEARCH = LRSearch(per_decade=6, extend_step=2, max_points=10)

RL_DEFAULTS: dict[str, Any] = {
    "objective": "rl",
    "steps": STEPS,
    "batch_size": PROMPTS_PER_STEP,
    "group_size": GROUP_SIZE,
    "max_new_tokens": 48,
    "temperature": 1.0,
    "evals_per_decade": 3,
    "eval_limit": 200,
}


def _methods(full_lrs: list[float], lora_lrs: list[float], seed: int, **fixed: Any) -> list:
    specs = grid(method="full", lr=full_lrs, seed=seed, **fixed)
    for r, targets in ADAPTERS:
        specs += grid(method="lora", r=r, target_modules=targets, lr=lora_lrs, seed=seed,
                      lora_layer="fused", **fixed)  # fmt: skip
    return specs


def _grid(full_lrs: list[float], lora_lrs: list[float], **fixed: Any) -> list:
    return [s for seed in SEEDS for s in _methods(full_lrs, lora_lrs, seed, **fixed)]


def _ci(full_lr: float, lora_lr: float, **fixed: Any) -> list:
    """Seconds: FullFT and rank 1, a few steps, a few problems."""
    return [
        {"method": "full", "lr": full_lr, "seed": 0, **fixed},
        {"method": "lora", "r": 1, "lr": lora_lr, "seed": 0, "lora_layer": "fused", **fixed},
    ]


RL_RANK = Experiment(
    name="rl_rank",
    description="policy-gradient RL on arith from tiny-arith: FullFT vs LoRA r=1,4,16 (all "
    "layers) and r=1 attention-only, 100 steps x 8 prompts x 8 samples, 3 seeds, LR searched",
    base=BASE,
    task="arith",
    task_kwargs=ARITH_RL_KWARGS,
    defaults=RL_DEFAULTS,
    grids={
        "full": _grid(lr_grid(2.15e-5, 2.15e-4, 3), lr_grid(2.15e-4, 2.15e-3, 3)),
        "ci": _ci(
            1e-4, 1e-3, steps=3, batch_size=2, group_size=4, eval_limit=16, evals_per_decade=1
        ),  # fmt: skip
    },
    lr_search=RL_SEARCH,
)

SFT_DEFAULTS: dict[str, Any] = {
    "steps": STEPS,
    "batch_size": PROMPTS_PER_STEP * GROUP_SIZE,  # one example per RL episode
    "evals_per_decade": 3,
    "eval_limit": 200,
    "accuracy_limit": 200,
}

RL_SFT = Experiment(
    name="rl_sft",
    description="the contrast: SFT on the same arith problems' reference solutions from "
    "tiny-arith, one example per RL episode (100 steps x 64), same methods, 3 seeds, LR searched",
    base=BASE,
    task="arith",
    task_kwargs=ARITH_RL_KWARGS,
    defaults=SFT_DEFAULTS,
    grids={
        "full": _grid(lr_grid(2.15e-4, 2.15e-3, 3), lr_grid(1e-3, 1e-2, 3)),
        "ci": _ci(
            1e-3, 3e-3, steps=3, batch_size=8, eval_limit=16, accuracy_limit=8, evals_per_decade=1
        ),  # fmt: skip
    },
    lr_search=SFT_SEARCH,
)

EXPERIMENTS = (RL_RANK, RL_SFT)
