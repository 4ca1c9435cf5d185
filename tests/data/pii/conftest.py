"""Fixtures for the PII tests: one analyzer for the whole session (building it takes ~0.1 s,
importing Presidio a few seconds), shared by every Redactor."""

from __future__ import annotations

import pytest

SECRET = "test-secret-0123456789abcdef"
OTHER_SECRET = "another-secret-9876543210fedcba"


@pytest.fixture(scope="session")
def secrets() -> tuple[str, str]:
    """The secret every ``make_redactor`` uses by default, and another one."""
    return SECRET, OTHER_SECRET


@pytest.fixture(scope="session")
def analyzer():
    from ayar.data.pii.engine import build_analyzer

    return build_analyzer()


@pytest.fixture(scope="session")
def masker(analyzer):
    """A Redactor with the default configuration: every entity type masked."""
    from ayar.data.pii import Redactor

    return Redactor(analyzer=analyzer)


@pytest.fixture(scope="session")
def make_redactor(analyzer):
    """Build a Redactor from config keyword arguments, sharing the session's analyzer."""
    from ayar.data.pii import RedactionConfig, Redactor

    def make(secret: str | None = SECRET, **config):
        return Redactor(RedactionConfig(**config), secret=secret, analyzer=analyzer)

    return make
