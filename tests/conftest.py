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
