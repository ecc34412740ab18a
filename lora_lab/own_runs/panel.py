"""Notebook 08's panel: analyse a run table live, with the reference and margin you choose,
from the example tables or a CSV you upload."""

from __future__ import annotations

import io
from typing import Any

import ipywidgets as w
import matplotlib.pyplot as plt
import pandas as pd

from lora_lab.own_runs.analysis import analyze_table
from lora_lab.own_runs.report import figure_ratios, figure_u_curves, headline
from lora_lab.own_runs.table import RunTable, RunTableError, tidy
from lora_lab.plots import guard_mathtext


class AnalysisPanel:
    """Choose a table (the examples, or upload a CSV with method, lr, seed and a metric
    column), a reference and an equivalence margin; **Run analysis** shows the verdicts, the
    U-curves and the LR ratios as ``lora-lab analyze`` would report them."""

    def __init__(self, tables: dict[str, RunTable]):
        if not tables:
            raise ValueError("give at least one run table")
        guard_mathtext()  # the button draws from a widget thread (JupyterLab's subshells)
        self.tables = dict(tables)
        self.source = w.Dropdown(options=list(self.tables), description="runs")
        self.upload = w.FileUpload(accept=".csv", multiple=False, description="your CSV")
        self.metric = w.Text(value="eval_loss", description="metric")
        self.margin = w.FloatLogSlider(value=0.02, base=10, min=-3, max=0, step=0.05,
                                       description="margin", readout_format=".3g")  # fmt: skip
        self.button = w.Button(description="Run analysis", button_style="primary", icon="play")
        self.out = w.Output()
        self.button.on_click(lambda _: self.click())
        rows = [w.HBox([self.source, self.upload]), w.HBox([self.metric, self.margin])]
        self.widget = w.VBox([*rows, self.button, self.out])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def table(self) -> RunTable:
        """The uploaded CSV if there is one, else the chosen example."""
        files = self.upload.value
        if files:
            f = files[0] if isinstance(files, (list, tuple)) else next(iter(files.values()))
            raw = pd.read_csv(io.BytesIO(bytes(f["content"])), comment="#")
            self.tables[f["name"]] = tidy(raw, self.metric.value or None, source=f["name"])
            self.source.options = list(self.tables)
            self.source.value = f["name"]
            self.upload.value = ()
        return self.tables[self.source.value]

    def click(self) -> Any:
        self.button.disabled = True
        self.out.clear_output()
        try:
            with self.out:
                try:
                    result = analyze_table(self.table(), margin=self.margin.value)
                except RunTableError as e:
                    print(f"cannot analyse this table: {e}")
                    return None
                for line in headline(result):
                    print("-", line)
                from IPython.display import display

                for make in (figure_u_curves, figure_ratios):
                    fig = make(result)
                    display(fig)
                    plt.close(fig)
                return result
        finally:
            self.button.disabled = False
