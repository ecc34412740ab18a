"""The reading layer every finding shares: runs as seed x LR matrices, best LRs with their
location interval, contrasts with one of the four verdicts, and claims with their status.

Findings call these instead of writing their own interval -> verdict code, so one rule holds
everywhere (see :mod:`lora_lab.stats` for the statistics and their tested coverage):

* a condition is a dict of column values (``{"label": "r=1", "batch_size": 32}``);
* a contrast is read at each side's best LR, seeds paired, and printed with its interval
  and the margin its finding states in advance;
* a claim whose range the design does not reach, or whose units are unknown, gets a status
  that says so instead of a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lora_lab.analysis import pointwise_min_curves
from lora_lab.plots import line_styles
from lora_lab.stats import (
    Estimate,
    Verdict,
    best_combination,
    best_gap,
    jackknife,
    lattice_steps,
    optimum_location,
    optimum_ratio,
    parabola_vertex,
    verdict,
)
from lora_lab.sweeps.lr_search import interior_optima

Condition = dict[str, Any]

# The search's finest LR step (6 points per decade); location intervals are counted in it.
FINE_STEP = 10 ** (1 / 6)


def select(runs: pd.DataFrame, cond: Condition) -> pd.DataFrame:
    """The runs of one condition (NaN matches NaN, e.g. FullFT's rank)."""
    mask = np.ones(len(runs), bool)
    for k, v in cond.items():
        col = runs[k]
        mask &= (col.isna() if pd.isna(v) else col == v).to_numpy()
    out = runs[mask]
    if out.empty:
        raise ValueError(f"no runs match {cond}")
    return out


def seed_lr_matrix(
    runs: pd.DataFrame, cond: Condition, metric: str = "final_loss",
    seeds: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(learning rates, ``metric[seed, lr]``) of one condition: a diverged run is +inf (an
    unusable LR), a run not made is NaN. ``seeds`` fixes the rows, so two conditions'
    matrices pair their seeds row by row."""
    sub = select(runs, cond)
    value = sub[metric].astype(float)
    if "diverged" in sub:
        value = value.where(~sub.diverged.astype(bool), np.inf)
    # pivot_table's mean, ~5x faster (this runs a thousand times per README regeneration):
    # cells without a value dropped before the unstack, as pivot_table drops them
    table = value.groupby([sub.seed, sub.lr]).mean().dropna().unstack("lr")
    if seeds is not None:
        table = table.reindex(index=seeds)
    return table.columns.to_numpy(float), table.to_numpy(float)


def _paired(runs: pd.DataFrame, a: Condition, b: Condition | None, metric: str):
    seeds = np.sort(pd.concat([select(runs, a), *([select(runs, b)] if b else [])]).seed.unique())
    ma = seed_lr_matrix(runs, a, metric, seeds)[1]
    mb = None if b is None else seed_lr_matrix(runs, b, metric, seeds)[1]
    return ma, mb


def gap(runs: pd.DataFrame, a: Condition, b: Condition | None = None,
        metric: str = "final_loss", higher_is_better: bool = False) -> Estimate:  # fmt: skip
    """``a``'s ``metric`` at its best LR minus ``b``'s at its best (or ``a``'s own best
    value without ``b``), seeds paired; see :func:`lora_lab.stats.best_gap`. With
    ``higher_is_better`` (accuracy) the best LR is the highest and the sign stays natural."""
    sign = -1.0 if higher_is_better else 1.0
    ma, mb = _paired(runs.assign(_m=sign * runs[metric]), a, b, "_m")
    return negate(best_gap(ma, mb)) if higher_is_better else best_gap(ma, mb)


def negate(e: Estimate) -> Estimate:
    return Estimate(-e.value, -e.hi, -e.lo, e.n, e.method, e.level, -e.eq_hi, -e.eq_lo)


def contrast(
    runs: pd.DataFrame, a: Condition, b: Condition, metric: str = "final_loss",
    margin: float | None = None, subject: str = "", higher_is_better: bool = False,
    units: str = "",
) -> Verdict:  # fmt: skip
    """``a`` against ``b`` at each one's best LR, as one of the four verdicts."""
    e = gap(runs, a, b, metric, higher_is_better)
    return verdict(e, margin, subject, lower_is_better=not higher_is_better, units=units)


def gap_change(
    runs: pd.DataFrame, after: tuple[Condition, Condition], before: tuple[Condition, Condition],
    metric: str = "final_loss", margin: float | None = None, subject: str = "",
    units: str = "",
) -> Verdict:  # fmt: skip
    """How much a gap moved: (``after[0]`` - ``after[1]``) - (``before[0]`` - ``before[1]``),
    each condition at its own best LR, seeds paired across all four (e.g. LoRA's gap to
    FullFT with warmup minus the same gap without). "worse" means the gap grew."""
    conds = [after[0], after[1], before[0], before[1]]
    seeds = np.sort(pd.concat([select(runs, c) for c in conds]).seed.unique())
    mats = [seed_lr_matrix(runs, c, metric, seeds)[1] for c in conds]
    e = best_combination(mats, [1.0, -1.0, -1.0, 1.0])
    return verdict(e, margin, subject, units=units)


def keeps_up(word: str) -> bool | None:
    """Whether a verdict word says the subject keeps up with its reference (equivalent or
    better: True), lags (worse: False), or cannot say (not resolved: None)."""
    if word.endswith(" worse"):
        return False
    if word.endswith(" better") or word.startswith("equivalent"):
        return True
    return None


def verdict_columns(v: Verdict, prefix: str = "") -> dict[str, Any]:
    """A verdict as table columns: point, 95 % interval, 90 % interval, seeds, margin, the
    verdict's word and its full text (which always carries the interval)."""
    e = v.estimate
    return {f"{prefix}value": e.value, f"{prefix}lo": e.lo, f"{prefix}hi": e.hi,
            f"{prefix}eq_lo": e.eq_lo, f"{prefix}eq_hi": e.eq_hi, f"{prefix}seeds": e.n,
            f"{prefix}margin": v.margin, f"{prefix}verdict": v.word,
            f"{prefix}verdict_text": v.text}  # fmt: skip


# ----------------------------------------------------------------------------- best LRs


def best_lrs(
    runs: pd.DataFrame, by: list[str], metric: str = "final_loss", per_decade: int = 6,
    higher_is_better: bool = False,
) -> pd.DataFrame:  # fmt: skip
    """Per group: the best grid LR (seed mean), whether it is interior at ``per_decade``
    points per decade, the parabola vertex ``opt_lr`` and its 95 % location interval
    ``lr_lo`` .. ``lr_hi`` (grid points not significantly worse than another; 0 / inf where
    the interval reaches the edge of what was tried) and that interval's width in fine
    (1.47x) grid steps."""
    sign = -1.0 if higher_is_better else 1.0
    signed = runs.assign(_m=sign * runs[metric])
    flags = interior_optima(signed, by, "_m", per_decade).set_index(by)
    rows = []
    for keys, _ in signed.groupby(by, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        cond = dict(zip(by, keys))
        lrs, m = seed_lr_matrix(signed, cond, "_m")
        loc = optimum_location(lrs, m)
        f = flags.loc[keys if len(keys) > 1 else keys[0]]
        at_edge = isinstance(f.edge, str) and bool(f.edge)  # a bound, not an optimum
        rows.append({**cond, "best_lr": float(f.best_lr), "interior": bool(f.interior),
                     "edge": f.edge, "opt_lr": math.nan if at_edge else loc.value,
                     "lr_lo": loc.lo, "lr_hi": loc.hi,
                     "location_steps": lattice_steps(loc.lo, loc.hi, FINE_STEP),
                     "seeds": loc.n})  # fmt: skip
    return pd.DataFrame(rows)


def interior_text(table: pd.DataFrame, per_decade: int = 6) -> str:
    """ "all 15 best LRs interior at 1.47x" / "12 of 15 best LRs interior at 1.47x"."""
    n, k = len(table), int(table.interior.sum())
    step = f"{10 ** (1 / per_decade):.3g}x"
    return f"{'all ' + str(n) if k == n else f'{k} of {n}'} best LRs interior at {step}"


def lr_ratio(
    runs: pd.DataFrame, a: Condition, b: Condition, metric: str = "final_loss"
) -> Estimate:
    """Best LR of ``a`` over ``b``'s: the ratio of parabola vertices, with the 95 % interval
    that carries both locations' uncertainty (:func:`lora_lab.stats.optimum_ratio`)."""
    lrs_a, ma = seed_lr_matrix(runs, a, metric)
    lrs_b, mb = seed_lr_matrix(runs, b, metric)
    return optimum_ratio(lrs_a, ma, lrs_b, mb)


def ratio_text(e: Estimate) -> str:
    """``2.5x [1.5x, 4.6x]``; an unbounded side is written as such."""

    def x(v: float) -> str:
        return f"{v:.2g}x" if v < 100 else f"{v:.0f}x"

    lo = x(e.lo) if e.lo > 0 else "0"
    hi = x(e.hi) if math.isfinite(e.hi) else "unbounded"
    return f"{x(e.value)} [{lo}, {hi}]"


def above_one(e: Estimate) -> str:
    """Is a ratio above 1? Only when its whole 95 % interval is."""
    if e.lo > 1:
        return "above 1"
    if e.hi < 1:
        return "below 1"
    return "not resolved"


# ----------------------------------------------------------------------------- power laws


def vertex_slope(runs: pd.DataFrame, x: str, seeds: np.ndarray,
                 metric: str = "final_loss") -> float:  # fmt: skip
    """Slope of log(optimal LR) on log(``x``) (batch size, alpha, width, steps) through the
    seed-mean parabola vertices of ``seeds``; NaN if any optimum sits on an edge of what was
    measured (a bound, not an optimum)."""
    values = np.sort(runs[x].unique())
    logs = []
    for v in values:
        lrs, m = seed_lr_matrix(runs, {x: v}, metric, seeds)
        mean = np.where(np.isfinite(m).all(0), m.mean(0), np.inf)
        i = int(np.argmin(mean))
        if i in (0, len(lrs) - 1):
            return math.nan
        logs.append(math.log(parabola_vertex(lrs, mean)))
    return float(np.polyfit(np.log(values.astype(float)), logs, 1)[0])


def optimum_slope(runs: pd.DataFrame, x: str, metric: str = "final_loss",
                  minus: pd.DataFrame | None = None) -> Estimate:  # fmt: skip
    """LR_opt ∝ ``x``^p: the slope p with a 95 % jackknife t interval over seeds (each seed
    left out in turn). With ``minus`` (another condition's runs over the same ``x``), the
    slope of the *ratio* of the two optima, seeds left out together (paired)."""
    seeds = np.sort(runs.seed.unique() if minus is None
                    else np.intersect1d(runs.seed.unique(), minus.seed.unique()))  # fmt: skip

    def slope(keep: np.ndarray) -> float:
        own = vertex_slope(runs, x, keep, metric)
        return own if minus is None else own - vertex_slope(minus, x, keep, metric)

    loo = [slope(np.delete(seeds, i)) for i in range(len(seeds))]
    return jackknife(slope(seeds), np.array(loo))


# ----------------------------------------------------------------------------- panels


def sweep_curve_overlay(
    curves: pd.DataFrame, reference: str = "FullFT", labels: list[str] | None = None
) -> Any:
    """An ``overlay(ax)`` for a live panel: the sweep's best-over-LR curves (the post's
    pointwise minimum over LR of the seed-mean curves), each in its own colour, marker and
    dash (:func:`lora_lab.plots.line_styles`, ``reference`` black), thin and translucent
    so the live run, drawn over them thick and solid, stays the eye's first stop.
    ``labels`` keeps only those curves (a panel shows the ones its controls can reach)."""
    best = pointwise_min_curves(curves, ["label"])
    if labels is not None:
        best = best[best.label.isin(labels)]
    styles = line_styles(best.label.unique())

    def overlay(ax: Any) -> None:
        for lbl, d in best.groupby("label"):
            d = d[d.step > 0]
            st = styles[lbl]
            (line,) = ax.plot(d.step, d.eval_loss, color=st["color"], marker=st["marker"],
                              markersize=3, lw=1.2, alpha=0.75,
                              label=f"sweep: {lbl} (best LR)")  # fmt: skip
            line.set_dashes(st["dashes"] if lbl != reference else (2, 1.5))

    return overlay


# ----------------------------------------------------------------------------- claims

CLAIM_STATUSES = ("holds", "does not hold", "not resolved", "not testable in this design",
                  "units differ")  # fmt: skip


@dataclass(frozen=True)
class Claim:
    """A statement from the post or in circulation, and what the records say of it.
    ``status`` is one of :data:`CLAIM_STATUSES`; ``evidence`` is the measured number with its
    interval (or, when not testable, the reason)."""

    claim: str
    source: str
    status: str
    evidence: str

    def __post_init__(self) -> None:
        if self.status not in CLAIM_STATUSES:
            raise ValueError(f"status must be one of {CLAIM_STATUSES}, got {self.status!r}")

    @property
    def text(self) -> str:
        return f'"{self.claim}" ({self.source}): {self.status} — {self.evidence}'


@dataclass(frozen=True)
class Headline:
    """One row of the front page and of README's findings table: a finding of the post,
    its claim, what this package measured (computed from the records), the claim's status
    (one of :data:`CLAIM_STATUSES`) and the notebook that shows it. ``figure`` draws the
    finding's one figure from the same records."""

    finding: str
    claim: str
    measured: str
    status: str
    notebook: str
    experiments: tuple[str, ...]
    figure: Callable[[], Any] = field(compare=False, repr=False, default=lambda: None)

    def __post_init__(self) -> None:
        if self.status not in CLAIM_STATUSES:
            raise ValueError(f"status must be one of {CLAIM_STATUSES}, got {self.status!r}")


def untestable(claim: str, source: str, reason: str) -> Claim:
    """A claim the design cannot reach (a batch, a scale, a unit it never measured)."""
    return Claim(claim, source, "not testable in this design", reason)


def claims_table(claims: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame([{"claim": c.claim, "source": c.source, "status": c.status,
                          "evidence": c.evidence} for c in claims])  # fmt: skip
