"""Seeded synthetic tasks with train/test splits and completion-only loss masks."""

from lora_lab.tasks.arith import make_arith, parse_answer, verify
from lora_lab.tasks.base import Example, SFTDataset, Task
from lora_lab.tasks.corpus import corpus_documents, corpus_tokens
from lora_lab.tasks.facts import make_facts
from lora_lab.tasks.instruct import make_instruct

TASKS = {"facts": make_facts, "instruct": make_instruct, "arith": make_arith}


def make_task(name: str, **kwargs) -> Task:
    """Build a task by name: ``make_task("facts", n_entities=1000, seed=0)``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name](**kwargs)


__all__ = [
    "TASKS",
    "Example",
    "SFTDataset",
    "Task",
    "corpus_documents",
    "corpus_tokens",
    "make_arith",
    "make_facts",
    "make_instruct",
    "make_task",
    "parse_answer",
    "verify",
]
