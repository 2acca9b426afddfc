"""The PostgreSQL DSN survives a generated password: user and password are percent-encoded."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from reelfab.settings import Settings


def test_a_password_with_url_delimiters_stays_the_password() -> None:
    settings = Settings(postgres_user="re@lfab", postgres_password="p/a#s:s@w?rd", postgres_host="db",
                        postgres_port=6543, postgres_db="reelfab")
    parts = urlsplit(settings.postgres_dsn)
    assert (parts.hostname, parts.port, parts.path) == ("db", 6543, "/reelfab")
    assert (unquote(parts.username or ""), unquote(parts.password or "")) == ("re@lfab", "p/a#s:s@w?rd")


def test_no_password_no_colon() -> None:
    assert Settings(postgres_user="reelfab", postgres_password="").postgres_dsn.startswith("postgresql://reelfab@")
