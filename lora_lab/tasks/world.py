"""A seeded fictional world: entity names and random value codes.

Names are pronounceable syllable strings; the pretraining corpus and the fine-tuning tasks
draw from disjoint parts of name space (the corpus owns names whose hash is even), so facts
taught during fine-tuning are guaranteed to be new to the base model.
"""

from __future__ import annotations

import random
import string

from lora_lab.tasks.base import stable_hash

_ONSETS = [
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "kl",
    "st",
    "tr",
    "sh",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "", "n", "r", "s", "l", "k", "th"]

ATTRIBUTES = ["code", "key", "tag", "mark", "sign", "seal", "pin", "crest"]


def is_corpus_name(name: str) -> bool:
    """True for the half of name space reserved for the pretraining corpus."""
    return stable_hash("name:" + name) % 2 == 0


def _name(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.choice([2, 2, 3])):
        parts.append(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS))
    return "".join(parts).capitalize()


def make_names(n: int, rng: random.Random, for_corpus: bool) -> list[str]:
    """``n`` distinct names from the corpus half or the fine-tuning half of name space."""
    names: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(names) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise ValueError(f"cannot make {n} distinct names; ask for fewer")
        name = _name(rng)
        if name in seen or is_corpus_name(name) != for_corpus:
            continue
        seen.add(name)
        names.append(name)
    return names


def random_code(rng: random.Random, length: int) -> str:
    """A uniformly random lower-case code: log2(26) * length bits of information."""
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(length))
