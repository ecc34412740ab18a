"""Every experiment lora_lab ships, in one place (``lora-lab experiments`` lists them)."""

from __future__ import annotations

from lora_lab.experiments import Experiment, grid, lr_grid, register

# A minimal sweep to try the machinery: seconds on a laptop.
register(
    Experiment(
        name="demo",
        description="FullFT vs LoRA r=4 on 128 facts, nano base; a smoke test of the engine",
        base="nano",
        task="facts",
        task_kwargs={"n_entities": 128, "seed": 0},
        eval_split="recall",
        defaults={"steps": 40, "batch_size": 16, "n_evals": 6},
        grids={
            "full": grid(method="full", lr=[3e-4, 1e-3], seed=[0, 1])
            + grid(method="lora", r=4, target_modules="all", lr=[1e-3, 3e-3], seed=[0, 1]),
            "ci": grid(method="full", lr=1e-3, seed=0, steps=10)
            + grid(method="lora", r=4, target_modules="all", lr=3e-3, seed=0, steps=10),
        },
    )
)

# ----------------------------------------------------------------------------- finding 2
# The learning-rate rule (notebook 02). Instruction following on string tasks, tiny base,
# constant LR as in the post. Evaluations at 10^(k/4) steps, so the loss at step 100 of a
# 1000-step run *is* the final loss of a 100-step run (constant LR, same batches): one sweep
# answers both "short" and "long" budgets.
INSTRUCT = {"n_train": 16000, "n_test": 500, "seed": 0}
LR_RULE_RANKS = [1, 4, 16, 64]
register(
    Experiment(
        name="lr_rule",
        description="optimal LR of FullFT and LoRA r=1..64 (all layers), 3 seeds",
        base="tiny",
        task="instruct",
        task_kwargs=INSTRUCT,
        defaults={"steps": 1000, "batch_size": 32, "n_evals": 13, "eval_limit": 500},
        grids={
            "full": grid(method="full", lr=lr_grid(1e-4, 1e-2, 4), seed=[0, 1, 2])
            + grid(
                method="lora",
                r=LR_RULE_RANKS,
                target_modules="all",
                lr=lr_grid(5.62e-4, 5.62e-2, 4),
                seed=[0, 1, 2],
            ),
            "ci": grid(method="full", lr=[1e-3, 3e-3], seed=0, steps=20, n_evals=4)
            + grid(
                method="lora",
                r=4,
                target_modules="all",
                lr=[1e-2, 3e-2],
                seed=0,
                steps=20,
                n_evals=4,
            ),
        },
    )
)

# The ratio at each dense width: does it move towards 10x, or with hidden / (2 alpha)?
register(
    Experiment(
        name="lr_width",
        description="optimal LR ratio LoRA r=16 / FullFT at each dense preset width, 2 seeds",
        base="tiny",
        task="instruct",
        task_kwargs=INSTRUCT,
        defaults={"steps": 500, "batch_size": 32, "n_evals": 10, "eval_limit": 500},
        grids={
            "full": grid(
                base=["nano", "tiny", "small"],
                method="full",
                lr=lr_grid(1e-4, 1e-2, 4),
                seed=[0, 1],
            )
            + grid(
                base=["nano", "tiny", "small"],
                method="lora",
                r=16,
                target_modules="all",
                lr=lr_grid(5.62e-4, 5.62e-2, 4),
                seed=[0, 1],
            ),
            "ci": grid(
                base=["nano", "tiny"], method=["full"], lr=1e-3, seed=0, steps=10, n_evals=3
            ),
        },
    )
)
