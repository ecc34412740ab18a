"""``instruct``: instruction following on string tasks, tested on unseen inputs.

A compact analogue of Tulu3 / No Robots: a chat-like template, a handful of string
operations, and a test split whose *inputs* never occur in training. The pretraining corpus
only knows :data:`CORPUS_OPS`, so fine-tuning on the others teaches new skills.
"""

from __future__ import annotations

import random
import string

from lora_lab.tasks.base import Example, SFTDataset, Task, stable_hash


def _shift(s: str) -> str:
    return "".join(chr((ord(c) - 97 + 1) % 26 + 97) for c in s)


OPS = {
    "reverse": lambda s: s[::-1],
    "upper": str.upper,
    "sort": lambda s: "".join(sorted(s)),
    "length": lambda s: str(len(s)),
    "first": lambda s: s[0],
    "shift": _shift,
    "dedupe": lambda s: "".join(dict.fromkeys(s)),
    "double": lambda s: "".join(c + c for c in s),
    "vowels": lambda s: "".join(c for c in s if c not in "aeiou") or "-",
    "swap": lambda s: s[-1] + s[1:-1] + s[0] if len(s) > 1 else s,
}
CORPUS_OPS = ("reverse", "upper", "sort", "length", "first")
TEMPLATE = "User: {op} {arg}\nAssistant:"


def is_test_input(arg: str) -> bool:
    """One input in ten, fixed for all seeds and ops, is reserved for testing."""
    return stable_hash("instruct:" + arg) % 10 == 0


def instruct_example(op: str, arg: str) -> Example:
    out = OPS[op](arg)
    return Example(TEMPLATE.format(op=op, arg=arg), " " + out, answer=out)


def _random_arg(rng: random.Random, min_len: int, max_len: int) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(min_len, max_len)))


def _verify(example: Example, completion: str) -> bool:
    return completion.strip() == (example.answer or "").strip()


def make_instruct(
    n_train: int = 4000,
    n_test: int = 500,
    ops: tuple[str, ...] | None = None,
    min_len: int = 3,
    max_len: int = 8,
    seed: int = 0,
) -> Task:
    ops = tuple(ops or OPS)
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        raise ValueError(f"unknown ops {unknown}; choose from {list(OPS)}")
    if n_train <= 0 or n_test <= 0:
        raise ValueError("n_train and n_test must be positive")
    rng = random.Random(f"instruct:{seed}")
    train: list[Example] = []
    test: list[Example] = []
    seen: set[tuple[str, str]] = set()
    while len(train) < n_train or len(test) < n_test:
        op, arg = rng.choice(ops), _random_arg(rng, min_len, max_len)
        if (op, arg) in seen:
            continue
        seen.add((op, arg))
        bucket = test if is_test_input(arg) else train
        if len(bucket) < (n_test if bucket is test else n_train):
            bucket.append(instruct_example(op, arg))
    params = {"n_train": n_train, "n_test": n_test, "ops": list(ops), "seed": seed}
    return Task(
        "instruct",
        SFTDataset("instruct", "train", train, verifier=_verify),
        SFTDataset("instruct", "test", test, verifier=_verify),
        params,
    )


# The instruction set the learning-rate and rank-curve sweeps share (16k training examples,
# 500 held-out), so their runs are comparable across notebooks.
INSTRUCT_16K = {"n_train": 16000, "n_test": 500, "seed": 0}
