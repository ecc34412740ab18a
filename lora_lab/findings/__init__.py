"""Findings: one module per notebook, each with its experiments, its analysis and its panel.

This file is the registry. A new finding adds its module, one entry in :data:`FINDINGS` and
its notebook; nothing else in the package changes.
"""

from __future__ import annotations

from types import ModuleType

from lora_lab.findings import capacity, demo, learning_rate
from lora_lab.sweeps.experiment import Experiment

FINDINGS: tuple[ModuleType, ...] = (demo, capacity, learning_rate)


def _collect() -> dict[str, Experiment]:
    found: dict[str, Experiment] = {}
    for module in FINDINGS:
        for exp in module.EXPERIMENTS:
            if exp.name in found:
                raise ValueError(f"experiment name {exp.name!r} is registered twice")
            found[exp.name] = exp
    return found


EXPERIMENTS: dict[str, Experiment] = _collect()


def get_experiment(name: str) -> Experiment:
    """A registered experiment by name (``lora-lab experiments`` lists them)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]


__all__ = ["EXPERIMENTS", "FINDINGS", "get_experiment"]
