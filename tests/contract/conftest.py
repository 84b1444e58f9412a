"""The ``backend`` fixture: every contract template runs once per backend from the same test body."""

from __future__ import annotations

import pytest

from tests.contract.backends import BACKENDS


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param
