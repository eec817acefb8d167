"""Passwords masked in URLs and messages, the rest of the text left exactly as it was."""

from __future__ import annotations

import pytest

from mendflow._redact import redact, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:////abs/state.db", "sqlite:////abs/state.db"),
        ("sqlite:///rel.db", "sqlite:///rel.db"),
        ("postgresql://h:5432/db", "postgresql://h:5432/db"),
        ("postgresql://u:pa#ss@h:5432/db?sslmode=require",
         "postgresql://u:***@h:5432/db?sslmode=require"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:s3cr%40t@h/db?password=x&sslmode=require",
         "postgresql://u:***@h/db?password=***&sslmode=require"),
        ("host=h password=abc user=u", "host=h password=*** user=u"),
        ("host=h password='a b' user=u", "host=h password=*** user=u"),
    ],
)
def test_redact_url_masks_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_masks_known_secrets_and_urls_in_a_message() -> None:
    text = 'connecting to postgresql://u:pw@h/db: password "hunter2" rejected'
    assert redact(text, ["hunter2"]) == (
        'connecting to postgresql://u:***@h/db: password "***" rejected')
