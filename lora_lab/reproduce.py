"""Execute every notebook with papermill and index the results as HTML.

``lora-lab reproduce --quick`` injects ``preset="ci"`` (small live sweeps, shipped full
results for the plots); without ``--quick`` notebooks run their full preset.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from lora_lab.findings import headlines, write_figures
from lora_lab.paths import notebooks_dir


def execute_notebook(
    path: str | Path,
    out_path: str | Path,
    parameters: dict | None = None,
    timeout: int = 1800,
    cwd: str | Path | None = None,
    kernel: str = "python3",
) -> Path:
    """Run one notebook headless (with Jupyter kernel ``kernel``) and write the executed copy.

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
            kernel_name=kernel,
            execution_timeout=timeout,
            progress_bar=False,
            cwd=str(cwd or Path(path).parent),
        )
    finally:
        if before is None:
            os.environ.pop("MPLBACKEND", None)
    return out_path


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
STATIC_PANEL = (
    '<div style="border:1px dashed #999;padding:0.6em;color:#555"><em>Interactive panel: '
    "open this notebook in JupyterLab (<code>jupyter lab notebooks/</code>), choose the "
    "settings and press Run.</em></div>"
)
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
# The packaged MathJax carries only the STIX-Web fonts: say so before MathJax starts, or it
# asks for its default TeX fonts and prints "Math Processing Error".
MATHJAX_FONTS = (
    '<script type="text/x-mathjax-config">MathJax.Hub.Config({"HTML-CSS": '
    '{availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null}});'
    "</script>\n"
)


def static_widgets(nb: Any) -> Any:
    """Replace every widget view by a static note: a saved page has no kernel to drive the
    controls, and the widget renderer would come from a CDN (empty boxes offline)."""
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                output["data"] = {"text/html": STATIC_PANEL, "text/plain": "[interactive panel]"}
    nb.get("metadata", {}).pop("widgets", None)
    return nb


def local_mathjax(out: Path) -> str:
    """Copy MathJax (from the ``jupyter-server-mathjax`` package) next to the reports once,
    and return the relative URL the pages load it from: maths renders with no network."""
    import jupyter_server_mathjax  # heavy (jupyter_server, jsonschema): only when writing pages

    src = Path(jupyter_server_mathjax.__file__).parent / "static"
    dest = out / "mathjax"
    if not (dest / "MathJax.js").exists():
        shutil.copytree(src, dest, dirs_exist_ok=True)
    return f"mathjax/MathJax.js?config={MATHJAX_CONFIG}"


def to_html(executed: Path) -> Path:
    """The executed notebook as a page that reads offline: local MathJax, static panels,
    no script from a CDN."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = static_widgets(nbformat.read(str(executed), as_version=4))
    exporter = HTMLExporter(mathjax_url=local_mathjax(executed.parent))
    body, _ = exporter.from_notebook_node(nb)
    # require.js is only for widget and JavaScript outputs, which the pages no longer have
    body = body.replace(f'<script src="{exporter.require_js_url}"></script>', "")
    mathjax_tag = f'<script src="{exporter.mathjax_url}">'
    body = body.replace(mathjax_tag, MATHJAX_FONTS + mathjax_tag, 1)
    target = executed.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


def reproduce(
    quick: bool = False,
    out: str | Path = "reports",
    timeout: int = 1800,
    notebooks: list[Path] | None = None,
    kernel: str = "python3",
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
        executed = execute_notebook(nb, out / nb.name, params, timeout, kernel=kernel)
        page = to_html(executed)
        rows.append((nb, page.name, time.perf_counter() - t0))
        print(f"{nb.name}: {rows[-1][2]:.0f} s")
    index = out / "index.html"
    index.write_text(front_page(rows, out, quick), encoding="utf-8")
    return index


STATUS_COLOURS = {"holds": "#1a7f37", "does not hold": "#b42318", "not resolved": "#8a6d00",
                  "not testable in this design": "#555", "units differ": "#555"}  # fmt: skip


def _title_and_lead(path: Path, limit: int = 320) -> tuple[str, str]:
    """A notebook's first heading (its title) and the paragraph after it (its lead, cut at
    ``limit`` characters), or its file name and nothing."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return path.stem, ""
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        text = "".join(cell.get("source", "")).strip()
        if text.startswith("#"):
            title, _, rest = text.partition("\n")
            lead = " ".join(rest.strip().split("\n\n")[0].split())
            lead = lead.replace("*", "").replace("`", "")  # Markdown emphasis, as plain text
            return title.lstrip("#").strip(), lead[:limit] + ("…" if len(lead) > limit else "")
    return path.stem, ""


def front_page(rows: list[tuple[Path, str, float]], out: Path, quick: bool) -> str:
    """``index.html``: per notebook its title, runtime and links, the headline verdicts of
    its finding(s) computed from the shipped records, and one figure. A missing record
    leaves that notebook's verdicts out with a note, never the page."""
    try:
        found = headlines()
        figures = {p.stem: p.name for p in write_figures(out / "figures", found)}
        problem = ""
    except (FileNotFoundError, ValueError, KeyError) as e:  # records missing or partial
        found, figures, problem = [], {}, f"{type(e).__name__}: {e}"
    e = html.escape
    sections = []
    for nb, page, seconds in rows:
        mine = [h for h in found if h.notebook == nb.stem]
        verdicts = "".join(
            f'<tr><td>{e(h.finding)}</td><td>{e(h.claim)}</td><td>{e(h.measured)}</td>'
            f'<td style="color:{STATUS_COLOURS.get(h.status, "#000")};font-weight:bold">'
            f"{e(h.status)}</td></tr>" for h in mine
        )
        table = (f"<table><tr><th>finding</th><th>the claim</th><th>measured</th>"
                 f"<th>verdict</th></tr>{verdicts}</table>" if mine else "")  # fmt: skip
        figure = (f'<img src="figures/{e(figures[nb.stem])}" alt="{e(nb.stem)}">'
                  if nb.stem in figures else "")  # fmt: skip
        title, lead = _title_and_lead(nb)
        sections.append(
            f'<section><h2><a href="{e(page)}">{e(title)}</a></h2>'
            f'<p class="meta">{e(nb.name)} · executed in {seconds:.0f} s · '
            f'<a href="{e(page)}">page</a> · <a href="{e(nb.name)}">notebook</a></p>'
            f"<p>{e(lead)}</p>{table}{figure}</section>"
        )
    mode = "quick (ci preset: small live runs; verdicts and figures from the shipped records)" \
        if quick else "full"  # fmt: skip
    note = f'<p class="meta">verdicts unavailable: {e(problem)}</p>' if problem else ""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>lora_lab: what LoRA '
        "matches</title><style>body{font-family:system-ui,sans-serif;max-width:1100px;"
        "margin:2em auto;padding:0 1em;color:#222}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:.35em .5em;vertical-align:top;font-size:.9em}"
        "th{background:#f4f4f4}img{max-width:100%;border:1px solid #eee}.meta{color:#666;"
        "font-size:.9em}section{margin-bottom:2.5em}</style></head><body>"
        "<h1>lora_lab: when does LoRA match full fine-tuning?</h1>"
        f'<p class="meta">The findings of <em>LoRA Without Regret</em> (Schulman et al., 2025) '
        f"measured on compact transformers; {e(mode)}; executed "
        f"{time.strftime('%Y-%m-%d %H:%M')}. Verdicts: holds, does not hold, not resolved, "
        "not testable in this design; every interval is 95 %.</p>"
        f"{note}{''.join(sections)}</body></html>\n"
    )
