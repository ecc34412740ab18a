"""Shared fixtures: everything seeded, CPU, small; the suite spread over the machine's cores.

With pytest-xdist installed (the ``dev`` extra), ``python -m pytest`` runs on one worker
per core (at most :data:`MAX_WORKERS`; one torch thread each), unless ``-n`` or ``-p
no:xdist`` says otherwise. Each notebook is a group (``--dist loadgroup``): its browser run
and every test reading its records land on one worker, in that order, so the notebook is
executed once, in JupyterLab, and its records are read from the saved copy
(:func:`executed_notebooks`); without the browser test, the records come from papermill.
"""

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
from lora_lab.threads import configure_threads  # noqa: E402

configure_threads(1)  # deterministic and quick; also marks the rule applied
MAX_WORKERS = 4  # beyond that, JupyterLab + Chromium per worker cost more than they save


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@pytest.hookimpl(tryfirst=True)  # before xdist turns the options into a session
def pytest_cmdline_main(config):
    """``-n <cores> --dist loadgroup`` by default where pytest-xdist is installed; ``-n 0``
    (or ``-p no:xdist``) runs in this process."""
    if not hasattr(config.option, "numprocesses") or hasattr(config, "workerinput"):
        return
    if config.option.numprocesses is None:
        workers = min(_cpus(), MAX_WORKERS)
        config.option.numprocesses = workers if workers > 1 else None
    if config.option.numprocesses and config.option.dist == "no":
        config.option.dist = "loadgroup"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def executed_notebooks() -> dict:
    """Notebook stem -> path of a copy this worker executed in full (the browser test fills
    it after a clean Run All; the papermill tests read records from it before executing)."""
    return {}


def notebook_group(item) -> str | None:
    """The notebook an item executes or reads: its ``notebook`` / ``path`` / ``stem``
    parameter, or the two digits a test named ``test_NN_...`` starts with."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    for key in ("notebook", "path", "stem"):
        if key in params:
            return str(params[key]).rsplit("/", 1)[-1].removesuffix(".ipynb")
    name = item.originalname if hasattr(item, "originalname") else item.name
    parts = name.split("_")
    if len(parts) > 2 and parts[1].isdigit():
        prefix = parts[1]
        for nb in (item.config.rootpath / "notebooks").glob(f"{prefix}_*.ipynb"):
            return nb.stem
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups off the marks
def pytest_collection_modifyitems(config, items):
    """Markers a course fork selects by (README, "Tests"): ``browser`` for the JupyterLab
    test, ``notebooks`` for every test that executes a notebook (the ``executed`` fixture or
    an explicit mark). ``slow`` is set by hand on tests that train for seconds or more.
    Every test of one notebook's execution joins that notebook's xdist group."""
    for item in items:
        browser = item.path.name == "test_browser.py"
        executes = "executed" in getattr(item, "fixturenames", ())
        if browser:
            item.add_marker(pytest.mark.browser)
        if executes:
            item.add_marker(pytest.mark.notebooks)
        if browser or executes:
            group = notebook_group(item)
            if group:
                item.add_marker(pytest.mark.xdist_group(group))
