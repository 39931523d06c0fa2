"""Fixtures of the I/O tests; the helpers live in io_cases.py (a unique module name: several
test folders have a conftest.py, so none may be imported by name)."""

import pytest

from io_cases import make_raw


@pytest.fixture
def small_raw():
    return make_raw
