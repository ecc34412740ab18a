"""Notebook 03, "Batch size": does LoRA pay more than FullFT for large batches, and is it the
rank or the product B·A?

The post's finding 3: at a fixed number of training examples, LoRA's loss falls further
behind FullFT's as the batch grows, whatever the rank, so the post blames the product
parametrization. Here the question is asked with capacity kept out of the way (a small
dataset), a full-rank adapter (r = d_model: as expressive as FullFT on the same matrices)
and the "full (blocks only)" control, every condition at its own searched best LR.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from lora_lab.analysis import best_over_lr, load_runs, optimal_lr
from lora_lab.findings.common import (
    Claim,
    Headline,
    above_one,
    contrast,
    gap_change,
    interior_text,
    lr_ratio,
    ratio_text,
    untestable,
    verdict_columns,
    vertex_slope,
)
from lora_lab.plots import legend_outside, line_styles, set_style
from lora_lab.stats import (
    Estimate,
    interval_text,
    jackknife,
    paired_values,
    verdict,
)
from lora_lab.sweeps.experiment import Experiment, grid, method_grid, results_dir
from lora_lab.sweeps.lr_search import LRSearch, lattice_index, lattice_lr
from lora_lab.training.methods import label_sort_key, sort_labels
from lora_lab.training.sft import RunResult
from lora_lab.widgets import WIDE, LivePanel, rank_options, run_from_controls

# Fixed examples: 512 instruction examples seen twice (1,024 examples per run) at every
# batch size, so batch 2 takes 512 steps and batch 256 takes 4. Pilots at batch 4 (seed 0,
# 3 LRs each) chose the size: with 2,048 examples r=1 ended 0.19 nats and r=4 0.11 behind
# FullFT (capacity, not batch), with 512 about 0.1 / 0.04, with 256 all within 0.03.
BATCH_INSTRUCT = {"n_train": 512, "n_test": 500, "seed": 0}
BATCH_EPOCHS = 2
BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256)
BATCH_RANKS = (1, 4, 64)  # r = 64 = d_model of `tiny`: every block matrix at full rank
BATCH_SEEDS = (0, 1, 2)
# Search centres at batch 32 (below notebook 02's 300-step optima: the pilots at batch 4
# preferred low LRs), moved by LR ∝ sqrt(batch) and rounded onto the search lattice.
CENTRE_AT_32 = {"full": 1e-3, "blocks": 1e-3, "lora": 2.15e-3}
PER_DECADE = 6


def centred_lrs(centre_at_32: float, batch_size: int, half_width: int = 2) -> list[float]:
    """Three LRs (2.15x apart) around the search-lattice point nearest to
    ``centre_at_32 * sqrt(batch_size / 32)``: the starting grid of one condition's search."""
    k = lattice_index(centre_at_32 * math.sqrt(batch_size / 32), PER_DECADE)
    return [lattice_lr(k + d, PER_DECADE) for d in (-half_width, 0, half_width)]


def _full_grid() -> list[dict]:
    specs: list[dict] = []
    for seed in BATCH_SEEDS:
        for b in BATCH_SIZES:
            specs += method_grid(
                seeds=[seed],
                full_lrs=centred_lrs(CENTRE_AT_32["full"], b),
                blocks_lrs=centred_lrs(CENTRE_AT_32["blocks"], b),
                ranks=list(BATCH_RANKS),
                lora_lrs=centred_lrs(CENTRE_AT_32["lora"], b),
                batch_size=b,
            )
    return specs


BATCH_SIZE = Experiment(
    name="batch_size",
    description="FullFT, full (blocks only), LoRA r=1/4/64 at batch 2..256 on 512 instruction "
    "examples x 2 epochs (1,024 per run, 512..4 steps), 3 seeds, LR searched to 1.47x",
    base="tiny",
    task="instruct",
    task_kwargs=BATCH_INSTRUCT,
    defaults={"epochs": BATCH_EPOCHS, "evals_per_decade": 4, "eval_limit": 256},
    grids={
        "full": _full_grid(),
        "ci": grid(method="full", lr=2.15e-3, seed=0, batch_size=[8, 64], epochs=0.125)
        + grid(
            method="lora",
            r=[1, 64],
            target_modules="all",
            lr=4.64e-3,
            seed=0,
            batch_size=[8, 64],
            epochs=0.125,
        ),
    },
    lr_search=LRSearch(),
)

# ----------------------------------------------------------------------------- warmup designs
# Notebook 03's own hypothesis for the reversal above: with a constant LR and no warmup,
# FullFT's first Adam steps move every weight by ~lr while LoRA starts from B = 0 (an implicit
# warmup), so FullFT's usable LR is capped by early instability, most of all in short runs.
# Two sweeps test it. Warmup is linear over the first ``fraction`` of each run's steps, for
# every method (LR x (i + 1) / w at 0-based step i < w); the fraction is chosen so that w is a
# whole number of at least 2 at every batch (w = 1 would be no warmup at all).


def warmup_steps(examples: int, batch_size: int, fraction: float) -> int:
    """Warmup steps for a run of ``examples`` at ``batch_size``: ``fraction`` of its steps,
    refused unless that is a whole number >= 2 (so every batch gets the same fraction)."""
    steps = examples / batch_size
    w = steps * fraction
    if steps != int(steps) or w != int(w) or w < 2:
        raise ValueError(
            f"{fraction} of {steps:g} steps is {w:g} warmup steps; need a whole number >= 2"
        )
    return int(w)


def _warmup_grid(
    batch_sizes: tuple[int, ...],
    examples: int,
    fraction: float,
    centres: dict[str, Callable[[int], float]],
    seeds: tuple[int, ...],
) -> list[dict]:
    specs: list[dict] = []
    for seed in seeds:
        for b in batch_sizes:

            def lrs(kind: str, b: int = b) -> list[float]:
                k = lattice_index(centres[kind](b), PER_DECADE)
                return [lattice_lr(k + d, PER_DECADE) for d in (-2, 0, 2)]

            specs += method_grid(
                seeds=[seed], full_lrs=lrs("full"), blocks_lrs=lrs("full"),
                ranks=list(BATCH_RANKS), lora_lrs=lrs("lora"), batch_size=b,
                warmup_steps=warmup_steps(examples, b, fraction),
            )  # fmt: skip
    return specs


def _warmup_ci_grid(lora_lr: float, epochs: float) -> list[dict]:
    """A few warmed-up steps of FullFT and r=64 at batch 64: the machinery, not a result."""
    fixed = {"seed": 0, "batch_size": 64, "epochs": epochs, "warmup_steps": 2}
    return grid(method="full", lr=2.15e-3, **fixed) + grid(
        method="lora", r=64, target_modules="all", lr=lora_lr, **fixed
    )


# (1) the shipped design (512 examples x 2 epochs) with warmup over the first half of every
# run (the only fraction that is a whole number >= 2 at batch 256's 4 steps). Search centres:
# two lattice points above the no-warmup FullFT optima (warmup should raise them), LoRA one.
WARMUP_BATCH_SIZES = (16, 32, 64, 128, 256)
WARMUP_FRACTION = 0.5
BATCH_WARMUP = Experiment(
    name="batch_size_warmup",
    description="batch_size's design (512 instruction examples x 2 epochs, tiny) at batch "
    "16..256 with linear warmup over the first half of every run, every method; FullFT, full "
    "(blocks only), LoRA r=1/4/64; 3 seeds, LR searched to 1.47x",
    base="tiny",
    task="instruct",
    task_kwargs=BATCH_INSTRUCT,
    defaults={"epochs": BATCH_EPOCHS, "evals_per_decade": 4, "eval_limit": 256},
    grids={
        "full": _warmup_grid(
            WARMUP_BATCH_SIZES,
            BATCH_EPOCHS * BATCH_INSTRUCT["n_train"],
            WARMUP_FRACTION,
            {"full": lambda b: 1e-3, "lora": lambda b: 3.16e-3},
            BATCH_SEEDS,
        ),  # fmt: skip
        "ci": _warmup_ci_grid(lora_lr=4.64e-3, epochs=0.125),
    },  # fmt: skip
    lr_search=LRSearch(),
)

# (2) the post's regime: 8x the examples (4,096 x 2 epochs = 8,192 per run), batch 16..512, so
# the largest batch still takes 16 steps and the smallest 512; warmup over the first eighth of
# every run (2..64 steps). Search centres from a 2-seed pilot of this design (full (blocks
# only) best at 2.15e-3 at batch 16 and 256 with warmup), scaled gently (batch^0.25) in case.
LONG_INSTRUCT = {"n_train": 4096, "n_test": 500, "seed": 0}
LONG_BATCH_SIZES = (16, 32, 64, 128, 256, 512)
LONG_FRACTION = 0.125
BATCH_LONG = Experiment(
    name="batch_size_long",
    description="The post's regime: 4,096 instruction examples x 2 epochs (8,192 per run, "
    "tiny) at batch 16..512 = 512..16 steps, linear warmup over the first eighth of every run, "
    "every method; FullFT, full (blocks only), LoRA r=1/4/64; 3 seeds, LR searched to 1.47x",
    base="tiny",
    task="instruct",
    task_kwargs=LONG_INSTRUCT,
    defaults={"epochs": BATCH_EPOCHS, "evals_per_decade": 4, "eval_limit": 256},
    grids={
        "full": _warmup_grid(
            LONG_BATCH_SIZES,
            BATCH_EPOCHS * LONG_INSTRUCT["n_train"],
            LONG_FRACTION,
            {
                "full": lambda b: 2.15e-3 * (b / 64) ** 0.25,
                "lora": lambda b: 6.81e-3 * (b / 64) ** 0.25,
            },
            BATCH_SEEDS,
        ),  # fmt: skip
        "ci": _warmup_ci_grid(lora_lr=6.81e-3, epochs=1 / 32),
    },  # fmt: skip
    lr_search=LRSearch(),
)

EXPERIMENTS = (BATCH_SIZE, BATCH_WARMUP, BATCH_LONG)


# ----------------------------------------------------------------------------- analysis
# Every quantity below is read at each condition's *best* LR with seeds paired across
# conditions (same seed, same data order). Gaps use the statistics core's contrast, whose
# 95 % interval covers the LRs that could be best; trends and exponents say how theirs are
# made.

REFERENCE = "FullFT"
# Gaps smaller than this count as "equivalent" (stated before re-reading: the old noise floor,
# ~1 % of FullFT's loss here; the post's batch effect at its largest batches is several times it).
MARGIN = 0.02


def gap_table(runs: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """One row per (batch, method): best-over-LR loss, the gap to ``reference`` as a verdict
    (95 % paired-seed interval, margin :data:`MARGIN`), the gap relative to the reference's
    loss."""
    best = best_over_lr(runs, ["batch_size", "label"]).set_index(["batch_size", "label"])
    rows = []
    for (b, label), _ in best.iterrows():
        if label == reference:
            continue
        v = contrast(runs, {"batch_size": b, "label": label},
                     {"batch_size": b, "label": reference}, margin=MARGIN, subject="LoRA"
                     if label.startswith("r=") else label, units="nats/token")  # fmt: skip
        cols = verdict_columns(v)
        ref_loss = float(best.loc[(b, reference), "best_loss"])
        rows.append(
            {
                "batch_size": b,
                "steps": int(runs[runs.batch_size == b].steps_done.max()),
                "label": label,
                "loss": float(best.loc[(b, label), "best_loss"]),
                "reference_loss": ref_loss,
                "gap": cols.pop("value"),
                "relative_gap": v.estimate.value / ref_loss,
                **cols,
            }
        )
    out = pd.DataFrame(rows)
    return out.sort_values(["label", "batch_size"], key=_label_then_value).reset_index(drop=True)


def _label_then_value(col: pd.Series) -> pd.Series:
    return col.map(label_sort_key) if col.name == "label" else col


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def seed_gaps(runs: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Per (label, seed): the gap to ``reference`` at each batch, both read at their best LR
    (seed mean): columns are batch sizes. The rows trends are fitted to."""
    best = best_over_lr(runs, ["batch_size", "label"]).set_index(["batch_size", "label"]).lr
    at = runs[
        runs.lr == [best.get((b, lab), np.nan) for b, lab in zip(runs.batch_size, runs.label)]
    ]
    loss = at.pivot_table(index=["label", "seed"], columns="batch_size", values="final_loss")
    ref = loss.xs(reference, level="label")
    return (loss - ref.reindex(loss.index, level="seed")).drop(index=reference, level="label")


def gap_trend(
    runs: pd.DataFrame, reference: str = REFERENCE, against: str | None = None
) -> pd.DataFrame:
    """How the gap to ``reference`` moves with batch size: the least-squares slope of gap on
    log2(batch) (nats per doubling), per method, with a 95 % paired-seed t interval over the
    per-seed slopes (each seed's gaps at the LRs the seed mean chose: the choice of LR is
    not inside this interval), its verdict (margin: a slope that moves the gap by less than
    :data:`MARGIN` over the whole range of batches measured), and the
    gap at the smallest and largest batch. ``against`` adds each method's slope minus that
    method's (e.g. "r=64": does the trend depend on rank?) as a verdict."""
    gaps = seed_gaps(runs, reference)
    x = np.log2(gaps.columns.to_numpy(float))
    margin = MARGIN / float(x.max() - x.min())
    slopes = {label: np.array([_slope(x, row) for row in g.to_numpy(float)])
              for label, g in gaps.groupby(level="label")}  # fmt: skip
    rows = []
    for label in sort_labels(slopes):
        e = paired_values(slopes[label])
        v = verdict(e, margin, "gap", units="nats per doubling")
        trend = {"gap better": "shrinks with batch", "gap worse": "grows with batch"}.get(
            v.word, v.word)  # fmt: skip
        sub = gaps.xs(label, level="label").mean()
        row = {"label": label, "gap_smallest_batch": float(sub.iloc[0]),
               "gap_largest_batch": float(sub.iloc[-1]), "slope_per_doubling": e.value,
               "lo": e.lo, "hi": e.hi, "seeds": e.n, "trend": trend,
               "trend_text": v.text.replace(v.word, trend, 1)}  # fmt: skip
        if against is not None and against in slopes:
            d = verdict(paired_values(slopes[label] - slopes[against]), margin, label,
                        units="nats per doubling")  # fmt: skip
            row.update({f"slope_minus_{against}": d.estimate.value, "diff_lo": d.estimate.lo,
                        "diff_hi": d.estimate.hi, f"trend_vs_{against}": d.word,
                        f"trend_vs_{against}_text": d.text})  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def _exponent(runs: pd.DataFrame, seeds: np.ndarray) -> float:
    """Slope of log(optimal LR) on log(batch); NaN if an optimum is a bound."""
    return vertex_slope(runs, "batch_size", seeds)


def lr_scaling(runs: pd.DataFrame) -> pd.DataFrame:
    """Does the best LR follow LR ∝ batch^p, and with which p? Per method: the slope of
    log(optimal LR) on log(batch) (0.5 is the square-root rule, 1 the linear rule), with a
    95 % jackknife t interval over seeds (each seed left out in turn; an optimum on an edge
    of what was measured makes the interval unbounded)."""
    opt = optimal_lr(runs, ["batch_size", "label"])
    seeds = np.sort(runs.seed.unique())
    rows = []
    for label in sort_labels(runs.label.unique()):
        sub = runs[runs.label == label]
        full = _exponent(sub, seeds)
        loo = [_exponent(sub, np.delete(seeds, i)) for i in range(len(seeds))]
        e = jackknife(full, np.array(loo))
        o = opt[opt.label == label]
        rows.append(
            {
                "label": label,
                "exponent": e.value,
                "lo": e.lo,
                "hi": e.hi,
                "eq_lo": e.eq_lo,
                "eq_hi": e.eq_hi,
                "seeds": e.n,
                "sqrt_rule_inside": bool(e.resolved and e.lo <= 0.5 <= e.hi),
                "all_interior": bool(o.interior.all()),
                "lr_at_smallest": float(o.sort_values("batch_size").opt_lr.iloc[0]),
                "lr_at_largest": float(o.sort_values("batch_size").opt_lr.iloc[-1]),
            }
        )
    return pd.DataFrame(rows)


def best_curves(curves: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Seed-mean learning curve of each (batch, method) at its best final LR, with the
    examples seen at each step: the curves the notebook and the panel overlay draw."""
    best = best_over_lr(runs, ["batch_size", "label"])[["batch_size", "label", "lr"]]
    sel = curves.merge(best, on=["batch_size", "label", "lr"])
    sel = sel[sel.eval_loss.notna()]
    return (
        sel.groupby(["batch_size", "label", "step"])
        .agg(examples=("examples", "first"), eval_loss=("eval_loss", "mean"))
        .reset_index()
    )


def gap_curves(best: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Each method's curve minus the reference's at the same batch and step (seed means, best
    final LRs): the gap as training goes on, against steps and against examples."""
    ref = best[best.label == reference][["batch_size", "step", "eval_loss"]]
    out = best[best.label != reference].merge(
        ref, on=["batch_size", "step"], suffixes=("", "_reference")
    )
    out["gap"] = out.eval_loss - out.eval_loss_reference
    return out


def equal_steps_gaps(best: pd.DataFrame, step: int | None = None) -> pd.DataFrame:
    """The same records read at equal *steps*: the gap to FullFT per batch at ``step``
    (default: the largest step at which every batch size was evaluated), where a larger
    batch has seen more examples, next to the gap at the end (equal examples)."""
    gaps = gap_curves(best)
    if step is None:
        common = set.intersection(*(set(g.step) for _, g in gaps.groupby("batch_size")))
        step = int(max(common - {0}))
    at = gaps[gaps.step == step][["batch_size", "label", "examples", "gap"]]
    end = gaps.loc[gaps.groupby(["batch_size", "label"]).step.idxmax()]
    end = end[["batch_size", "label", "step", "gap"]].rename(
        columns={"step": "steps_at_end", "gap": "gap_at_end"}
    )
    out = at.merge(end, on=["batch_size", "label"]).rename(
        columns={"examples": f"examples_at_step_{step}", "gap": f"gap_at_step_{step}"}
    )
    return out.sort_values(["label", "batch_size"], key=_label_then_value).reset_index(drop=True)


# ----------------------------------------------------------------------------- claims
CLAIM_HURTS = "batch > 512 hurts LoRA"
CLAIM_PERCENT = "at batch > 1k LoRA's loss is 20-30 % higher"


def circulating_claims(gaps: pd.DataFrame, trend: pd.DataFrame) -> list[Claim]:
    """The two claims in circulation (not from the post), read on one design's gap table and
    trend (the post's regime reaches the largest batch, 512). Both are about batches above
    512, which no design here reaches, so neither gets a verdict: the status says so and the
    evidence is what the largest batch measured showed, per LoRA rank."""
    if gaps.batch_size.max() > 512:
        raise ValueError("a design with batches above 512 can test these claims: write it")
    largest = int(gaps.batch_size.max())
    t = trend.set_index("label")
    ranks = [lab for lab in sort_labels(gaps.label.unique()) if lab.startswith("r=")]
    at_largest = gaps[gaps.batch_size == largest].set_index("label")
    trend_words = "; ".join(f"{lab} {t.loc[lab].slope_per_doubling:+.3f} "
                            f"{interval_text(t.loc[lab].lo, t.loc[lab].hi)}"
                            for lab in ranks)  # fmt: skip
    relative = "; ".join(
        f"{lab} {g.relative_gap:+.1%} "
        f"{interval_text(g.lo / g.reference_loss, g.hi / g.reference_loss, '+.1%')}"
        for lab, g in at_largest.loc[ranks].iterrows()
    )
    return [
        untestable(CLAIM_HURTS, "circulating",
                   f"the largest batch here is {largest}; for the record, the gap to FullFT per "
                   f"doubling of batch {int(gaps.batch_size.min())}..{largest} (nats, 95 %): "
                   f"{trend_words}"),
        untestable(CLAIM_PERCENT, "circulating",
                   f"the largest batch here is {largest}; for the record, LoRA's loss over "
                   f"FullFT's at batch {largest} (95 %): {relative}"),
    ]  # fmt: skip


# ----------------------------------------------------------------------------- designs
# Three sweeps, three designs; every verdict below names the one it comes from.
NO_WARMUP, WARMUP, POST_REGIME = "batch_size", "batch_size_warmup", "batch_size_long"
DESIGNS = {
    NO_WARMUP: "shipped design",
    WARMUP: "shipped design + warmup",
    POST_REGIME: "post's regime",
}
# the square-root rule (Tinker's guidance, LR ∝ sqrt(batch)): an exponent within this much
# of 1/2 is "consistent with it" (stated before the new sweeps were read)
SQRT_RULE = 0.5
SQRT_MARGIN = 0.1
# runs of at least this many steps form the "long runs" regime of the shipped design
LONG_RUN_STEPS = 32


def load_design(name: str, results: Any = None) -> pd.DataFrame:
    """One design's runs (an experiment of :data:`DESIGNS`), with a ``design`` column."""
    if name not in DESIGNS:
        raise ValueError(f"design must be one of {list(DESIGNS)}, got {name!r}")
    return load_runs(results_dir(name, root=results)).assign(design=name)


def design_text(runs: pd.DataFrame) -> str:
    """What a verdict rests on, read off its runs: "1,024 examples per run, batch 2..256 =
    512..4 steps, constant LR, no warmup" (or "linear warmup over the first 50 % of steps")."""
    ok = runs[~runs.diverged.astype(bool)]
    examples = sorted({int(n) for n in ok.steps_done * ok.batch_size})
    ex = f"{examples[0]:,}" if len(examples) == 1 else f"{examples[0]:,}-{examples[-1]:,}"
    b_lo, b_hi = int(runs.batch_size.min()), int(runs.batch_size.max())
    s_hi = int(ok[ok.batch_size == b_lo].steps_done.max())
    s_lo = int(ok[ok.batch_size == b_hi].steps_done.max())
    fractions = sorted({round(w / n, 4) for w, n in zip(ok.warmup_steps, ok.steps_done)})
    if fractions == [0]:
        schedule = "constant LR, no warmup"
    elif len(fractions) == 1:
        schedule = f"linear warmup over the first {fractions[0]:.1%} of steps, then constant"
    else:
        schedule = f"linear warmup over {fractions[0]:.1%}-{fractions[-1]:.1%} of steps"
    return f"{ex} examples per run, batch {b_lo}-{b_hi} = {s_hi}-{s_lo} steps, {schedule}"


def warmup_lr_ratios(plain: pd.DataFrame, warm: pd.DataFrame) -> pd.DataFrame:
    """Per (batch, method) both designs ran: the best LR with warmup over the best LR
    without, with the 95 % interval that carries both optima's locations."""
    both = pd.concat([plain, warm], ignore_index=True)
    rows = []
    for (b, label), _ in warm.groupby(["batch_size", "label"]):
        if not ((plain.batch_size == b) & (plain.label == label)).any():
            continue
        cond = {"batch_size": b, "label": label}
        e = lr_ratio(both, {**cond, "design": WARMUP}, {**cond, "design": NO_WARMUP})
        rows.append({"batch_size": b, "label": label, "ratio": e.value, "lo": e.lo, "hi": e.hi,
                     "ratio_text": ratio_text(e), "above_one": above_one(e)})  # fmt: skip
    out = pd.DataFrame(rows)
    return out.sort_values(["label", "batch_size"], key=_label_then_value).reset_index(drop=True)


def warmup_effect(
    plain: pd.DataFrame, warm: pd.DataFrame, reference: str = REFERENCE
) -> pd.DataFrame:
    """Per (batch, method) both designs ran: the gap to ``reference`` without warmup, with
    warmup, and how much warmup moved it (a difference of gaps, every condition at its own
    best LR, seeds paired across designs: same seed, same data order and initialisation).
    "worse" = warmup made the method's gap larger; margin :data:`MARGIN`."""
    both = pd.concat([plain, warm], ignore_index=True)
    rows = []
    for (b, label), _ in warm.groupby(["batch_size", "label"]):
        if label == reference or not ((plain.batch_size == b) & (plain.label == label)).any():
            continue

        def c(lbl: str, design: str, b: int = b) -> dict:
            return {"batch_size": b, "label": lbl, "design": design}

        kw = {"margin": MARGIN, "units": "nats/token"}
        before = contrast(both, c(label, NO_WARMUP), c(reference, NO_WARMUP),
                          subject=label, **kw)  # fmt: skip
        after = contrast(both, c(label, WARMUP), c(reference, WARMUP), subject=label, **kw)
        change = gap_change(both, (c(label, WARMUP), c(reference, WARMUP)),
                            (c(label, NO_WARMUP), c(reference, NO_WARMUP)),
                            subject="gap", **kw)  # fmt: skip
        rows.append({"batch_size": b, "label": label,
                     "steps": int(warm[warm.batch_size == b].steps_done.max()),
                     "gap_without": before.estimate.value, "gap_with": after.estimate.value,
                     **verdict_columns(change, "change_"),
                     "without_text": before.text, "with_text": after.text,
                     "with_verdict": after.word})  # fmt: skip
    out = pd.DataFrame(rows)
    return out.sort_values(["label", "batch_size"], key=_label_then_value).reset_index(drop=True)


def trend_change(
    plain: pd.DataFrame, warm: pd.DataFrame, reference: str = REFERENCE
) -> pd.DataFrame:
    """The gap's slope per doubling of batch, over the batches both designs ran: without
    warmup, with it, and with minus without per seed (paired; margin as :func:`gap_trend`)."""
    shared = sorted(set(plain.batch_size) & set(warm.batch_size))
    p_gaps = seed_gaps(plain[plain.batch_size.isin(shared)], reference)
    w_gaps = seed_gaps(warm[warm.batch_size.isin(shared)], reference)
    x = np.log2(np.array(shared, float))
    margin = MARGIN / float(x.max() - x.min())
    rows = []
    for label in sort_labels(w_gaps.index.get_level_values("label").unique()):
        slopes = {}
        for name, g in (("without", p_gaps), ("with", w_gaps)):
            rows_ = g.xs(label, level="label")[shared]
            slopes[name] = pd.Series([_slope(x, r) for r in rows_.to_numpy(float)],
                                     index=rows_.index)  # fmt: skip
        seeds = slopes["with"].index.intersection(slopes["without"].index)
        v = {k: verdict(paired_values(slopes[k][seeds].to_numpy()), margin, "gap",
                        units="nats per doubling") for k in slopes}  # fmt: skip
        d = verdict(paired_values((slopes["with"] - slopes["without"])[seeds].to_numpy()),
                    margin, "slope", units="nats per doubling")  # fmt: skip
        rows.append({"label": label, "batches": f"{shared[0]}-{shared[-1]}",
                     "slope_without": v["without"].estimate.value,
                     "trend_without": _trend_word(v["without"]),
                     "slope_with": v["with"].estimate.value, "trend_with": _trend_word(v["with"]),
                     "trend_with_text": v["with"].text.replace(v["with"].word,
                                                               _trend_word(v["with"]), 1),
                     **verdict_columns(d, "change_")})  # fmt: skip
    return pd.DataFrame(rows)


def _trend_word(v: Any) -> str:
    return {"gap better": "shrinks with batch", "gap worse": "grows with batch"}.get(v.word, v.word)


CLAIM_WARMUP = "B = 0 is LoRA's built-in warmup: with warmup for every method the reversal goes"


def warmup_claim(trend: pd.DataFrame, control: str = "r=64") -> Claim:
    """Notebook 03's hypothesis, judged on the cleanest contrast: the full-rank adapter
    against full (blocks only) (same matrices, same function class), the gap's slope per
    doubling of batch. Holds when warmup makes the slope grow (change "worse") and the
    reversal is gone (slope with warmup not "shrinks"); does not hold when the slope with
    warmup still shrinks or warmup leaves it equivalent; otherwise not resolved."""
    t = trend.set_index("label").loc[control]
    evidence = (f"{control} minus full (blocks only), slope per doubling of batch "
                f"{t.batches} (per-seed slopes at the seed-mean best LRs, seeds paired across "
                f"the designs): without warmup {t.slope_without:+.4f} ({t.trend_without}); with "
                f"warmup {t.trend_with_text}; change {t.change_verdict_text}")  # fmt: skip
    if t.change_verdict == "slope worse" and t.trend_with != "shrinks with batch":
        status = "holds"
    elif t.trend_with == "shrinks with batch" or t.change_verdict.startswith("equivalent"):
        status = "does not hold"
    else:
        status = "not resolved"
    return Claim(CLAIM_WARMUP, "notebook 03's hypothesis", status, evidence)


CLAIM_POST = "LoRA pays more than FullFT for large batches, whatever its rank"


def post_claim(trend: pd.DataFrame, design: str) -> Claim:
    """Finding 3 in one design: holds when every rank's gap to FullFT grows with batch (the
    slope's whole 95 % interval above 0); does not hold when some rank's shrinks or is
    equivalent to flat within the margin; otherwise not resolved."""
    ranks = trend[trend.label.str.startswith("r=")].set_index("label")
    words = ranks.trend
    evidence = f"{design}; gap to FullFT per doubling of batch: " + "; ".join(
        f"{lab}: {t.trend_text}" for lab, t in ranks.iterrows()
    )
    if (words == "grows with batch").all():
        status = "holds"
    elif words.isin(["shrinks with batch"]).any() or words.str.startswith("equivalent").any():
        status = "does not hold"
    else:
        status = "not resolved"
    return Claim(CLAIM_POST, "the post, finding 3", status, evidence)


def regimes(designs: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The run sets LR exponents are fitted on: the shipped design split at
    :data:`LONG_RUN_STEPS` steps (the exponent mixes two regimes otherwise), and each warmup
    design whole. Keys name the regime and its batches."""
    out = {}
    plain = designs.get(NO_WARMUP)
    if plain is not None:
        steps = plain.groupby("batch_size").steps_done.max()
        long_b = steps[steps >= LONG_RUN_STEPS].index
        out[f"shipped, >= {LONG_RUN_STEPS} steps"] = plain[plain.batch_size.isin(long_b)]
        out[f"shipped, < {LONG_RUN_STEPS} steps"] = plain[~plain.batch_size.isin(long_b)]
    for name in (WARMUP, POST_REGIME):
        if name in designs:
            out[DESIGNS[name]] = designs[name]
    return out


def regime_exponents(designs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per regime and method: LR ∝ batch^p (:func:`lr_scaling`) and the square-root rule's
    verdict on it: "below" / "above" when p's 95 % interval excludes 1/2, "consistent
    (within ±0.1)" when its 90 % interval lies inside 1/2 ± :data:`SQRT_MARGIN`."""
    rows = []
    for regime, runs in regimes(designs).items():
        steps = runs.groupby("batch_size").steps_done.max()
        for r in lr_scaling(runs).itertuples():
            shifted = [v - SQRT_RULE for v in (r.exponent, r.lo, r.hi, r.eq_lo, r.eq_hi)]
            e = Estimate(*shifted[:3], r.seeds, "jackknife t", eq_lo=shifted[3],
                         eq_hi=shifted[4])  # fmt: skip
            v = verdict(e, SQRT_MARGIN, "p")
            word = {"p worse": "above the square-root rule",
                    "p better": "below the square-root rule"}.get(v.word, v.word)  # fmt: skip
            if v.kind == "equivalent":
                word = f"consistent with it (within ±{SQRT_MARGIN})"
            rows.append({"regime": regime,
                         "batches": f"{int(steps.index.min())}-{int(steps.index.max())}",
                         "steps": f"{int(steps.max())}-{int(steps.min())}", "label": r.label,
                         "exponent": r.exponent, "lo": r.lo, "hi": r.hi,
                         "all_interior": r.all_interior, "sqrt_rule": word,
                         "sqrt_rule_text": f"p = {r.exponent:.2f} "
                         f"{interval_text(r.lo, r.hi, '.2f')}: {word}"})  # fmt: skip
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- panel
def batch_run_from_controls(
    base: Any,
    data: Any,
    eval_data: Any,
    *,
    batch_size: int,
    rank: int,
    lr: float,
    epochs: float = BATCH_EPOCHS,
    seed: int = 0,
    warmup_fraction: float = 0.0,
    callback: Callable[[int, dict], None] | None = None,
) -> RunResult:
    """One run of the sweep's design from panel values: ``epochs`` over ``data`` at
    ``batch_size`` (so a bigger batch takes fewer steps); ``rank=0`` is FullFT; a linear
    warmup over the first ``warmup_fraction`` of the steps (0: constant LR from step 1)."""
    if not 0 <= warmup_fraction < 1:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
    steps = max(1, math.ceil(epochs * len(data) / batch_size))
    return run_from_controls(
        base, data, eval_data=eval_data, rank=rank, lr=lr, batch_size=batch_size,
        targets="all", steps=steps, seed=seed, callback=callback,
        eval_limit=BATCH_SIZE.defaults["eval_limit"],  # the sweep's examples, comparable curves
        warmup_steps=round(warmup_fraction * steps),
    )  # fmt: skip


WARMUP_OPTIONS = (("off", 0.0), ("first half of the steps", WARMUP_FRACTION))
LR_SCALES = (1.0, 2.15, 4.64)  # the sweep's best LR times this: 0, 2 and 4 lattice steps up


class BatchPanel(LivePanel):
    """Pick a batch size and a method; Run trains the sweep's design (the same examples at
    any batch) live at the sweep's best LR for that batch and method (or a multiple of it),
    with or without warmup, over the sweep's curves for that batch, against examples seen.
    ``best_lrs`` maps (batch, label) to LR (:func:`best_lr_lookup`); ``curves`` is
    :func:`best_curves` of the sweep. The warmup and LR controls are there to watch FullFT
    at a large LR with and without warmup: the hypothesis the warmup sweep tests."""

    def __init__(
        self,
        base: Any,
        data: Any,
        eval_data: Any,
        *,
        best_lrs: dict[tuple[int, str], float],
        curves: pd.DataFrame | None = None,
        batch_sizes: tuple[int, ...] = BATCH_SIZES,
        ranks: tuple[int, ...] = (0, *BATCH_RANKS),
        batch_size: int = 16,
        rank: int = 4,
    ) -> None:
        import ipywidgets as w

        self.base, self.data, self.eval_data = base, data, eval_data
        self.best_lrs, self.curves = best_lrs, curves
        self.batch = w.Dropdown(
            options=list(batch_sizes), value=batch_size, description="batch size", style=WIDE
        )
        self.rank = w.SelectionSlider(
            options=rank_options(ranks), value=rank, description="method (rank)", style=WIDE
        )
        self.lr_scale = w.SelectionSlider(
            options=[(f"{x:g}x", x) for x in LR_SCALES], value=LR_SCALES[0],
            description="LR (x best)", style=WIDE,
        )  # fmt: skip
        self.warmup = w.ToggleButtons(options=list(WARMUP_OPTIONS), value=0.0,
                                      description="warmup", style=WIDE)  # fmt: skip
        self.info = w.HTML()
        for control in (self.batch, self.rank, self.lr_scale, self.warmup):
            control.observe(lambda _: self._describe(), names="value")
        self._describe()
        self._build(
            [[self.batch, self.rank], [self.lr_scale, self.warmup], [self.info]], self.steps()
        )

    def label(self) -> str:
        return "FullFT" if self.rank.value == 0 else f"r={self.rank.value}"

    def steps(self) -> int:
        return max(1, math.ceil(BATCH_EPOCHS * len(self.data) / self.batch.value))

    def lr(self) -> float:
        key = (int(self.batch.value), self.label())
        if key not in self.best_lrs:
            raise ValueError(f"the sweep has no best LR for batch {key[0]}, {key[1]}")
        return float(self.best_lrs[key]) * float(self.lr_scale.value)

    def _describe(self) -> None:
        try:
            lr = f"<b>{self.lr():.3g}</b>"
        except ValueError as e:
            lr = f"<b>none</b> ({e})"
        w = round(self.warmup.value * self.steps())
        warm = f"warmup over the first {w} steps" if w else "no warmup"
        self.info.value = (
            f"{self.steps()} steps of {self.batch.value} examples, {warm}, at "
            f"{self.lr_scale.value:g}x the sweep's best LR for {self.label()} at this batch: "
            f"{lr}"
        )

    def values(self) -> dict[str, Any]:
        return {"batch_size": self.batch.value, "rank": self.rank.value, "lr": self.lr(),
                "warmup_fraction": float(self.warmup.value)}  # fmt: skip

    def run(self) -> RunResult:
        vals = self.values()
        label, b = self.label(), vals["batch_size"]

        def draw(ax: Any, rows: list[dict]) -> None:
            if self.curves is not None:
                ref = self.curves[self.curves.batch_size == b]
                for name, c in ref.groupby("label"):
                    c = c[c.step > 0]
                    ax.plot(c.examples, c.eval_loss, lw=1, alpha=0.6, label=f"sweep: {name}")
            xs = [r["examples"] for r in rows]
            ys = [r["eval_loss"] for r in rows]
            warm = ", warmup" if vals["warmup_fraction"] else ""
            live = f"live: {label}, batch {b}, {self.lr_scale.value:g}x LR{warm}"
            ax.plot(xs, ys, "o-", color="crimson", lw=2.5, label=live)
            ax.set_ylabel("eval loss")

        callback = self._live(self.steps(), draw, x="examples")
        return self._finish(
            batch_run_from_controls(self.base, self.data, self.eval_data, callback=callback, **vals)
        )


def best_lr_lookup(runs: pd.DataFrame) -> dict[tuple[int, str], float]:
    """(batch, label) -> the sweep's best LR (lowest seed-mean final loss)."""
    best = best_over_lr(runs, ["batch_size", "label"])
    return {(int(r.batch_size), r.label): float(r.lr) for r in best.itertuples()}


# ----------------------------------------------------------------------------- summary
def summary(results: Any = None) -> str:
    """Finding 3, one paragraph per design (blank-line separated), every number computed
    from the shipped records."""
    designs = {name: load_design(name, results) for name in DESIGNS}
    paragraphs = [_shipped_summary(designs[NO_WARMUP])]
    paragraphs.append(_warmup_summary(designs[NO_WARMUP], designs[WARMUP]))
    paragraphs.append(_regime_summary(designs[POST_REGIME]))
    ex = regime_exponents(designs)
    parts = []
    for regime, g in ex.groupby("regime", sort=False):
        each = ", ".join(f"{r.label} {r.sqrt_rule_text}" for r in g.itertuples())
        parts.append(f"{regime} (batch {g.batches.iloc[0]}, {g.steps.iloc[0]} steps): {each}")
    paragraphs.append(
        "Best LR against batch, LR ∝ batch^p, per regime (jackknife over seeds; the "
        f"square-root rule p = {SQRT_RULE} is judged with margin ±{SQRT_MARGIN}): "
        + "; ".join(parts)
        + "."
    )
    return "\n\n".join(paragraphs)


def _shipped_summary(runs: pd.DataFrame) -> str:
    trend = gap_trend(runs, against="r=64").set_index("label")
    control = gap_trend(runs, reference="full (blocks only)").set_index("label")
    batches = sorted(runs.batch_size.unique())
    best = best_over_lr(runs, ["batch_size", "label"]).set_index(["batch_size", "label"])
    full = [best.loc[(b, REFERENCE), "best_loss"] for b in batches]
    interior = interior_text(optimal_lr(runs, ["batch_size", "label"]))
    text = [
        f"What the shipped `batch_size` sweep says about finding 3 (tiny base, `instruct`, "
        f"{design_text(runs)}; {runs.seed.nunique()} seeds; {interior}; 95 % "
        f"paired-seed t intervals, equivalence margin ±{MARGIN} nats; notebook 03 recomputes "
        f"all of it). FullFT's best loss goes {full[0]:.3f} at batch {batches[0]} to "
        f"{full[-1]:.3f} at batch {batches[-1]}."
    ]
    parts = [f"{label} {t.gap_smallest_batch:+.3f} -> {t.gap_largest_batch:+.3f}: "
             f"{t.trend_text}" for label, t in trend.iterrows()]  # fmt: skip
    text.append(
        f"In this design, the gap to FullFT from batch {batches[0]} to {batches[-1]}, slope "
        "per doubling (the LR choice not inside these intervals): " + "; ".join(parts) + "."
    )
    if "r=64" in control.index:
        c = control.loc["r=64"]
        text.append(
            f"The full-rank r=64 adapter against full (blocks only), the same matrices "
            f"trained directly: {c.gap_smallest_batch:+.3f} -> {c.gap_largest_batch:+.3f}: "
            f"{c.trend_text}."
        )
    text.append(
        "Rank dependence of the trend (slope minus r=64's): "
        + "; ".join(f"{lbl}: {trend.loc[lbl]['trend_vs_r=64_text']}" for lbl in ("r=1", "r=4"))
        + "."
    )
    return " ".join(text)


def _warmup_summary(plain: pd.DataFrame, warm: pd.DataFrame) -> str:
    ratios = warmup_lr_ratios(plain, warm)
    largest = int(warm.batch_size.max())
    full = ratios[ratios.label == REFERENCE].set_index("batch_size")
    effect = warmup_effect(plain, warm, reference="full (blocks only)")
    r64 = effect[effect.label == "r=64"].set_index("batch_size")
    trend = trend_change(plain, warm, reference="full (blocks only)")
    claim = warmup_claim(trend)
    interior = interior_text(optimal_lr(warm, ["batch_size", "label"]))
    return (
        f"Notebook 03's hypothesis, tested (`batch_size_warmup`: {design_text(warm)}; "
        f"{warm.seed.nunique()} seeds, paired with the shipped sweep's; {interior}). FullFT's "
        f"best LR with warmup over without: "
        + ", ".join(f"batch {b} {r.ratio_text}" for b, r in full.iterrows())
        + ". r=64 minus full (blocks only) without -> with warmup: "
        + ", ".join(
            f"batch {b} {r.gap_without:+.3f} -> {r.gap_with:+.3f}" for b, r in r64.iterrows()
        )  # fmt: skip
        + f"; the change at batch {largest}: {r64.loc[largest].change_verdict_text}. "
        + claim.text
        + "."
    )


def _regime_summary(runs: pd.DataFrame) -> str:
    gaps = gap_table(runs)
    trend = gap_trend(runs, against="r=64")
    control = gap_trend(runs, reference="full (blocks only)").set_index("label")
    smallest = gaps[gaps.batch_size == gaps.batch_size.min()].set_index("label")
    interior = interior_text(optimal_lr(runs, ["batch_size", "label"]))
    design = f"post's regime, {design_text(runs)}"
    claim = post_claim(trend, design)
    c = control.loc["r=64"]
    return (
        f"The post's regime (`batch_size_long`: tiny, `instruct`, {design_text(runs)}; "
        f"{runs.seed.nunique()} seeds; {interior}). Capacity check at batch "
        f"{int(gaps.batch_size.min())}: "
        + "; ".join(f"{lab} {smallest.loc[lab].verdict_text}" for lab in ("r=1", "r=4", "r=64"))
        + f". r=64 against full (blocks only), slope per doubling: {c.trend_text}. "
        + claim.text
        + ". Claims in circulation: "
        + "; ".join(x.text for x in circulating_claims(gaps, trend))
        + "."
    )


# ----------------------------------------------------------------------------- plots
def _styled_axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    set_style()
    return (ax.figure, ax) if ax is not None else plt.subplots(figsize=figsize)


def plot_gaps(gaps: pd.DataFrame, ax: Any = None, title: str | None = None) -> Any:
    """Gap to the reference against batch size, one line per method, 95 % intervals (paired
    seeds, the LR choice inside) as bars; zero (no gap) dashed."""
    fig, ax = _styled_axes(ax, (7.5, 4.6))
    styles = line_styles(gaps.label.unique())
    labels = sort_labels(gaps.label.unique())
    offsets = np.linspace(-0.06, 0.06, len(labels))  # keep overlapping bars apart
    for off, label in zip(offsets, labels):
        d = gaps[gaps.label == label].sort_values("batch_size")
        x = d.batch_size * 2.0**off
        st = styles[label]
        ax.errorbar(
            x, d.gap, yerr=[d.gap - d.lo, d.hi - d.gap], color=st["color"],
            marker=st["marker"], capsize=3, label=label, lw=1.8,
        )  # fmt: skip
    ax.axhline(0, color="black", ls="--", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(
        sorted(gaps.batch_size.unique()), [str(b) for b in sorted(gaps.batch_size.unique())]
    )
    ax.set_xlabel("batch size (log2 scale; fixed examples, so fewer steps to the right)")
    ax.set_ylabel("loss minus FullFT's (nats)")
    ax.set_title(title or "Gap to FullFT at each method's best LR (95 % seed intervals)")
    legend_outside(ax, frameon=True, fontsize=9)
    fig.tight_layout()
    return fig


def plot_gaps_by_design(gaps: dict[str, pd.DataFrame], titles: dict[str, str] | None = None) -> Any:
    """:func:`plot_gaps` for several designs side by side on one y scale: the same methods,
    the same question, a different design per panel (``gaps`` maps a design to its
    :func:`gap_table`; ``titles`` names each panel's design)."""
    import matplotlib.pyplot as plt

    set_style()
    fig, axes = plt.subplots(1, len(gaps), figsize=(5.6 * len(gaps), 4.4), sharey=True,
                             squeeze=False)  # fmt: skip
    for ax, (name, g) in zip(axes[0], gaps.items()):
        plot_gaps(g, ax=ax, title=(titles or {}).get(name, name))
        if ax is not axes[0][0]:
            ax.set_ylabel("")
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        ax.set_xlabel("batch size (log2; fixed examples)")
    legend_outside(axes[0][-1])  # one legend for the row, right of its last panel
    fig.tight_layout()
    return fig


def plot_curves_at(best: pd.DataFrame, batch_sizes: list[int], x: str = "examples") -> Any:
    """Learning curves (seed mean, best final LR) per method, one panel per batch size,
    against ``x`` ("examples" or "step"), log scale."""
    import matplotlib.pyplot as plt

    set_style()
    fig, axes = plt.subplots(
        1, len(batch_sizes), figsize=(5.0 * len(batch_sizes), 4.2), sharey=True, squeeze=False
    )
    styles = line_styles(best.label.unique())
    for ax, b in zip(axes[0], batch_sizes):
        d = best[(best.batch_size == b) & (best.step > 0)]
        for label in sort_labels(d.label.unique()):
            c = d[d.label == label].sort_values("step")
            st = styles[label]
            ax.plot(c[x], c.eval_loss, color=st["color"], marker=st["marker"], markersize=4,
                    label=label, lw=1.8)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("examples seen (log)" if x == "examples" else "step (log)")
        ax.set_title(f"batch {b} ({int(d.step.max())} steps)")
    axes[0][0].set_ylabel("eval loss (nats / completion token)")
    legend_outside(axes[0][-1], frameon=True, fontsize=8)
    fig.tight_layout()
    return fig


def plot_gap_vs_progress(gaps: pd.DataFrame, label: str) -> Any:
    """``label``'s gap to FullFT as training goes on, one line per batch size, against
    steps (left) and against examples seen (right): which clock does the gap follow?"""
    import matplotlib.pyplot as plt

    set_style()
    d = gaps[(gaps.label == label) & (gaps.step > 0)]
    batches = sorted(d.batch_size.unique())
    colours = plt.get_cmap("plasma")(np.linspace(0.0, 0.85, len(batches)))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for colour, b in zip(colours, batches):
        c = d[d.batch_size == b].sort_values("step")
        for ax, x in zip(axes, ("step", "examples")):
            ax.plot(c[x], c.gap, color=colour, marker="o", markersize=3, lw=1.6,
                    label=f"batch {b}")  # fmt: skip
    for ax, x in zip(axes, ("steps taken (log)", "examples seen (log)")):
        ax.axhline(0, color="black", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel(x)
    axes[0].set_ylabel(f"{label} minus FullFT (nats)")
    axes[0].set_title(f"{label}: gap against steps")
    axes[1].set_title(f"{label}: gap against examples")
    legend_outside(axes[1], frameon=True, fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def plot_best_lr_vs_batch(opt: pd.DataFrame, scaling: pd.DataFrame, ax: Any = None) -> Any:
    """Optimal LR against batch size per method (log-log) with the fitted exponent in the
    legend; a grey line of slope 1/2 through FullFT's first optimum is the square-root rule.
    Hollow markers: not an interior optimum (a bound)."""
    fig, ax = _styled_axes(ax, (7.5, 4.6))
    styles = line_styles(opt.label.unique())
    exps = scaling.set_index("label")
    for label in sort_labels(opt.label.unique()):
        d = opt[opt.label == label].sort_values("batch_size")
        lr = d.opt_lr.fillna(d.best_lr)
        st = styles[label]
        p = exps.exponent.get(label, math.nan)
        ax.plot(d.batch_size, lr, color=st["color"], marker=st["marker"], lw=1.8,
                label=f"{label} (p = {p:.2f})")  # fmt: skip
        bound = ~d.interior.to_numpy()
        if bound.any():
            ax.scatter(d.batch_size[bound], lr[bound], s=80, facecolors="none",
                       edgecolors="red", zorder=6)  # fmt: skip
    full = opt[opt.label == REFERENCE].sort_values("batch_size")
    if not full.empty:
        b0, lr0 = float(full.batch_size.iloc[0]), float(full.opt_lr.fillna(full.best_lr).iloc[0])
        bs = np.array(sorted(opt.batch_size.unique()), float)
        ax.plot(bs, lr0 * np.sqrt(bs / b0), color="grey", ls=":", lw=1.5, label="∝ sqrt(batch)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    bs = sorted(opt.batch_size.unique())
    ax.set_xticks(bs, [str(b) for b in bs])
    ax.set_xlabel("batch size (log2 scale)")
    ax.set_ylabel("best learning rate (log scale)")
    ax.set_title("Best LR against batch size (LR ∝ batch^p)")
    legend_outside(ax, frameon=True, fontsize=8)
    fig.tight_layout()
    return fig


def headline(results: Any = None) -> Headline:
    """Finding 3 as one row of the front page, read in the post's regime
    (``batch_size_long``): the gap to FullFT per doubling of batch, per rank."""
    runs = load_design(POST_REGIME, results)
    trend = gap_trend(runs, against="r=64")
    claim = post_claim(trend, design_text(runs))
    ranks = trend[trend.label.str.startswith("r=")]
    measured = (
        f"in the post's regime ({design_text(runs)}; {runs.seed.nunique()} seeds) LoRA's gap "
        "to FullFT per doubling of batch: "
        + ", ".join(f"{r.label} {r.slope_per_doubling:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}] nats"
                    for r in ranks.itertuples())  # fmt: skip
        + " (95 %): the gap "
        + ("shrinks at every rank" if (ranks.trend == "shrinks with batch").all()
           else "does not grow at every rank")
        + " as batches grow"
    )  # fmt: skip
    return Headline(
        finding="3 · batch size",
        claim="LoRA pays more than FullFT for large batches, whatever its rank",
        measured=measured, status=claim.status, notebook="03_batch_size",
        experiments=(POST_REGIME,), figure=lambda: plot_gaps(gap_table(runs),
                                                             title=DESIGNS[POST_REGIME]),
    )  # fmt: skip
