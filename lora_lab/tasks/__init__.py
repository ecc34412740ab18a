"""Seeded synthetic tasks with train/test splits and completion-only loss masks."""

import functools
import inspect
import json
from pathlib import Path

from lora_lab.paths import data_dir
from lora_lab.tasks.arith import make_arith, parse_answer, verify
from lora_lab.tasks.base import Example, SFTDataset, Task
from lora_lab.tasks.corpus import corpus_documents, corpus_tokens
from lora_lab.tasks.facts import make_facts
from lora_lab.tasks.instruct import make_instruct
from lora_lab.tasks.preferences import make_arith_prefs, make_facts_prefs
from lora_lab.tasks.two_hop import make_two_hop

TASKS = {
    "facts": make_facts,
    "instruct": make_instruct,
    "arith": make_arith,
    "two_hop": make_two_hop,
    "facts_prefs": make_facts_prefs,  # preference pairs (DPO)
    "arith_prefs": make_arith_prefs,
}
PREFERENCE_TASKS = ("facts_prefs", "arith_prefs")
# every split a task has (train and test, then its extra ones): what a spec's eval_split may
# name, known without building the task (a test checks it against the tasks themselves)
SPLITS = {name: ("train", "test") for name in TASKS}
SPLITS.update(facts=("train", "test", "recall"), facts_prefs=("train", "test", "rephrased"),
              two_hop=("train", "test", "hop1", "hop2", "recall"))  # fmt: skip


@functools.cache
def _signature(name: str) -> inspect.Signature:
    return inspect.signature(TASKS[name])  # read once per task: every spec checks its kwargs


def check_task_args(name: str, kwargs: dict) -> None:
    """``kwargs`` against the task builder's signature: a misspelt argument is an error that
    lists the real ones (checked when a spec is declared, not after hours of sweeping)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    try:
        _signature(name).bind(**kwargs)
    except TypeError as e:
        params = [p for p in _signature(name).parameters if p != "arith_kwargs"]
        raise ValueError(f"task {name!r}: {e}; its arguments: {params}") from None
    if name == "arith_prefs":  # the rest are make_arith's
        extra = {k: v for k, v in kwargs.items() if k not in ("n_train", "n_test", "seed")}
        check_task_args("arith", extra)


def make_task(name: str, **kwargs) -> Task:
    """Build a task by name: ``make_task("facts", n_entities=1000, seed=0)``."""
    check_task_args(name, kwargs)
    return TASKS[name](**kwargs)


__all__ = [
    "PREFERENCE_TASKS",
    "SPLITS",
    "TASKS",
    "Example",
    "SFTDataset",
    "Task",
    "corpus_documents",
    "corpus_tokens",
    "check_task_args",
    "make_arith",
    "make_arith_prefs",
    "make_facts",
    "make_facts_prefs",
    "make_instruct",
    "make_task",
    "make_two_hop",
    "parse_answer",
    "verify",
]


def write_samples(folder: str | Path | None = None) -> None:
    """Write the small JSONL samples shipped in ``data/samples`` (for reading)."""
    out = Path(folder) if folder is not None else data_dir() / "samples"
    out.mkdir(parents=True, exist_ok=True)
    for name, kw in [
        ("facts", {"n_entities": 50}),
        ("instruct", {"n_train": 50, "n_test": 10}),
        ("arith", {"n_train": 50, "n_test": 10}),
        ("two_hop", {"n_people": 40, "n_companies": 8}),
    ]:
        task = make_task(name, **kw)
        task.train.write_jsonl(out / f"{name}_train.jsonl", limit=30)
        task.test.write_jsonl(out / f"{name}_test.jsonl", limit=10)
    with open(out / "corpus.jsonl", "w") as f:
        for doc in corpus_documents(n_docs=40):
            f.write(json.dumps({"text": doc}) + "\n")
