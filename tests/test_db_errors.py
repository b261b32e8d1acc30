"""Every store failure a user can cause is one StoreError line naming the problem and the fix,
with nothing created or half-written."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from sslbench.db import SCHEMA_VERSION, Store
from sslbench.db.engine import describe_db_error
from sslbench.errors import StoreError


def _one_line(exc: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as con:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _set_version(path: Path, version: str) -> None:
    with sqlite3.connect(path) as con:
        con.execute("UPDATE sslbench_meta SET value = ? WHERE key = 'schema_version'", (version,))


@pytest.mark.parametrize("stored,needle", [(str(SCHEMA_VERSION + 1), "pip install -U sslbench"),
                                           ("0", "no sslbench wrote"),
                                           ("abc", "no sslbench wrote")])
def test_newer_or_unknown_schema_version(tmp_path, stored, needle):
    """Older versions are upgraded instead: see test_db_migrations.py."""
    path = tmp_path / "s.sqlite"
    Store.open(str(path)).close()
    _set_version(path, stored)
    with pytest.raises(StoreError) as info:
        Store.open(str(path))
    _one_line(info, "schema version", stored, needle)
    with pytest.raises(StoreError):
        Store.open(str(path), create=False)  # read-only commands refuse it too


def test_foreign_sqlite_file_is_left_untouched(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    with pytest.raises(StoreError) as info:
        Store.open(f"sqlite:///{path}")
    _one_line(info, "not an sslbench store", "invoices", "--db")
    assert _tables(path) == {"invoices"}


def test_foreign_meta_table(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE sslbench_meta (key TEXT PRIMARY KEY, value TEXT)")
        con.execute("INSERT INTO sslbench_meta VALUES ('app', 'something-else')")
    with pytest.raises(StoreError) as info:
        Store.open(str(path))
    _one_line(info, "not an sslbench store")


def test_file_that_is_not_sqlite(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("these are my notes, not a database\n" * 200)
    with pytest.raises(StoreError) as info:
        Store.open(str(path))
    _one_line(info, "not a SQLite database", str(path))


def test_unwritable_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StoreError) as info:
        Store.open(str(blocker / "db" / "s.sqlite"))
    _one_line(info, "cannot create the store", "writable location")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs POSIX permissions and a non-root user")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(StoreError) as info:
            Store.open(str(folder / "s.sqlite"))
        _one_line(info, "Permission denied")
    finally:
        folder.chmod(0o755)


def test_missing_store_with_create_false_creates_nothing(tmp_path):
    with pytest.raises(StoreError) as info:
        Store.open(str(tmp_path / "db" / "s.sqlite"), create=False)
    _one_line(info, "no store at", "sslbench train", "sslbench demo")
    assert list(tmp_path.iterdir()) == []


def test_unreachable_postgresql_url():
    url = "postgresql://nobody:hunter2@127.0.0.1:1/sslbench"
    with pytest.raises(StoreError) as info:
        Store.open(url)
    message = _one_line(info)
    assert "hunter2" not in message  # passwords are never echoed
    if importlib.util.find_spec("psycopg") is None:
        assert "psycopg" in message and "pip install" in message  # which driver to install
    else:
        assert "cannot reach the database" in message and "127.0.0.1" in message


@pytest.mark.parametrize("url,needle", [
    ("mysql://u@localhost/db", "unsupported database 'mysql'"),
    ("mongodb://localhost/db", "unsupported database 'mongodb'"),
    ("sqlite+nosuchdriver:///x.sqlite", "unknown database driver"),
    ("postgresql+pg8000://u@127.0.0.1:1/db", "pg8000"),
])
def test_foreign_or_broken_urls(tmp_path, monkeypatch, url, needle):
    monkeypatch.chdir(tmp_path)
    if "pg8000" in url and importlib.util.find_spec("pg8000") is not None:
        pytest.skip("pg8000 is installed here")
    with pytest.raises(StoreError) as info:
        Store.open(url)
    _one_line(info, needle)
    assert list(tmp_path.iterdir()) == []  # nothing created for a URL that cannot work


def test_server_errors_become_one_line():
    refused = OperationalError("connect", {}, Exception(
        'connection to server at "10.0.0.5", port 5432 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?"))
    message = describe_db_error(refused, "postgresql+psycopg://u:secret@10.0.0.5/db")
    assert "\n" not in message and "secret" not in message
    assert "cannot reach the database" in message and "Connection refused" in message
    locked = OperationalError("insert", {}, Exception("database is locked"))
    assert "network filesystems" in describe_db_error(locked, "sqlite:////x.sqlite")
