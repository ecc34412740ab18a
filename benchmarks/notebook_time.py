"""Where the notebooks' share of the test suite goes: each notebook executed in the ``ci``
preset (what the papermill and browser tests run), its wall time and its slowest cells.

Half of the suite's time is the notebooks (the browser test runs each one through
JupyterLab's Run All, then clicks its panels). This script measures the Run All part
without a browser, one notebook after another, so a change to a notebook, a finding's
``ci`` grid or the package's import time can be judged by what it saves:

    python benchmarks/notebook_time.py              # every notebook, a fresh work folder
    python benchmarks/notebook_time.py 05 06 --cells 3
    python benchmarks/notebook_time.py --keep-work  # reuse this checkout's work folder
    python benchmarks/notebook_time.py --browser    # the last browser test's own phases

A fresh work folder (the default) is what a clean clone and CI see: every notebook's live
``ci`` sweep runs (notebook 05's warm start ships, so nothing builds it); ``--keep-work``
reuses the records the work folder already holds. Cell times come from papermill's own
metadata. ``--browser`` instead prints what the last run of ``tests/test_browser.py`` wrote
beside its screenshots (``reports/browser/*.timings.json``): per notebook, opening it,
Run All, and each panel's live run. Wall seconds on this machine: compare them within one
run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cell_times(executed: Path) -> list[tuple[float, str]]:
    """(seconds, first line) of every code cell of an executed notebook, slowest first."""
    cells = json.loads(executed.read_text())["cells"]
    rows = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        seconds = cell.get("metadata", {}).get("papermill", {}).get("duration") or 0.0
        lines = [ln for ln in "".join(cell["source"]).splitlines() if ln.strip()]
        rows.append((float(seconds), lines[0][:80] if lines else ""))
    return sorted(rows, reverse=True)


def browser_table(folder: Path = ROOT / "reports" / "browser") -> str:
    """The browser test's phases per notebook, from the timings files it left."""
    files = sorted(folder.glob("*.timings.json"))
    if not files:
        raise SystemExit(f"no timings in {folder}: run python -m pytest tests/test_browser.py")
    lines = ["| notebook | open s | Run All s | panels s |", "|---|---:|---:|---|"]
    sums = [0.0, 0.0, 0.0]
    for f in files:
        t = json.loads(f.read_text())
        panels = t.get("panels_s", [])
        lines.append(f"| {f.name.split('.')[0]} | {t['open_s']:.1f} | {t['run_all_s']:.1f} | "
                     f"{', '.join(f'{p:.1f}' for p in panels) or '-'} |")  # fmt: skip
        sums = [sums[0] + t["open_s"], sums[1] + t["run_all_s"], sums[2] + sum(panels)]
    lines.append(f"| all {len(files)} | {sums[0]:.0f} | {sums[1]:.0f} | {sums[2]:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="number prefixes (e.g. 05 06); default: all")
    ap.add_argument("--cells", type=int, default=4, help="slowest cells shown per notebook")
    ap.add_argument("--keep-work", action="store_true",
                    help="reuse the work folder's records and bases (default: a fresh one)")
    ap.add_argument("--browser", action="store_true",
                    help="print the last browser test's phases instead of executing anything")
    args = ap.parse_args(argv)
    if args.browser:
        print(browser_table())
        return 0
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.notebooks:
        paths = [p for p in paths if p.stem[:2] in set(args.notebooks)]
        if not paths:
            ap.error(f"no notebook starts with {args.notebooks}")
    work = None
    if not args.keep_work:
        work = tempfile.mkdtemp(prefix="lora_lab-notebook-time-")
        os.environ["LORA_LAB_WORK"] = work  # the kernels inherit it
    os.environ["MPLBACKEND"] = "Agg"
    from lora_lab.reproduce import execute_notebook

    out = Path(tempfile.mkdtemp(prefix="lora_lab-notebooks-"))
    print(f"work folder: {work or 'this checkout (kept)'}; executed copies: {out}")
    print("| notebook | wall s | cells s | slowest cells (s) |\n|---|---:|---:|---|")
    total = 0.0
    for path in paths:
        t = time.perf_counter()
        execute_notebook(path, out / path.name, {"preset": "ci"}, timeout=1800, cwd=path.parent)
        wall = time.perf_counter() - t
        total += wall
        cells = cell_times(out / path.name)
        slowest = "; ".join(f"{s:.1f} `{src}`" for s, src in cells[: args.cells])
        print(f"| {path.stem} | {wall:.1f} | {sum(s for s, _ in cells):.1f} | {slowest} |",
              flush=True)  # fmt: skip
    print(f"\n{len(paths)} notebooks, {total:.0f} s one after another (ci preset)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
