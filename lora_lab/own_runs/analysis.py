"""The package's best-over-LR reading applied to a user's run table.

Nothing here is new statistics: best LRs and their location intervals come from
:func:`lora_lab.findings.common.best_lrs` (as notebook 02's table), ratios from
:func:`lora_lab.analysis.lr_ratio`, gaps and their four verdicts from
:func:`lora_lab.findings.common.contrast`, and the LRs to run next from
:class:`lora_lab.sweeps.lr_search.LRSearch` — so a user's sweep is read, and converges, as the
package's own sweeps do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

import lora_lab.own_runs.report as report
from lora_lab.analysis import lr_ratio, optimal_lr, pointwise_min_curves
from lora_lab.findings.common import above_one, best_lrs, contrast, verdict_columns
from lora_lab.own_runs.table import FULLFT_LABEL, RunTable, RunTableError
from lora_lab.stats import Estimate, seeds_for_margin, t_quantile
from lora_lab.sweeps.lr_search import LRSearch, lattice_index, lattice_lr

MIN_SEEDS = 3  # the package's minimum for an interval worth reading (t with 2 df)
MIN_LRS = 3  # a best LR and a neighbour on each side


@dataclass
class Analysis:
    """What a run table says. ``optima``: per method, the best LR, whether it is an
    optimum (interior at 1.47x), its location interval and a status sentence. ``ratios``:
    each method's optimal LR over the reference's, with its 95 % interval. ``gaps``: each
    method's metric at its best LR minus the reference's, seeds paired, with one of the four
    verdicts. ``next_runs``: the LRs (and seeds) to run next. ``curves``: the best-over-LR
    curve of each method against step, where the runs logged curves."""

    table: RunTable
    reference: str
    margin: float | None
    optima: pd.DataFrame
    ratios: pd.DataFrame
    gaps: pd.DataFrame
    next_runs: pd.DataFrame
    curves: pd.DataFrame | None
    notes: list[str] = field(default_factory=list)

    @property
    def metric(self) -> str:
        return self.table.metric

    def status(self, label: str) -> str:
        return str(self.optima.set_index("label").status[label])

    def to_markdown(self) -> str:
        return report.markdown_report(self)

    def to_html(self) -> str:
        return report.html_report(self)


def analyze_table(
    table: RunTable, reference: str | None = None, margin: float | None = None,
    search: LRSearch | None = None,
) -> Analysis:  # fmt: skip
    """Read ``table`` against ``reference`` (default: FullFT if present, else the first
    method). ``margin``: the equivalence margin for the gaps, in the metric's units (None:
    equivalence is never claimed). ``search``: the LR search whose next step is proposed
    (default: the package's, 6 LRs per decade)."""
    search = search or LRSearch()
    labels = table.labels
    reference = reference or (FULLFT_LABEL if FULLFT_LABEL in labels else labels[0])
    if reference not in labels:
        raise RunTableError(f"reference {reference!r} is not a method of this table; "
                            f"its methods: {', '.join(labels)}")  # fmt: skip
    if margin is not None and not (margin > 0 and math.isfinite(margin)):
        raise RunTableError(f"the equivalence margin must be a positive number, got {margin}")
    sign = -1.0 if table.higher_is_better else 1.0
    runs = table.runs.assign(objective=sign * table.runs.value)
    optima = _optima(runs, labels, search, sign)
    locatable = set(optima.label[optima.n_lrs >= MIN_LRS])
    at_edge = {o.label for o in optima.itertuples() if isinstance(o.edge, str) and o.edge}
    ratios = _ratios(runs, labels, reference, locatable, at_edge)
    gaps = _gaps(table, labels, reference, margin, optima)
    next_runs = pd.concat([_next_runs(runs, optima, search),
                           _seed_runs(runs, optima, gaps, reference, margin)],
                          ignore_index=True)  # fmt: skip
    curves = _best_curves(table)
    notes = list(table.notes)
    if runs.seed.nunique() < 2:
        notes.append("one seed: no interval can be computed, so no difference can be "
                     "resolved and no optimum located; the best LRs are single measurements")
    return Analysis(table, reference, margin, optima, ratios, gaps, next_runs, curves, notes)


# ----------------------------------------------------------------------------- optima


def _optima(runs: pd.DataFrame, labels: list[str], search: LRSearch,
            sign: float) -> pd.DataFrame:  # fmt: skip
    located = best_lrs(runs, ["label"], metric="objective", per_decade=search.per_decade)
    extra = optimal_lr(runs, ["label"], metric="objective", per_decade=search.per_decade)
    located = located.merge(extra[["label", "at_edge", "best_loss", "resolution"]], on="label")
    located = located.set_index("label")
    rows = []
    for label in labels:
        mine = runs[runs.label == label]
        n_lrs, n_seeds = mine.lr.nunique(), mine.seed.nunique()
        row = located.loc[label].to_dict()
        row.update(label=label, n_lrs=n_lrs, seeds=n_seeds, runs=len(mine),
                   best_value=sign * row["best_loss"])  # fmt: skip
        if n_lrs < MIN_LRS:
            row.update(opt_lr=math.nan, lr_lo=0.0, lr_hi=math.inf, location_steps=math.inf,
                       interior=False)  # fmt: skip
        row["status"] = _status(row, search, search.next_lrs(_cells(mine)))
        rows.append(row)
    cols = ["label", "n_lrs", "seeds", "runs", "best_lr", "best_value", "opt_lr", "lr_lo",
            "lr_hi", "location_steps", "interior", "edge", "at_edge", "resolution", "status"]
    return pd.DataFrame(rows)[cols]


def _cells(mine: pd.DataFrame) -> dict[float, float]:
    """Seed-mean objective per LR of one method; inf where any seed diverged."""
    cells = mine.groupby("lr").apply(
        lambda g: math.inf if g.diverged.any() else g.objective.mean(), include_groups=False
    )
    return cells.to_dict()


def _status(row: dict, search: LRSearch, next_lrs: list[float]) -> str:
    step = f"{search.resolution:.3g}x"
    if row["n_lrs"] < MIN_LRS:
        return (f"cannot locate an optimum: {row['n_lrs']} LR(s) measured (need {MIN_LRS}: "
                "the best and a worse neighbour on each side); run these LRs next: "
                + ", ".join(f"{lr:.3g}" for lr in next_lrs))  # fmt: skip
    if isinstance(row["edge"], str) and row["edge"]:
        return f"best LR at the {row['edge']} edge of the grid: a bound, not an optimum"
    if row["interior"]:
        text = f"optimum interior at {step}"
    else:
        res = row["resolution"]
        text = (f"inside the grid, but its neighbours are {res:.3g}x away (coarser than {step})"
                if math.isfinite(res) and res > search.resolution * 1.01
                else "inside the grid, but a neighbour is not worse")  # fmt: skip
    if row["seeds"] < 2:
        return text + "; one seed: its location has no interval"
    if row["lr_lo"] == 0 or not math.isfinite(row["lr_hi"]):
        return text + "; location not resolved (its interval reaches the edge of the grid)"
    return text + f"; location interval {row['location_steps']:.0f} steps of {step} wide"


# ----------------------------------------------------------------------------- ratios, gaps


def _ratios(runs: pd.DataFrame, labels: list[str], reference: str, locatable: set[str],
            at_edge: set[str]) -> pd.DataFrame:  # fmt: skip
    rows = []
    best = runs.groupby("label").apply(_best_lr, include_groups=False)  # best measured LR
    for label in labels:
        if label == reference:
            continue
        if label in locatable and reference in locatable:
            r = lr_ratio(runs, {"label": label}, {"label": reference}, metric="objective")
            word = above_one_words(r["lo"], r["hi"], r["n_seeds"])
            edges = [x for x in (label, reference) if x in at_edge]
            if edges:
                word += f" (a bound: {' and '.join(edges)} best LR at the grid's edge)"
            rows.append({"label": label, "ratio": r["ratio"], "lo": r["lo"], "hi": r["hi"],
                         "seeds": r["n_seeds"], "interior": r["interior"], "verdict": word})
        else:
            rows.append({"label": label, "ratio": best[label] / best[reference], "lo": 0.0,
                         "hi": math.inf, "seeds": int(runs.seed.nunique()), "interior": False,
                         "verdict": f"cannot be located: fewer than {MIN_LRS} LRs; the point "
                                    "is the ratio of best measured LRs"})  # fmt: skip
    return pd.DataFrame(rows, columns=["label", "ratio", "lo", "hi", "seeds", "interior",
                                       "verdict"])  # fmt: skip


def above_one_words(lo: float, hi: float, seeds: int) -> str:
    """ "above 1" / "below 1" where the whole 95 % interval is; else not resolved."""
    word = above_one(Estimate(math.nan, lo, hi, seeds, ""))
    return "not resolved from 1" if word == "not resolved" else word


def _best_lr(group: pd.DataFrame) -> float:
    mean = group.groupby("lr").objective.mean()
    return float(mean.idxmin()) if mean.notna().any() else math.nan


def _gaps(table: RunTable, labels: list[str], reference: str, margin: float | None,
          optima: pd.DataFrame) -> pd.DataFrame:  # fmt: skip
    runs, rows = table.runs, []
    status = optima.set_index("label")
    for label in labels:
        if label == reference:
            continue
        v = contrast(runs, {"label": label}, {"label": reference}, metric="value", margin=margin,
                     subject=label, higher_is_better=table.higher_is_better,
                     units=table.metric)  # fmt: skip
        row = {"label": label, **verdict_columns(v)}
        row["seeds_for_margin"] = _seeds_needed(v.estimate, margin, v.kind)
        row["read_at"] = "; ".join(
            f"{x}: {_read_at(status.loc[x])}" for x in (label, reference)
        )  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def _read_at(o: pd.Series) -> str:
    """Where a method's side of a gap was read, and what that implies."""
    if o.n_lrs < MIN_LRS:
        return f"its only {o.n_lrs} LR(s), not an optimum"
    if isinstance(o.edge, str) and o.edge:
        return f"the grid's {o.edge} edge, so it may do better beyond it"
    return "its best LR"


def _seeds_needed(e, margin: float | None, kind: str) -> float:
    """Seeds that would resolve equivalence within ``margin`` at the spread seen (NaN when
    resolved, no margin, or fewer than 2 seeds to see a spread)."""
    if margin is None or kind != "not resolved" or e.n < 2 or not e.resolved:
        return math.nan
    sd = (e.hi - e.lo) / 2 * math.sqrt(e.n) / t_quantile(0.975, e.n - 1)
    return float(seeds_for_margin(sd, margin))


# ----------------------------------------------------------------------------- next runs


def _next_runs(runs: pd.DataFrame, optima: pd.DataFrame, search: LRSearch) -> pd.DataFrame:
    """Per method: the LRs the package's search would try next, every one at the method's
    seeds (at least :data:`MIN_SEEDS`); more seeds where there are fewer than that; and,
    where an interior optimum's location interval reaches an end of the grid, the LR past
    that end. Empty for a method whose optimum is interior and located."""
    rows = []
    for o in optima.itertuples():
        mine = runs[runs.label == o.label]
        seeds = sorted(mine.seed.unique())
        want_seeds = seeds + [s for s in range(max(seeds) + 1, max(seeds) + 1 + MIN_SEEDS)
                              ][: max(0, MIN_SEEDS - len(seeds))]  # fmt: skip
        cells = pd.Series(_cells(mine))
        for lr in search.next_lrs(cells.to_dict()):
            why = ("no optimum located yet" if o.n_lrs < MIN_LRS
                   else f"best LR at the {o.edge} edge" if isinstance(o.edge, str) and o.edge
                   else "measure the best LR's neighbour at 1.47x")  # fmt: skip
            rows.append({"label": o.label, "lr": lr, "seeds": _seed_text(want_seeds),
                         "runs": len(want_seeds), "why": why})  # fmt: skip
        if len(seeds) < MIN_SEEDS:
            around = _around_best(cells, o.best_lr)
            new = [s for s in want_seeds if s not in seeds]
            for lr in around:
                rows.append({"label": o.label, "lr": lr, "seeds": _seed_text(new),
                             "runs": len(new),
                             "why": f"{len(seeds)} seed(s): need {MIN_SEEDS} for an interval"})
        elif o.interior:
            for lr, side in _open_ends(cells, o, search):
                rows.append({"label": o.label, "lr": lr, "seeds": _seed_text(seeds),
                             "runs": len(seeds),
                             "why": f"location open at the {side} end: extend the grid "
                                    "past it"})  # fmt: skip
    return pd.DataFrame(rows, columns=["label", "lr", "seeds", "runs", "why"])


def _seed_runs(runs: pd.DataFrame, optima: pd.DataFrame, gaps: pd.DataFrame, reference: str,
               margin: float | None) -> pd.DataFrame:  # fmt: skip
    """Fresh seeds at both sides' best LRs where a gap is not resolved within the margin:
    as many as :func:`lora_lab.stats.seeds_for_margin` says the spread seen would need."""
    cols = ["label", "lr", "seeds", "runs", "why"]
    if margin is None or gaps.empty:
        return pd.DataFrame(columns=cols)
    need: dict[str, int] = {}
    for g in gaps.itertuples():
        if math.isfinite(g.seeds_for_margin):
            for label in (g.label, reference):
                need[label] = max(need.get(label, 0), int(g.seeds_for_margin))
    best = optima.set_index("label").best_lr
    rows = []
    for label, n in need.items():
        have = sorted(runs[(runs.label == label) & (runs.lr == best[label])].seed.unique())
        if n <= len(have):
            continue
        new = list(range(max(have) + 1, max(have) + 1 + n - len(have)))
        rows.append({"label": label, "lr": float(best[label]), "seeds": _seed_text(new),
                     "runs": len(new), "why": f"a gap not resolved within ±{margin:g}: ~{n} "
                     "seeds would resolve it at the spread seen"})  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def _open_ends(cells: pd.Series, o: Any, search: LRSearch) -> list[tuple[float, str]]:
    """Where an interior optimum's location interval reaches the end of the grid: the LR
    ``extend_step`` lattice points past that end (the search's band rule), within bounds."""
    lrs = np.sort(cells.index.to_numpy(float))
    out = []
    for open_, end, step, side in ((o.lr_lo == 0, lrs[0], -1, "low"),
                                   (not math.isfinite(o.lr_hi), lrs[-1], 1, "high")):  # fmt: skip
        k = lattice_index(end, search.per_decade) + step * search.extend_step
        lr = lattice_lr(k, search.per_decade)
        if open_ and search.lr_min <= lr <= search.lr_max:
            out.append((lr, side))
    return out


def _around_best(cells: pd.Series, best: float) -> list[float]:
    lrs = np.sort(cells.index.to_numpy(float))
    i = int(np.searchsorted(lrs, best))
    return [float(x) for x in lrs[max(0, i - 1) : i + 2]]


def _seed_text(seeds: list[int]) -> str:
    return ", ".join(str(int(s)) for s in seeds)


# ----------------------------------------------------------------------------- curves


def _best_curves(table: RunTable) -> pd.DataFrame | None:
    """The post's curves: seed mean, then the best over LR at each step."""
    c = table.curves
    if c is None or c.empty:
        return None
    sign = -1.0 if table.higher_is_better else 1.0
    best = pointwise_min_curves(c.assign(eval_loss=sign * c.value), ["label"])
    return best.assign(value=sign * best.eval_loss).drop(columns="eval_loss")

