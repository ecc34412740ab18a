"""The pretraining corpus: the same kinds of text as the tasks, about *other* things.

Facts about corpus-only entities (in every phrasing), the instruct template with only
:data:`~lora_lab.tasks.instruct.CORPUS_OPS`, and 1-2 digit arithmetic with scratchpads. A
base model pretrained on it knows the formats and the language; fine-tuning then adds new
facts (``facts``), new string skills (``instruct``) and longer arithmetic (``arith``).
"""

from __future__ import annotations

import random

import torch

from lora_lab.tasks.arith import arith_example
from lora_lab.tasks.facts import PHRASINGS, make_facts
from lora_lab.tasks.instruct import CORPUS_OPS, instruct_example
from lora_lab.tokenizer import TOKENIZER


def corpus_documents(n_docs: int = 60_000, seed: int = 0) -> list[str]:
    """Documents (prompt + completion strings) mixed 1/3 facts, 1/3 instruct, 1/3 arith."""
    rng = random.Random(f"corpus:{seed}")
    facts = make_facts(
        n_entities=2000,
        n_attributes=2,
        value_len=4,
        train_phrasings=len(PHRASINGS) - 1,
        seed=seed,
        for_corpus=True,
    )
    fact_pool = facts.train.examples + facts.test.examples
    docs = []
    for _ in range(n_docs):
        kind = rng.randrange(3)
        if kind == 0:
            ex = rng.choice(fact_pool)
        elif kind == 1:
            arg = "".join(
                rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))
            )
            ex = instruct_example(rng.choice(CORPUS_OPS), arg)
        else:
            op = rng.choice("+-")
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            if op == "-" and b > a:
                a, b = b, a
            ex = arith_example(a, b, op, rng)
        docs.append(ex.prompt + ex.completion)
    return docs


def corpus_tokens(n_docs: int = 60_000, seed: int = 0) -> torch.Tensor:
    """One long token stream: BOS doc EOS BOS doc EOS ... (windows are cut from it)."""
    ids: list[int] = []
    for doc in corpus_documents(n_docs, seed):
        ids.extend(TOKENIZER.encode(doc, bos=True, eos=True))
    return torch.tensor(ids, dtype=torch.long)
