"""The statistics core: seed-level estimates whose intervals cover what they say, and verdicts.

Every finding reads its numbers through here. Three ideas, each tested by simulation in
``tests/test_stats.py`` (nominal 95 % must cover at least 93 % at 3, 5 and 10 seeds, for
normal and heavy-tailed noise):

* **Paired seeds, t intervals.** Conditions run with the same seed share their data order
  (and the initial adapter where shapes agree), so a contrast is analysed as per-seed
  differences ``d_i = a_i - b_i`` with the t interval ``mean(d) ± t(n-1) · sd(d) / √n``.
  A percentile bootstrap over 3 seeds is roughly the range of the seeds and covers ~75 %.
* **Picking the LR stays inside the interval.** A loss "at the best LR" is flattered when the
  LR is picked on the same seeds (the winner's curse), most when several LRs tie. A contrast
  at each side's best LR takes the union of the paired intervals over the LRs that could be
  the best, so a tie widens the interval instead of trusting the lucky LR.
* **Four verdicts.** "better" / "worse" when the 95 % interval excludes 0; "equivalent within
  ±m" when the 90 % interval (a two-one-sided test at 5 %) lies inside a margin ``m`` stated
  in advance; otherwise "not resolved". Never "same".

The location of an optimum (the best LR) gets a confidence *set* of grid points: the run
of points around the observed best up to the first that its inner neighbour beats (paired
one-sided t), which holds the grid's true best at the stated level when the true curve is a
U (simulated, with ties).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import stdtrit

LEVEL = 0.95  # two-sided level of every printed interval
EQUIVALENCE_LEVEL = 0.90  # the interval of a two-one-sided test at 5 %
VERDICTS = ("better", "worse", "equivalent", "not resolved")


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, df: int) -> float:
    """The p quantile of Student's t with ``df`` degrees of freedom: ``scipy.special``'s
    inverse CDF, what ``scipy.stats.t.ppf`` computes, without importing ``scipy.stats``
    (~0.7 s of every command's start-up)."""
    return float(stdtrit(df, p))


# ----------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class Estimate:
    """A number with its interval: ``value`` [``lo``, ``hi``] at ``level``, from ``n`` seeds
    by ``method``. ``eq_lo``/``eq_hi`` is the 90 % interval an equivalence test reads."""

    value: float
    lo: float
    hi: float
    n: int
    method: str
    level: float = LEVEL
    eq_lo: float = math.nan
    eq_hi: float = math.nan

    @property
    def resolved(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def text(self, fmt: str = "+.3f") -> str:
        """``+0.030 [+0.010, +0.050]`` (the interval at ``level``)."""
        return f"{self.value:{fmt}} {interval_text(self.lo, self.hi, fmt)}"

    def as_dict(self, prefix: str = "") -> dict[str, float | int | str]:
        return {f"{prefix}value": self.value, f"{prefix}lo": self.lo, f"{prefix}hi": self.hi,
                f"{prefix}n": self.n, f"{prefix}method": self.method}  # fmt: skip


def interval_text(lo: float, hi: float, fmt: str = "+.3f") -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "[unbounded]"
    return f"[{lo:{fmt}}, {hi:{fmt}}]"


def t_interval(values: np.ndarray, level: float = LEVEL, method: str = "paired t") -> Estimate:
    """Mean of ``values`` (one per seed) with its t interval, and the 90 % interval for an
    equivalence test. Non-finite values (a diverged run) make the interval unbounded; NaN
    (a missing run) is dropped. Fewer than 2 values: no interval."""
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    n = len(v)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, method, level)
    if n < 2 or not np.isfinite(v).all():
        value = float(v.mean()) if np.isfinite(v).all() else math.nan
        return Estimate(value, -math.inf, math.inf, n, method, level, -math.inf, math.inf)
    mean, se = float(v.mean()), float(v.std(ddof=1) / math.sqrt(n))
    t = t_quantile(0.5 + level / 2, n - 1)
    te = t_quantile(0.5 + EQUIVALENCE_LEVEL / 2, n - 1)
    return Estimate(mean, mean - t * se, mean + t * se, n, method, level, mean - te * se,
                    mean + te * se)  # fmt: skip


# ----------------------------------------------------------------------------- best over LR

# The grid points kept as "could be the best" when a contrast is read at each side's best LR.
# Any level keeps the true best in the set often enough for the union below to cover; 75 %
# keeps the union narrow when the optimum is clear (tests/test_stats.py simulates both ends).
CANDIDATE_LEVEL = 0.75


def best_gap(a: np.ndarray, b: np.ndarray | None = None, level: float = LEVEL) -> Estimate:
    """``a``'s loss at its best LR minus ``b``'s at its best, paired by seed (rows are the
    same seeds; columns are each side's LRs). With ``b`` None: ``a``'s best loss itself.

    The point is the difference of seed means at the LRs that all seeds pick. The interval
    is the union of the paired t intervals over every pair of LRs that could be the best
    (:func:`optimum_set` at :data:`CANDIDATE_LEVEL`): the noise of picking the LR stays
    inside it. When each side's best is clear this is the plain paired t interval; when
    several LRs tie it widens instead of trusting the lucky one (a t interval at the LRs
    the same seeds picked covers as little as 88 % with 8 tied LRs)."""
    a = np.asarray(a, float)
    b = np.zeros((a.shape[0], 1)) if b is None else np.asarray(b, float)
    return best_combination([a, b], [1.0, -1.0], level)


def best_combination(
    losses: list[np.ndarray], weights: list[float], level: float = LEVEL
) -> Estimate:
    """``sum(w_i * loss_i at its best LR)``, seeds paired across every matrix (same rows):
    :func:`best_gap` for any number of conditions. A difference of two gaps, ``[a, b, c,
    d]`` with weights ``[1, -1, -1, 1]``, asks whether a gap changed between two designs.

    Same construction as :func:`best_gap`: the point at each matrix's seed-mean best LR; the
    interval the union of paired t intervals over every combination of LRs that could be
    each one's best (a union over more candidates covers at least as well)."""
    mats = [np.asarray(m, float) for m in losses]
    if len(mats) != len(weights) or not mats:
        raise ValueError(f"{len(mats)} loss matrices against {len(weights)} weights")
    if len({m.shape[0] for m in mats}) != 1:
        raise ValueError(f"paired seeds: rows {[m.shape[0] for m in mats]} differ")
    sets = [np.nonzero(optimum_set(m, CANDIDATE_LEVEL))[0] for m in mats]
    picks = [int(np.argmin(_usable_means(m))) for m in mats]

    def combined(cols: tuple[int, ...]) -> np.ndarray:
        return sum(w * m[:, j] for w, m, j in zip(weights, mats, cols))

    with np.errstate(invalid="ignore"):
        point = t_interval(combined(tuple(picks)), level)
        pairs = [t_interval(combined(cols), level) for cols in itertools.product(*sets)]
    several = len(pairs) > 1
    method = "paired t" + (", union over LRs that could be best" if several else "")
    if point.n < 2 or not all(p.resolved for p in pairs):
        return Estimate(point.value, -math.inf, math.inf, point.n, method, level,
                        -math.inf, math.inf)  # fmt: skip
    return Estimate(
        point.value, min(p.lo for p in pairs), max(p.hi for p in pairs), point.n, method,
        level, min(p.eq_lo for p in pairs), max(p.eq_hi for p in pairs),
    )  # fmt: skip


def _usable_means(loss: np.ndarray) -> np.ndarray:
    """Seed mean per LR column; a column with a missing (NaN) or diverged (inf) seed is +inf."""
    with np.errstate(invalid="ignore"):
        mean = np.asarray(loss, float).mean(0)
    return np.where(np.isnan(mean), np.inf, mean)


def paired_values(d: np.ndarray, level: float = LEVEL) -> Estimate:
    """The t interval of per-seed quantities (already paired differences, slopes, ...)."""
    return t_interval(d, level, "paired t")


def jackknife(full: float, leave_one_out: np.ndarray, level: float = LEVEL) -> Estimate:
    """A statistic with a jackknife t interval over seeds: ``full`` on every seed and
    ``leave_one_out[i]`` without seed i. For statistics that are not a mean of per-seed
    values (a slope through optima found on seed means); NaN leave-one-out values (the
    statistic undefined without a seed) make the interval unbounded."""
    loo = np.asarray(leave_one_out, float)
    n = len(loo)
    if n < 2 or not np.isfinite(loo).all() or not math.isfinite(full):
        return Estimate(full, -math.inf, math.inf, n, "jackknife t", level, -math.inf, math.inf)
    se = math.sqrt((n - 1) / n * float(((loo - loo.mean()) ** 2).sum()))
    t = t_quantile(0.5 + level / 2, n - 1)
    te = t_quantile(0.5 + EQUIVALENCE_LEVEL / 2, n - 1)
    return Estimate(full, full - t * se, full + t * se, n, "jackknife t", level,
                    full - te * se, full + te * se)  # fmt: skip


# ----------------------------------------------------------------------------- optimum location


# Per-test level of the walk in :func:`optimum_set`: a fraction of 1 - level, because the true
# best can be cut off by a false step on either side of it (simulated in tests/test_stats.py).
WALK_SHARE = 0.25


def optimum_set(loss: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """Boolean mask over LR columns (sorted by LR): the run of grid points around the
    observed best that may be the true best at ``level``, assuming the true loss-vs-LR curve
    is unimodal (a U in log LR).

    From the observed best, walk outwards on each side; stop at the first point that its
    inner neighbour beats by a paired one-sided t test at ``WALK_SHARE * (1 - level)``.
    Testing neighbours, not every pair, keeps the set from growing with the number of LRs
    tried. Points with a diverged seed are unusable and stop the walk; pairs share the seeds
    both ran."""
    loss = np.asarray(loss, float)
    k = loss.shape[1]
    # a diverged run (inf) makes an LR unusable; a run not made (NaN) only shrinks the seeds
    # its comparisons share
    usable = ~np.isinf(loss).any(0) & (np.isfinite(loss).sum(0) >= 2)
    keep = np.zeros(k, bool)
    if not usable.any():
        return np.ones(k, bool)
    best = int(np.argmin(_usable_means(loss)))
    keep[best] = True
    alpha = WALK_SHARE * (1 - level)
    for step in (-1, 1):
        inner, j = best, best + step
        while 0 <= j < k and usable[j]:
            if _significantly_positive(loss[:, j] - loss[:, inner], alpha):
                break
            keep[j] = True
            inner, j = j, j + step
    return keep


def _significantly_positive(d: np.ndarray, alpha: float) -> bool:
    """One-sided paired t test of mean(d) > 0 at ``alpha`` over the seeds both sides ran."""
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return False
    se = d.std(ddof=1) / math.sqrt(len(d))
    if se == 0:
        return bool(d.mean() > 0)
    return bool(d.mean() / se > t_quantile(1 - alpha, len(d) - 1))


def parabola_vertex(lrs: np.ndarray, mean: np.ndarray) -> float:
    """The best LR between grid points: the vertex of the parabola in log10(lr) through the
    best grid point and its two neighbours; the grid point itself at an edge or when the
    three do not curve upwards."""
    lrs, mean = np.asarray(lrs, float), np.where(np.isfinite(mean), mean, np.inf)
    i = int(np.argmin(mean))
    if i == 0 or i == len(lrs) - 1 or not np.isfinite(mean[i - 1 : i + 2]).all():
        return float(lrs[i])
    x = np.log10(lrs[i - 1 : i + 2])
    a, b, _ = np.polyfit(x, mean[i - 1 : i + 2], 2)
    if a <= 0:
        return float(lrs[i])
    return float(10 ** np.clip(-b / (2 * a), x[0], x[-1]))


def optimum_location(lrs: np.ndarray, loss: np.ndarray, level: float = LEVEL) -> Estimate:
    """The best LR of one condition: the parabola vertex of the seed-mean curve, with a 95 %
    interval for the optimum between grid points: from the grid point below the lowest
    member of :func:`optimum_set` to the one above its highest (the best lies between the
    neighbours of the best grid point). A set that reaches the lowest (highest) LR tried
    has ``lo = 0`` (``hi = inf``): the optimum is not bounded on that side."""
    lrs = np.asarray(lrs, float)
    order = np.argsort(lrs)
    lrs, loss = lrs[order], np.asarray(loss, float)[:, order]
    idx = np.nonzero(optimum_set(loss, level))[0]
    lo = 0.0 if idx[0] == 0 else float(lrs[idx[0] - 1])
    hi = math.inf if idx[-1] == len(lrs) - 1 else float(lrs[idx[-1] + 1])
    point = parabola_vertex(lrs, _usable_means(loss))
    method = "grid points around the best no inner neighbour beats, widened by one"
    return Estimate(point, lo, hi, loss.shape[0], method, level)


def optimum_ratio(
    lrs_a: np.ndarray, loss_a: np.ndarray, lrs_b: np.ndarray, loss_b: np.ndarray,
    level: float = LEVEL,
) -> Estimate:  # fmt: skip
    """Ratio of two conditions' best LRs (a / b). Each location's set is taken at
    ``1 - (1 - level) / 2`` so the ratio's interval [lo_a / hi_b, hi_a / lo_b] holds at
    ``level`` jointly; an unbounded side stays unbounded (0 or inf)."""
    each = 1 - (1 - level) / 2
    a = optimum_location(lrs_a, loss_a, each)
    b = optimum_location(lrs_b, loss_b, each)
    with np.errstate(divide="ignore"):
        lo = a.lo / b.hi if b.hi > 0 else 0.0
        hi = a.hi / b.lo if b.lo > 0 else math.inf
    return Estimate(a.value / b.value, float(lo), float(hi), min(a.n, b.n),
                    "ratio of optimum sets (each at 97.5 %)", level)  # fmt: skip


def lattice_steps(lo: float, hi: float, step: float) -> float:
    """Width of [lo, hi] in grid steps of ratio ``step`` (inf when unbounded)."""
    if not (lo > 0 and math.isfinite(hi)):
        return math.inf
    return round(math.log(hi / lo) / math.log(step), 6)


# ----------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    """One of :data:`VERDICTS` for a difference (subject minus reference), with what it
    rests on. ``margin`` is the equivalence margin, stated in the quantity's units."""

    kind: str
    estimate: Estimate
    margin: float | None
    subject: str = ""
    units: str = ""

    @property
    def word(self) -> str:
        """ "LoRA worse", "equivalent within ±0.020", "not resolved"."""
        if self.kind == "equivalent":
            return f"equivalent within ±{self.margin:.3g}"
        if self.kind in ("better", "worse"):
            return f"{self.subject} {self.kind}".strip()
        return self.kind

    @property
    def text(self) -> str:
        """The verdict with its evidence: every printed verdict carries its interval, and
        its margin where one applies."""
        e = self.estimate
        units = f" {self.units}" if self.units else ""
        pct = f"{e.level:.0%}".replace("%", " %")
        body = f"{e.value:+.3g}{units}, {pct} {interval_text(e.lo, e.hi, '+.3g')}, n = {e.n}"
        if self.kind == "equivalent":
            body += f"; 90 % {interval_text(e.eq_lo, e.eq_hi, '+.3g')} inside ±{self.margin:.3g}"
        elif self.margin is not None:
            inside = -self.margin <= e.eq_lo and e.eq_hi <= self.margin
            body += f"; {'within' if inside else 'margin'} ±{self.margin:.3g}"
        return f"{self.word} ({body})"

    def __str__(self) -> str:
        return self.text


def verdict(
    estimate: Estimate,
    margin: float | None = None,
    subject: str = "",
    lower_is_better: bool = True,
    units: str = "",
) -> Verdict:
    """Read a difference (subject minus reference). With ``lower_is_better`` (losses) an
    interval above 0 means the subject is worse; otherwise (accuracy) better.
    "equivalent" needs a ``margin`` and the 90 % interval inside ±margin."""
    e = estimate
    if margin is not None and not margin > 0:
        raise ValueError(f"an equivalence margin must be positive, got {margin!r}")
    if e.resolved and e.lo > 0:
        kind = "worse" if lower_is_better else "better"
    elif e.resolved and e.hi < 0:
        kind = "better" if lower_is_better else "worse"
    elif margin is not None and math.isfinite(e.eq_lo) and -margin <= e.eq_lo and e.eq_hi <= margin:
        kind = "equivalent"
    else:
        kind = "not resolved"
    return Verdict(kind, e, margin, subject, units)


def seeds_for_margin(sd: float, margin: float, level: float = EQUIVALENCE_LEVEL) -> int:
    """Seeds needed so the equivalence interval's half-width is ``margin`` at per-seed
    spread ``sd`` (iterating n = (t · sd / m)^2): what to run before adding words."""
    n = 3
    while n < 1000:
        if t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n) <= margin:
            return n
        n += 1
    return n
