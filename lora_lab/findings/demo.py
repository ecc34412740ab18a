"""A minimal sweep to try the machinery: seconds on a laptop (``lora-lab sweep demo``)."""

from __future__ import annotations

from lora_lab.sweeps.experiment import Experiment, grid
from lora_lab.sweeps.fast import FAST_LORA_LAYER

DEMO = Experiment(
    name="demo",
    description="FullFT vs LoRA r=4 on 128 facts, nano base; a smoke test of the engine",
    base="nano",
    task="facts",
    task_kwargs={"n_entities": 128, "seed": 0},
    eval_split="recall",
    defaults={"steps": 40, "batch_size": 16, "evals_per_decade": 6},
    grids={
        "full": grid(method="full", lr=[3e-4, 1e-3], seed=[0, 1])
        + grid(method="lora", r=4, target_modules="all", lr=[1e-3, 3e-3], seed=[0, 1]),
        "ci": grid(method="full", lr=1e-3, seed=0, steps=10)
        + grid(method="lora", r=4, target_modules="all", lr=3e-3, seed=0, steps=10),
    },
    lora_layer=FAST_LORA_LAYER,  # a new sweep runs LoRA the fast way (lora_lab.sweeps.fast)
)

EXPERIMENTS = (DEMO,)
