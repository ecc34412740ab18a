"""Every experiment's description agrees with the grid it describes: seeds, batch sizes,
ranks, steps and example counts it states are the grid's (a description is read by people
deciding which sweep to trust; a stale one misleads them)."""

import re

import pytest

from lora_lab.findings import EXPERIMENTS


def _num(text: str) -> int:
    return int(text.replace(",", ""))


def _facts(exp):
    specs = [s.to_dict() for s in exp.specs("full")]
    steps = {s["steps"] for s in specs if s.get("steps")}
    for s in specs:  # epoch-based runs: steps = examples x epochs / batch
        if s.get("epochs") and "n_train" in s["task_kwargs"]:
            steps.add(round(s["task_kwargs"]["n_train"] * s["epochs"] / s["batch_size"]))
    if exp.lr_search is not None:
        steps |= {b for b in exp.lr_search.budgets if b}
    for other in EXPERIMENTS.values():  # "rank_curves has 316 and 1,000": another grid's
        if other is not exp and other.name in exp.description:
            steps |= {s.steps for s in other.specs("full") if s.steps}
            steps |= {b for b in (other.lr_search.budgets if other.lr_search else ()) if b}
    examples = set()
    for s in specs:
        kw = s["task_kwargs"]
        for key in ("n_train", "n_entities"):
            if key in kw:
                examples |= {kw[key], kw[key] * int(s.get("epochs") or 1)}
    return {
        "seeds": len({s["seed"] for s in specs}),
        "batches": sorted({s["batch_size"] for s in specs}),
        "ranks": {s["r"] for s in specs if s.get("method") == "lora"},
        "steps": steps,
        "examples": examples,
    }


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_description_matches_its_grid(name):
    exp = EXPERIMENTS[name]
    text, facts = exp.description, _facts(exp)
    for m in re.finditer(r"(\d+) (?:fresh )?seeds", text):
        assert _num(m.group(1)) == facts["seeds"], (m.group(0), facts["seeds"])
    for m in re.finditer(r"batch (\d+)\s*(?:\.\.|-)\s*(\d+)", text):
        lo, hi = facts["batches"][0], facts["batches"][-1]
        assert (_num(m.group(1)), _num(m.group(2))) == (lo, hi), m.group(0)
    for m in re.finditer(r"r=(\d+(?:(?:\.\.|/|,)\d+)*)", text):
        stated = {_num(x) for x in re.split(r"\.\.|/|,", m.group(1))}
        assert stated <= facts["ranks"], (m.group(0), facts["ranks"])
    for m in re.finditer(r"(\d[\d,]*)(?:\.\.(\d[\d,]*))? steps", text):
        for g in filter(None, m.groups()):
            assert _num(g) in facts["steps"], (m.group(0), facts["steps"])
    for m in re.finditer(r"(\d[\d,]*) (?:instruction examples|facts)", text):
        assert _num(m.group(1)) in facts["examples"], (m.group(0), facts["examples"])
