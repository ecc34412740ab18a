"""Shared fixtures: everything seeded, CPU, small."""

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
from lora_lab.threads import configure_threads  # noqa: E402

configure_threads(1)  # deterministic and quick; also marks the rule applied


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    """Markers a course fork selects by (README, "Tests"): ``browser`` for the JupyterLab
    test, ``notebooks`` for every test that executes a notebook (the ``executed`` fixture or
    an explicit mark). ``slow`` is set by hand on tests that train for seconds or more."""
    for item in items:
        if item.path.name == "test_browser.py":
            item.add_marker(pytest.mark.browser)
        if "executed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.notebooks)
