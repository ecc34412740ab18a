"""Execute every notebook with papermill and index the results as HTML.

``lora-lab reproduce --quick`` injects ``preset="ci"`` (small live sweeps, shipped full
results for the plots); without ``--quick`` notebooks run their full preset.
"""

from __future__ import annotations

import html
import os
import time
from pathlib import Path

from lora_lab.paths import notebooks_dir


def execute_notebook(
    path: str | Path,
    out_path: str | Path,
    parameters: dict | None = None,
    timeout: int = 1800,
    cwd: str | Path | None = None,
) -> Path:
    """Run one notebook headless (kernel python3) and write the executed copy.

    The kernel draws with the inline backend, so the executed notebook and its HTML keep
    their plots; a caller that only wants records (the tests) sets ``MPLBACKEND=Agg``.
    """
    import papermill as pm

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    before = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = before or "module://matplotlib_inline.backend_inline"
    try:
        pm.execute_notebook(
            str(path),
            str(out_path),
            parameters=parameters or {},
            kernel_name="python3",
            execution_timeout=timeout,
            progress_bar=False,
            cwd=str(cwd or Path(path).parent),
        )
    finally:
        if before is None:
            os.environ.pop("MPLBACKEND", None)
    return out_path


def _to_html(executed: Path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(executed))
    target = executed.with_suffix(".html")
    target.write_text(body)
    return target


def reproduce(
    quick: bool = False,
    out: str | Path = "reports",
    timeout: int = 1800,
    notebooks: list[Path] | None = None,
) -> Path:
    """Execute the notebooks into ``out`` and write ``out/index.html``; returns its path."""
    out = Path(out)
    paths = notebooks or sorted(notebooks_dir().glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no notebooks in {notebooks_dir()}")
    params = {"preset": "ci"} if quick else {}
    rows = []
    for nb in paths:
        t0 = time.perf_counter()
        executed = execute_notebook(nb, out / nb.name, params, timeout)
        page = _to_html(executed)
        rows.append((nb.stem, page.name, time.perf_counter() - t0))
        print(f"{nb.name}: {rows[-1][2]:.0f} s")
    items = "\n".join(
        f'<li><a href="{html.escape(p)}">{html.escape(n)}</a> ({t:.0f} s)</li>' for n, p, t in rows
    )
    index = out / "index.html"
    mode = "quick (ci preset)" if quick else "full"
    index.write_text(
        f"<html><body><h1>lora_lab notebooks — {mode}</h1>"
        f"<p>executed {time.strftime('%Y-%m-%d %H:%M')}</p><ul>{items}</ul>"
        "</body></html>\n"
    )
    return index
