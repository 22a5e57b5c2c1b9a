from __future__ import annotations

import os

import pytest
import torch
from parity_helpers import fixture_files


def pytest_configure(config):
    torch.set_num_threads(max(1, torch.get_num_threads()))


@pytest.fixture(scope="session")
def parity_fixtures():
    """Every parity fixture file (the repository's set plus ``$MRFA_FIXTURES``)."""
    files = fixture_files()
    if not files:
        pytest.fail("no parity fixture found (tests/fixtures/parity is missing and MRFA_FIXTURES is not set)")
    return files


# Triton reads TRITON_INTERPRET when a kernel is decorated, so it must be set before the kernel module is
# imported: on a machine without a GPU the Triton lookup kernel runs in Triton's CPU interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
