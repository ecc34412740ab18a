"""Generated blocks of Markdown files: README's findings table, step-time and sweep-speed
tables live between two HTML-comment markers and are rewritten from records, never typed."""

from __future__ import annotations

from pathlib import Path


def read_block(text: str, start: str, end: str) -> str:
    """The text between ``start`` and ``end`` (stripped); ValueError without the markers."""
    if start not in text or end not in text:
        raise ValueError(f"no generated block marked {start!r} ... {end!r}")
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def write_block(path: str | Path, start: str, end: str, body: str) -> bool:
    """Replace the block between the markers in ``path`` with ``body``; True if it changed."""
    path = Path(path)
    text = path.read_text()
    read_block(text, start, end)  # the markers are there, or this raises
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{body}\n{end}{tail}"
    path.write_text(new)
    return new != text
