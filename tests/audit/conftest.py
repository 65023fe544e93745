"""Fixtures for the audit tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.audit.audit_support import fill_chain


@pytest.fixture
def chain_filler(db: Any) -> Callable[..., list[int]]:
    return fill_chain
