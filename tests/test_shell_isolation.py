"""The suite must not depend on the shell it runs in: an ATELIER_API_KEYS (or a database, a
broker...) exported for a manual run would otherwise switch on keys in every app under test."""

from __future__ import annotations

from conftest import shell_settings_variables

from app.core.config import Settings


def test_shell_settings_are_hidden_from_tests() -> None:
    assert shell_settings_variables() == []
    settings = Settings()
    assert settings.api_key_list == []
    assert (settings.database_url, settings.broker_url, settings.rate_limit) == (None, None, None)
