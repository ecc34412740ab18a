"""Example run tables for notebook 08 and the tests: a published reproduction transcribed
(one seed, one LR per method), and a synthetic sweep with a planted optimum."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lora_lab.paths import data_dir

# Qwen3-4B on No Robots (6.4k examples, batch 32, 200 steps): each method's best LR and its
# NLL, as an independent reproduction of "LoRA Without Regret" published them (one seed, the
# sweep's other LRs not given). Transcribed from ../shared/reference/lora-without-regret.md.
NO_ROBOTS = "no_robots_qwen3_4b.csv"


def no_robots_path() -> str:
    """The shipped transcription of the Qwen3-4B No Robots best-LR table (a CSV)."""
    return str(data_dir() / "samples" / NO_ROBOTS)


PLANTED_OPTIMA = {"full": 1e-3, "lora": 6e-3}
PLANTED_LRS = {"full": [2.15e-4, 4.64e-4, 1e-3, 2.15e-3, 4.64e-3],
               "lora": [2.15e-4, 4.64e-4, 1e-3, 2.15e-3]}  # fmt: skip
_FLOORS = {"full": 1.80, "lora": 1.82}
_LABELS = {"full": "FullFT", "lora": "r=8"}


def planted_loss(
    method: str, lr: float, run_seed: int, optima: dict[str, float], curvature: float = 0.15,
    noise: float = 0.004, seed: int = 0,
) -> float:  # fmt: skip
    """One run of the planted sweep: floor + curvature * (log10(lr / optimum))^2 + a
    per-seed offset shared by every method (so seeds pair) + the run's own noise. The same
    (method, lr, run seed) always gives the same loss, so a sweep can be extended."""
    offset = np.random.default_rng([seed, run_seed]).normal(0, 2 * noise)
    k = int(round(np.log10(lr) * 1000))
    own = np.random.default_rng([seed, run_seed, 1 + list(_FLOORS).index(method), k + 10**6])
    return round(float(_FLOORS[method] + curvature * np.log10(lr / optima[method]) ** 2
                       + offset + own.normal(0, noise)), 5)  # fmt: skip


def planted_sweep(
    optima: dict[str, float] | None = None,
    lrs: dict[str, list[float]] | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    curvature: float = 0.15,
    noise: float = 0.004,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """A sweep table whose true best LRs are known (see :func:`planted_loss`).

    The default plants LoRA r=8's optimum at 6e-3 but sweeps it only up to 2.15e-3, so its
    best measured LR sits on the grid's high edge (a bound, not an optimum); FullFT's 1e-3 is
    inside its grid. Returns (the table in a user's column names, the planted optima by
    label)."""
    optima = optima or PLANTED_OPTIMA
    lrs = lrs or PLANTED_LRS
    rows = [_row(m, lr, s, optima, curvature, noise, seed)
            for m, grid in lrs.items() for lr in grid for s in seeds]  # fmt: skip
    return pd.DataFrame(rows), {_LABELS[m]: v for m, v in optima.items()}


def run_next(next_runs: pd.DataFrame, optima: dict[str, float] | None = None,
             **kwargs: float) -> pd.DataFrame:  # fmt: skip
    """"Run" what an analysis proposes (its ``next_runs`` table) on the planted sweep:
    the new rows, in the same column names as :func:`planted_sweep`'s."""
    methods = {v: k for k, v in _LABELS.items()}
    rows = [_row(methods[r.label], r.lr, int(s), optima or PLANTED_OPTIMA, **kwargs)
            for r in next_runs.itertuples() for s in str(r.seeds).split(", ")]  # fmt: skip
    return pd.DataFrame(rows)


def _row(method: str, lr: float, run_seed: int, optima: dict[str, float], curvature=0.15,
         noise=0.004, seed=0) -> dict:  # fmt: skip
    return {"method": method, "lora_r": 8 if method == "lora" else None, "learning_rate": lr,
            "run_seed": run_seed,
            "eval_loss": planted_loss(method, lr, run_seed, optima, curvature, noise, seed)}
