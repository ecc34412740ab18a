"""Character-level tokenizer over a fixed vocabulary: PAD, BOS, EOS, newline, printable ASCII.

Characters make information content easy to reason about (one token = one character) and
need no learned merges, so every model in lora_lab shares one vocabulary of 99 tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")
CHARS = "\n" + "".join(chr(c) for c in range(32, 127))


class CharTokenizer:
    """Exact round trip for text made of newline and printable ASCII; anything else is an error."""

    pad_id, bos_id, eos_id = PAD, BOS, EOS

    def __init__(self) -> None:
        self.itos = list(SPECIALS) + list(CHARS)
        self.stoi = {ch: i + len(SPECIALS) for i, ch in enumerate(CHARS)}

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        try:
            ids = [self.stoi[ch] for ch in text]
        except KeyError:
            bad = sorted({ch for ch in text if ch not in self.stoi})
            raise ValueError(
                f"characters outside the vocabulary (newline + printable ASCII): {bad!r}"
            ) from None
        return ([BOS] if bos else []) + ids + ([EOS] if eos else [])

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.itos):
                raise ValueError(f"token id {i} outside vocabulary of {len(self.itos)}")
            if i < len(SPECIALS):
                if i == EOS and skip_special:
                    break
                if not skip_special:
                    out.append(self.itos[i])
                continue
            out.append(self.itos[i])
        return "".join(out)


TOKENIZER = CharTokenizer()
