"""Shared fixtures: everything seeded, CPU, small; the suite spread over the machine's cores.

With pytest-xdist installed (the ``dev`` extra), ``python -m pytest`` runs on one worker
per core (at most :data:`MAX_WORKERS`; one torch thread each), unless ``-n`` or ``-p
no:xdist`` says otherwise. Each notebook is one unit of scheduling
(:func:`pytest_xdist_make_scheduler`): its browser run and every test reading its records
land on one worker, in that order, so the notebook is executed once, in JupyterLab, and its
records are read from the saved copy (:func:`executed_notebooks`); without the browser
test, the records come from papermill.
"""

import os
import re

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
    """``-n <cores>`` by default where pytest-xdist is installed; ``-n 0`` (or ``-p
    no:xdist``) runs in this process."""
    if hasattr(config, "workerinput") or not hasattr(config.option, "numprocesses"):
        return
    if config.option.numprocesses is None:
        workers = min(_cpus(), MAX_WORKERS)
        config.option.numprocesses = workers if workers > 1 else None


# modules whose tests share a library slow to import, run on one worker so only one pays it
# (peft ~3-6 s, nbformat's jsonschema format checkers ~3-8 s on a 2-core machine)
ONE_WORKER_MODULES = ("tests/test_peft_crosscheck.py", "tests/test_exercises.py")
NOTEBOOK_PARAM = re.compile(r"\[(\d\d_\w+?)(?:\.ipynb)?\]$")
NOTEBOOK_TEST = re.compile(r"::test_(\d\d)_")


def notebook_scope(nodeid: str) -> str | None:
    """The notebook a test id belongs to: its ``[NN_name]`` parameter, or ``notebook NN``
    for a ``test_NN_...`` name (None for every test outside the two notebook modules)."""
    if not nodeid.startswith(("tests/test_browser.py", "tests/test_notebooks.py")):
        return None
    if m := NOTEBOOK_PARAM.search(nodeid):
        return m.group(1)
    if m := NOTEBOOK_TEST.search(nodeid):
        return f"notebook {m.group(1)}"
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Load balancing test by test, except that the tests of one notebook (its browser run
    first, then the tests reading its records) go to one worker as a unit, and so do those
    of each module in :data:`ONE_WORKER_MODULES`. pytest-xdist's
    own ``--dist loadgroup`` does not group under pytest 9.2 (it renames node ids through an
    attribute pytest no longer reads), so the unit is chosen here, from the test id."""
    if config.option.dist != "load":
        return None  # a --dist the user chose
    from xdist.scheduler import LoadScopeScheduling

    stems = {p.stem[:2]: p.stem for p in (config.rootpath / "notebooks").glob("*.ipynb")}

    class NotebookScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = notebook_scope(nodeid)
            if scope and scope.startswith("notebook "):
                scope = stems.get(scope.split()[1], scope)
            if scope is None and nodeid.startswith(ONE_WORKER_MODULES):
                scope = nodeid.split("::", 1)[0]
            return scope or nodeid

    return NotebookScheduling(config, log)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def executed_notebooks() -> dict:
    """Notebook stem -> path of a copy this worker executed in full (the browser test fills
    it after a clean Run All; the papermill tests read records from it before executing)."""
    return {}


def pytest_collection_modifyitems(config, items):
    """Markers a course fork selects by (README, "Tests"): ``browser`` for the JupyterLab
    test, ``notebooks`` for every test that executes a notebook (the ``executed`` fixture or
    an explicit mark). ``slow`` is set by hand on tests that train for seconds or more."""
    for item in items:
        if item.path.name == "test_browser.py":
            item.add_marker(pytest.mark.browser)
        if "executed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.notebooks)
