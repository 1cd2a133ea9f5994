"""Masking: every password-like part of a URL, in every form a driver takes one."""

from __future__ import annotations

import pytest
import sqlalchemy.exc

from search.study.storage import describe_storage_error, masked, url_passwords


@pytest.mark.parametrize(
    ("url", "shown", "dropped"),
    [
        ("postgresql://u:s3cret@h:5432/db", "postgresql://u:***@h:5432/db", "postgresql://u@h:5432/db"),
        (
            "postgresql+psycopg://wd@h:5/db?password=s3cret&sslmode=require",
            "postgresql+psycopg://wd@h:5/db?password=***&sslmode=require",
            "postgresql+psycopg://wd@h:5/db?sslmode=require",
        ),
        ("postgresql://u@h/db?PassWord=s3cret", "postgresql://u@h/db?PassWord=***", "postgresql://u@h/db"),
        (
            "postgresql://u:a%40b@h/db?sslpassword=s3cret",
            "postgresql://u:***@h/db?sslpassword=***",
            "postgresql://u@h/db",
        ),
        ("mysql://u@h/db?passwd=s3cret&PWD=s3cret", "mysql://u@h/db?passwd=***&PWD=***", "mysql://u@h/db"),
        # What SQLAlchemy can't parse is still masked: these are the URLs error lines show.
        ("postgresql://u:s3cret@h:abc/db", "postgresql://u:***@h:abc/db", "postgresql://u@h:abc/db"),
        ("postgresql://u:s3cret@[::1/db", "postgresql://u:***@[::1/db", "postgresql://u@[::1/db"),
        ("sqlite:///studies/a.db", "sqlite:///studies/a.db", "sqlite:///studies/a.db"),
        ("postgresql://u@h/db?passfile=/p", "postgresql://u@h/db?passfile=/p", "postgresql://u@h/db?passfile=/p"),
    ],
)  # fmt: skip
def test_masked_hides_or_drops_every_password(url: str, shown: str, dropped: str) -> None:
    assert masked(url) == shown
    assert masked(url, hidden=None) == dropped
    assert "s3cret" not in masked(url) + masked(url, hidden=None)


def test_url_passwords_finds_typed_and_decoded_forms() -> None:
    assert url_passwords("postgresql://u:a%40b@h/db?password=x1") == ["a%40b", "a@b", "x1"]


def test_describe_storage_error_scrubs_a_query_password_the_driver_echoes() -> None:
    url = "postgresql://u@h/db?password=s3cret"
    error = RuntimeError('invalid connection option "password=s3cret" in postgresql://u@h/db')
    assert "s3cret" not in describe_storage_error(error, url)


def test_describe_storage_error_reads_an_invalidated_transaction_as_unreachable() -> None:
    error = sqlalchemy.exc.PendingRollbackError(
        "Can't reconnect until invalid transaction is rolled back.  Please rollback() fully "
        "before proceeding (Background on this error at: https://sqlalche.me/e/21/8s2b)"
    )
    line = describe_storage_error(error, "postgresql://u@h/db")
    assert "the database can't be reached" in line and "sqlalche.me" not in line
