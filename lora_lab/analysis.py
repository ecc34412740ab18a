"""From run records to the post's quantities: best-over-LR curves, optimal LRs, ratios.

Conventions follow the post: each condition is swept over learning rates; a curve for a
condition is the *pointwise minimum over LR* of the (seed-averaged) learning curves; the
optimal LR is located by a parabola in log(lr) through the grid minimum and its neighbours.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lora_lab.stats import optimum_ratio, parabola_vertex
from lora_lab.sweeps.lr_search import interior_optima
from lora_lab.sweeps.spec import RunSpec
from lora_lab.sweeps.store import PROVENANCE_FIELDS, ResultStore


def _targets(value: object) -> object:
    """Target modules as one hashable table cell (a list becomes "a,b")."""
    return ",".join(value) if isinstance(value, list) else value


def _folder_signature(folder: str | Path) -> tuple:
    """Every record file a store would read in ``folder`` (its own and a shipped layer
    under it), with modification time and size: equal signatures, equal records."""
    store = ResultStore(folder)
    sig = []
    for layer in (store.folder, store.shipped):
        if layer is not None and layer.is_dir():
            with os.scandir(layer) as it:
                for e in it:
                    if e.name.endswith(".json") and not e.name.startswith(".tmp-"):
                        st = e.stat()
                        sig.append((str(layer), e.name, st.st_mtime_ns, st.st_size))
    return tuple(sorted(sig))


_ITEMS: dict[tuple, tuple[tuple, dict[str, Any]]] = {}
_MAX_FOLDERS = 64


def _per_record(make: Callable[[str, dict], Any], folder: str | Path,
                keys: Iterable[str] | None) -> list[Any]:  # fmt: skip
    """``make(key, record)`` for each record of ``folder`` (those in ``keys``), in the store's
    order. Kept per folder until a record file in it changes: a README regeneration or a
    notebook reads the same folders dozens of times, and parsing and validating hundreds of
    records each time was most of its wall time. Callers build a fresh frame from the items
    each time, so the result is the same as without the cache."""
    where = str(Path(folder).resolve())
    entry = (make.__name__, where)
    sig = _folder_signature(folder)
    hit = _ITEMS.get(entry)
    if hit is None or hit[0] != sig:
        scanned = _ITEMS.get(("scan", where))
        if scanned is None or scanned[0] != sig:  # one scan per folder serves every maker
            scanned = (sig, ResultStore(folder).scan()[0])
            _ITEMS[("scan", where)] = scanned
        hit = (sig, {key: make(key, rec) for key, rec in scanned[1].items()})
        if len(_ITEMS) >= _MAX_FOLDERS:
            _ITEMS.pop(next(iter(_ITEMS)))
        _ITEMS[entry] = hit
    items = hit[1]
    if keys is None:
        return list(items.values())
    wanted = set(keys)
    return [item for key, item in items.items() if key in wanted]


def load_runs(folder: str | Path, keys: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per run: spec fields, final metrics, cost, provenance essentials.
    ``keys`` restricts to those spec hashes (e.g. one grid's, when a folder holds more).

    Columns come from each spec's typed, complete form (defaults filled in), never from
    the stored dict as written, so records written before a field existed group with
    those written after (a missing column would be NaN, and pandas drops NaN keys)."""
    df = pd.DataFrame(_per_record(_run_row, folder, keys))
    if df.empty:
        raise FileNotFoundError(f"no run records in {folder}; run the sweep first")
    return df.sort_values(["method", "r", "lr", "seed"], na_position="first").reset_index(drop=True)


def _run_row(key: str, rec: dict) -> dict[str, Any]:
    res = rec["result"]
    typed = RunSpec.from_dict(rec["spec"])
    spec = typed.to_dict()
    row = {k: v for k, v in spec.items() if not isinstance(v, (dict, list))}
    row.update({f"task_{k}": v for k, v in spec.get("task_kwargs", {}).items()})
    row.update(
        key=key,
        r=spec.get("r", np.nan) if typed.is_lora else np.nan,
        target_modules=_targets(spec.get("target_modules")),
        final_loss=res["final"]["eval_loss"],
        train_loss=res["final"]["train_loss"],
        diverged=res["diverged"],
        trainable_params=res["trainable_params"],
        wall_time_s=res["wall_time_s"],
        tokens_per_s=res["tokens_per_s"],
        git_commit=rec.get("provenance", {}).get("git_commit"),
    )
    for k, v in res["final"].items():
        if k not in ("eval_loss", "train_loss"):
            row[k] = v
    row["label"] = typed.label
    return row


def provenance_summary(folder: str | Path) -> pd.Series:
    """How a results folder was produced: distinct commits, versions, machines, date range."""
    provs = [rec.get("provenance", {}) for rec in ResultStore(folder).scan()[0].values()]
    if not provs:
        raise FileNotFoundError(f"no run records in {folder}")
    df = pd.DataFrame(provs)
    keys = [k for k in PROVENANCE_FIELDS if k != "date"]
    out: dict[str, object] = {
        k: ", ".join(sorted({str(v) for v in df[k].dropna()})) for k in keys if k in df
    }
    out["runs"] = len(df)
    out["dates"] = f"{df.date.min()} .. {df.date.max()}"
    out["total_wall_time_min"] = round(df.wall_time_s.sum() / 60, 1)
    return pd.Series(out)


def load_curves(folder: str | Path, keys: Iterable[str] | None = None) -> pd.DataFrame:
    """Learning curves in long format: one row per (run, evaluation step)."""
    frames = _per_record(_curve_frame, folder, keys)
    if not frames:
        raise FileNotFoundError(f"no run records in {folder}")
    return pd.concat(frames, ignore_index=True)


def _curve_frame(key: str, rec: dict) -> pd.DataFrame:
    typed = RunSpec.from_dict(rec["spec"])
    spec = typed.to_dict()
    c = pd.DataFrame(rec["result"]["curves"])
    c["key"] = key
    for k in ("method", "lr", "seed", "batch_size", "base", "steps"):
        c[k] = spec.get(k)
    for k, v in spec.get("task_kwargs", {}).items():
        c[f"task_{k}"] = [v] * len(c) if isinstance(v, list) else v  # e.g. digits [1, 2]
    c["r"] = spec.get("r", np.nan) if typed.is_lora else np.nan
    c["target_modules"] = _targets(spec.get("target_modules"))
    c["label"] = typed.label
    return c


def optimum_from_curve(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, float, bool]:
    """(optimal lr, loss at the best grid point, optimum at grid edge?) for one U-curve.

    Diverged runs (NaN) count as infinitely bad. The optimum is interpolated with a parabola
    in log10(lr) through the best grid point and its two neighbours.
    """
    order = np.argsort(lrs)
    lrs, losses = np.asarray(lrs, float)[order], np.asarray(losses, float)[order]
    losses = np.where(np.isfinite(losses), losses, np.inf)
    if not np.isfinite(losses).any():
        return math.nan, math.nan, True
    i = int(np.argmin(losses))
    at_edge = i == 0 or i == len(lrs) - 1
    if at_edge or not (np.isfinite(losses[i - 1]) and np.isfinite(losses[i + 1])):
        return float(lrs[i]), float(losses[i]), at_edge
    return parabola_vertex(lrs[i - 1 : i + 2], losses[i - 1 : i + 2]), float(losses[i]), False


def seed_mean(runs: pd.DataFrame, by: list[str], metric: str = "final_loss") -> pd.DataFrame:
    """Mean and spread of ``metric`` over seeds for each (group, lr). A group-lr cell with
    any diverged seed counts as diverged (NaN): an LR that sometimes diverges is not usable."""
    g = runs.groupby(by + ["lr"], dropna=False)[metric]
    out = g.agg(
        mean=lambda s: s.mean() if s.notna().all() else np.nan,
        std="std",
        n="size",
    ).reset_index()
    return out


def optimal_lr(
    runs: pd.DataFrame, by: list[str], metric: str = "final_loss", per_decade: int = 6
) -> pd.DataFrame:
    """Optimal LR per group from the seed-averaged U-curve (see :func:`optimum_from_curve`).

    An edge value is a bound, not an optimum: where the best measured LR sits at an edge of
    what was tried, ``opt_lr`` is NaN and ``edge`` says which side (``best_lr`` keeps the
    value). ``interior`` is stricter than "not at an edge": both neighbours are measured and
    worse, each within ``per_decade`` points per decade (6: 1.47x), the resolution the LR
    search guarantees; ``resolution`` is the ratio to the farther neighbour.
    """
    means = seed_mean(runs, by, metric)
    flags = interior_optima(runs, by, metric, per_decade).set_index(by)
    rows = []
    for keys, grp in means.groupby(by, dropna=False):
        lr, loss, edge = optimum_from_curve(grp.lr.to_numpy(), grp["mean"].to_numpy())
        keys = keys if isinstance(keys, tuple) else (keys,)
        f = flags.loc[keys if len(keys) > 1 else keys[0]]
        rows.append(
            {
                **dict(zip(by, keys)),
                "opt_lr": math.nan if edge else lr,
                "best_lr": f.best_lr,
                "best_loss": loss,
                "at_edge": edge,
                "edge": f.edge,
                "interior": bool(f.interior),
                "resolution": _neighbour_ratio(grp.lr.to_numpy(), f.best_lr),
            }
        )
    return pd.DataFrame(rows)


def _neighbour_ratio(lrs: np.ndarray, best: float) -> float:
    """The larger of (best / lower neighbour, upper neighbour / best); NaN at an edge."""
    lrs = np.sort(np.unique(lrs))
    i = int(np.searchsorted(lrs, best))
    if i == 0 or i == len(lrs) - 1:
        return math.nan
    return float(max(best / lrs[i - 1], lrs[i + 1] / best))


def align_seeds(runs: pd.DataFrame, seeds: np.ndarray, lrs: np.ndarray, metric: str) -> np.ndarray:
    """losses[seed, lr] over a fixed seed list, so rows pair seeds across conditions; a
    diverged run (or one whose loss is not finite) is +inf: an unusable LR, not a gap."""
    value = runs[metric].astype(float).where(lambda v: v.notna(), np.inf)
    if "diverged" in runs:
        value = value.where(~runs.diverged.astype(bool), np.inf)
    table = runs.assign(_v=value).pivot_table(
        index="seed", columns="lr", values="_v", aggfunc="mean", dropna=False
    )
    return table.reindex(index=seeds, columns=lrs).to_numpy(float)


def lr_ratio(
    runs: pd.DataFrame, numerator: dict, denominator: dict, metric: str = "final_loss"
) -> dict[str, float]:
    """Ratio of optimal LRs of two conditions (e.g. LoRA r=16 over FullFT): the ratio of
    parabola vertices, with the 95 % interval that carries both optima's location (each a
    set of grid points not beaten by another, :func:`lora_lab.stats.optimum_ratio`; 0 or
    inf where a set reaches the edge of what was tried)."""

    def pick(cond: dict) -> pd.DataFrame:
        mask = np.ones(len(runs), bool)
        for k, v in cond.items():
            mask &= (runs[k] == v).to_numpy()
        return runs[mask]

    num, den = pick(numerator), pick(denominator)
    if num.empty or den.empty:
        raise ValueError(f"no runs match {numerator} or {denominator}")
    seeds = np.sort(runs.seed.unique())
    lrs_n, lrs_d = np.sort(num.lr.unique()), np.sort(den.lr.unique())
    est = optimum_ratio(lrs_n, align_seeds(num, seeds, lrs_n, metric), lrs_d,
                        align_seeds(den, seeds, lrs_d, metric))  # fmt: skip
    flags = interior_optima(pd.concat([num.assign(_side="n"), den.assign(_side="d")]),
                            ["_side"], metric)  # fmt: skip
    return {
        "ratio": est.value,
        "lo": est.lo,
        "hi": est.hi,
        "n_seeds": len(seeds),
        "interior": bool(flags.interior.all()),  # both optima interior at 1.47x
    }


def pointwise_min_curves(curves: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The post's curves: average over seeds, then the minimum over LR at every step."""
    mean = curves.groupby(by + ["lr", "step"], dropna=False).eval_loss.mean().reset_index()
    best = mean.groupby(by + ["step"], dropna=False).eval_loss.min().reset_index()
    return best


def best_over_lr(runs: pd.DataFrame, by: list[str], metric: str = "final_loss") -> pd.DataFrame:
    """Per group: loss at the best LR (seed mean) with the seed spread at that LR."""
    means = seed_mean(runs, by, metric)
    means = means[means["mean"].notna()]
    idx = means.groupby(by, dropna=False)["mean"].idxmin()
    return means.loc[idx].rename(columns={"mean": "best_loss"}).reset_index(drop=True)


def ratio_by_budget(
    curves: pd.DataFrame,
    numerators: dict[str, dict],
    denominator: dict,
    budgets: list[int],
) -> pd.DataFrame:
    """LR ratio (with interval) at several training budgets, read off constant-LR curves.

    With a constant LR and identical batches, a long run's loss at step ``b`` is the final
    loss of a ``b``-step run, so one sweep gives the optimal LR for every logged budget.
    ``numerators`` maps a name to the condition of each numerator (e.g. ``{"r=4": {...}}``).
    """
    rows = []
    for b in budgets:
        at = curves[curves.step == b].rename(columns={"eval_loss": "final_loss"})
        if at.empty:
            raise ValueError(f"no evaluation logged at step {b}")
        for name, cond in numerators.items():
            rows.append({"steps": b, "condition": name, **lr_ratio(at, cond, denominator)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- curves vs FullFT


def departure_step(
    best: pd.DataFrame, label: str, reference: str = "FullFT", tol: float = 0.03
) -> float:
    """First logged step from which ``label``'s best-over-LR curve stays more than ``tol``
    nats above ``reference``'s at every later logged step (the post's figure 1: where a rank
    "leaves" the FullFT curve). NaN if it never leaves; ``best`` is
    :func:`pointwise_min_curves` output with a ``label`` column."""
    piv = best.pivot_table(index="step", columns="label", values="eval_loss").dropna()
    piv = piv[piv.index > 0]
    if label not in piv or reference not in piv:
        raise ValueError(f"need curves for {label!r} and {reference!r}; have {list(piv.columns)}")
    above = (piv[label] - piv[reference] > tol).to_numpy()
    if not above[-1]:
        return float("nan")
    i = len(above) - 1
    while i > 0 and above[i - 1]:
        i -= 1
    return float(piv.index[i])


def steps_to_match(
    best: pd.DataFrame, label: str, reference: str = "FullFT", min_step: int = 10
) -> pd.DataFrame:
    """For each logged reference step s >= ``min_step``: the step at which ``label``'s curve
    first reaches the reference's loss at s (linear in log-step between evaluations), and the
    ratio of the two ("LoRA needs k x more steps"). NaN where it is not reached in the run."""
    piv = best.pivot_table(index="step", columns="label", values="eval_loss").dropna()
    piv = piv[piv.index > 0]
    steps = piv.index.to_numpy(dtype=float)
    curve = piv[label].to_numpy()
    rows = []
    for s, target in zip(steps, piv[reference].to_numpy()):
        if s < min_step:
            continue
        hit = np.nonzero(curve <= target)[0]
        if len(hit) == 0:
            reached = float("nan")
        elif hit[0] == 0:
            reached = steps[0]
        else:
            j = hit[0]
            # interpolate log(step) between evaluation j-1 (above target) and j (at/below)
            f = (curve[j - 1] - target) / (curve[j - 1] - curve[j])
            reached = float(np.exp(np.log(steps[j - 1]) + f * np.log(steps[j] / steps[j - 1])))
        rows.append(
            {
                "reference_step": s,
                "reference_loss": target,
                "steps_needed": reached,
                "step_ratio": reached / s,
            }
        )
    return pd.DataFrame(rows)


def curve_seed_spread(curves: pd.DataFrame, by: list[str] | None = None) -> float:
    """Median over curve points (group, lr, step > 0) of the seed-to-seed standard deviation
    of the eval loss: the noise level below which two curves cannot be told apart."""
    by = by or ["label"]
    pts = curves[curves.step > 0].groupby(by + ["lr", "step"], dropna=False).eval_loss.std()
    return float(pts.median())
