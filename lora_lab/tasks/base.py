"""Datasets of (prompt, completion) pairs, tokenised with a loss mask on the completion only.

This is how SFT is done in the post: the model reads the prompt, and only the completion's
tokens (plus the closing EOS) count towards the loss.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lora_lab.tokenizer import BOS, EOS, PAD, TOKENIZER


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str
    answer: str | None = None  # the verifiable final answer, where the task has one
    rejected: str | None = None  # a preference pair's dispreferred completion (DPO)


@dataclass
class SFTDataset:
    """One split of a task. ``info_bits`` is its exact information content where defined."""

    name: str
    split: str
    examples: list[Example]
    info_bits: float | None = None
    verifier: Callable[[Example, str], bool] | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    _tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = field(
        default=None, repr=False, compare=False
    )

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs, targets, loss_mask), each (n, L-1), right-padded with PAD.

        Sequence = BOS + prompt + completion + EOS; ``loss_mask`` is 1 exactly on targets that
        belong to the completion or its EOS.
        """
        if self._tensors is None:
            seqs, masks = [], []
            for ex in self.examples:
                p = TOKENIZER.encode(ex.prompt, bos=True)
                c = TOKENIZER.encode(ex.completion, eos=True)
                seqs.append(p + c)
                masks.append([0] * len(p) + [1] * len(c))
            length = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), length), PAD, dtype=torch.long)
            mask = torch.zeros((len(seqs), length), dtype=torch.float32)
            for i, (s, m) in enumerate(zip(seqs, masks)):
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(m)] = torch.tensor(m, dtype=torch.float32)
            self._tensors = (ids[:, :-1].contiguous(), ids[:, 1:].contiguous(), mask[:, 1:])
        return self._tensors

    @property
    def completion_tokens(self) -> int:
        """Tokens the loss is taken on (completion characters + EOS), over the whole split."""
        return sum(len(ex.completion) + 1 for ex in self.examples)

    @property
    def max_len(self) -> int:
        return self.tensors()[0].shape[1]

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "task": self.name,
            "split": self.split,
            "examples": len(self),
            "completion_tokens": self.completion_tokens,
            "max_len": len(self.tensors()[0][0]) + 1,
            "bits": self.info_bits,
        }
        if self.info_bits is not None:
            d["bits_per_completion_token"] = self.info_bits / self.completion_tokens
        d.update(self.notes)
        return d

    def fingerprint(self) -> str:
        """Hash of the exact examples: two datasets with the same fingerprint are identical."""
        h = hashlib.sha256()
        for ex in self.examples:
            h.update(f"{ex.prompt}\x00{ex.completion}\x01".encode())
            if ex.rejected is not None:  # pairs only: SFT fingerprints stay as they were
                h.update(f"{ex.rejected}\x02".encode())
        return h.hexdigest()[:16]

    def write_jsonl(self, path: str | Path, limit: int | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            for ex in self.examples[:limit]:
                row = {"prompt": ex.prompt, "completion": ex.completion}
                if ex.answer is not None:
                    row["answer"] = ex.answer
                if ex.rejected is not None:
                    row["rejected"] = ex.rejected
                f.write(json.dumps(row) + "\n")
        return path

    @property
    def is_preference(self) -> bool:
        """Whether every example is a (prompt, chosen, rejected) pair: what DPO trains on."""
        return bool(self.examples) and all(ex.rejected is not None for ex in self.examples)

    def verify(self, example: Example, completion: str) -> bool:
        if self.verifier is None:
            raise ValueError(f"task {self.name!r} has no verifier")
        return self.verifier(example, completion)


@dataclass
class Task:
    """A task's train and test splits plus the settings that generated them."""

    name: str
    train: SFTDataset
    test: SFTDataset
    params: dict[str, Any]
    extra: dict[str, SFTDataset] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "task": self.name,
            **self.params,
            "train": self.train.describe(),
            "test": self.test.describe(),
        }

    def __repr__(self) -> str:
        d = self.describe()
        lines = [f"Task {self.name!r} {self.params}"]
        for split in ("train", "test"):
            s = d[split]
            bits = f", {s['bits']:.0f} bits" if s["bits"] is not None else ""
            lines.append(
                f"  {split}: {s['examples']} examples, "
                f"{s['completion_tokens']} completion tokens{bits}"
            )
        return "\n".join(lines)


def stable_hash(text: str) -> int:
    """A hash that is the same in every process (Python's hash() is salted)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


__all__ = ["BOS", "EOS", "Example", "SFTDataset", "Task", "stable_hash"]
