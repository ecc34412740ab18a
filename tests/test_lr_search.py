"""The LR search: from any starting grid it ends at an interior optimum at the stated
resolution, extends past edges (up until runs diverge, down until the loss rises), reuses
earlier runs on the lattice, and is resumable because every probe is a stored run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lora_lab.sweeps import Experiment, RunSpec, grid, lr_grid, run_sweep
from lora_lab.sweeps.lr_search import (
    LRSearch,
    interior_optima,
    lattice_index,
    lattice_lr,
)
from lora_lab.sweeps.runner import search_finished, sweep_specs


def fake_record(spec: RunSpec, loss_of_lr, diverge_above=math.inf) -> dict:
    diverged = spec.lr > diverge_above
    loss = math.nan if diverged else loss_of_lr(spec.lr) + 0.001 * spec.seed
    return {"result": {"diverged": diverged, "final": {"eval_loss": loss}, "curves": {}}}


def run_fake_search(search, specs, loss_of_lr, diverge_above=math.inf, rounds=40):
    records = {}
    specs = list(specs)
    for _ in range(rounds):
        for s in specs:
            records.setdefault(s.key, fake_record(s, loss_of_lr, diverge_above))
        new = search.propose(specs, records)
        if not new:
            return specs, records
        specs += new
    raise AssertionError("search did not finish")


def u_curve(opt):
    return lambda lr: 1.0 + 0.2 * (math.log10(lr) - math.log10(opt)) ** 2


def start(lrs, seeds=(0, 1, 2), **kw):
    return [
        RunSpec(base="nano", task="facts", lr=lr, steps=5, seed=s, **kw)
        for s in seeds
        for lr in lrs
    ]


def table(specs, records):
    return pd.DataFrame(
        [
            {"label": s.label, "lr": s.lr, "seed": s.seed,
             "final_loss": records[s.key]["result"]["final"]["eval_loss"]}
            for s in specs
        ]
    )  # fmt: skip


@pytest.mark.parametrize("opt", [3e-3, 2e-5, 1.1e-4])
def test_search_from_an_edge_ends_interior_at_the_resolution(opt):
    search = LRSearch(per_decade=6)
    specs, records = run_fake_search(search, start([1e-4, 2.15e-4]), u_curve(opt))
    res = interior_optima(table(specs, records), ["label"]).iloc[0]
    assert res.interior and res.resolution <= search.resolution * 1.01
    assert abs(math.log10(res.best_lr / opt)) <= 0.5 / 6 + 1e-9  # the nearest lattice point
    # every seed measured at every LR tried
    counts = table(specs, records).groupby("lr").seed.nunique()
    assert (counts == 3).all()


def test_upward_extension_stops_where_runs_diverge():
    search = LRSearch(per_decade=6)
    loss = lambda lr: 2.0 - 0.1 * math.log10(lr)  # noqa: E731 - always better at higher LR
    specs, records = run_fake_search(search, start([1e-4, 2.15e-4]), loss, diverge_above=5e-3)
    res = interior_optima(table(specs, records), ["label"]).iloc[0]
    assert res.interior and res.best_lr <= 5e-3 < res.lr_max  # a diverged LR above the best


def test_existing_grid_points_are_reused_and_off_lattice_grids_refused():
    assert lattice_lr(lattice_index(2.15e-3, 6), 6) == 2.15e-3  # 3/decade lies on 6/decade
    assert set(lr_grid(1e-3, 1e-2, 3)) <= {lattice_lr(k, 6) for k in range(-18, -11)}
    search = LRSearch(per_decade=6)
    with pytest.raises(ValueError, match="lattice"):
        search.check_grid(start([3e-3]))
    with pytest.raises(ValueError, match="lattice"):
        Experiment("x", "", "nano", "facts", {}, {"full": grid(lr=3e-3, steps=2)}, lr_search=search)


def test_a_condition_waits_for_its_round_and_conditions_stay_apart():
    search = LRSearch()
    a = start([1e-3, 2.15e-3], seeds=(0,))
    b = start([1e-3, 2.15e-3], seeds=(0,), batch_size=8)
    records = {s.key: fake_record(s, u_curve(1e-2)) for s in a}  # b not run yet
    new = search.propose(a + b, records)
    assert new and all(s.batch_size == 32 for s in new)  # only a moves on
    assert {s.lr for s in new} == {lattice_lr(lattice_index(2.15e-3, 6) + 2, 6)}


def test_max_points_bounds_a_search_that_never_turns():
    search = LRSearch(max_points=5)
    specs, records = run_fake_search(search, start([1e-4, 2.15e-4], seeds=(0,)), lambda lr: -lr)
    res = interior_optima(table(specs, records), ["label"]).iloc[0]
    assert res.lrs_tried == 5 and not res.interior and res.edge == "high"


def test_interior_optima_says_when_it_is_not_an_optimum():
    runs = pd.DataFrame(
        {"label": "a", "seed": 0, "lr": [1e-3, 2.15e-3, 4.64e-3], "final_loss": [1.0, 1.1, 1.2]}
    )
    res = interior_optima(runs, ["label"]).iloc[0]
    assert not res.interior and res.edge == "low" and np.isnan(res.resolution)
    coarse = runs.assign(final_loss=[1.1, 1.0, 1.2])  # interior, but only at 2.15x
    res = interior_optima(coarse, ["label"]).iloc[0]
    assert not res.interior  # a 2.15x grid is coarser than 6 per decade


def test_a_real_search_sweep_finishes_and_resumes(tmp_path):
    exp = Experiment(
        "search",
        "LR search on nano, 3 steps",
        "nano",
        "facts",
        {"n_entities": 16},
        {"full": grid(method="lora", r=2, lr=[1e-4, 2.15e-4], steps=3, seed=[0, 1])},
        eval_split="recall",
        lr_search=LRSearch(max_points=10),
    )
    first = run_sweep(exp, "full", root=tmp_path, progress=False, executor="serial")
    assert first.ran == first.total > 4 and not first.failed
    from lora_lab.sweeps import ResultStore

    records = ResultStore(first.folder).scan()[0]
    assert search_finished(exp, "full", records)
    assert [s.key for s in sweep_specs(exp, "full", records)] == first.keys
    again = run_sweep(exp, "full", root=tmp_path, progress=False, executor="serial")
    assert again.ran == 0 and again.skipped == first.total


def test_a_band_search_bounds_the_band_of_good_lrs_on_both_sides():
    """A flat-topped curve: interior at once, but the band (within 0.05) runs past both edges
    of the grid; the search extends until an LR on each side falls out of it."""
    flat = lambda lr: 1.0 + 0.02 * (math.log10(lr) + 3) ** 4  # noqa: E731 - best at 1e-3
    grid0 = start([4.64e-4, 1e-3, 2.15e-3])
    plain, _ = run_fake_search(LRSearch(per_decade=3, extend_step=1), grid0, flat)
    assert {s.lr for s in plain} == {4.64e-4, 1e-3, 2.15e-3}  # interior: nothing more to do
    search = LRSearch(per_decade=3, extend_step=1, band_margin=0.05)
    specs, records = run_fake_search(search, grid0, flat)
    runs = table(specs, records)
    means = runs.groupby("lr").final_loss.mean()
    band = means[means <= means.min() + 0.05]
    assert means.index.min() < band.index.min() and band.index.max() < means.index.max()
    assert (runs.groupby("lr").seed.nunique() == 3).all()
    with pytest.raises(ValueError, match="band_margin"):
        LRSearch(band_margin=0)
