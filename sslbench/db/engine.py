"""Connecting to a store: URL resolution, engines, SQLite pragmas, schema creation and checks.

Every failure a user can cause (a bad or unreachable URL, a missing driver, an unwritable folder,
a foreign database, another schema version) becomes a one-line :class:`StoreError`.

SQLite settings (ANCHORS.md §2, "database is locked"): on every new connection ``busy_timeout``
is set first (30 s), then WAL, ``synchronous=NORMAL`` and ``foreign_keys=ON``. pysqlite's own
transaction handling is switched off and SQLAlchemy's "begin" event emits ``BEGIN IMMEDIATE``
for write sessions (so a writer takes the write lock up front, where ``busy_timeout`` applies,
instead of failing on a lock upgrade) and a plain deferred ``BEGIN`` for reads. The schema is
created once, inside one transaction, under a file lock next to the database (SQLite) or a
transaction-scoped advisory lock (PostgreSQL), so processes that start together are safe. The
lock file (``<store>.sqlite.lock``, empty) stays beside the store; deleting it is harmless.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from sslbench.db.models import APP_NAME, META_TABLE, SCHEMA_VERSION, Base, Meta, utcnow
from sslbench.errors import StoreError

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Execution option that marks a write engine (BEGIN IMMEDIATE on SQLite).
WRITE_OPTION = "sslbench_write"
#: Key of the PostgreSQL advisory lock that serialises schema creation ("sslbench" in ASCII).
_PG_LOCK_KEY = 0x73736C62656E6368
_SUPPORTED = ("sqlite", "postgresql")
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


def parse_url(url: str) -> URL:
    """A SQLAlchemy URL of a supported backend, or a one-line StoreError."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"invalid database URL {url!r}: use sqlite:///PATH or "
                         "postgresql+psycopg://USER@HOST/DBNAME") from None
    backend = parsed.get_backend_name()
    if backend not in _SUPPORTED:
        raise StoreError(f"unsupported database {backend!r} in {safe_url(parsed)}: sslbench "
                         "stores results in SQLite (sqlite:///PATH) or PostgreSQL "
                         "(postgresql+psycopg://...)")
    return parsed


def safe_url(url: URL | str) -> str:
    """The URL with its password masked, for messages."""
    parsed = url if isinstance(url, URL) else make_url(url)
    return parsed.render_as_string(hide_password=True)


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL, or None for an in-memory database."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve()


def build_engine(url: URL) -> Engine:
    """An engine with sslbench's connection settings; driver import errors become StoreError."""
    try:
        engine = create_engine(url, pool_pre_ping=url.get_backend_name() != "sqlite")
    except NoSuchModuleError:
        raise StoreError(f"unknown database driver in {safe_url(url)}: use sqlite:///PATH or "
                         "postgresql+psycopg://USER@HOST/DBNAME") from None
    except ImportError as exc:
        name = (getattr(exc, "name", None) or str(exc)).split(".")[0]
        hint = _DRIVER_HINTS.get(name, f"pip install {name}")
        raise StoreError(f"the database driver {name!r} needed for {safe_url(url)} is not "
                         f"installed: {hint}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: object, _record: object) -> None:
    # Take transaction control away from pysqlite: SQLAlchemy's "begin" event emits BEGIN.
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")  # first: waits below
        mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
        if mode not in ("wal", "memory"):
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (created if missing), held for the block."""
    handle = open(path, "a+b")
    try:
        if os.name == "nt":  # pragma: no cover - exercised on Windows only
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
    text = str(exc.orig if exc.orig is not None else exc).strip()
    first = text.splitlines()[0] if text else type(exc.orig or exc).__name__
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


def init_schema(engine: Engine, url: URL, *, create: bool) -> None:
    """Create the schema if the database is empty, else check it is ours and of our version."""
    path = sqlite_path(url) if engine.dialect.name == "sqlite" else None
    lock: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if path is not None:
        lock_path = path.with_name(path.name + ".lock")
        if create or os.access(path.parent, os.W_OK):
            lock = file_lock(lock_path)
    try:
        with lock, engine.execution_options(**{WRITE_OPTION: create}).begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
            _ensure_schema(conn, url, create=create)
    except DBAPIError as exc:
        raise StoreError(describe_db_error(exc, url)) from None


def _ensure_schema(conn: Connection, url: URL, *, create: bool) -> None:
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
        now = utcnow().isoformat()
        conn.execute(Meta.__table__.insert(), [
            {"key": "app", "value": APP_NAME},
            {"key": "schema_version", "value": str(SCHEMA_VERSION)},
            {"key": "created_at", "value": now},
        ])
        return
    meta = {key: value for key, value in conn.execute(select(Meta.key, Meta.value))}
    if meta.get("app") != APP_NAME:
        raise StoreError(f"{where} is not an sslbench store (its {META_TABLE} table belongs to "
                         "something else): point --db / SSLBENCH_DB at a new file")
    check_version(meta.get("schema_version"), where)


def check_version(stored: str | None, where: str) -> None:
    """Refuse a store written with another schema version, saying what to do."""
    try:
        version = int(stored or "")
    except ValueError:
        version = -1
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise StoreError(f"the store {where} has schema version {version}, newer than this "
                         f"sslbench's {SCHEMA_VERSION}: upgrade sslbench (pip install -U sslbench) "
                         "or use another --db")
    raise StoreError(f"the store {where} has schema version {stored}, this sslbench needs "
                     f"{SCHEMA_VERSION} and cannot migrate it: move the file aside (or use another "
                     "--db) and re-run to start a new store, or use the sslbench version that "
                     "wrote it")
