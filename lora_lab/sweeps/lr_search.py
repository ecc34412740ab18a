"""An adaptive learning-rate search: every best-LR result is an interior optimum at a stated
resolution, or says that it is not.

Every finding of the post is read at each method's *best* learning rate, so that number must
be measured, not assumed. A search works per *condition* (a spec without its LR and seed):

1. start from the experiment's grid (any LRs on the search lattice);
2. while the seed-mean best LR sits at an edge of what was tried, extend past that edge by
   ``extend_step`` lattice points (upwards until runs diverge or get worse, downwards until
   the loss rises);
3. once the best is inside, measure its immediate lattice neighbours (``per_decade`` points
   per decade: 6 is a step of 1.47x) until both are measured and worse;
4. with ``band_margin``, also keep extending an edge whose LR is still within the margin of
   the best loss, so the band of good LRs is bounded on both sides.

Learning rates sit on the lattice ``10 ** (k / per_decade)`` rounded to 3 significant
digits, so a grid at 3 per decade (1e-3, 2.15e-3, 4.64e-3) is part of the 6-per-decade
lattice and earlier runs are reused. Each probe is an ordinary run in the store: a search is
resumable like any sweep. ``budgets`` asks for interior optima at several training lengths
(read off constant-LR learning curves), not only at the end.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lora_lab.sweeps.spec import RunSpec


def lattice_index(lr: float, per_decade: int) -> int:
    """Index k of the lattice point 10**(k/per_decade) nearest to ``lr``."""
    return round(math.log10(lr) * per_decade)


def lattice_lr(k: int, per_decade: int) -> float:
    """The lattice point 10**(k/per_decade), to 3 significant digits (as :func:`lr_grid`)."""
    return float(f"{10 ** (k / per_decade):.3g}")


def condition_key(spec: RunSpec) -> str:
    """What identifies a condition: the spec with its LR and seed left out."""
    return spec.replace(lr=1.0, seed=0).key


def _budget_loss(record: dict, budget: int | None) -> float:
    """Eval loss of a run at ``budget`` steps (None: its final loss); inf if it diverged
    before (or at) that point, NaN if the run never logged that step."""
    result = record["result"]
    if budget is None:
        return math.inf if result["diverged"] else float(result["final"]["eval_loss"])
    curves = result["curves"]
    for step, loss in zip(curves["step"], curves["eval_loss"]):
        if step == budget:
            return float(loss) if loss is not None and math.isfinite(loss) else math.inf
    if result["diverged"] and result["final"].get("steps_done", math.inf) <= budget:
        return math.inf
    return math.nan


@dataclass(frozen=True)
class LRSearch:
    """How an experiment searches each condition's best LR (see the module docstring)."""

    per_decade: int = 6
    extend_step: int = 2  # lattice points per extension (2 at 6/decade: 2.15x)
    max_points: int = 14  # per condition, so a pathological curve cannot run forever
    lr_min: float = 1e-6
    lr_max: float = 1.0
    budgets: tuple[int | None, ...] = (None,)  # None: final loss
    # also bound the band of LRs within this much of the best loss (the post's "band of good
    # learning rates"): extend past an edge while the LR there is still inside the band
    band_margin: float | None = None

    def __post_init__(self) -> None:
        if self.per_decade < 1 or self.extend_step < 1 or self.max_points < 3:
            raise ValueError("need per_decade >= 1, extend_step >= 1 and max_points >= 3")
        if self.band_margin is not None and not (
            isinstance(self.band_margin, (int, float)) and 0 < self.band_margin < math.inf
        ):  # fmt: skip
            raise ValueError(f"band_margin must be a positive number, got {self.band_margin!r}")
        if not 0 < self.lr_min < self.lr_max:
            raise ValueError("need 0 < lr_min < lr_max")

    @property
    def resolution(self) -> float:
        """Ratio between neighbouring lattice LRs (1.47x at 6 per decade)."""
        return 10 ** (1 / self.per_decade)

    def check_grid(self, specs: Iterable[RunSpec]) -> None:
        """Every starting LR must sit on the lattice, or neighbours would be ill-defined."""
        off = sorted({s.lr for s in specs if lattice_lr(lattice_index(s.lr, self.per_decade),
                                                       self.per_decade) != s.lr})  # fmt: skip
        if off:
            raise ValueError(
                f"LRs {off} are not on the {self.per_decade}-per-decade lattice; "
                "use lr_grid(low, high, per_decade) or lattice_lr(k, per_decade)"
            )

    # ------------------------------------------------------------------ one condition
    def next_indices(self, losses: dict[int, float]) -> set[int]:
        """Lattice indices to measure next for one condition at one budget, given the
        seed-mean loss at each measured index (inf: diverged). Empty when the best is
        interior at this resolution, or when the search cannot go on."""
        if not losses:
            return set()
        ks = sorted(losses)
        lo_k = lattice_index(self.lr_min, self.per_decade)
        hi_k = lattice_index(self.lr_max, self.per_decade)
        vals = np.array([losses[k] for k in ks])
        if not np.isfinite(vals).any():  # everything diverged: go down
            return {ks[0] - self.extend_step} if ks[0] - self.extend_step >= lo_k else set()
        best = ks[int(np.nanargmin(np.where(np.isnan(vals), np.inf, vals)))]
        if best == ks[0]:
            k = best - self.extend_step
            return {k} if k >= lo_k else set()
        if best == ks[-1]:
            k = best + self.extend_step
            return {k} if k <= hi_k else set()
        wanted = {k for k in (best - 1, best + 1) if k not in losses}
        if self.band_margin is not None:  # an edge LR still in the band: the band goes on
            in_band = vals <= losses[best] + self.band_margin
            if in_band[0] and ks[0] - self.extend_step >= lo_k:
                wanted.add(ks[0] - self.extend_step)
            if in_band[-1] and ks[-1] + self.extend_step <= hi_k:
                wanted.add(ks[-1] + self.extend_step)
        return wanted

    def next_lrs(self, means: Mapping[float, float]) -> list[float]:
        """What this search would run next for one condition of a sweep made anywhere:
        ``means`` maps each LR tried (any value, not only lattice points) to its seed-mean
        loss (inf: diverged; NaN: not usable yet). LRs are placed on the nearest lattice
        point; a condition with a single LR gets a point ``extend_step`` away on each side,
        as a starting grid would have."""
        losses: dict[int, float] = {}
        for lr, value in means.items():
            if math.isnan(value):
                continue
            k = lattice_index(lr, self.per_decade)
            losses[k] = min(losses.get(k, math.inf), value)
        if len(losses) == 1:
            (k,) = losses
            lo_k = lattice_index(self.lr_min, self.per_decade)
            hi_k = lattice_index(self.lr_max, self.per_decade)
            wanted = {j for j in (k - self.extend_step, k + self.extend_step) if lo_k <= j <= hi_k}
        else:
            wanted = self.next_indices(losses)
        return [lattice_lr(k, self.per_decade) for k in sorted(wanted - set(losses))]

    def propose(self, specs: Sequence[RunSpec], records: dict[str, dict]) -> list[RunSpec]:
        """New specs (every seed of the condition at each new LR) that the search needs
        next, given the condition specs tried so far and the store's records. Runs still
        missing from the store hold a condition back until they are done."""
        by_condition: dict[str, list[RunSpec]] = defaultdict(list)
        for s in specs:
            by_condition[condition_key(s)].append(s)
        new: list[RunSpec] = []
        for group in by_condition.values():
            if any(s.key not in records for s in group):
                continue  # wait for this round to finish
            seeds = sorted({s.seed for s in group})
            tried = {lattice_index(s.lr, self.per_decade) for s in group}
            if len(tried) >= self.max_points:
                continue
            wanted: set[int] = set()
            for budget in self.budgets:
                wanted |= self.next_indices(self._means(group, records, budget))
            template = group[0]
            for k in sorted(wanted - tried):
                lr = lattice_lr(k, self.per_decade)
                new += [template.replace(lr=lr, seed=seed) for seed in seeds]
        return new

    def _means(self, group: list[RunSpec], records: dict[str, dict], budget: int | None):
        per_k: dict[int, list[float]] = defaultdict(list)
        for s in group:
            per_k[lattice_index(s.lr, self.per_decade)].append(_budget_loss(records[s.key], budget))
        # a cell with any diverged seed counts as diverged: an LR that sometimes diverges
        # is not usable (as analysis.seed_mean)
        return {k: (math.inf if any(v == math.inf for v in vs) else float(np.nanmean(vs)))
                for k, vs in per_k.items() if not all(math.isnan(v) for v in vs)}  # fmt: skip


# ----------------------------------------------------------------------------- reading it


def interior_optima(
    runs: pd.DataFrame,
    by: list[str],
    metric: str = "final_loss",
    per_decade: int = 6,
) -> pd.DataFrame:
    """Per group: the best measured LR (seed mean), whether it is an interior optimum
    (both lattice neighbours at this resolution measured and worse), the resolution actually
    reached around it, and the LRs tried. Diverged cells count as infinitely bad."""
    rows = []
    for keys, g in runs.groupby(by, dropna=False):
        cells = g.groupby("lr")[metric].agg(
            lambda s: s.mean() if s.notna().all() and np.isfinite(s).all() else np.inf
        )
        lrs = np.sort(cells.index.to_numpy(float))
        vals = cells.reindex(lrs).to_numpy(float)
        i = int(np.argmin(vals))
        best = lrs[i]
        below = lrs[i - 1] if i > 0 else np.nan
        above = lrs[i + 1] if i < len(lrs) - 1 else np.nan
        step = 10 ** (1 / per_decade) * 1.01
        interior = bool(
            0 < i < len(lrs) - 1
            and np.isfinite(vals[i])
            and vals[i - 1] > vals[i]
            and vals[i + 1] > vals[i]
            and best / below <= step
            and above / best <= step
        )
        keys = keys if isinstance(keys, tuple) else (keys,)
        rows.append(
            {
                **dict(zip(by, keys)),
                "best_lr": best,
                "best_loss": vals[i],
                "interior": interior,
                "edge": "low" if i == 0 else ("high" if i == len(lrs) - 1 else None),
                "resolution": float(max(best / below, above / best)) if interior else np.nan,
                "lrs_tried": len(lrs),
                "lr_min": lrs[0],
                "lr_max": lrs[-1],
            }
        )
    return pd.DataFrame(rows)
