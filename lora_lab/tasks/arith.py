"""``arith``: arithmetic word problems solved with a digit-by-digit scratchpad.

A compact analogue of GSM8K / OpenThoughts3: the completion reasons step by step (one step
per digit, with the carry or borrow written out) and ends with a final answer line
``#### <number>``, which :func:`verify` checks. The same verifier is the reward in RL.
"""

from __future__ import annotations

import random
import re

from lora_lab.tasks.base import Example, SFTDataset, Task, stable_hash
from lora_lab.tokenizer import TOKENIZER

PEOPLE = [
    "Ana",
    "Ben",
    "Cleo",
    "Dev",
    "Eli",
    "Fay",
    "Gus",
    "Hana",
    "Ivo",
    "Jade",
    "Kai",
    "Lin",
    "Mo",
    "Nia",
    "Otto",
    "Pia",
    "Raj",
    "Sam",
    "Tess",
    "Uma",
]
THINGS = [
    "apples",
    "stones",
    "coins",
    "books",
    "shells",
    "cards",
    "beads",
    "seeds",
    "pens",
    "stamps",
]
ADD = "Problem: {p} has {a} {t} and gets {b} more. How many {t} does {p} have now?\nSolution:"
SUB = "Problem: {p} has {a} {t} and gives away {b}. How many {t} are left?\nSolution:"
ANSWER_RE = re.compile(r"####\s*(-?\d+)")


def scratchpad(a: int, b: int, op: str) -> str:
    """Digit-by-digit working from the units up, e.g. ``7+5+0=12 c1, ...``."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        if op == "+":
            s = x + y + carry
            steps.append(f"{x}+{y}+{carry}={s % 10} c{s // 10}")
            carry = s // 10
        else:
            s = x - y - carry
            borrow = int(s < 0)
            steps.append(f"{x + 10 * borrow}-{y}-{carry}={s + 10 * borrow} b{borrow}")
            carry = borrow
    if op == "+" and carry:
        steps.append(f"carry {carry}")
    result = a + b if op == "+" else a - b
    return " " + ", ".join(steps) + f". #### {result}"


def parse_answer(completion: str) -> int | None:
    """The number on the final answer line, or None if there is none."""
    found = ANSWER_RE.findall(completion)
    return int(found[-1]) if found else None


def verify(example: Example, completion: str) -> bool:
    """1/0 reward: does the completion's final answer equal the true answer?"""
    got = parse_answer(completion)
    return got is not None and example.answer is not None and got == int(example.answer)


def arith_example(a: int, b: int, op: str, rng: random.Random) -> Example:
    template = ADD if op == "+" else SUB
    prompt = template.format(p=rng.choice(PEOPLE), a=a, b=b, t=rng.choice(THINGS))
    return Example(prompt, scratchpad(a, b, op), answer=str(a + b if op == "+" else a - b))


def is_test_problem(a: int, b: int, op: str) -> bool:
    return stable_hash(f"arith:{a}{op}{b}") % 10 == 0


def _n_tokens(example: Example) -> int:
    return len(TOKENIZER.encode(example.prompt + example.completion, bos=True, eos=True))


def _operand(rng: random.Random, digits: tuple[int, int]) -> int:
    d = rng.randint(*digits)
    return rng.randint(10 ** (d - 1) if d > 1 else 0, 10**d - 1)


def make_arith(
    n_train: int = 4000,
    n_test: int = 500,
    digits: tuple[int, int] = (2, 3),
    ops: tuple[str, ...] = ("+", "-"),
    seed: int = 0,
    max_len: int | None = None,
) -> Task:
    """Problems whose operands have between ``digits[0]`` and ``digits[1]`` digits;
    subtraction keeps results non-negative. Test problems (a, op, b) never occur in train.

    ``max_len``: redraw a problem whose tokens (BOS, prompt, completion, EOS) exceed it, so
    every example fits a model's context (``max_seq_len``) and a sampled completion as long
    as the reference one always has room; None keeps every problem."""
    if n_train <= 0 or n_test <= 0:
        raise ValueError("n_train and n_test must be positive")
    if not 1 <= digits[0] <= digits[1] <= 6:
        raise ValueError("digits must satisfy 1 <= lo <= hi <= 6")
    if not ops or any(o not in "+-" for o in ops):
        raise ValueError("ops must be a non-empty subset of ('+', '-')")
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int)
                                or max_len < 16):  # fmt: skip
        raise ValueError(f"max_len must be an integer >= 16 or None, got {max_len!r}")
    rng = random.Random(f"arith:{seed}")
    train: list[Example] = []
    test: list[Example] = []
    seen: set[tuple[int, int, str]] = set()
    capacity = 2 * len(ops) * (10 ** digits[1]) ** 2
    if n_train + n_test > capacity // 4:
        raise ValueError(f"{n_train + n_test} problems requested from too small a space")
    attempts = 0
    while len(train) < n_train or len(test) < n_test:
        attempts += 1
        if attempts > 100 * (n_train + n_test) + 10_000:  # the space ran out (small digits)
            raise ValueError(
                f"could not draw {n_train} train and {n_test} test problems with digits "
                f"{digits} and ops {ops} (found {len(train)} and {len(test)}): ask for fewer "
                "problems or more digits"
            )
        op = rng.choice(ops)
        a, b = _operand(rng, digits), _operand(rng, digits)
        if op == "-" and b > a:
            a, b = b, a
        if (a, b, op) in seen:
            continue
        seen.add((a, b, op))
        bucket = test if is_test_problem(a, b, op) else train
        if len(bucket) < (n_test if bucket is test else n_train):
            example = arith_example(a, b, op, rng)
            if max_len is None or _n_tokens(example) <= max_len:
                bucket.append(example)
    params = {
        "n_train": n_train,
        "n_test": n_test,
        "digits": list(digits),
        "ops": list(ops),
        "seed": seed,
    }
    if max_len is not None:  # only when set, so existing tasks keep their fingerprints
        params["max_len"] = max_len
    return Task(
        "arith",
        SFTDataset("arith", "train", train, verifier=verify),
        SFTDataset("arith", "test", test, verifier=verify),
        params,
    )
