"""Finding 2 (notebook 02): LoRA's best learning rate, its ratio to FullFT's, and why it
barely depends on rank.

Experiments ``lr_rule`` and ``lr_width``; the first-update analysis (why the optimum is
rank-invariant); the tables the notebook shows. The live panel is the generic
:class:`lora_lab.widgets.ControlPanel`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import torch

from lora_lab.analysis import (
    align_seeds,
    load_curves,
    load_runs,
    lr_ratio,
    optimal_lr,
    ratio_by_budget,
    seed_mean,
)
from lora_lab.findings.common import Headline, interior_text, ratio_text
from lora_lab.lora import LoraConfig, inject_lora, lora_layers
from lora_lab.model import PRESETS
from lora_lab.plots import plot_lr_curves
from lora_lab.stats import Estimate, optimum_location, optimum_ratio
from lora_lab.sweeps.experiment import (
    Experiment,
    confirmation,
    grid,
    lr_grid,
    method_grid,
    results_dir,
)
from lora_lab.sweeps.lr_search import LRSearch
from lora_lab.tasks.base import SFTDataset
from lora_lab.tasks.instruct import INSTRUCT_16K
from lora_lab.training.evaluation import masked_nll
from lora_lab.training.methods import sort_labels
from lora_lab.training.optim import make_adamw

# The learning-rate rule (notebook 02). Instruction following on string tasks, tiny base,
# constant LR as in the post. Evaluations sit at 10^(k/4) steps, so the loss at step 56 of a
# 300-step run *is* the final loss of a 56-step run (constant LR, same batches): one sweep
# answers both the short and the long budget. Seeds are the outer loop so a partial sweep
# already holds complete seeds. 300 steps is what this 2-core CPU affords (~30 s a run).
LR_RULE_RANKS = [1, 4, 16, 64]
SHORT_BUDGET = 100  # the post: runs under ~100 steps want a larger ratio; searched here too
FULL_LRS = lr_grid(1e-4, 1e-2, 3)  # 1e-4 ... 1e-2, x2.15 apart
LORA_LRS = lr_grid(4.64e-4, 4.64e-2, 3)
# A first pass (7 LRs per method, 2.15x apart) put every optimum inside the grid but at a
# resolution coarser than the ratios it reported (1.2-2.1x), and the 100-step budget read off
# the same curves. The LR search refines each method to 1.47x at the end of training *and*
# at 100 steps, and "full (blocks only)" asks whether FullFT's LR is set by the embeddings,
# lm_head and norms that LoRA leaves frozen.
LR_RULE = Experiment(
    name="lr_rule",
    description="optimal LR of FullFT, full (blocks only) and LoRA r=1..64, 3 seeds, 300 "
    "steps, LR searched to 1.47x at 300 and 100 steps",
    base="tiny",
    task="instruct",
    task_kwargs=INSTRUCT_16K,
    defaults={"steps": 300, "batch_size": 32, "evals_per_decade": 4, "eval_limit": 256},
    grids={
        "full": method_grid(
            seeds=(0, 1, 2),
            full_lrs=FULL_LRS,
            blocks_lrs=lr_grid(4.64e-4, 4.64e-3, 3),
            ranks=LR_RULE_RANKS,
            lora_lrs=LORA_LRS,
        ),
        "ci": grid(method="full", lr=[4.64e-4, 1e-3], seed=0, steps=20, evals_per_decade=2)
        + grid(
            method="lora",
            r=4,
            target_modules="all",
            lr=[2.15e-3, 4.64e-3],
            seed=0,
            steps=20,
            evals_per_decade=2,
        ),
    },
    lr_search=LRSearch(budgets=(None, SHORT_BUDGET)),
)

# The ratio at each dense width: does it move towards 10x, or with hidden / (2 alpha)?
# 200 steps keep `small` (4x tiny's cost per step) affordable. A first pass (5 LRs per
# method, 2.15x apart, 2 seeds) is the starting grid; the search adds a third seed and
# refines every optimum to 1.47x.
WIDTH_GRIDS = {
    "nano": (lr_grid(2.15e-4, 4.64e-3, 3), lr_grid(1e-3, 2.15e-2, 3)),
    "tiny": (lr_grid(2.15e-4, 4.64e-3, 3), lr_grid(1e-3, 2.15e-2, 3)),
    "small": (lr_grid(1e-4, 2.15e-3, 3), lr_grid(1e-3, 2.15e-2, 3)),
}
LR_WIDTH = Experiment(
    name="lr_width",
    description="optimal LR ratio LoRA r=16 / FullFT at each dense preset width, 200 steps, "
    "3 seeds, LR searched to 1.47x",
    base="tiny",
    task="instruct",
    task_kwargs=INSTRUCT_16K,
    defaults={"steps": 200, "batch_size": 32, "evals_per_decade": 4, "eval_limit": 256},
    grids={
        "full": [
            spec
            for seed in (0, 1, 2)
            for base, (full_lrs, lora_lrs) in WIDTH_GRIDS.items()
            for spec in grid(base=base, method="full", lr=full_lrs, seed=seed)
            + grid(base=base, method="lora", r=16, target_modules="all", lr=lora_lrs, seed=seed)
        ],
        "ci": grid(
            base=["nano", "tiny"], method="full", lr=1e-3, seed=0, steps=10, evals_per_decade=2
        ),
    },
    lr_search=LRSearch(),
)


# Where lr_rule's best LR was least certain (r=1's seed-mean curve is flat over 3x, r=4's
# neighbours lie within a seed's spread): the best LR and both lattice neighbours of FullFT,
# r=1 and r=4 at 300 steps, on 5 fresh seeds, so the optimum's location gets 8 seeds.
LR_RULE_CONFIRM = confirmation(
    LR_RULE,
    {"FullFT": [1e-3, 1.47e-3, 2.15e-3], "r=1": [6.81e-4, 1e-3, 1.47e-3],
     "r=4": [1.47e-3, 2.15e-3, 3.16e-3]},
    seeds=(3, 4, 5, 6, 7),
    why="Seeds 0-2 left the best LRs of r=1 and r=4 within a grid step of their neighbours.",
)  # fmt: skip

EXPERIMENTS = (LR_RULE, LR_WIDTH, LR_RULE_CONFIRM)

# The first passes (fixed grids 2.15x apart), kept so notebook 02 can show what the coarser
# sweep suggested beside what the search found; their runs are part of the searched sweeps.
FIRST_PASS_GRIDS = {
    "lr_rule": method_grid(
        seeds=(0, 1, 2), full_lrs=FULL_LRS, ranks=LR_RULE_RANKS, lora_lrs=LORA_LRS
    ),
    "lr_width": [
        spec
        for seed in (0, 1)
        for base, (full_lrs, lora_lrs) in WIDTH_GRIDS.items()
        for spec in grid(base=base, method="full", lr=full_lrs, seed=seed)
        + grid(base=base, method="lora", r=16, target_modules="all", lr=lora_lrs, seed=seed)
    ],
}


def first_pass_keys(name: str) -> set[str]:
    """Record keys of the first, coarser pass of ``lr_rule`` or ``lr_width``."""
    exp = next(e for e in EXPERIMENTS if e.name == name)
    first = dataclasses.replace(exp, grids={"first": FIRST_PASS_GRIDS[name]}, lr_search=None)
    return {s.key for s in first.specs("first")}


# ----------------------------------------------------------------------------- analysis
# The post's numbers this notebook compares with (Schulman et al. 2025, "LoRA Without Regret":
# a 9.8x multiplier fitted over 14 models, ~15x for runs under ~100 steps, ranks 4-512 within
# 2x of each other).
POST_RATIO, POST_SHORT_RATIO, POST_RANK_SPREAD = 10.0, 15.0, 2.0


def ratio_words(lo: float, hi: float) -> str:
    """'above' / 'below' only where the whole interval is; otherwise 'not resolved'."""
    if lo > 1:
        return "above"
    if hi < 1:
        return "below"
    return "not resolved"


def ratio_table(runs: pd.DataFrame, reference: str = "FullFT") -> pd.DataFrame:
    """Optimal-LR ratio of every other method (LoRA ranks, full (blocks only)) to
    ``reference`` with the 95 % interval that carries both optima's locations: columns
    ``label``, ``rank`` (NaN for
    full fine-tuning), ``ratio``, ``lo``, ``hi``, ``n_seeds``, ``interior`` (both optima
    interior at 1.47x) and ``verdict`` (above / below 1, or not resolved)."""
    rows = []
    for label in sort_labels(runs.label):
        if label == reference:
            continue
        res = lr_ratio(runs, {"label": label}, {"label": reference})
        rank = runs[runs.label == label].r.iloc[0]
        rows.append(
            {"label": label, "rank": rank, **res, "verdict": ratio_words(res["lo"], res["hi"])}
        )
    return pd.DataFrame(rows)


def width_table(runs: pd.DataFrame, lora_alpha: float = 32.0) -> pd.DataFrame:
    """The r=16 / FullFT optimal-LR ratio at each base width of an ``lr_width`` sweep, beside
    the ``d / (2 alpha)`` scaling that has been proposed for it."""
    rows = []
    for base_name, d in runs.groupby("base"):
        width = PRESETS[base_name].d_model
        res = lr_ratio(d, {"label": "r=16"}, {"label": "FullFT"})
        opt = optimal_lr(d, ["label"]).set_index("label")
        rows.append(
            {
                "base": base_name,
                "d_model": width,
                **res,
                "d_over_2alpha": width / (2 * lora_alpha),
                "opt_lr_fullft": opt.opt_lr["FullFT"],
                "opt_lr_r16": opt.opt_lr["r=16"],
                "optimum_at_edge": bool(opt.at_edge.any()),
            }
        )
    return pd.DataFrame(rows).sort_values("d_model").reset_index(drop=True)


def load_confirm(results: Any = None) -> pd.DataFrame | None:
    """``lr_rule_confirm`` (FullFT, r=1, r=4 at their best LR and both neighbours, fresh
    seeds), or None when not shipped."""
    folder = results_dir(LR_RULE_CONFIRM.name, root=results)
    return load_runs(folder) if folder.is_dir() and any(folder.glob("*.json")) else None


def confirm_locations(runs: pd.DataFrame, confirm: pd.DataFrame) -> pd.DataFrame:
    """The best LRs located with every seed: the search's seeds at every LR it tried, plus
    the confirmation's fresh seeds at the three LRs it ran (the search's best and its
    lattice neighbours); comparisons pair the seeds both LRs ran. Per method: the best of
    the LRs with every seed (seed mean), its 95 % location interval (``lr_lo`` / ``lr_hi``:
    0 / inf where it reaches an end of what was tried) and the ratio to FullFT's best with
    the interval that carries both locations."""
    labels = sort_labels(confirm.label.unique())
    cols = ["label", "lr", "seed", "final_loss", "diverged"]
    both = pd.concat([runs[runs.label.isin(labels)][cols], confirm[cols]], ignore_index=True)
    seeds = np.sort(both.seed.unique())
    mats = {}
    for lab in labels:
        mine = both[both.label == lab]
        lrs = np.sort(mine.lr.unique())
        mats[lab] = (lrs, align_seeds(mine, seeds, lrs, "final_loss"))
    rows = []
    for label in labels:
        x, m = mats[label]
        loc = optimum_location(x, m)
        complete = np.isfinite(m).all(0)  # the LRs every seed ran
        best = int(np.argmin(np.where(complete, np.nanmean(m, 0), np.inf)))
        row = {"label": label, "seeds": int(np.isfinite(m[:, best]).sum()),
               "best_lr": float(x[best]), "opt_lr": loc.value,
               "lr_lo": loc.lo, "lr_hi": loc.hi}  # fmt: skip
        if label != "FullFT":
            r = optimum_ratio(x, m, *mats["FullFT"])
            row.update(ratio=r.value, ratio_lo=r.lo, ratio_hi=r.hi,
                       verdict=ratio_words(r.lo, r.hi))  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def post_comparison(ratios: pd.DataFrame, optima: pd.DataFrame, by_budget: pd.DataFrame,
                    width: pd.DataFrame) -> list[str]:  # fmt: skip
    """What this sweep says against each of the post's numbers, one sentence each, computed
    from :func:`ratio_table`, :func:`optimal_lr`, :func:`ratio_by_budget` and
    :func:`width_table` outputs (notebook 02 prints them; nothing is typed)."""
    r = ratios.set_index("label")
    inv = rank_spread(optima)
    steps = sorted(by_budget.steps.unique())
    mean = by_budget.groupby("steps").ratio.mean()
    excludes = [lab for lab, x in r.iterrows() if x.hi < POST_RATIO]
    lines = [
        "LoRA / FullFT optimal LR (95 %, both locations carried): "
        + "; ".join(f"{lab}: {x.verdict} {ratio_text(Estimate(x.ratio, x.lo, x.hi, 0, ''))}"
                    for lab, x in r.iterrows())  # fmt: skip
        + f". The post's ~{POST_RATIO:g}x is excluded for "
        + (", ".join(excludes) if excludes else "none of them") + ".",
        f"Short runs: the point ratio over r = 4-64 is {mean[steps[0]]:.1f}x at {steps[0]} "
        f"steps vs {mean[steps[-1]]:.1f}x at {steps[-1]} (the post: ~{POST_SHORT_RATIO:g}x "
        f"under ~100 steps vs ~{POST_RATIO:g}x); the direction "
        + ("agrees" if mean[steps[0]] > mean[steps[-1]] else "does not agree")
        + ", the intervals overlap.",
        f"Rank invariance: the r = 4-64 optima (parabola vertices) span {inv['spread']:.2f}x "
        f"(the post: < {POST_RANK_SPREAD:g}x); rank 1's is {inv['rank1_vs_geomean']:.2f}x "
        "their geometric mean (the post: rank 1 prefers a somewhat lower LR).",
        "Width (r=16 / FullFT): " + ", ".join(
            f"d = {w.d_model}: {ratio_text(Estimate(w.ratio, w.lo, w.hi, 0, ''))} against "
            f"d/(2 alpha) = {w.d_over_2alpha:.2f}" for w in width.itertuples()) + ".",
    ]  # fmt: skip
    return lines


def rank_spread(optima: pd.DataFrame, ranks: tuple[int, ...] = (4, 16, 64)) -> dict[str, float]:
    """How rank-invariant the optimum is: max/min of the optima of ``ranks``, and rank 1's
    optimum relative to their geometric mean."""
    opt = dict(zip(optima.label, optima.opt_lr))
    mid = np.array([opt[f"r={r}"] for r in ranks])
    geo = float(np.exp(np.log(mid).mean()))
    return {
        "spread": float(mid.max() / mid.min()),
        "rank1_vs_geomean": opt.get("r=1", np.nan) / geo,
    }


# ----------------------------------------------------------------------------- first update
# With B = 0 the first Adam step moves only B (A's gradient is zero while B is zero), by
# -lr * sign(grad B) per entry. The weight update is then (alpha/r) * sum_k db_k a_k^T: an
# average over r rank-one terms. Its projection on the loss gradient (what lowers the loss)
# has the same expectation for every r; only its noise shrinks with r.


def first_update(
    base: torch.nn.Module,
    data: SFTDataset,
    config: LoraConfig,
    lr: float,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """One AdamW step of LoRA from its initialisation on one batch; statistics of ΔW.

    Returns the Frobenius norm of the total weight update, its alignment with the negative
    full-weight gradient (cosine, and the first-order loss change <G, ΔW>), and the actual
    loss change on the same batch.
    """
    with torch.random.fork_rng(devices=[]):  # seeds A's init without touching the caller's RNG
        torch.manual_seed(seed)
        model = inject_lora(copy.deepcopy(base), config)
    inputs, targets, mask = data.tensors()
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:batch_size]
    batch = (inputs[idx], targets[idx], mask[idx])
    layers = lora_layers(model)

    # full-weight gradient G at the base point (B = 0, so the model equals the base)
    for layer in layers.values():
        layer.base_layer.weight.requires_grad_(True)
    loss0, _ = masked_nll(model, *batch)
    loss0.backward()
    grads = {n: layer.base_layer.weight.grad.clone() for n, layer in layers.items()}
    for layer in layers.values():
        layer.base_layer.weight.requires_grad_(False)
        layer.base_layer.weight.grad = None

    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_adamw(params, lr=lr)
    opt.step()  # LoRA grads were filled by the same backward pass
    with torch.no_grad():
        deltas = {n: layer.delta_weight() for n, layer in layers.items()}
        loss1, _ = masked_nll(model, *batch)
    g = torch.cat([grads[n].flatten() for n in layers])
    d = torch.cat([deltas[n].flatten() for n in layers])
    return {
        "r": config.r,
        "lr": lr,
        "delta_norm": float(d.norm()),
        "cosine_with_neg_grad": float(-(g @ d) / (g.norm() * d.norm() + 1e-30)),
        "first_order_loss_change": float(g @ d),
        "loss_change": float(loss1 - loss0.detach()),
    }


def first_update_table(
    base: torch.nn.Module,
    data: SFTDataset,
    ranks: list[int],
    lr: float,
    seeds: list[int] | tuple[int, ...] = (0, 1, 2),
    **kwargs: Any,
) -> pd.DataFrame:
    """:func:`first_update` for every rank and seed (different seeds: different A init)."""
    rows = [
        first_update(base, data, LoraConfig(r=r, **kwargs), lr, seed=s) | {"seed": s}
        for r in ranks
        for s in seeds
    ]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- summary


def _ratio(x: Any) -> str:
    return ratio_text(Estimate(x.ratio, x.lo, x.hi, int(x.n_seeds), "optimum ratio"))


def summary(results: Any = None) -> str:
    """Finding 2 in one paragraph, every number computed from the shipped records."""
    folder = results_dir("lr_rule", root=results)
    runs, curves = load_runs(folder), load_curves(folder)
    steps = int(runs.steps.max())
    optima = optimal_lr(runs, ["label"])
    ratios = ratio_table(runs).set_index("label")
    words = {"above": "above 1", "below": "below 1", "not resolved": "not resolved from 1"}
    parts = [f"{label}: {words[x.verdict]}, {_ratio(x)}" for label, x in ratios.iterrows()]
    inv = rank_spread(optima)
    short = ratio_by_budget(
        curves,
        {r: {"label": f"r={r}"} for r in (4, 16, 64)},
        {"label": "FullFT"},
        [SHORT_BUDGET, steps],
    )
    mean = short.groupby("steps").ratio.mean()
    width_runs = load_runs(results_dir("lr_width", root=results))
    width = width_table(width_runs)
    widths = ", ".join(
        f"d = {w.d_model}: {_ratio(w)}" + ("" if w.interior else ", not interior at 1.47x")
        for w in width.itertuples()
    )
    seeds = runs.seed.nunique()
    below_10 = bool((ratios.hi < POST_RATIO).all())
    text = (
        f"What the shipped `lr_rule` sweep says about finding 2 (tiny base, `instruct`, {steps} "
        f"steps, constant LR, {seeds} seeds; {interior_text(optima)}; a ratio's 95 % "
        "interval carries both optima's locations (each the run of grid points around the "
        "best that no inner neighbour beats, widened by one); "
        f"notebook 02 recomputes all of it). Optimal LR over FullFT's: "
        + "; ".join(parts)
        + f" — {'every interval below' if below_10 else 'not every interval excludes'} the "
        f"post's ~{POST_RATIO:g}x. Ranks 4–64 share an optimum within {inv['spread']:.2f}x "
        f"(parabola vertices); rank 1's is {inv['rank1_vs_geomean']:.2f}x their geometric "
        f"mean. Mean point ratio over r = 4–64 at {SHORT_BUDGET} steps "
        f"{mean[SHORT_BUDGET]:.2f}x vs "
        f"{mean[steps]:.2f}x at {steps}. r=16 / FullFT across widths (`lr_width`, "
        f"{int(width_runs.steps.max())} steps): {widths}."
    )
    confirm = load_confirm(results)
    if confirm is not None:
        loc = confirm_locations(runs, confirm).set_index("label")
        n = int(loc.seeds.max())
        text += (
            f" With {n} seeds at the best LR and both neighbours (the confirmation's fresh "
            "seeds added): "
            + "; ".join(
                f"{lab} / FullFT: {words[r.verdict]}, "
                f"{ratio_text(Estimate(r.ratio, r.ratio_lo, r.ratio_hi, n, ''))}"
                for lab, r in loc.drop(index="FullFT").iterrows()
            )
            + "; the post's ~"
            + f"{POST_RATIO:g}x is "
            + (
                "excluded for every rank confirmed"
                if (loc.ratio_hi.dropna() < POST_RATIO).all()
                else "not excluded for every rank"
            )  # fmt: skip
            + "."
        )
    return text


def headline(results: Any = None) -> Headline:
    """Finding 2 as one row of the front page: the LR ratio on the confirmation's seeds
    (the search's where no confirmation ran), from the ``lr_rule`` records."""
    runs = load_runs(results_dir("lr_rule", root=results))
    confirm = load_confirm(results)
    if confirm is not None:
        loc = confirm_locations(runs, confirm).set_index("label").drop(index="FullFT")
        seeds = int(loc.seeds.max())
        rows = [(lab, r.ratio, r.ratio_lo, r.ratio_hi) for lab, r in loc.iterrows()]
    else:
        ratios = ratio_table(runs).set_index("label")
        seeds = runs.seed.nunique()
        rows = [(lab, r.ratio, r.lo, r.hi) for lab, r in ratios.iterrows()]
    below = all(hi < POST_RATIO for *_, hi in rows)
    measured = (
        "best LR over FullFT's: "
        + ", ".join(f"{lab} {ratio_text(Estimate(v, lo, hi, seeds, ''))}"
                    for lab, v, lo, hi in rows)
        + f" (95 %, {seeds} seeds, {int(runs.steps.max())} steps, `instruct`); ~{POST_RATIO:g}x "
        + ("excluded" if below else "not excluded")
    )  # fmt: skip

    def figure() -> Any:
        means = seed_mean(runs, ["label"])
        return plot_lr_curves(means, optima=optimal_lr(runs, ["label"]),
                              title=f"Loss vs LR after {int(runs.steps.max())} steps")  # fmt: skip

    return Headline(
        finding="2 · learning rate",
        claim=f"LoRA's best learning rate is ~{POST_RATIO:g}x FullFT's, nearly independent of rank",
        measured=measured, status="does not hold" if below else "not resolved",
        notebook="02_learning_rate", experiments=("lr_rule", LR_RULE_CONFIRM.name), figure=figure,
    )  # fmt: skip
