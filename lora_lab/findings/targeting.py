"""Notebook 04, "Which layers": attention-only, MLP-only or all layers, at matched trainable
parameters, on memorisation (``facts``, bits stored) and on a skill (``instruct``).

The post's finding 4: attention-only LoRA underperforms MLP-only, and MLP + attention is about
as good as MLP-only, even when the attention-only adapter gets the same number of parameters
(a higher rank). Ranks per placement are chosen so trainable parameters match (see
:func:`matched_ranks`); the "same rank" view puts every placement at one rank, as the post
also shows. Every condition is at its own searched best LR.
"""

from __future__ import annotations

import copy
from typing import Any

import pandas as pd
import torch

from lora_lab.lora import LoraConfig, inject_lora
from lora_lab.lora.inject import count_lora_params
from lora_lab.model import PRESETS
from lora_lab.sweeps.experiment import Experiment, grid, lr_grid
from lora_lab.sweeps.lr_search import LRSearch
from lora_lab.tasks.base import SFTDataset
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


# ----------------------------------------------------------------------------- NTK view
# The post's explanation of finding 4: the empirical neural tangent kernel K = J J^T (J: the
# Jacobian of the outputs with respect to the parameters) is a sum over parameter groups,
# K = sum_g J_g J_g^T, and the group with the largest share dominates how the function moves
# under a small step. A group's share of trace(K) = sum_g ||J_g||_F^2 says how much of the
# early-training dynamics it carries.


def parameter_group(name: str) -> str:
    """The group a parameter belongs to: "attention", "mlp" (experts and router included),
    "embeddings" or "norms"; LoRA's A/B matrices go with the module they adapt."""
    if "embed" in name or "lm_head" in name:
        return "embeddings"
    if ".self_attn." in name:
        return "attention"
    if ".mlp." in name or ".moe." in name or "expert" in name or "router" in name:
        return "mlp"
    return "norms"


def ntk_trace_by_group(
    model: torch.nn.Module,
    data: SFTDataset,
    *,
    limit: int = 32,
    probes: int = 4,
    exact: bool = False,
    seed: int = 0,
) -> dict[str, float]:
    """Each parameter group's part of the empirical NTK trace over the completion-token
    logits of the first ``limit`` examples of ``data``, for the parameters that require
    gradients (all of them for a base model; only A and B once LoRA is injected).

    ``exact``: one backward pass per logit (the definition; small models only). Otherwise
    Hutchinson's estimator: E_v ||d(v . f)/d theta_g||^2 = ||J_g||_F^2 for v ~ N(0, I), with
    ``probes`` random v per example, so a 100-token vocabulary costs a few passes, not 100s.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters")
    names, tensors = list(params), list(params.values())
    groups = [parameter_group(n) for n in names]
    totals = dict.fromkeys(sorted(set(groups)), 0.0)
    inputs, _, mask = data.tensors()
    gen = torch.Generator().manual_seed(seed)
    model.eval()  # no dropout: the kernel of the function, not of a noisy sample
    for i in range(min(limit, len(inputs))):
        length = int(mask[i].nonzero().max()) + 1
        logits = model(inputs[i : i + 1, :length])[0]  # (T, V)
        out = logits[mask[i, :length].bool()]  # (completion tokens, V)
        if exact:
            flat = out.flatten()
            vectors = [torch.nn.functional.one_hot(torch.tensor(j), flat.numel()).float()
                       for j in range(flat.numel())]  # fmt: skip
            weight = 1.0
        else:
            vectors = [torch.randn(out.numel(), generator=gen) for _ in range(probes)]
            weight = 1.0 / probes
        for k, v in enumerate(vectors):
            grads = torch.autograd.grad(
                (out.flatten() * v).sum(), tensors, retain_graph=k < len(vectors) - 1,
                allow_unused=True,
            )  # fmt: skip
            for g, grad in zip(groups, grads):
                if grad is not None:
                    totals[g] += weight * float(grad.pow(2).sum())
    return totals


def ntk_shares(totals: dict[str, float]) -> dict[str, float]:
    """Each group's share of the NTK trace (sums to 1)."""
    s = sum(totals.values())
    if not s > 0:
        raise ValueError("the NTK trace is zero: nothing moves the outputs")
    return {g: v / s for g, v in totals.items()}


def ntk_table(
    base: torch.nn.Module, data: SFTDataset, *, limit: int = 32, probes: int = 4, seed: int = 0,
    lora_rank: int = SAME_RANK,
) -> pd.DataFrame:  # fmt: skip
    """NTK-trace shares of attention, MLP, embeddings and norms on the base model (every
    parameter trainable, as in FullFT), and of attention vs MLP adapters for all-layer LoRA
    at ``lora_rank`` at initialisation (B = 0, so only B's gradients are non-zero)."""
    full = copy.deepcopy(base)
    for p in full.parameters():
        p.requires_grad_(True)
    rows = []
    for model_name, model in (
        ("base (FullFT)", full),
        (f"LoRA r={lora_rank}, all layers", _with_lora(base, lora_rank, seed)),
    ):
        totals = ntk_trace_by_group(model, data, limit=limit, probes=probes, seed=seed)
        for g, share in ntk_shares(totals).items():
            rows.append(
                {"model": model_name, "group": g, "trace": totals[g], "share": share,
                 "params": sum(p.numel() for n, p in model.named_parameters()
                               if p.requires_grad and parameter_group(n) == g)}
            )  # fmt: skip
    out = pd.DataFrame(rows)
    out["param_share"] = out.params / out.groupby("model").params.transform("sum")
    return out


def _with_lora(base: torch.nn.Module, rank: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = copy.deepcopy(base)
    for p in model.parameters():
        p.requires_grad_(False)
    inject_lora(model, LoraConfig(r=rank, target_modules="all"))
    return model
