"""A reusable control panel: pick rank, LR, batch size, targets and steps, train live.

The Run button calls :func:`run_from_controls`, a plain function that tests call directly.
Nothing trains at import or display time, so headless notebook execution never blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lora_lab.lora import LoraConfig
from lora_lab.plots import guard_mathtext, legend_outside
from lora_lab.sweeps.lr_search import lattice_index, lattice_lr
from lora_lab.training.methods import FullFT
from lora_lab.training.sft import RunResult, train

TARGETS = {"all layers": "all", "MLP only": "mlp", "attention only": "attn"}


def run_from_controls(
    base: Any,
    data: Any,
    *,
    rank: int,
    lr: float,
    batch_size: int,
    targets: str,
    steps: int,
    full_ft: bool = False,
    eval_data: Any = None,
    eval_limit: int | None = 512,
    seed: int = 0,
    callback: Callable[[int, dict], None] | None = None,
    progress: bool = False,
    warmup_steps: int = 0,
) -> RunResult:
    """Train one run from panel values (``rank=0`` or ``full_ft`` means FullFT). Give the
    ``eval_limit`` of the sweep a panel draws over, so both curves use the same examples."""
    method: Any = (
        FullFT()
        if full_ft or rank == 0
        else LoraConfig(
            r=int(rank),
            target_modules=TARGETS.get(targets, targets) if isinstance(targets, str) else targets,
        )
    )
    return train(
        base,
        data,
        method,
        lr=lr,
        steps=int(steps),
        batch_size=int(batch_size),
        eval_data=eval_data,
        eval_limit=eval_limit,
        seed=seed,
        callback=callback,
        progress=progress,
        evals_per_decade=6,
        warmup_steps=int(warmup_steps),
    )


WIDE = {"description_width": "initial"}  # labels shown whole, never cut to "rank (0=F…"


def lr_options(
    value: float, low: float = 1e-5, high: float = 1e-1, per_decade: int = 6
) -> list[tuple[str, float]]:
    """(label, value) pairs for an exact LR control: the search lattice (6 per decade: the
    values the sweeps measured) plus ``value`` itself, so the control never snaps a value
    a notebook names (5.6e-3 stays 5.6e-3)."""
    ks = range(lattice_index(low, per_decade), lattice_index(high, per_decade) + 1)
    values = sorted({lattice_lr(k, per_decade) for k in ks} | {float(value)})
    return [(f"{v:.3g}", v) for v in values]


def rank_options(ranks: tuple[int, ...]) -> list[tuple[str, int]]:
    """(label, value) pairs for a rank control; 0 is full fine-tuning, labelled so."""
    return [("FullFT" if r == 0 else str(r), r) for r in ranks]


class LivePanel:
    """What every panel shares: a Run button, a progress bar, an output area that redraws a
    live plot after each evaluation, and the notebook display hook."""

    def _build(self, rows: list[list[Any]], steps: int) -> None:
        import ipywidgets as w

        guard_mathtext()  # Run draws from a widget thread (JupyterLab's kernel subshells)

        self.button = w.Button(description="Run", button_style="primary", icon="play")
        self.bar = w.IntProgress(value=0, min=0, max=steps, description="progress")
        self.out = w.Output()
        self.result: RunResult | None = None
        self.running = False
        self.button.on_click(lambda _: self.click())
        self.widget = w.VBox(
            [w.HBox(r) for r in rows] + [w.HBox([self.button, self.bar]), self.out]
        )

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def run(self) -> RunResult:  # pragma: no cover - every panel defines it
        raise NotImplementedError

    def click(self) -> RunResult | None:
        """What the Run button does: one run at a time. The button is disabled (and says
        so) while training, so a second click cannot queue a second full run."""
        if self.running:
            return None
        self.running = True
        self.button.disabled, self.button.description = True, "Running…"
        try:
            return self.run()
        finally:
            self.running = False
            self.button.disabled, self.button.description = False, "Run"

    def _live(
        self, steps: int, draw: Callable[[Any, list[dict]], None], x: str = "step",
        xlabel: str | None = None,
    ) -> Callable:  # fmt: skip
        """A ``train`` callback: collect each evaluation row and redraw with ``draw(ax, rows)``
        on a log ``x`` axis (``"step"`` or ``"examples"``, the row field ``draw`` plots;
        ``xlabel`` names it, e.g. "episodes" for RL)."""
        import matplotlib.pyplot as plt

        self.bar.max, self.bar.value = steps, 0
        rows: list[dict] = []

        def redraw(step: int, row: dict) -> None:
            if step > 0:  # a log step axis has no 0; the start is the reference curves' too
                rows.append(row)
            self.bar.value = step
            if not rows:
                return
            with self.out:
                self.out.clear_output(wait=True)
                fig, ax = plt.subplots(figsize=(9.5, 4))
                draw(ax, rows)
                ax.set_xscale("log")
                name = xlabel or ("examples seen" if x == "examples" else x)
                ax.set_xlabel(f"{name} (log)")
                legend_outside(ax)  # beside the plot: the live curve is never covered
                fig.tight_layout()
                plt.show()
                plt.close(fig)  # one live figure, not one per evaluation

        return redraw

    def _finish(self, result: RunResult) -> RunResult:
        self.result = result
        if result.diverged:
            with self.out:
                print(f"diverged at step {int(result.final['steps_done'])}: lower the LR")
        return result


class ControlPanel(LivePanel):
    """ipywidgets panel with a live loss plot. ``overlay(ax)`` may draw reference curves
    (e.g. a sweep's results) under the live run."""

    def __init__(
        self,
        base: Any,
        data: Any,
        eval_data: Any = None,
        *,
        rank: int = 4,
        lr: float = 1e-3,
        batch_size: int = 32,
        steps: int = 200,
        ranks: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64),
        overlay: Callable[[Any], None] | None = None,
        eval_limit: int | None = 512,
    ) -> None:
        import ipywidgets as w

        self.base, self.data, self.eval_data, self.overlay = base, data, eval_data, overlay
        self.eval_limit = eval_limit  # the overlaid sweep's, so both curves share examples
        self.rank = w.SelectionSlider(
            options=rank_options(ranks), value=rank, description="rank", style=WIDE
        )
        self.lr = w.SelectionSlider(
            options=lr_options(lr), value=float(lr), description="learning rate", style=WIDE
        )
        self.batch = w.Dropdown(
            options=[8, 16, 32, 64, 128], value=batch_size, description="batch", style=WIDE
        )
        self.targets = w.ToggleButtons(
            options=list(TARGETS), value="all layers", description="targets"
        )
        self.steps = w.IntSlider(value=steps, min=10, max=2000, step=10, description="steps")
        self._build([[self.rank, self.lr, self.batch], [self.targets, self.steps]], steps)

    def values(self) -> dict[str, Any]:
        return {
            "rank": self.rank.value,
            "lr": self.lr.value,
            "batch_size": self.batch.value,
            "targets": self.targets.value,
            "steps": self.steps.value,
        }

    def run(self) -> RunResult:
        vals = self.values()
        name = "FullFT" if vals["rank"] == 0 else f"r={vals['rank']}"

        def draw(ax: Any, rows: list[dict]) -> None:
            if self.overlay is not None:
                self.overlay(ax)
            xs = [r["step"] for r in rows]
            ys = [r["eval_loss"] for r in rows]
            label = f"live: {name}, lr={vals['lr']:.3g}"
            ax.plot(xs, ys, "o-", color="crimson", lw=2.5, label=label)
            ax.set_ylabel("eval loss")

        callback = self._live(vals["steps"], draw)
        return self._finish(
            run_from_controls(
                self.base,
                self.data,
                eval_data=self.eval_data,
                eval_limit=self.eval_limit,
                callback=callback,
                **vals,
            )  # fmt: skip
        )
