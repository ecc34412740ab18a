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

from lora_lab.analysis import (
    align_seeds,
    best_loss_gaps,
    best_over_lr,
    bootstrap_optima,
    draws_interval,
    load_runs,
    optimal_lr,
    seed_resamples,
    sign_verdict,
)
from lora_lab.plots import line_styles, set_style
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
    description="FullFT, full (blocks only), LoRA r=1/4/64 at batch 4..256 on 4,096 "
    "instruction examples (2 epochs of 2,048), 3 seeds, LR searched to 1.47x",
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

EXPERIMENTS = (BATCH_SIZE,)


# ----------------------------------------------------------------------------- analysis
# Every quantity below is read at each condition's *best* LR, and its interval comes from
# resampling seeds with replacement: inside a resample the best LR is chosen again, so the
# interval includes the noise of picking the LR, not only of the loss at a fixed LR. Seeds
# are paired across conditions (one resample draws the same seeds everywhere).

REFERENCE = "FullFT"
N_BOOT = 1000


def bootstrap_gaps(
    runs: pd.DataFrame, reference: str = REFERENCE, n_boot: int = N_BOOT, seed: int = 0
) -> pd.DataFrame:
    """Best-over-LR loss minus the reference's, per (batch, method): one column per draw
    (column 0 uses every seed; the rest are seed resamples)."""
    return best_loss_gaps(
        runs, ["batch_size", "label"], {"label": reference}, n_boot=n_boot, seed=seed
    )


def gap_table(
    runs: pd.DataFrame, reference: str = REFERENCE, n_boot: int = N_BOOT, seed: int = 0
) -> pd.DataFrame:
    """One row per (batch, method): best-over-LR loss, the gap to ``reference`` with a 95 %
    seed-bootstrap interval, the gap relative to the reference's loss, and a verdict."""
    boots = bootstrap_gaps(runs, reference, n_boot, seed)
    best = best_over_lr(runs, ["batch_size", "label"]).set_index(["batch_size", "label"])
    rows = []
    for (b, label), draws in boots.iterrows():
        d = draws.to_numpy(float)
        lo, hi = draws_interval(d[1:])
        ref_loss = float(best.loc[(b, reference), "best_loss"])
        rows.append(
            {
                "batch_size": b,
                "steps": int(runs[runs.batch_size == b].steps_done.max()),
                "label": label,
                "loss": float(best.loc[(b, label), "best_loss"]),
                "reference_loss": ref_loss,
                "gap": float(d[0]),
                "lo": lo,
                "hi": hi,
                "relative_gap": float(d[0]) / ref_loss,
                "verdict": sign_verdict(lo, hi),
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


def gap_trend(
    runs: pd.DataFrame,
    reference: str = REFERENCE,
    n_boot: int = N_BOOT,
    seed: int = 0,
    against: str | None = None,
) -> pd.DataFrame:
    """How the gap to ``reference`` moves with batch size: the least-squares slope of gap on
    log2(batch) (nats per doubling), with a 95 % seed-bootstrap interval, per method; the
    gap at the smallest and largest batch. ``against`` adds each method's slope minus that
    method's slope (e.g. "r=64": does the trend depend on rank?) with its interval."""
    boots = bootstrap_gaps(runs, reference, n_boot, seed)
    slopes = {}
    for label, sub in boots.groupby(level="label"):
        x = np.log2(sub.index.get_level_values("batch_size").to_numpy(float))
        y = sub.to_numpy(float)  # batches x draws
        slopes[label] = np.array([_slope(x, y[:, j]) for j in range(y.shape[1])])
    rows = []
    for label in sort_labels(slopes):
        s = slopes[label]
        lo, hi = draws_interval(s[1:])
        sub = boots.xs(label, level="label")
        row = {
            "label": label,
            "gap_smallest_batch": float(sub.iloc[0, 0]),
            "gap_largest_batch": float(sub.iloc[-1, 0]),
            "slope_per_doubling": float(s[0]),
            "lo": lo,
            "hi": hi,
            "trend": sign_verdict(lo, hi, "grows with batch", "shrinks with batch").replace(
                "same", "no trend"
            ),
        }
        if against is not None and against in slopes:
            diff = s - slopes[against]
            dlo, dhi = draws_interval(diff[1:])
            row.update(
                {
                    f"slope_minus_{against}": float(diff[0]),
                    "diff_lo": dlo,
                    "diff_hi": dhi,
                    "same_trend_as_" + against: label == against
                    or (not math.isnan(dlo) and dlo <= 0 <= dhi),
                }
            )
        rows.append(row)
    return pd.DataFrame(rows)


def lr_scaling(runs: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Does the best LR follow LR ∝ batch^p, and with which p? Per method: the slope of
    log(optimal LR) on log(batch) (0.5 is the square-root rule, 1 the linear rule), with a
    95 % seed-bootstrap interval (optima by the parabola in log LR; a resample whose
    optimum falls on an edge of what was measured is a bound and counts against the
    interval, which is NaN when more than 5 % of resamples are bounds)."""
    seeds = np.sort(runs.seed.unique())
    picks = seed_resamples(seeds, n_boot, seed)
    opt = optimal_lr(runs, ["batch_size", "label"])
    rows = []
    for label in sort_labels(runs.label.unique()):
        sub = runs[runs.label == label]
        batches = np.sort(sub.batch_size.unique())
        optima = []
        for b in batches:
            cond = sub[sub.batch_size == b]
            lrs = np.sort(cond.lr.unique())
            loss = align_seeds(cond, seeds, lrs, "final_loss")
            optima.append(bootstrap_optima(lrs, loss, picks))
        logs = np.log(np.array(optima))  # batches x draws, NaN where a bound
        x = np.log(batches.astype(float))
        draws = np.array(
            [
                np.polyfit(x, logs[:, j], 1)[0] if np.isfinite(logs[:, j]).all() else np.nan
                for j in range(logs.shape[1])
            ]
        )
        lo, hi = draws_interval(draws[1:])
        o = opt[opt.label == label]
        rows.append(
            {
                "label": label,
                "exponent": float(draws[0]),
                "lo": lo,
                "hi": hi,
                "sqrt_rule_inside": bool(not math.isnan(lo) and lo <= 0.5 <= hi),
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


def circulating_claims(gaps: pd.DataFrame, trend: pd.DataFrame) -> pd.DataFrame:
    """The two claims in circulation (not from the post), tested in the form this sweep can
    test: its largest batch is far below 512, so each is read at the largest batch measured
    and the verdict says so. Per LoRA rank."""
    largest = int(gaps.batch_size.max())
    rows = []
    for label in sort_labels(gaps.label.unique()):
        if not label.startswith("r="):
            continue
        t = trend.set_index("label").loc[label]
        mine = gaps[gaps.label == label]
        g = mine[mine.batch_size == mine.batch_size.max()].iloc[0]
        rows.append(
            {
                "claim": CLAIM_HURTS,
                "label": label,
                "tested_as": f"does the gap to FullFT grow with batch (2..{largest})?",
                "measured": f"{t.slope_per_doubling:+.3f} nats per doubling "
                f"[{t.lo:+.3f}, {t.hi:+.3f}]",
                "verdict": "consistent" if t.trend == "grows with batch" else "not seen",
            }
        )
        rel_lo, rel_hi = g.lo / g.reference_loss, g.hi / g.reference_loss
        inside = not math.isnan(rel_lo) and rel_lo <= 0.30 and rel_hi >= 0.20
        rows.append(
            {
                "claim": CLAIM_PERCENT,
                "label": label,
                "tested_as": f"LoRA's loss over FullFT's at batch {int(g.batch_size)}",
                "measured": f"{g.relative_gap:+.1%} [{rel_lo:+.1%}, {rel_hi:+.1%}]",
                "verdict": "consistent"
                if inside
                else ("smaller than claimed" if rel_hi < 0.20 else "larger than claimed"),
            }
        )
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
    callback: Callable[[int, dict], None] | None = None,
) -> RunResult:
    """One run of the sweep's design from panel values: ``epochs`` over ``data`` at
    ``batch_size`` (so a bigger batch takes fewer steps); ``rank=0`` is FullFT."""
    steps = max(1, math.ceil(epochs * len(data) / batch_size))
    return run_from_controls(
        base, data, eval_data=eval_data, rank=rank, lr=lr, batch_size=batch_size,
        targets="all", steps=steps, seed=seed, callback=callback,
        eval_limit=BATCH_SIZE.defaults["eval_limit"],  # the sweep's examples, comparable curves
    )  # fmt: skip


class BatchPanel(LivePanel):
    """Pick a batch size and a method; Run trains the sweep's design (the same examples at
    any batch) live at the sweep's best LR for that batch and method, over the sweep's
    curves for that batch, against examples seen. ``best_lrs`` maps (batch, label) to LR
    (:func:`best_lr_lookup`); ``curves`` is :func:`best_curves` of the sweep."""

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
        self.info = w.HTML()
        self.batch.observe(lambda _: self._describe(), names="value")
        self.rank.observe(lambda _: self._describe(), names="value")
        self._describe()
        self._build([[self.batch, self.rank], [self.info]], self.steps())

    def label(self) -> str:
        return "FullFT" if self.rank.value == 0 else f"r={self.rank.value}"

    def steps(self) -> int:
        return max(1, math.ceil(BATCH_EPOCHS * len(self.data) / self.batch.value))

    def lr(self) -> float:
        key = (int(self.batch.value), self.label())
        if key not in self.best_lrs:
            raise ValueError(f"the sweep has no best LR for batch {key[0]}, {key[1]}")
        return float(self.best_lrs[key])

    def _describe(self) -> None:
        try:
            lr = f"<b>{self.lr():.3g}</b>"
        except ValueError as e:
            lr = f"<b>none</b> ({e})"
        self.info.value = (
            f"{self.steps()} steps of {self.batch.value} examples at the sweep's best LR for "
            f"{self.label()} at this batch: {lr}"
        )

    def values(self) -> dict[str, Any]:
        return {"batch_size": self.batch.value, "rank": self.rank.value, "lr": self.lr()}

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
            ax.plot(xs, ys, "o-", color="crimson", lw=2.5, label=f"live: {label}, batch {b}")
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
def _interior_words(runs: pd.DataFrame) -> str:
    opt = optimal_lr(runs, ["batch_size", "label"])
    n_in = int(opt.interior.sum())
    if n_in == len(opt):
        return f"all {len(opt)} best LRs interior at 1.47x"
    return f"{n_in} of {len(opt)} best LRs interior at 1.47x, the others bounds"


def summary(results: Any = None, n_boot: int = N_BOOT) -> str:
    """Finding 3 in one paragraph, every number computed from the shipped records."""
    runs = load_runs(results_dir("batch_size", root=results))
    gaps = gap_table(runs, n_boot=n_boot)
    trend = gap_trend(runs, n_boot=n_boot, against="r=64").set_index("label")
    control = gap_trend(runs, reference="full (blocks only)", n_boot=n_boot).set_index("label")
    scaling = lr_scaling(runs, n_boot=n_boot).set_index("label")
    claims = circulating_claims(gaps, trend.reset_index())
    batches = sorted(runs.batch_size.unique())
    best = best_over_lr(runs, ["batch_size", "label"]).set_index(["batch_size", "label"])
    full = [best.loc[(b, REFERENCE), "best_loss"] for b in batches]
    n_examples = int(BATCH_EPOCHS * BATCH_INSTRUCT["n_train"])
    text = [
        f"What the shipped `batch_size` sweep says about finding 3 (tiny base, `instruct`: "
        f"{n_examples:,} examples per run, batch {batches[0]} to {batches[-1]} = "
        f"{n_examples // batches[0]} to {n_examples // batches[-1]} steps; "
        f"{runs.seed.nunique()} seeds; {_interior_words(runs)}; intervals are 95 % seed "
        f"bootstraps; notebook 03 recomputes all of it). FullFT's best loss goes "
        f"{full[0]:.3f} at batch {batches[0]} to {full[-1]:.3f} at batch {batches[-1]}."
    ]
    parts = []
    for label in sort_labels(trend.index):
        t = trend.loc[label]
        parts.append(
            f"{label} {t.gap_smallest_batch:+.3f} -> {t.gap_largest_batch:+.3f} "
            f"({t.slope_per_doubling:+.4f} per doubling [{t.lo:+.4f}, {t.hi:+.4f}]: "
            f"{t.trend})"
        )
    text.append(
        f"Gap to FullFT from batch {batches[0]} to {batches[-1]}: " + "; ".join(parts) + "."
    )
    if "r=64" in control.index:
        c = control.loc["r=64"]
        text.append(
            f"The full-rank r=64 adapter against full (blocks only), the same matrices "
            f"trained directly: {c.gap_smallest_batch:+.3f} -> {c.gap_largest_batch:+.3f} "
            f"({c.slope_per_doubling:+.4f} per doubling [{c.lo:+.4f}, {c.hi:+.4f}]: "
            f"{c.trend})."
        )
    same = [lbl for lbl in ("r=1", "r=4") if trend.loc[lbl].get("same_trend_as_r=64")]
    text.append(
        "Rank dependence of the trend (slope minus r=64's): "
        + ", ".join(
            f"{lbl} {trend.loc[lbl]['slope_minus_r=64']:+.4f} "
            f"[{trend.loc[lbl].diff_lo:+.4f}, {trend.loc[lbl].diff_hi:+.4f}]"
            for lbl in ("r=1", "r=4")
        )
        + (
            " (the same as full rank within the intervals)."
            if len(same) == 2
            else f" (same as full rank within the interval: {', '.join(same) or 'none'})."
        )
    )
    text.append(
        "Best LR against batch, LR ∝ batch^p: "
        + ", ".join(
            f"{lbl} p = {scaling.loc[lbl].exponent:.2f} [{scaling.loc[lbl].lo:.2f}, "
            f"{scaling.loc[lbl].hi:.2f}]"
            for lbl in sort_labels(scaling.index)
        )
        + " (the square-root rule is p = 0.5)."
    )
    verdicts = claims.groupby("claim").verdict.agg(lambda v: ", ".join(sorted(set(v))))
    text.append(
        "Claims in circulation, at the largest batch measured: "
        + "; ".join(f'"{claim}": {v}' for claim, v in verdicts.items())
        + "."
    )
    return " ".join(text)


# ----------------------------------------------------------------------------- plots
def _styled_axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    set_style()
    return (ax.figure, ax) if ax is not None else plt.subplots(figsize=figsize)


def plot_gaps(gaps: pd.DataFrame, ax: Any = None, title: str | None = None) -> Any:
    """Gap to the reference against batch size, one line per method, 95 % seed-bootstrap
    intervals as bars; zero (no gap) dashed."""
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
    ax.legend(frameon=True, fontsize=9)
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
    axes[0][-1].legend(frameon=True, fontsize=8)
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
    axes[1].legend(frameon=True, fontsize=8, ncol=2)
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
    ax.legend(frameon=True, fontsize=8)
    fig.tight_layout()
    return fig
