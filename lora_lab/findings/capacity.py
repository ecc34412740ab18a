"""Finding 1 (notebook 01): LoRA matches FullFT until the data holds more information than
the adapter can store; then low ranks lose training efficiency, without a hard floor.

Experiments ``capacity`` (bits stored on ``facts`` vs N), ``rank_curves`` (the post's figure
1) and ``small_data``; the capacity analysis (tables, which adapters ran out of room, bits
per parameter, ``suggest_rank``); the curve and small-data verdicts the notebook states; and
the live :class:`CapacityPanel`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from lora_lab.analysis import (
    best_over_lr,
    curve_seed_spread,
    departure_step,
    load_curves,
    load_runs,
    optimal_lr,
    pointwise_min_curves,
    steps_to_match,
)
from lora_lab.findings.common import (
    Claim,
    Headline,
    contrast,
    gap,
    interior_text,
    verdict_columns,
)
from lora_lab.lora import LoraConfig, count_lora_params
from lora_lab.model import ModelConfig
from lora_lab.plots import line_styles, plot_loss_vs_n
from lora_lab.stats import seeds_for_margin
from lora_lab.sweeps.experiment import (
    Experiment,
    confirmation,
    grid,
    lr_grid,
    method_grid,
    results_dir,
)
from lora_lab.sweeps.lr_search import LRSearch
from lora_lab.tasks import make_task
from lora_lab.tasks.base import SFTDataset
from lora_lab.tasks.facts import bits_per_fact
from lora_lab.tasks.instruct import INSTRUCT_16K
from lora_lab.training.bits import sample_bits_metric
from lora_lab.training.methods import FullFT, sort_labels
from lora_lab.training.sft import RunResult, train
from lora_lab.widgets import WIDE, LivePanel, lr_options, rank_options

BITS_PER_FACT = bits_per_fact()  # 4-letter random codes: log2(26**4) = 18.8 bits

# Capacity in bits (notebook 01). `facts` holds exactly 18.8 bits per fact, so bits stored =
# information - remaining code length of the answers. Every run has the same budget (400
# steps x 64 = 25.6k examples: 102, 51 and 26 epochs of N = 250, 500, 1000): a lower
# bits-stored at larger N is lost training efficiency, not a shorter run. At this budget
# FullFT memorises all three while r=1 (4.9k params) and r=4 (19.7k) should run out of room;
# r=16 (78.8k) and r=64 (315k, more than the whole d=64 base) should not. A first pass also
# tried N=4000 (6.4 epochs): every method stored <= 4.4 % (FullFT 2.2 %), too few epochs to
# memorise anything, so it was dropped; keeping all of FullFT's epochs at N=4000 would cost
# 4x per run, more than this CPU affords. Three LRs per method on the lr_rule lattice: with
# the upper two only, r=1/r=4 and FullFT were best at the lower edge (r=1 at N=1000 stored
# 2.7k bits at 2.15e-3, 0.2k at 4.64e-3), so the grid was extended one step down.
CAPACITY_N = [250, 500, 1000]
CAPACITY_RANKS = [1, 4, 16, 64]
CAPACITY_FULL_LRS = [4.64e-4, 1e-3, 2.15e-3]
CAPACITY_LORA_LRS = [1e-3, 2.15e-3, 4.64e-3]
CAPACITY = Experiment(
    name="capacity",
    description="bits stored on facts vs N, FullFT and LoRA r=1..64, 400 steps, 3 seeds, "
    "LR searched to 1.47x",
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
        "full": [
            spec
            for seed in (0, 1, 2)
            for n in CAPACITY_N
            for spec in method_grid(
                seeds=[seed],
                full_lrs=CAPACITY_FULL_LRS,
                ranks=CAPACITY_RANKS,
                lora_lrs=CAPACITY_LORA_LRS,
                task_kwargs={"n_entities": n, "seed": 0},
            )
        ],
        "ci": grid(
            task_kwargs={"n_entities": 64, "seed": 0},
            method="full",
            lr=2.15e-3,
            seed=0,
            steps=12,
            evals_per_decade=2,
        )
        + grid(
            task_kwargs={"n_entities": 64, "seed": 0},
            method="lora",
            r=[1, 16],
            target_modules="all",
            lr=4.64e-3,
            seed=0,
            steps=12,
            evals_per_decade=2,
        ),
    },
    lr_search=LRSearch(),
)

# Seed claim "rank 8-16 is indistinguishable from FullFT on small instruction data": the
# instruct task cut to 1,000 training examples, 300 steps x 32 (9.6 epochs). A first pass
# (3 LRs, 2 seeds) left every best LR at a grid edge; the LR search now extends and refines
# each method's grid to an interior optimum at 1.47x, over 3 seeds, with the "full (blocks
# only)" control.
SMALL_INSTRUCT = {"n_train": 1000, "n_test": 500, "seed": 0}
SMALL_DATA = Experiment(
    name="small_data",
    description="FullFT, full (blocks only), LoRA r=1..16 on 1,000 instruction examples, "
    "300 steps, 3 seeds, LR searched to 1.47x",
    base="tiny",
    task="instruct",
    task_kwargs=SMALL_INSTRUCT,
    defaults={"steps": 300, "batch_size": 32, "evals_per_decade": 4, "eval_limit": 256},
    grids={
        "full": method_grid(
            seeds=(0, 1, 2),
            full_lrs=lr_grid(4.64e-4, 2.15e-3, 3),
            blocks_lrs=lr_grid(1e-3, 2.15e-3, 3),
            ranks=[1, 4, 8, 16],
            lora_lrs=lr_grid(1e-3, 4.64e-3, 3),
        ),
        "ci": grid(method="full", lr=1e-3, seed=0, steps=10, evals_per_decade=2)
        + grid(method="lora", r=8, target_modules="all", lr=2.15e-3, seed=0, steps=10),
    },
    lr_search=LRSearch(),
)

# The post's figure 1 at compact scale, run longer than lr_rule (1,000 steps = 2 epochs of
# the 16k instruct set) so that "how many more steps does LoRA need to reach FullFT's loss"
# can be read where lr_rule's 300 steps end. A first pass started at and below lr_rule's
# 300-step optima (longer runs prefer lower LRs) and left every best LR at the top of its
# grid, so the full-rank r=64 adapter (every block matrix at full rank at d=64) ended far
# behind FullFT with its LR truncated. The LR search now takes each method to an interior
# optimum at 1.47x over 3 seeds, and "full (blocks only)" trains exactly the matrices the
# adapters adapt, separating frozen embeddings / lm_head / norms from rank. Each curve is
# the pointwise minimum over LR.
RANK_CURVES = Experiment(
    name="rank_curves",
    description="learning curves on instruct, 1,000 steps: FullFT, full (blocks only), LoRA "
    "r=1..64, 3 seeds, LR searched to 1.47x",
    base="tiny",
    task="instruct",
    task_kwargs=INSTRUCT_16K,
    defaults={"steps": 1000, "batch_size": 32, "evals_per_decade": 6, "eval_limit": 256},
    grids={
        "full": method_grid(
            seeds=(0, 1, 2),
            full_lrs=lr_grid(4.64e-4, 2.15e-3, 3),
            blocks_lrs=lr_grid(1e-3, 2.15e-3, 3),
            ranks=CAPACITY_RANKS,
            lora_lrs=lr_grid(1e-3, 2.15e-3, 3),
        ),
        "ci": grid(method="full", lr=1e-3, seed=0, steps=12, evals_per_decade=3)
        + grid(
            method="lora",
            r=[1, 16],
            target_modules="all",
            lr=2.15e-3,
            seed=0,
            steps=12,
            evals_per_decade=3,
        ),
    },
    lr_search=LRSearch(),
)

# small_data's r=8 and r=16 against FullFT, each at its best LR (seeds 0-2), on 7 fresh seeds:
# with 3 seeds their gaps to FullFT were not resolved.
SMALL_DATA_CONFIRM = confirmation(
    SMALL_DATA,
    {"FullFT": [3.16e-4], "r=8": [4.64e-3], "r=16": [6.81e-3]},
    why="Seeds 0-2 left r=8 and r=16 against FullFT unresolved.",
)

EXPERIMENTS = (CAPACITY, SMALL_DATA, RANK_CURVES, SMALL_DATA_CONFIRM)

# The first passes of small_data and rank_curves (2 seeds, fixed 3-point LR grids), kept so
# notebook 01 can show what the coarser sweep suggested next to what the search found. Their
# runs are part of the searched sweeps (same specs), so nothing is run twice.
FIRST_PASS_GRIDS = {
    "small_data": method_grid(
        seeds=(0, 1),
        full_lrs=lr_grid(4.64e-4, 2.15e-3, 3),
        ranks=[1, 4, 8, 16],
        lora_lrs=lr_grid(1e-3, 4.64e-3, 3),
    ),
    "rank_curves": method_grid(
        seeds=(0, 1),
        full_lrs=lr_grid(4.64e-4, 2.15e-3, 3),
        ranks=CAPACITY_RANKS,
        lora_lrs=lr_grid(1e-3, 2.15e-3, 3),
    ),
}


def first_pass_keys(name: str) -> set[str]:
    """Record keys of the first, coarser pass of ``small_data`` or ``rank_curves``."""
    exp = next(e for e in EXPERIMENTS if e.name == name)
    first = dataclasses.replace(exp, grids={"first": FIRST_PASS_GRIDS[name]}, lr_search=None)
    return {s.key for s in first.specs("first")}


# ----------------------------------------------------------------------------- capacity analysis

# Allen-Zhu & Li (Physics of Language Models 3.3): ~2 bits per parameter after ~1,000 exposures
# per fact, the capacity the post quotes.
LONG_TRAINING_BITS_PER_PARAM = 2.0

# Bits per trainable parameter that capacity-bound adapters held in the shipped `capacity`
# sweep (median 0.64 over r=1 and r=4 runs, tiny base, 400 steps; notebook 01 recomputes
# it and tests/test_finding_capacity.py keeps this default within 25 % of the records).
# Allen-Zhu & Li report ~2 for training long enough to see each fact ~1,000 times; short
# runs store far less.
SHORT_RUN_BITS_PER_PARAM = 0.6


def suggest_rank(
    model: torch.nn.Module | ModelConfig,
    data: SFTDataset | None = None,
    *,
    bits: float | None = None,
    completion_tokens: int | None = None,
    bits_per_param: float = SHORT_RUN_BITS_PER_PARAM,
    target_modules: Any = "all",
    ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    verbose: bool = True,
) -> int:
    """Smallest rank whose adapter should not be capacity-bound, with the reasoning printed.

    ``model`` is the base (or its config); ``data`` supplies ``bits`` (its information
    content, where known, as on ``facts``) and ``completion_tokens`` unless they are given.
    With bits known, the adapter must hold them at ``bits_per_param`` (default: what
    capacity-bound adapters held in the shipped short-run sweep, 0.6). Otherwise it falls back to
    Tinker's rule of thumb, LoRA parameters >= completion tokens trained on. If even the
    largest rank is too small it returns that rank and says to use full fine-tuning.
    """
    config = model.config if isinstance(model, torch.nn.Module) else model
    if data is not None:
        bits = bits if bits is not None else data.info_bits
        completion_tokens = completion_tokens or data.completion_tokens
    if bits is None and completion_tokens is None:
        raise ValueError("give data, bits (information content) or completion_tokens")
    if bits_per_param <= 0:
        raise ValueError("bits_per_param must be positive")

    def params(r: int) -> int:
        return count_lora_params(config, LoraConfig(r=r, target_modules=target_modules))

    if bits is not None:
        need = bits / bits_per_param
        why = f"{bits:,.0f} bits at {bits_per_param:g} bits/param"
    else:
        need = float(completion_tokens)
        why = f"{completion_tokens:,} completion tokens (Tinker: params >= tokens)"
    chosen = next((r for r in ranks if params(r) >= need), None)
    if verbose:
        if chosen is None:
            print(
                f"need >= {need:,.0f} LoRA parameters for {why}; even r={ranks[-1]} gives only "
                f"{params(ranks[-1]):,}: use full fine-tuning"
            )
        else:
            print(
                f"need >= {need:,.0f} LoRA parameters for {why}; "
                f"r={chosen} on {target_modules!r} gives {params(chosen):,} -> suggest r={chosen}"
            )
        if bits is not None and completion_tokens:
            tinker = next((r for r in ranks if params(r) >= completion_tokens), ranks[-1])
            print(
                f"  (Tinker's params >= tokens rule would say r={tinker} for "
                f"{completion_tokens:,} completion tokens, i.e. it assumes "
                f"{bits / completion_tokens:.2f} bits/param here)"
            )
    return ranks[-1] if chosen is None else chosen


# ----------------------------------------------------------------------------- sweep analysis


def capacity_table(runs: pd.DataFrame, n_col: str = "task_n_entities") -> pd.DataFrame:
    """One row per (N, method) at its best LR (lowest seed-mean final recall loss): loss,
    bits stored (seed mean and std), fraction of the information stored, bits per
    trainable parameter. ``runs`` is :func:`lora_lab.analysis.load_runs` of a capacity sweep."""
    need = {n_col, "label", "lr", "seed", "final_loss", "bits_stored", "info_bits"}
    missing = need - set(runs.columns)
    if missing:
        raise ValueError(f"runs lack {sorted(missing)}: is this a sweep with measure_bits?")
    best = best_over_lr(runs, [n_col, "label"])
    rows = []
    for _, b in best.iterrows():
        tried = runs[(runs[n_col] == b[n_col]) & (runs.label == b.label)].lr
        at = runs[(runs[n_col] == b[n_col]) & (runs.label == b.label) & (runs.lr == b.lr)]
        params = int(at.trainable_params.iloc[0])
        bits = at.bits_stored.mean()
        rows.append(
            {
                "n_facts": int(b[n_col]),
                "label": b.label,
                "r": at.r.iloc[0],
                "lr": b.lr,
                "lr_at_grid_edge": bool(b.lr in (tried.min(), tried.max())),
                "loss": b.best_loss,
                "loss_std": b["std"],
                "info_bits": float(at.info_bits.iloc[0]),
                "bits_stored": bits,
                "bits_std": at.bits_stored.std(),
                "fraction_stored": bits / float(at.info_bits.iloc[0]),
                "trainable_params": params,
                "bits_per_param": bits / params,
                "seeds": len(at),
            }
        )
    return (
        pd.DataFrame(rows).sort_values(["n_facts", "r"], na_position="first").reset_index(drop=True)
    )


def capacity_bound(table: pd.DataFrame, relative_to_full: float = 0.75) -> pd.Series:
    """Rows whose adapter, not the training budget, limits what was stored: it stores less
    than ``relative_to_full`` of what FullFT stored on the same N with the same budget.
    (FullFT itself may not store everything at large N in a short run; comparing with it
    separates "out of room" from "out of steps".)"""
    full = table[table.label == "FullFT"].set_index("n_facts").bits_stored
    ref = table.n_facts.map(full)
    return (table.label != "FullFT") & (table.bits_stored < relative_to_full * ref)


def measured_bits_per_param(
    table: pd.DataFrame, n_values: list[int] | None = None, relative_to_full: float = 0.75
) -> float:
    """Bits per trainable parameter an adapter holds when it is full: the median over
    capacity-bound LoRA rows (restricted to ``n_values`` if given, e.g. to keep an N value
    out for a held-out check). NaN if no row is capacity-bound."""
    rows = table[capacity_bound(table, relative_to_full)]
    if n_values is not None:
        rows = rows[rows.n_facts.isin(n_values)]
    return float(rows.bits_per_param.median()) if len(rows) else float("nan")


# ----------------------------------------------------------------------------- curves and gaps


def suggest_rank_check(table: pd.DataFrame, base: torch.nn.Module,
                       verbose: bool = True) -> tuple[pd.DataFrame, int, float]:  # fmt: skip
    """:func:`suggest_rank` checked on the N values it was not fitted on: the bits per
    parameter are measured on the largest N of ``table`` (:func:`capacity_table` with a
    ``bound`` column), then for every other N the suggested rank must have room and the
    next smaller rank must not. Tinker's tokens rule is checked beside it. Returns the
    checks, the N fitted on and the fitted bits per parameter."""
    fit_n = int(table.n_facts.max())
    bpp = measured_bits_per_param(table, n_values=[fit_n])
    ranks = tuple(int(r) for r in sorted(table.r.dropna().unique()))
    rows = []
    for n in sorted(table.n_facts.unique()):
        if n == fit_n:
            continue
        data = make_task("facts", n_entities=int(n), seed=0).train
        if verbose:
            print(f"N={n:,}:", end=" ")
        r_bits = suggest_rank(base, data, bits_per_param=bpp, ranks=ranks, verbose=verbose)
        r_tinker = suggest_rank(base, completion_tokens=data.completion_tokens, ranks=ranks,
                                verbose=False)  # fmt: skip
        d = table[table.n_facts == n].set_index("label")
        room = not bool(d.loc[f"r={r_bits}", "bound"])
        smaller = [r for r in ranks if r < r_bits]
        smaller_bound = bool(d.loc[f"r={smaller[-1]}", "bound"]) if smaller else True
        rows.append({"n_facts": n, "bits": data.info_bits, "suggested_r": r_bits,
                     "tinker_r": r_tinker, "suggested_not_bound": room,
                     "next_smaller_bound": smaller_bound, "holds": room and smaller_bound,
                     "tinker_r_not_bound": not bool(d.loc[f"r={r_tinker}", "bound"])})  # fmt: skip
    return pd.DataFrame(rows), fit_n, bpp


def late_growth(curves: pd.DataFrame, table: pd.DataFrame, n: int,
                from_step: int = 100) -> tuple[pd.DataFrame, pd.Series]:  # fmt: skip
    """The bits-stored curves at N = ``n`` (seed mean, each method at its best LR) and how
    much each grew from ``from_step`` to the end: "no hard floor" in numbers."""
    best_lr = table[table.n_facts == n].set_index("label").lr
    c = curves[curves.task_n_entities == n]
    c = c[c.lr == c.label.map(best_lr)]
    bits = c.groupby(["label", "step"]).bits_stored.mean().reset_index()
    late = bits[bits.step >= from_step].pivot(index="step", columns="label", values="bits_stored")
    growth = (late.iloc[-1] / late.iloc[0]).rename(f"bits at end / bits at step {from_step}")
    return bits, growth


def steps_ratio_bounds(best: pd.DataFrame, labels: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How many more steps each adapter needs to reach FullFT's loss (the circulating
    "2-5x more steps on large data"): :func:`steps_to_match` for every label, and per label
    the last FullFT step it matched (with the ratio there) and the first it never matched
    within the run (where the ratio is at least run length / that step)."""
    stm = pd.concat([steps_to_match(best, lbl).assign(label=lbl) for lbl in labels])
    last = stm.dropna().sort_values("reference_step").groupby("label").tail(1).set_index("label")
    unreached = stm[stm.steps_needed.isna()].groupby("label").reference_step.min()
    run_len = best.step.max()
    bounds = pd.DataFrame({"last matched FullFT step": last.reference_step,
                           "steps LoRA needed": last.steps_needed, "ratio there": last.step_ratio,
                           "first FullFT step never matched": unreached,
                           "ratio there is at least": run_len / unreached})  # fmt: skip
    return stm, bounds


def noise_tolerance(spread: float, floor: float = 0.02) -> float:
    """How far a learning curve must sit above FullFT's to count as having "left" it:
    twice the measured seed-to-seed spread of a curve point, and never below ``floor``
    nats. A threshold for drawing departures, not a verdict (verdicts use :data:`MARGIN`
    and intervals)."""
    return max(floor, 2.0 * float(spread))


def departure_tolerance(curves: pd.DataFrame) -> float:
    """:func:`noise_tolerance` of a sweep's learning curves (median seed std of a point)."""
    return noise_tolerance(curve_seed_spread(curves))


# Held-out loss differences smaller than this count as "equivalent" (stated before the
# confirmation seeds: the old noise floor, ~1 % of FullFT's loss on instruct; rank 1 trails
# FullFT by 20x this on 16k examples).
MARGIN = 0.02


def _verdicts(runs: pd.DataFrame, labels: list[str], reference: str, metric: str,
              subject: str) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for label in labels:
        v = contrast(runs, {"label": label}, {"label": reference}, metric, MARGIN,
                     subject if label.startswith("r=") else label, units="nats/token")  # fmt: skip
        cols = verdict_columns(v)
        best = runs[runs.label == label].groupby("lr")[metric].mean().idxmin()
        rows.append({"metric": metric, "label": label, "lr": best, "gap": cols.pop("value"),
                     **cols})  # fmt: skip
    return rows


def small_data_gaps(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """LoRA minus FullFT on the ``small_data`` sweep, at the final step and with early
    stopping (each run's best evaluation), each method at its own best LR, as verdicts
    (95 % paired-seed interval covering the LRs that could be best; margin :data:`MARGIN`)."""
    best_step = curves[curves.step > 0].groupby("key").eval_loss.min().rename("early_stop_loss")
    runs = runs.join(best_step, on="key")
    labels = [lab for lab in sort_labels(runs.label.unique()) if lab != "FullFT"]
    rows = []
    for metric in ("final_loss", "early_stop_loss"):
        rows += _verdicts(runs, labels, "FullFT", metric, "LoRA")
    return pd.DataFrame(rows)


def load_small_data_confirm(results: Any = None) -> pd.DataFrame | None:
    """``small_data_confirm`` (r=8, r=16 and FullFT at the LRs the search chose, on fresh
    seeds), or None when not shipped."""
    folder = results_dir(SMALL_DATA_CONFIRM.name, root=results)
    return load_runs(folder) if folder.is_dir() and any(folder.glob("*.json")) else None


def small_data_confirm_gaps(confirm: pd.DataFrame) -> pd.DataFrame:
    """The confirmation's gaps to FullFT at the end of training: one LR per method, chosen
    on other seeds, so each interval is the plain paired t over the fresh seeds."""
    labels = [lab for lab in sort_labels(confirm.label.unique()) if lab != "FullFT"]
    out = pd.DataFrame(_verdicts(confirm, labels, "FullFT", "final_loss", "LoRA"))
    # how many seeds a 90 % interval of half-width MARGIN would take at this per-seed spread
    # (a lower bound when the gap itself is not near 0): what to run before adding words
    full = confirm[confirm.label == "FullFT"].set_index("seed").final_loss
    spread = [float((confirm[confirm.label == lab].set_index("seed").final_loss - full).std())
              for lab in out.label]  # fmt: skip
    out["seeds_for_margin"] = [seeds_for_margin(sd, MARGIN) for sd in spread]
    return out


CLAIM_SMALL_DATA = "rank 16-64 on all layers is best practice for small data"
CLAIM_LARGE_DATA = "LoRA ends 5-10 % worse on large data"


def large_data_claim(runs: pd.DataFrame) -> Claim:
    """The circulating claim, read on ``rank_curves`` (16k instruction examples, 1,000
    steps) in the one unit this design has for "worse": held-out loss per token, LoRA's
    over FullFT's at each one's best LR (paired log ratio, 95 %). It holds for a rank whose
    interval lies inside +5..+10 %, does not hold for one whose interval lies outside it
    (one such rank refutes the general claim), and is not resolved otherwise; the claim's
    own unit is unstated."""
    logged = runs.assign(_log=np.log(runs.final_loss))
    parts, kinds = [], []
    for label in [lab for lab in sort_labels(runs.label.unique()) if lab.startswith("r=")]:
        e = gap(logged, {"label": label}, {"label": "FullFT"}, "_log")
        lo, hi = math.expm1(e.lo), math.expm1(e.hi)
        kinds.append("holds" if lo >= 0.05 and hi <= 0.10 else
                     "does not hold" if hi < 0.05 or lo > 0.10 else "not resolved")  # fmt: skip
        parts.append(f"{label} {math.expm1(e.value):+.0%} [{lo:+.0%}, {hi:+.0%}]")
    status = kinds[0] if len(set(kinds)) == 1 else "not resolved"
    return Claim(
        CLAIM_LARGE_DATA,
        "circulating",
        status,
        f"16k examples, {int(runs.steps.max()):,} steps, held-out loss per token "
        "relative to FullFT's (the claim states no unit): " + "; ".join(parts),
    )


CLAIM_RANK_8_16 = "rank 8-16 is indistinguishable from FullFT on small instruction data"


def rank_8_16_claim(gaps: pd.DataFrame, metric: str = "final_loss") -> Claim:
    """The circulating claim from :func:`small_data_gaps` (or the confirmation's gaps): it
    holds when r=8 and r=16 are both *equivalent* to FullFT within the margin, does not hold
    when either is better or worse, and is not resolved otherwise ("indistinguishable" read
    as equivalence, never as an interval that merely contains 0)."""
    g = gaps[gaps.metric == metric].set_index("label")
    kinds = [g.verdict[lab] for lab in ("r=8", "r=16")]
    if all(k.startswith("equivalent") for k in kinds):
        status = "holds"
    elif any(k.endswith(("worse", "better")) for k in kinds):
        status = "does not hold"
    else:
        status = "not resolved"
    seeds = int(g.seeds.max())
    words = "; ".join(f"{lab}: {g.verdict_text[lab]}" for lab in ("r=8", "r=16"))
    return Claim(CLAIM_RANK_8_16, "circulating", status,
                 f"1,000 examples, {metric.replace('_', ' ')}, {seeds} seeds: {words}")  # fmt: skip


def small_data_claim(runs: pd.DataFrame, confirm: pd.DataFrame | None = None) -> Claim:
    """The circulating claim, as far as ``small_data`` reaches (ranks 1-16, all layers):
    does r=16 do at least as well as every lower rank (final loss, best LR each, margin
    :data:`MARGIN`)? Rank 64 was not in this sweep, and the claim's "best practice" has no
    unit: a lower rank equivalent to r=16 counts against "needs 16"."""
    others = [lab for lab in sort_labels(runs.label.unique()) if lab.startswith("r=")
              and lab != "r=16"]  # fmt: skip
    vs = {lab: contrast(runs, {"label": "r=16"}, {"label": lab}, "final_loss", MARGIN, "r=16",
                        units="nats/token") for lab in others}  # fmt: skip
    words = "; ".join(f"r=16 vs {lab}: {v.text}" for lab, v in vs.items())
    kinds = {v.kind for v in vs.values()}
    if "worse" in kinds:
        status = "does not hold"
    elif kinds <= {"better"}:
        status = "holds"
    elif "not resolved" in kinds:
        status = "not resolved"
    else:  # some lower rank is equivalent: rank 16 is not needed
        status = "does not hold"
    return Claim(CLAIM_SMALL_DATA, "circulating", status,
                 f"r=64 not in this design; on 1,000 examples: {words}")  # fmt: skip


def full_rank_control(runs: pd.DataFrame, adapter: str = "r=64") -> pd.DataFrame:
    """The control that separates rank from frozen layers: ``adapter`` (full rank at d = 64:
    every block matrix adapted at rank 64) against "full (blocks only)" (FullFT of the same
    matrices) and FullFT (which also trains embeddings, lm_head and norms), each at its best
    LR. ``gap`` is the paired loss difference to "full (blocks only)" as a verdict (margin
    :data:`MARGIN`); ``seeds_behind`` on how many seeds (at the best LRs) it is behind."""
    labels = ["FullFT", adapter]
    sub = runs[runs.label.isin([*labels, "full (blocks only)"])]
    best = best_over_lr(sub, ["label"]).set_index("label")
    out = pd.DataFrame(_verdicts(sub, labels, "full (blocks only)", "final_loss", "LoRA"))
    ref = sub[(sub.label == "full (blocks only)") & (sub.lr == best.lr["full (blocks only)"])]
    ref = ref.set_index("seed").final_loss
    behind = []
    for label in labels:
        row = sub[(sub.label == label) & (sub.lr == best.lr[label])].set_index("seed")
        diff = (row.final_loss - ref).dropna()
        behind.append(f"{int((diff > 0).sum())}/{len(diff)}")
    out["seeds_behind"] = behind
    out["loss"] = [float(best.best_loss[lab]) for lab in labels]
    return out


# ----------------------------------------------------------------------------- live panel


def sweep_bits_overlay(
    table: pd.DataFrame, curves: pd.DataFrame
) -> Callable[[Any, int, int], None]:
    """An ``overlay`` for :class:`CapacityPanel`: the sweep's bits-stored curves for the
    panel's N, each method at its best LR from ``table`` (:func:`capacity_table`), dashed,
    in the house colours, each in the legend (labels at the line ends piled up)."""

    def overlay(ax: Any, n: int, rank: int) -> None:
        c = curves[curves.task_n_entities == n]
        if c.empty:
            return
        best_lr = table[table.n_facts == n].set_index("label").lr
        c = c[c.lr == c.label.map(best_lr)]
        c = c.groupby(["label", "step"]).bits_stored.mean().reset_index()
        styles = line_styles(c.label.unique())
        for lbl in sort_labels(c.label):
            d = c[(c.label == lbl) & (c.step > 0)]
            st = styles[lbl]
            ax.plot(d.step, d.bits_stored, color=st["color"], lw=1, alpha=0.7, ls="--",
                    marker=st["marker"], markersize=3, label=f"sweep: {lbl}")  # fmt: skip

    return overlay


def run_capacity_from_controls(
    base: Any,
    *,
    n_entities: int,
    rank: int,
    lr: float,
    steps: int,
    batch_size: int = 64,
    seed: int = 0,
    bits_sample: int = 512,
    callback: Callable[[int, dict], None] | None = None,
    progress: bool = False,
) -> RunResult:
    """Train on ``facts`` with ``n_entities`` facts (``rank=0``: FullFT) and log the bits
    stored at every evaluation (estimated on ``bits_sample`` facts; see
    :func:`lora_lab.training.bits.sample_bits_metric`)."""
    if isinstance(n_entities, bool) or not isinstance(n_entities, int) or n_entities <= 0:
        raise ValueError(f"n_entities must be a positive integer, got {n_entities!r}")
    task = make_task("facts", n_entities=int(n_entities), seed=0)
    recall = task.extra["recall"]
    method: Any = FullFT() if rank == 0 else LoraConfig(r=int(rank), target_modules="all")
    return train(
        base,
        task.train,
        method,
        lr=lr,
        steps=int(steps),
        batch_size=int(batch_size),
        eval_data=recall,
        eval_limit=bits_sample,
        eval_metrics=sample_bits_metric(recall, bits_sample),
        seed=seed,
        callback=callback,
        progress=progress,
        evals_per_decade=6,
    )


class CapacityPanel(LivePanel):
    """Pick N facts and a rank, train live, and watch bits stored climb towards what the
    adapter can hold. ``overlay(ax, n, rank)`` draws reference curves (e.g. the sweep's) and
    ``bits_per_param`` sets the dashed "adapter limit" line (params x bits/param)."""

    def __init__(
        self,
        base: Any,
        *,
        n_values: tuple[int, ...] = (250, 500, 1000, 2000),
        ranks: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64),
        n: int = 1000,
        rank: int = 4,
        lr: float = 2.15e-3,  # best for r=4 in the capacity sweep; 4.64e-3 stalls low ranks
        steps: int = 200,
        bits_per_param: float | None = None,
        overlay: Callable[[Any, int, int], None] | None = None,
    ) -> None:
        import ipywidgets as w

        self.base, self.overlay, self.bits_per_param = base, overlay, bits_per_param
        self.n = w.Dropdown(options=list(n_values), value=n, description="N facts", style=WIDE)
        self.rank = w.SelectionSlider(
            options=rank_options(ranks), value=rank, description="rank", style=WIDE
        )
        self.lr = w.SelectionSlider(
            options=lr_options(lr, 1e-4, 3.16e-2), value=float(lr), description="learning rate",
            style=WIDE,
        )  # fmt: skip
        self.steps = w.IntSlider(value=steps, min=20, max=1000, step=20, description="steps")
        self._build([[self.n, self.rank], [self.lr, self.steps]], steps)

    def values(self) -> dict[str, Any]:
        return {
            "n_entities": self.n.value,
            "rank": self.rank.value,
            "lr": self.lr.value,
            "steps": self.steps.value,
        }

    def adapter_limit(self, rank: int) -> float | None:
        """Bits the adapter should hold at ``bits_per_param`` (None for FullFT or unknown)."""
        cfg = getattr(self.base, "config", None)
        if rank == 0 or self.bits_per_param is None or cfg is None:
            return None
        return self.bits_per_param * count_lora_params(cfg, LoraConfig(r=rank))

    def run(self) -> RunResult:
        vals = self.values()
        info = vals["n_entities"] * BITS_PER_FACT
        limit = self.adapter_limit(vals["rank"])
        name = "FullFT" if vals["rank"] == 0 else f"r={vals['rank']}"

        def draw(ax: Any, rows: list[dict]) -> None:
            if self.overlay is not None:
                self.overlay(ax, vals["n_entities"], vals["rank"])
            ax.axhline(info, color="black", ls=":", lw=1, label="information in the data")
            if limit is not None and limit < info:  # drawn only where it is on the axes
                ax.axhline(limit, color="crimson", ls="--", lw=1, label="adapter limit")
            elif limit is not None:
                ax.set_title(f"adapter limit ({limit:,.0f} bits) above the data's information",
                             fontsize=9)  # fmt: skip
            xs = [r["step"] for r in rows]
            ys = [r["bits_stored"] for r in rows]
            ax.plot(xs, ys, "o-", color="crimson", lw=2.5, label=f"live: {name}")
            ax.set_ylabel("bits stored")
            ax.set_ylim(0, info * 1.08)

        callback = self._live(vals["steps"], draw)
        return self._finish(run_capacity_from_controls(self.base, callback=callback, **vals))


# ----------------------------------------------------------------------------- summary


def _climbing(curves: pd.DataFrame, table: pd.DataFrame, n: int, label: str) -> float:
    """Bits at the end over bits halfway through, for one method at its best LR."""
    lr = table[(table.n_facts == n) & (table.label == label)].lr.iloc[0]
    c = curves[(curves.task_n_entities == n) & (curves.label == label) & (curves.lr == lr)]
    c = c.groupby("step").bits_stored.mean()
    steps = c.index.to_numpy()
    return float(c.iloc[-1] / c.loc[steps[steps <= steps[-1] / 2].max()])


def summary(results: Any = None) -> str:
    """Finding 1 in one paragraph, every number computed from the shipped records."""
    cap_runs = load_runs(results_dir("capacity", root=results))
    table = capacity_table(cap_runs)
    table["bound"] = capacity_bound(table)
    ns = sorted(table.n_facts.unique())
    full = table[table.label == "FullFT"].set_index("n_facts")
    frac = ", ".join(f"{full.fraction_stored[n]:.0%}" for n in ns)
    lines = [
        f"What the shipped sweeps say about finding 1 (tiny base, d = 64; notebook 01 "
        f"recomputes all of it). On `facts` ({BITS_PER_FACT:.1f} bits per fact) at one budget "
        f"of {int(cap_runs.steps.max())} steps x {int(cap_runs.batch_size.max())} "
        f"({cap_runs.seed.nunique()} seeds; "
        f"{interior_text(optimal_lr(cap_runs, ['task_n_entities', 'label']))}), "
        f"FullFT stores {frac} of N = {', '.join(f'{n:,}' for n in ns)} facts."
    ]
    n_max = ns[-1]
    cap_curves = load_curves(results_dir("capacity", root=results))
    for label in sort_labels(table[table.label != "FullFT"].label):
        rows = table[table.label == label].set_index("n_facts")
        bound = [f"{n:,}" for n in ns if rows.bound[n]]
        bits = ", ".join(f"{rows.bits_stored[n] / 1e3:.1f}k" for n in ns)
        text = f"{label} ({int(rows.trainable_params.iloc[0]):,} parameters) stores {bits} bits"
        if bound:
            growth = _climbing(cap_curves, table, n_max, label) if rows.bound[n_max] else np.nan
            text += f", out of room (< 75 % of FullFT's bits) at N = {', '.join(bound)}"
            if np.isfinite(growth):
                still = "still climbing" if growth > 1.05 else "flat"
                text += (
                    f"; at N = {n_max:,} its bits grow {growth:.2f}x over the second half ({still})"
                )
        else:
            text += ", with room at every N"
        lines.append(text + ".")
    bpp = measured_bits_per_param(table)
    lines.append(
        f"Adapters that ran out of room hold {bpp:.2f} bits per parameter (median) at this "
        "budget — a rate for this many steps, not a capacity."
    )
    rc = load_curves(results_dir("rank_curves", root=results))
    best = pointwise_min_curves(rc, ["label"])
    tol = departure_tolerance(rc)
    final = best[best.step == best.step.max()].set_index("label").eval_loss
    ranks = [lbl for lbl in sort_labels(best.label) if lbl.startswith("r=")]
    deps = []
    for lbl in ranks:
        d = departure_step(best, lbl, tol=tol)
        deps.append(f"{lbl} {'never' if np.isnan(d) else f'at step {d:.0f}'}")
    rc_runs = load_runs(results_dir("rank_curves", root=results))
    finals = ", ".join(f"{lbl} {final[lbl]:.2f}" for lbl in sort_labels(final.index))
    lines.append(
        f"On 16k instruction examples ({int(best.step.max()):,} steps, "
        f"{rc_runs.seed.nunique()} seeds; {interior_text(optimal_lr(rc_runs, ['label']))}) "
        "the ranks leave the "
        f"FullFT curve (by more than {tol:.3f} nats): {', '.join(deps)}; final losses "
        f"{finals}."
    )
    sd_runs = load_runs(results_dir("small_data", root=results))
    gaps = small_data_gaps(sd_runs, load_curves(results_dir("small_data", root=results)))
    g = gaps.set_index(["metric", "label"])
    early = "; ".join(f"{lbl}: {g.verdict_text[('early_stop_loss', lbl)]}"
                      for lbl in sort_labels(gaps.label))  # fmt: skip
    last = "; ".join(f"{lbl}: {g.verdict_text[('final_loss', lbl)]}"
                     for lbl in sort_labels(gaps.label))  # fmt: skip
    lines.append(
        f"On 1,000 instruction examples ({sd_runs.seed.nunique()} seeds; "
        f"{interior_text(optimal_lr(sd_runs, ['label']))}; margin ±{MARGIN} nats), gaps to "
        "FullFT with early "
        f"stopping: {early}. At the end of training: {last}."
    )
    confirm = load_small_data_confirm(results)
    if confirm is not None:
        c = small_data_confirm_gaps(confirm)
        lines.append(
            f"Re-run at the chosen LRs on {confirm.seed.nunique()} fresh seeds, end of "
            "training: " + "; ".join(f"{r.label}: {r.verdict_text}" for r in c.itertuples()) + "."
        )
    lines.append(small_data_claim(sd_runs).text + ".")
    gaps_for_claim = small_data_confirm_gaps(confirm) if confirm is not None else gaps
    lines.append(rank_8_16_claim(gaps_for_claim).text + ".")
    lines.append(large_data_claim(rc_runs).text + ".")
    return " ".join(lines)


def headline(results: Any = None) -> Headline:
    """Finding 1 as one row of the front page, computed from the ``capacity`` records."""
    runs = load_runs(results_dir("capacity", root=results))
    table = capacity_table(runs)
    table["bound"] = capacity_bound(table)
    ns = sorted(table.n_facts.unique())
    adapters = sort_labels(table[table.label != "FullFT"].label.unique())
    low, high = adapters[0], adapters[-1]
    rows = table[table.label == low].set_index("n_facts")
    bound = [n for n in ns if rows.bound[n]]
    high_room = not table[table.label == high].bound.any()
    growth = _climbing(load_curves(results_dir("capacity", root=results)), table, ns[-1], low)
    measured = (
        f"{low} ({int(rows.trainable_params.iloc[0]):,} parameters) stores at most "
        f"{rows.bits_stored.max() / 1e3:.1f}k bits: "
        + (f"out of room from N = {bound[0]:,} facts ({BITS_PER_FACT:.1f} bits each)"
           if bound else "room at every N")  # fmt: skip
        + (f", still learning ({growth:.2f}x bits over the run's second half)"
           if np.isfinite(growth) and growth > 1.05 else "")  # fmt: skip
        + f"; {high} keeps room to N = {ns[-1]:,} ({int(runs.steps.max())} steps, "
        f"{runs.seed.nunique()} seeds)"
    )
    holds = bool(bound) and high_room and np.isfinite(growth) and growth > 1.05

    def figure() -> Any:
        return plot_loss_vs_n(table)

    return Headline(
        finding="1 · rank capacity",
        claim="LoRA matches FullFT until the data holds more information than the adapter can "
        "store; then low ranks lose training efficiency (no hard floor)",
        measured=measured, status="holds" if holds else "does not hold",
        notebook="01_rank_capacity", experiments=("capacity",), figure=figure,
    )  # fmt: skip
