"""Connecting to a store: URL resolution, engines, SQLite pragmas, schema creation and upgrades.

Every failure a user can cause (a bad or unreachable URL, a missing driver, an unwritable folder,
a foreign database, a newer schema version) becomes a one-line :class:`StoreError`.

SQLite settings (SQLite's "database is locked" guidance, the failure MLflow and Optuna users
report): on every new connection ``busy_timeout`` is set first (30 s), then WAL,
``synchronous=NORMAL`` and ``foreign_keys=ON``. pysqlite's own
transaction handling is switched off and SQLAlchemy's "begin" event emits ``BEGIN IMMEDIATE``
for write sessions (so a writer takes the write lock up front instead of failing on a lock
upgrade; it tries every few milliseconds, for as long as ``busy_timeout``) and a plain deferred
``BEGIN`` for reads. The schema is
created once, inside one transaction, under a file lock next to the database (SQLite) or a
transaction-scoped advisory lock (PostgreSQL), so processes that start together are safe. The
lock file (``<store>.sqlite.lock``, empty) stays beside the store; deleting it is harmless.

A PostgreSQL URL without a password takes it from ``SSLBENCH_DB_PASSWORD``, or from the file
that ``SSLBENCH_DB_PASSWORD_FILE`` names (readable by its owner only: a file others can read is
refused), when the engine is built (:func:`with_password`); libpq's own ``PGPASSWORD`` and
``~/.pgpass`` work too. So the URL that sslbench writes anywhere (Slurm task files, workers'
environment) need not hold the secret (:func:`split_password`).

A store of an older schema version is upgraded in place under that same lock, in one transaction
(:mod:`sslbench.db.migrations`), so of many processes opening it at once exactly one upgrades
and the others find it current. A SQLite file is first copied beside itself
(``<store>.sqlite.bak-v<N>-<UTC time>``). Nothing is printed: :func:`init_schema` returns a
:class:`SchemaUpgrade` for the caller to report. A store newer than this sslbench is refused.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, insert, inspect, select, update
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from sslbench.db import migrations
from sslbench.db.models import APP_NAME, META_TABLE, SCHEMA_VERSION, Base, Meta, utcnow
from sslbench.errors import StoreError

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: A writer waiting for SQLite's write lock tries again after 0.2 ms, doubling up to 2 ms.
LOCK_RETRY_S = (0.0002, 0.002)
_BUSY_TIMEOUT = "sslbench_busy_timeout_ms"
#: Execution option that marks a write engine (BEGIN IMMEDIATE on SQLite).
WRITE_OPTION = "sslbench_write"
#: Key of the PostgreSQL advisory lock that serialises schema creation ("sslbench" in ASCII).
_PG_LOCK_KEY = 0x73736C62656E6368
_SUPPORTED = ("sqlite", "postgresql")
_URL_FORMS = "sqlite:///PATH or postgresql+psycopg://USER@HOST[:PORT]/DBNAME"
_DRIVER_HINTS = {
    "psycopg2": "pip install psycopg2-binary (or pip install 'psycopg[binary]' and use a "
                "postgresql+psycopg:// URL)",
    "psycopg": "pip install 'psycopg[binary]'",
    "pg8000": "pip install pg8000",
    "asyncpg": "use a synchronous driver: pip install 'psycopg[binary]' and a "
               "postgresql+psycopg:// URL",
}


def default_url() -> str:
    """``sqlite:///$SSLBENCH_HOME/db/sslbench.sqlite`` (``SSLBENCH_HOME`` defaults to ``.``)."""
    home = Path(os.environ.get("SSLBENCH_HOME") or ".").expanduser().resolve()
    return f"sqlite:///{home / 'db' / 'sslbench.sqlite'}"


def resolve_url(url: str | None = None) -> str:
    """The store URL: explicit ``url`` > ``$SSLBENCH_DB`` > :func:`default_url`.

    A value without ``://`` is taken as the path of a SQLite file (``--db results.sqlite``).
    """
    chosen = url or os.environ.get("SSLBENCH_DB") or default_url()
    if "://" not in chosen:
        chosen = f"sqlite:///{Path(chosen).expanduser().resolve()}"
    return chosen


#: Where a store URL without a password finds it: the password itself, or a file holding it.
PASSWORD_ENV, PASSWORD_FILE_ENV = "SSLBENCH_DB_PASSWORD", "SSLBENCH_DB_PASSWORD_FILE"


def read_password_file(path: str) -> str:
    """The first line of the password file ``path``; a one-line StoreError when it is missing,
    empty, or readable by anyone but its owner."""
    where = f"{PASSWORD_FILE_ENV}={path}"
    try:
        mode = os.stat(path).st_mode
        if mode & 0o077:
            raise StoreError(f"{where}: the password file is readable by others (mode "
                             f"{mode & 0o777:04o}): chmod 600 {path}")
        with open(path, encoding="utf-8") as handle:
            secret = handle.readline().rstrip("\r\n")
    except OSError as err:
        raise StoreError(f"{where}: cannot read the password file ({err.strerror})") from None
    if not secret:
        raise StoreError(f"{where}: the password file is empty: put the password on its first "
                         "line")
    return secret


def with_password(url: URL) -> URL:
    """``url`` with the password of the environment (see the module docstring) when it has
    none; SQLite URLs as they are."""
    if url.password is not None or url.get_backend_name() == "sqlite":
        return url
    secret = os.environ.get(PASSWORD_ENV) or None
    path = os.environ.get(PASSWORD_FILE_ENV)
    if secret is None and path:
        secret = read_password_file(path)
    return url if secret is None else url.set(password=secret)


def connect_url(url: str) -> str:
    """``url`` as text with the environment's password in it, for libraries that build their
    own engine (Optuna): kept in memory, never written."""
    return with_password(parse_url(url)).render_as_string(hide_password=False)


def split_password(url: str) -> tuple[str, str | None]:
    """``(url without its password, the password or None)``."""
    parsed = make_url(url)
    if parsed.password is None:
        return url, None
    secret = str(parsed.password)
    bare = URL.create(parsed.drivername, username=parsed.username, host=parsed.host,
                      port=parsed.port, database=parsed.database, query=parsed.query)
    return bare.render_as_string(hide_password=False), secret


def parse_url(url: str) -> URL:
    """A SQLAlchemy URL of a supported backend, or a one-line StoreError (password masked)."""
    try:
        parsed = make_url(url)
        port = parsed.port
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise StoreError(f"invalid database URL {_mask_password(url)!r}: use "
                         f"{_URL_FORMS}") from None
    backend = parsed.get_backend_name()
    if backend not in _SUPPORTED:
        raise StoreError(f"unsupported database {backend!r} in {safe_url(parsed)}: sslbench "
                         "stores results in SQLite (sqlite:///PATH) or PostgreSQL "
                         "(postgresql+psycopg://...)")
    if port is not None and not 0 < port < 65536:
        raise StoreError(f"invalid port {port} in the database URL {safe_url(parsed)!r}: use "
                         f"a port from 1 to 65535 ({_URL_FORMS})")
    if backend == "sqlite" and (parsed.host or parsed.username):
        # sqlite://name/x would silently be an in-memory store: a slash is missing.
        raise StoreError(f"invalid SQLite URL {safe_url(parsed)!r}: a SQLite URL has no host; "
                         "use sqlite:///relative/path or sqlite:////absolute/path")
    return parsed


def safe_url(url: URL | str) -> str:
    """The URL with its password masked, for messages (also when it cannot be parsed)."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return _mask_password(url)


def _mask_password(text: str) -> str:
    """``scheme://user:***@rest`` for text that is no valid URL (masks too much, never too
    little: everything from the first ':' after the user name to the last '@')."""
    return re.sub(r"^([^:/]*://[^:/@]*:).*@", r"\1***@", text)


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL, or None for an in-memory database."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve()


def build_engine(url: URL, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> Engine:
    """An engine with sslbench's connection settings; driver import errors become StoreError.
    ``busy_timeout_ms``: how long a SQLite statement waits for another writer's lock."""
    try:
        engine = create_engine(with_password(url),
                               pool_pre_ping=url.get_backend_name() != "sqlite")
    except NoSuchModuleError:
        raise StoreError(f"unknown database driver in {safe_url(url)}: use sqlite:///PATH or "
                         "postgresql+psycopg://USER@HOST/DBNAME") from None
    except ImportError as exc:
        name = (getattr(exc, "name", None) or str(exc)).split(".")[0]
        hint = _DRIVER_HINTS.get(name, f"pip install {name}")
        raise StoreError(f"the database driver {name!r} needed for {safe_url(url)} is not "
                         f"installed: {hint}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", functools.partial(_sqlite_on_connect,
                                                          busy_timeout_ms=busy_timeout_ms))
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: object, record: Any, *,
                       busy_timeout_ms: int) -> None:
    # Take transaction control away from pysqlite: SQLAlchemy's "begin" event emits BEGIN.
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
    record.info[_BUSY_TIMEOUT] = busy_timeout_ms
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")  # first: waits below
        mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
        if mode not in ("wal", "memory"):
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    if not conn.get_execution_options().get(WRITE_OPTION, False):
        conn.exec_driver_sql("BEGIN")
        return
    # SQLite's own lock wait sleeps up to 100 ms between tries, so with several writers the
    # lock stays free while they sleep (8 processes logging into one file: a third of the
    # throughput lost). Writers try again every few milliseconds instead, as long in all.
    wait_ms = conn.info.get(_BUSY_TIMEOUT, SQLITE_BUSY_TIMEOUT_MS)
    deadline, pause = time.monotonic() + wait_ms / 1000, LOCK_RETRY_S[0]
    conn.exec_driver_sql("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if "locked" not in str(exc.orig) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(2 * pause, LOCK_RETRY_S[1])
    finally:
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(wait_ms)}")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (created if missing), held for the block."""
    handle = open(path, "a+b")
    try:
        if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # closing the descriptor releases the lock


def describe_db_error(exc: DBAPIError, url: URL | str) -> str:
    """One line for a driver error: the driver's first line plus what to try."""
    first = _first_line(exc)
    where = safe_url(url)
    low = first.lower()
    if "not a database" in low:
        return f"{where} is not a SQLite database ({first}): point --db / SSLBENCH_DB at a new file"
    if "readonly" in low or "read-only" in low:
        return f"the store {where} is read-only ({first}): use a writable --db or SSLBENCH_HOME"
    if "locked" in low:
        seconds = SQLITE_BUSY_TIMEOUT_MS // 1000
        return (f"the store {where} stayed locked for {seconds} s ({first}): keep SQLite files "
                "off network filesystems, or use PostgreSQL for many writers")
    parsed = url if isinstance(url, URL) else make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return (f"cannot open the SQLite store {where} ({first}): check that the path is a "
                "readable and writable file, or point --db / SSLBENCH_DB elsewhere")
    return (f"cannot reach the database {where} ({first}): check that the server is running "
            "and reachable and that --db / SSLBENCH_DB is right")


def _first_line(exc: DBAPIError) -> str:
    """The driver's message, first line only (PostgreSQL adds hints and context lines)."""
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc.orig or exc).__name__


def prepare_sqlite_folder(path: Path, create: bool) -> None:
    """Check (create=False) or create (create=True) what a SQLite file store needs on disk."""
    if not create:
        if not path.is_file():
            raise StoreError(f"no store at {path}: run `sslbench train` or `sslbench demo` first "
                             "(or point --db / SSLBENCH_DB at an existing store)")
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if exc.filename:
            reason = f"{reason}: {exc.filename}"
        raise StoreError(f"cannot create the store {path} ({reason}): choose a writable location "
                         "with --db, SSLBENCH_DB or SSLBENCH_HOME") from None


@dataclass(frozen=True)
class SchemaUpgrade:
    """What :func:`init_schema` did to an older store, for the caller to tell the user."""

    from_version: int
    to_version: int
    #: The copy of the SQLite file taken before the upgrade (None on PostgreSQL).
    backup_path: Path | None


def init_schema(engine: Engine, url: URL, *, create: bool) -> SchemaUpgrade | None:
    """Create the schema if the database is empty, upgrade it in place if it is older than this
    sslbench, refuse it if it is foreign or newer. Returns what an upgrade did, else None."""
    path = sqlite_path(url) if engine.dialect.name == "sqlite" else None
    try:
        with _schema_lock(path, create):
            with engine.execution_options(**{WRITE_OPTION: create}).begin() as conn:
                _lock_postgres(conn)
                found = _ensure_schema(conn, url, create=create)
            if found == SCHEMA_VERSION:
                return None
            _require_writable(path, found)
            return _upgrade(engine, url, path)
    except DBAPIError as exc:
        raise StoreError(describe_db_error(exc, url)) from None


def _schema_lock(path: Path | None, create: bool) -> contextlib.AbstractContextManager[None]:
    """The file lock beside a SQLite store (none where the folder is read-only: nothing can be
    created or upgraded there anyway); PostgreSQL locks in the transaction instead."""
    if path is None or not (create or os.access(path.parent, os.W_OK)):
        return contextlib.nullcontext()
    return file_lock(path.with_name(path.name + ".lock"))


def _lock_postgres(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")


def _ensure_schema(conn: Connection, url: URL, *, create: bool) -> int:
    """Create the schema if the database is empty; check it is ours and not newer than this
    sslbench. Returns its schema version."""
    tables = set(inspect(conn).get_table_names())
    where = safe_url(url)
    if META_TABLE not in tables:
        if tables:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise StoreError(f"{where} is not an sslbench store (it holds other tables: {shown}): "
                             "point --db / SSLBENCH_DB at a new file or an empty database")
        if not create:
            raise StoreError(f"no store at {where}: run `sslbench train` or `sslbench demo` first")
        Base.metadata.create_all(conn)
        migrations.stamp_head(conn)
        now = utcnow().isoformat()
        conn.execute(insert(Meta), [
            {"key": "app", "value": APP_NAME},
            {"key": "schema_version", "value": str(SCHEMA_VERSION)},
            {"key": "created_at", "value": now},
        ])
        return SCHEMA_VERSION
    return _stored_version(conn, where)


def _stored_version(conn: Connection, where: str) -> int:
    meta = {key: value for key, value in conn.execute(select(Meta.key, Meta.value))}
    if meta.get("app") != APP_NAME:
        raise StoreError(f"{where} is not an sslbench store (its {META_TABLE} table belongs to "
                         "something else): point --db / SSLBENCH_DB at a new file")
    return check_version(meta.get("schema_version"), where)


def check_version(stored: str | None, where: str) -> int:
    """The schema version as a number; a newer or unknown one is refused, saying what to do."""
    try:
        version = int(stored or "")
    except ValueError:
        version = 0
    if version > SCHEMA_VERSION:
        raise StoreError(f"the store {where} has schema version {version}, newer than this "
                         f"sslbench's {SCHEMA_VERSION}: upgrade sslbench (pip install -U sslbench) "
                         "or use another --db")
    if version < 1:
        raise StoreError(f"the store {where} has schema version {stored!r}, which no sslbench "
                         "wrote: point --db / SSLBENCH_DB at another store or a new file")
    return version


def _require_writable(path: Path | None, version: int) -> None:
    """An upgrade writes the file, its WAL beside it and a backup: refuse before trying."""
    if path is None or (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        return  # PostgreSQL: a read-only role fails the upgrade's first statement instead
    what = "file" if not os.access(path, os.W_OK) else "folder"
    raise StoreError(f"the store {path} has schema version {version} and this sslbench needs "
                     f"{SCHEMA_VERSION}, but its {what} is not writable, so it cannot be upgraded "
                     "in place: run a command that writes the store (sslbench train, sweep, "
                     "demo) as a user who can write it, or copy the store somewhere writable "
                     "and use --db COPY")


def _upgrade(engine: Engine, url: URL, path: Path | None) -> SchemaUpgrade | None:
    """Back up (SQLite) and migrate to this sslbench's version, in one write transaction."""
    with _migration_connection(engine) as conn, conn.begin():
        _lock_postgres(conn)
        # Read again under the lock: another process may have upgraded meanwhile.
        found = _stored_version(conn, safe_url(url))
        if found == SCHEMA_VERSION:
            return None
        backup = backup_sqlite(path, found) if path is not None else None
        try:
            migrations.upgrade(conn, found)
            conn.execute(update(Meta).where(Meta.key == "schema_version")
                         .values(value=str(SCHEMA_VERSION)))
        except DBAPIError as exc:
            kept = f"; a copy from before is at {backup}" if backup is not None else ""
            raise StoreError(f"upgrading the store {safe_url(url)} from schema version {found} "
                             f"to {SCHEMA_VERSION} failed ({_first_line(exc)}), so it was left "
                             f"as it was{kept}: use the sslbench that wrote it, or report this "
                             "error to sslbench's maintainers") from None
    return SchemaUpgrade(found, SCHEMA_VERSION, backup)


@contextlib.contextmanager
def _migration_connection(engine: Engine) -> Iterator[Connection]:
    """A write connection, on SQLite with foreign keys off: a revision that recreates a table
    (batch mode) drops the old one, which with foreign keys on would first delete every row
    pointing at it (ON DELETE CASCADE). The pragma only works outside a transaction."""
    with engine.execution_options(**{WRITE_OPTION: True}).connect() as conn:
        if engine.dialect.name != "sqlite":
            yield conn
            return
        raw = conn.connection.driver_connection
        assert raw is not None  # None only once the connection is closed or invalidated
        raw.execute("PRAGMA foreign_keys = OFF")
        try:
            yield conn
        finally:
            raw.execute("PRAGMA foreign_keys = ON")  # the pooled connection is reused


def backup_sqlite(path: Path, version: int) -> Path:
    """Copy the SQLite store to ``<store>.bak-v<version>-<UTC time>`` beside it and return that
    path. The backup API, not a file copy: it includes what is still in the WAL file."""
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.bak-v{version}-{stamp}")
    for n in range(2, 1000):  # never overwrite an earlier backup
        if not target.exists():
            break
        target = path.with_name(f"{path.name}.bak-v{version}-{stamp}-{n}")
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)) \
                as source, contextlib.closing(sqlite3.connect(target)) as copy:
            source.backup(copy)
    except (sqlite3.Error, OSError) as exc:
        target.unlink(missing_ok=True)
        raise StoreError(f"cannot back up the store {path} to {target.name} before upgrading it "
                         f"to schema version {SCHEMA_VERSION} ({exc}): free some disk space "
                         "there, or copy the store elsewhere and use --db COPY") from None
    return target
