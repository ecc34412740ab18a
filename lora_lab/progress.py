"""Progress bars that survive a notebook being saved and reopened.

tqdm's notebook bars are ipywidgets: saved without their widget state (JupyterLab's
default), a reopened notebook shows "Error displaying widget: model not found" where each
bar was, and a bar closed with ``leave=False`` leaves an output whose widget is gone. In a
Jupyter kernel the bars here are plain text on stdout instead (Jupyter redraws a line
ending in a carriage return in place), so what is saved is text; in a terminal they go to
stderr as usual, keeping stdout clean for output such as ``lora-lab info --json``.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.std import tqdm


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython with a ZMQ shell)."""
    shell = (
        sys.modules.get("IPython")
        and getattr(sys.modules["IPython"], "get_ipython", lambda: None)()
    )
    return type(shell).__name__ == "ZMQInteractiveShell"


def progress_bar(**kwargs: Any) -> tqdm:
    """A tqdm bar (same arguments) drawn as text: stdout in a notebook, stderr elsewhere."""
    if in_notebook():
        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("ncols", 90)
    return tqdm(**kwargs)
