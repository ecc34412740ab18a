"""Notebook 04, "Which layers": attention-only, MLP-only or all layers, at matched trainable
parameters, on memorisation (``facts``, bits stored) and on a skill (``instruct``).

The post's finding 4: attention-only LoRA underperforms MLP-only, and MLP + attention is about
as good as MLP-only, even when the attention-only adapter gets the same number of parameters
(a higher rank). Ranks per placement are chosen so trainable parameters match (see
:func:`matched_ranks`); the "same rank" view puts every placement at one rank, as the post
also shows. Every condition is at its own searched best LR.
"""

from __future__ import annotations

from typing import Any

from lora_lab.lora import LoraConfig
from lora_lab.lora.inject import count_lora_params
from lora_lab.model import PRESETS
from lora_lab.sweeps.experiment import Experiment, grid, lr_grid
from lora_lab.sweeps.lr_search import LRSearch
from lora_lab.tasks.instruct import INSTRUCT_16K

PLACEMENTS = ("attn", "mlp", "all")
# Ranks at two parameter budgets on `tiny` (d=64, d_ff=176: one rank costs 2,048 parameters
# on attention, 2,880 on the MLPs, 4,928 on all layers). "small" is inside the capacity-bound
# regime on 1,000 facts (notebook 01: ~0.66 bits per parameter, ~9.5k bits at 14k
# parameters, against 18.8k bits in the data); "large" is not.
MATCHED_RANKS = {
    "small": {"attn": 7, "mlp": 5, "all": 3},  # 14,336 / 14,400 / 14,784 parameters
    "large": {"attn": 36, "mlp": 26, "all": 15},  # 73,728 / 74,880 / 73,920 parameters
}
SAME_RANK = 4
MATCH_TOLERANCE = 0.10  # trainable parameters within 10 % of the budget's mean


def matched_ranks(
    base: str = "tiny", budgets: dict[str, dict[str, int]] = MATCHED_RANKS
) -> list[dict[str, Any]]:
    """Trainable LoRA parameters of each (budget, placement) on ``base``, and how far each is
    from its budget's mean: the numbers the matching rests on, printed by notebook 04."""
    cfg = PRESETS[base]
    rows = []
    for budget, ranks in budgets.items():
        counts = {
            t: count_lora_params(cfg, LoraConfig(r=r, target_modules=t)) for t, r in ranks.items()
        }
        mean = sum(counts.values()) / len(counts)
        for t, r in ranks.items():
            rows.append(
                {
                    "budget": budget,
                    "placement": t,
                    "r": r,
                    "trainable_params": counts[t],
                    "off_by": counts[t] / mean - 1,
                }
            )
    return rows


def _adapters(lora_lrs: list[float], seed: int) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = []
    pairs = {(t, r) for ranks in MATCHED_RANKS.values() for t, r in ranks.items()}
    pairs |= {(t, SAME_RANK) for t in PLACEMENTS}
    for t, r in sorted(pairs, key=lambda p: (PLACEMENTS.index(p[0]), p[1])):
        specs += grid(method="lora", r=r, target_modules=t, lr=lora_lrs, seed=seed)
    return specs


def _grid(full_lrs: list[float], lora_lrs: list[float]) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = []
    for seed in (0, 1, 2):  # seeds outer: a partial sweep holds complete seeds
        specs += grid(method="full", lr=full_lrs, seed=seed)
        specs += _adapters(lora_lrs, seed)
    return specs


def _ci_grid(**fixed: Any) -> list[dict[str, Any]]:
    """Seconds: the small budget's attention and MLP adapters, 10 steps each."""
    return [
        {"method": "lora", "r": r, "target_modules": t, "lr": 2.15e-3, "seed": 0, "steps": 10,
         "evals_per_decade": 2, **fixed}
        for t, r in (("attn", 7), ("mlp", 5))
    ]  # fmt: skip


TARGETING_FACTS = Experiment(
    name="targeting_facts",
    description="attention / MLP / all-layer LoRA at matched parameters (2 budgets) and at "
    "r=4, bits stored on 1,000 facts, 400 steps x 64, 3 seeds, LR searched to 1.47x",
    base="tiny",
    task="facts",
    task_kwargs={"n_entities": 1000, "seed": 0},
    eval_split="recall",
    defaults={
        "steps": 400,
        "batch_size": 64,
        "evals_per_decade": 4,
        "eval_limit": 512,
        "measure_bits": True,
    },
    grids={
        "full": _grid(lr_grid(4.64e-4, 2.15e-3, 3), lr_grid(1e-3, 4.64e-3, 3)),
        "ci": grid(
            task_kwargs={"n_entities": 64, "seed": 0},
            method="lora",
            r=7,
            target_modules="attn",
            lr=2.15e-3,
            seed=0,
            steps=10,
            evals_per_decade=2,
        )
        + grid(
            task_kwargs={"n_entities": 64, "seed": 0},
            method="lora",
            r=5,
            target_modules="mlp",
            lr=2.15e-3,
            seed=0,
            steps=10,
            evals_per_decade=2,
        ),  # fmt: skip
    },
    lr_search=LRSearch(),
)

TARGETING_INSTRUCT = Experiment(
    name="targeting_instruct",
    description="attention / MLP / all-layer LoRA at matched parameters (2 budgets) and at "
    "r=4, held-out loss on 16k instruction examples, 300 steps x 32, 3 seeds, LR searched",
    base="tiny",
    task="instruct",
    task_kwargs=INSTRUCT_16K,
    defaults={"steps": 300, "batch_size": 32, "evals_per_decade": 4, "eval_limit": 256},
    grids={
        "full": _grid(lr_grid(4.64e-4, 2.15e-3, 3), lr_grid(1e-3, 4.64e-3, 3)),
        "ci": grid(
            method="lora",
            r=7,
            target_modules="attn",
            lr=2.15e-3,
            seed=0,
            steps=10,
            evals_per_decade=2,
        )
        + grid(
            method="lora",
            r=5,
            target_modules="mlp",
            lr=2.15e-3,
            seed=0,
            steps=10,
            evals_per_decade=2,
        ),  # fmt: skip
    },
    lr_search=LRSearch(),
)

EXPERIMENTS = (TARGETING_FACTS, TARGETING_INSTRUCT)
