from __future__ import annotations

import os

import pytest
import torch
from parity_helpers import find_fixture_dir


def pytest_configure(config):
    torch.set_num_threads(max(1, torch.get_num_threads()))


@pytest.fixture(scope="session")
def fixture_dir():
    d = find_fixture_dir()
    if d is None or not d.is_dir():
        pytest.skip("no parity fixture directory (set MRFA_FIXTURES or provide ../shared/fixtures)")
    return d


# Triton reads TRITON_INTERPRET when a kernel is decorated, so it must be set before the kernel module is
# imported: on a machine without a GPU the Triton lookup kernel runs in Triton's CPU interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
