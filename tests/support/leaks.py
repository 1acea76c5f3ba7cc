"""A fixture that fails a test which leaves a resource open (aiohttp's "Unclosed client session",
unclosed sockets and transports): everything that warns ResourceWarning when collected."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator

import pytest


@pytest.fixture
def no_resource_leaks() -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaks = [str(warning.message) for warning in caught if issubclass(warning.category, ResourceWarning)]
    assert not leaks, f"resources left open: {leaks}"
