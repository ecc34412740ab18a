"""Experiments: named grids of run specs, and helpers to write grids.

An experiment is a base preset, a task and a grid of run specs for each grid name: ``full``
(the shipped results) and ``ci`` (well under a minute). Every spec is checked when the
experiment is declared, so a typo in a grid fails at import, not after an hour of sweeping.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_lab.paths import results_root, work_dir
from lora_lab.sweeps.lr_search import LRSearch
from lora_lab.sweeps.spec import LORA_ONLY_FIELDS, RunSpec

SpecDict = dict[str, Any]


def grid(**axes: Any) -> list[SpecDict]:
    """Cartesian product of the given axes; scalars are fixed values.

    ``grid(method="full", lr=[1e-4, 1e-3], seed=[0, 1])`` -> 4 specs.
    """
    keys = list(axes)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in axes.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def method_grid(
    *,
    seeds: list[int] | tuple[int, ...],
    full_lrs: list[float],
    ranks: list[int],
    lora_lrs: list[float],
    target_modules: Any = "all",
    blocks_lrs: list[float] | None = None,
    **fixed: Any,
) -> list[SpecDict]:
    """FullFT over ``full_lrs`` and LoRA over ``ranks`` x ``lora_lrs``, for each seed in turn;
    with ``blocks_lrs``, also "full (blocks only)": FullFT of exactly the matrices LoRA adapts
    (the control that separates the frozen embeddings / lm_head / norms from rank).

    Seeds are the outer loop, so a sweep stopped part-way already holds complete seeds.
    ``fixed`` values (scalars or lists, as in :func:`grid`) apply to every spec.
    """
    out = []
    for seed in seeds:
        out += grid(method="full", lr=full_lrs, seed=seed, **fixed)
        if blocks_lrs:
            out += grid(
                method="full", target_modules=target_modules, lr=blocks_lrs, seed=seed, **fixed
            )
        out += grid(
            method="lora", r=ranks, target_modules=target_modules, lr=lora_lrs, seed=seed, **fixed
        )
    return out


def lr_grid(low: float, high: float, per_decade: int = 3) -> list[float]:
    """Learning rates 10**(k / per_decade) from ``low`` to ``high`` (3 significant digits).

    The points sit on one lattice for every call with the same ``per_decade``, so grids for
    different methods share their common learning rates exactly.
    """
    if not (0 < low <= high) or per_decade < 1:
        raise ValueError(
            f"need 0 < low <= high and per_decade >= 1, got {low}, {high}, {per_decade}"
        )
    k0 = round(math.log10(low) * per_decade)
    k1 = round(math.log10(high) * per_decade)
    return [float(f"{10 ** (k / per_decade):.3g}") for k in range(k0, k1 + 1)]


@dataclass
class Experiment:
    """A named sweep. ``grids`` maps a grid name (``full``, ``ci``) to its run specs; every
    spec is completed with ``base``, ``task``, ``task_kwargs``, ``eval_split`` and
    ``defaults``. A FullFT spec drops the LoRA-only fields a grid crossed it with (so a
    rank axis does not multiply FullFT runs); any other unknown field is an error."""

    name: str
    description: str
    base: str
    task: str
    task_kwargs: dict[str, Any]
    grids: dict[str, list[SpecDict]]
    defaults: dict[str, Any] = field(default_factory=dict)
    eval_split: str = "test"
    lr_search: LRSearch | None = None  # searched grids start from their grid's LRs
    search_grids: tuple[str, ...] = ("full",)
    # the LoRA layer of every LoRA spec that names none; None keeps RunSpec's default
    # ("reference", which every sweep shipped before the fused layer ran on, so their keys
    # stay put). A new experiment sets FAST_LORA_LAYER: same numbers up to float rounding,
    # less wall time per LoRA run (lora_lab.sweeps.fast, benchmarks/sweep_speed.py).
    lora_layer: str | None = None

    def __post_init__(self) -> None:
        for grid_name in self.grids:
            specs = self.specs(grid_name)  # every spec of every grid parses, or this raises
            if self.searches(grid_name):
                self.lr_search.check_grid(specs)

    def searches(self, grid_name: str) -> bool:
        """Whether ``grid_name``'s LRs are a starting point for the LR search."""
        return self.lr_search is not None and grid_name in self.search_grids

    def specs(self, grid_name: str = "full") -> list[RunSpec]:
        """The grid's run specs, duplicates removed, in declaration order."""
        if grid_name not in self.grids:
            raise ValueError(
                f"experiment {self.name!r} has grids {sorted(self.grids)}, not {grid_name!r}"
            )
        unique: dict[str, RunSpec] = {}
        for i, s in enumerate(self.grids[grid_name]):
            d = {
                "experiment": self.name,
                "base": self.base,
                "task": self.task,
                "task_kwargs": self.task_kwargs,
                "eval_split": self.eval_split,
                **self.defaults,
                **s,
            }
            if d.get("method", "full") == "full":
                for k in LORA_ONLY_FIELDS:
                    d.pop(k, None)
            elif self.lora_layer is not None:
                d.setdefault("lora_layer", self.lora_layer)
            try:
                spec = RunSpec.from_dict(d)
            except ValueError as e:
                raise ValueError(f"{self.name}/{grid_name} spec {i}: {e}") from None
            unique.setdefault(spec.key, spec)
        return list(unique.values())


def results_dir(experiment: str, grid_name: str = "full", root: str | Path | None = None) -> Path:
    """Shipped results live in the package's ``data/results/<name>``; other grids in
    ``<work dir>/results/<name>-<grid>`` so quick runs never mix with the shipped ones."""
    if root is not None:
        return Path(root) / (experiment if grid_name == "full" else f"{experiment}-{grid_name}")
    if grid_name == "full":
        return results_root() / experiment
    return work_dir() / "results" / f"{experiment}-{grid_name}"


CONFIRM_SEEDS = tuple(range(3, 10))  # fresh seeds: the searched sweeps used 0, 1, 2


def confirmation(
    parent: Experiment,
    chosen: dict[Any, list[float]],
    seeds: tuple[int, ...] = CONFIRM_SEEDS,
    why: str = "",
    condition: Callable[[RunSpec], Any] = lambda spec: spec.label,
) -> Experiment:
    """A follow-up to a searched sweep: the conditions ``chosen`` (condition -> learning
    rates, picked on the parent's seeds) rerun on fresh ``seeds``, everything else as the
    parent. A condition is a spec's label unless ``condition`` says otherwise (e.g.
    ``lambda s: (s.label, s.batch_size)`` where the parent crosses methods with batches).

    Why a separate sweep: an LR picked on the same seeds it is then judged on flatters its
    condition (the winner's curse). Judged on seeds that played no part in choosing it, the
    comparison at the chosen LRs is unbiased, and a paired-seed interval covers as it says.
    The parent's LR lattice and spec fields are reused, so its seeds can join these rows;
    a condition keeps its own ``task_kwargs`` where the parent crosses data sizes.
    """
    by_label: dict[Any, RunSpec] = {}
    for spec in parent.specs("full"):
        by_label.setdefault(condition(spec), spec)
    unknown = sorted(set(chosen) - set(by_label), key=str)
    if unknown:
        raise ValueError(
            f"{parent.name} has no condition {unknown}; it has {sorted(by_label, key=str)}"
        )
    own = {"experiment", "base", "task", "eval_split", "lr", "seed"}
    specs = [
        {**{k: v for k, v in by_label[label].to_dict().items() if k not in own},
         "lr": lr, "seed": seed}
        for seed in seeds  # seeds outer: a sweep stopped part-way holds complete seeds
        for label, lrs in chosen.items()
        for lr in lrs
    ]  # fmt: skip
    n_lrs = sum(len(v) for v in chosen.values())
    return Experiment(
        name=f"{parent.name}_confirm",
        description=f"{parent.name}'s chosen conditions ({', '.join(map(str, chosen))}; {n_lrs} "
        f"condition-LR pairs) on {len(seeds)} fresh seeds {seeds[0]}-{seeds[-1]}. {why}".strip(),
        base=parent.base,
        task=parent.task,
        task_kwargs=parent.task_kwargs,
        defaults=parent.defaults,
        eval_split=parent.eval_split,
        grids={"full": specs},
        lora_layer=parent.lora_layer,
    )
