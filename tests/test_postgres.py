"""PostgreSQL as the store, for many hosts writing at once: against a real server.

The ``postgres_url`` fixture starts a throw-away PostgreSQL server for the test session (Debian's
``postgresql`` package: ``initdb`` and ``pg_ctl``, found on PATH or in /usr/lib/postgresql/*/bin),
on 127.0.0.1 and a free port, in a temporary data folder, as the ``postgres`` user when the
tests run as root (PostgreSQL refuses to run as root), and stops it afterwards. Set
``SSLBENCH_TEST_POSTGRES_URL`` to test against a server of your own instead. Every skip says
why. The server-down tests need only the psycopg driver.
"""

from __future__ import annotations

import glob
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest

from sslbench.db import Store
from sslbench.errors import StoreError
from tests.conftest import race

N_PROCS = 8


def _find(binary: str) -> str | None:
    found = shutil.which(binary)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{binary}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("PostgreSQL tests: running as root and `runuser` is missing, so the server "
                    "cannot be started as the postgres user")
    return [runuser, "-u", "postgres", "--", *args]


#: The role of :func:`postgres_password` (the server asks it for a password over TCP).
SECRET_ROLE = "sslbench_secret"


@pytest.fixture(scope="session")
def postgres_password(postgres_url):
    """``(URL without the password, password)`` of a database on the throw-away server whose
    role must give its password (scram-sha-256): the server refuses it without one."""
    if _SECRET.get("url") is None:
        pytest.skip("PostgreSQL password tests need the throw-away server (not "
                    "SSLBENCH_TEST_POSTGRES_URL)")
    return _SECRET["url"], _SECRET["password"]


_SECRET: dict[str, str] = {}


@pytest.fixture(scope="session")
def postgres_url():
    """The URL of a live, empty PostgreSQL database (see the module docstring)."""
    pytest.importorskip("psycopg", reason="PostgreSQL tests: the psycopg driver is not "
                        "installed (pip install 'psycopg[binary]')")
    external = os.environ.get("SSLBENCH_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    initdb, pg_ctl = _find("initdb"), _find("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL tests: initdb/pg_ctl not found (install Debian's postgresql "
                    "package: apt-get install postgresql), and SSLBENCH_TEST_POSTGRES_URL is "
                    "not set")
    if os.geteuid() == 0:
        try:
            import pwd

            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("PostgreSQL tests: running as root and there is no postgres user to "
                        "run the server as")
    root = Path(tempfile.mkdtemp(prefix="sslbench-pg-"))
    data, port = root / "data", _free_port()
    if os.geteuid() == 0:
        os.chown(root, user.pw_uid, user.pw_gid)
    init = subprocess.run(_as_postgres([initdb, "-D", str(data), "-U", "postgres",
                                        "--auth=trust", "-E", "UTF8", "--no-sync"]),
                          capture_output=True, text=True)
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr.strip()[-500:]}")
    hba = data / "pg_hba.conf"  # the secret role authenticates, every other one is trusted
    hba.write_text(f"host all {SECRET_ROLE} 127.0.0.1/32 scram-sha-256\n{hba.read_text()}")
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"
    start = subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-o", options, "-l",
                                         str(root / "server.log"), "-w", "start"]),
                           capture_output=True, text=True)
    if start.returncode != 0:
        log = (root / "server.log").read_text()[-500:] if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {start.stderr.strip()[-300:]} {log}")
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres",
                             autocommit=True) as con:
            con.execute("CREATE DATABASE sslbench_test")
            password = secrets.token_urlsafe(18)
            con.execute(f"CREATE ROLE {SECRET_ROLE} LOGIN PASSWORD '{password}'")
            con.execute(f"CREATE DATABASE {SECRET_ROLE} OWNER {SECRET_ROLE}")
        _SECRET.update(url=f"postgresql+psycopg://{SECRET_ROLE}@127.0.0.1:{port}/{SECRET_ROLE}",
                       password=password)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/sslbench_test"
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _drop_store(engine) -> None:
    """Leave the database empty for the next test: the store's tables, Optuna's (a study of
    ``sslbench tune``) and both Alembic version tables."""
    from sqlalchemy import MetaData

    from sslbench.db.models import Base

    Base.metadata.drop_all(engine)
    everything = MetaData()
    everything.reflect(engine)
    everything.drop_all(engine)


@pytest.fixture
def pg_store(postgres_url):
    """A store in a fresh schema-less database state: tables dropped after each test."""
    store = Store.open(postgres_url)
    yield store
    _drop_store(store._engine)
    store.close()


def _run(store: Store, run_id: str, **config) -> str:
    store.upsert_run(run_id=run_id, kind="pretrain", config=config or {"x": 1}, command=[],
                     env={})
    return run_id


def test_store_round_trip_on_postgres(pg_store):
    run = _run(pg_store, "pgrun0000001", method="simclr", dim=16, loss={"temperature": 0.1})
    pg_store.set_status(run, "running")
    for step in range(5):
        pg_store.log_metrics(run, step, {"loss": 1.0 / (step + 1), "online_top1": step * 10.0})
    pg_store.log_metrics(run, 2, {"loss": 0.01})  # a replay overwrites
    pg_store.set_status(run, "completed")
    record = pg_store.get_run(run)
    assert record.status == "completed" and record.attempts == 1
    history = pg_store.metrics_frame(run, "loss")
    assert list(history["step"]) == [0, 1, 2, 3, 4] and history["value"][2] == 0.01
    stats = pg_store.summary_stats(run)
    assert stats["loss"]["best"] == 0.01 and stats["online_top1"]["final"] == 40.0
    assert pg_store.params(run)["loss.temperature"] == 0.1
    assert pg_store.attempt_details(run)[0]["pid"] == os.getpid()


def test_claims_and_ledger_on_postgres(pg_store):
    a, b = _run(pg_store, "pgclaim00001"), _run(pg_store, "pgclaim00002")
    assert pg_store.claim_run(a, scheduler_id="s1", device="0", slots=[0]) == 1
    assert pg_store.claim_run(a, scheduler_id="s2", device="1", slots=[0]) is None
    assert pg_store.claim_run(b, scheduler_id="s2", device="0", slots=[0]) is None
    assert pg_store.get_run(b).status == "queued"  # the failed claim rolled back entirely
    pg_store.release(a)
    assert pg_store.claim_run(b, scheduler_id="s2", device="0", slots=[0, 1]) == 1
    assert pg_store.reserved_slots() == {"0": {0: b, 1: b}}
    pg_store.add_tags(b, ["sweep:pg_test"])
    assert [r.run_id for r in pg_store.runs_tagged("sweep:pg_test")] == [b]


def _open_claim_log(url: str, run_ids: list[str], index: int, barrier, results) -> None:
    try:
        barrier.wait(timeout=60)
        with Store.open(url) as store:  # the first to arrive creates the schema
            _run(store, f"own{index:09d}")
            for step in range(10):
                store.log_metrics(f"own{index:09d}", step, {"loss": float(step)})
            mine = []
            for run_id in run_ids[index:] + run_ids[:index]:
                _run(store, run_id)
                if store.claim_run(run_id, scheduler_id=f"p{index}", device=f"d{index}",
                                   slots=[len(mine)]) is not None:
                    mine.append(run_id)
                    store.set_status(run_id, "completed")
        results.put((index, mine, None))
    except BaseException:
        results.put((index, [], traceback.format_exc()))


@pytest.mark.slow
def test_eight_processes_create_log_and_claim_at_once(postgres_url):
    """Many hosts at once: one schema, no lost rows, no run claimed twice."""
    run_ids = [f"pgrace{i:06d}" for i in range(16)]
    outcomes = race(_open_claim_log, N_PROCS, postgres_url, run_ids)
    errors = [err for _, _, err in outcomes if err]
    assert not errors, errors[0]
    assert sorted(r for _, mine, _ in outcomes for r in mine) == run_ids
    with Store.open(postgres_url) as store:
        try:
            frame = store.runs_frame(params=(), summaries=())
            assert len(frame) == N_PROCS + len(run_ids)
            assert all(len(store.metrics_frame(f"own{i:09d}")) == 10 for i in range(N_PROCS))
            assert all(store.get_run(r).attempts == 1 for r in run_ids)
        finally:
            _drop_store(store._engine)


@pytest.mark.slow
def test_scheduler_runs_a_queue_on_postgres(postgres_url, tmp_path, monkeypatch):
    from sslbench.runs.devices import build_pool
    from sslbench.runs.policy import RetryPolicy
    from sslbench.runs.scheduler import LocalScheduler
    from tests.test_scheduler_local import FAKE_WORKER

    monkeypatch.setenv("SSLBENCH_HOME", str(tmp_path))
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    with Store.open(postgres_url) as store:
        try:
            ids = [_run(store, f"pgsched{i:05d}", behavior=b, steps=5)
                   for i, b in enumerate(["ok", "die-once", "oom-once", "fail"])]
            sched = LocalScheduler(store, build_pool(None, workers=2, cores=2),
                                   command=lambda r: [sys.executable, str(script), r],
                                   policy=RetryPolicy(3), poll_s=0.02, install_signals=False)
            report = sched.run(ids)
            assert report.outcomes == dict(zip(ids, ["completed", "completed", "completed",
                                                     "failed"]))
            assert list(store.metrics_frame(ids[1], "loss")["step"]) == [0, 1, 2, 3, 4]
            assert [a["status"] for a in store.attempt_details(ids[1])] == ["killed",
                                                                            "completed"]
        finally:
            _drop_store(store._engine)


# ------------------------------------------------------------- an older store, upgraded

def _build_v2_database(url: str, sqlite_v2: Path) -> None:
    """A version-2 store as sslbench 2 made it on PostgreSQL (the v2 models' DDL, which
    tests/fixtures/make_stores.py froze) holding the rows of the version-2 SQLite fixture."""
    from sqlalchemy import MetaData, create_engine, select

    from tests.test_db_migrations import FIXTURES

    source, target = create_engine(f"sqlite:///{sqlite_v2}"), create_engine(url)
    source_tables, target_tables = MetaData(), MetaData()
    source_tables.reflect(source)
    ddl = (FIXTURES / "schema_v2.postgresql.sql").read_text()
    with target.begin() as conn, source.connect() as rows_from:
        for statement in filter(str.strip, ddl.split(";\n")):
            conn.exec_driver_sql(statement)
        conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")  # SQLite's naive times are UTC
        target_tables.reflect(conn)
        for table in target_tables.sorted_tables:
            rows = rows_from.execute(select(source_tables.tables[table.name])).mappings().all()
            conn.execute(table.insert(), [dict(row) for row in rows])
        conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('artifacts', 'id'), "
                             "(SELECT max(id) FROM artifacts))")
    source.dispose()
    target.dispose()


def _contents(store: Store) -> dict:
    """Everything the store tells about its runs and schedulers, as plain data."""
    out: dict = {"schedulers": store.schedulers(running_only=False),
                 "reserved": store.reserved_slots("node1")}
    for run in store.find_runs():
        rid = run.run_id
        out[rid] = (run.to_dict(), store.params(rid), store.summary_stats(rid),
                    store.metrics_frame(rid).to_json(orient="records"),  # NaN as null
                    store.artifacts(rid), store.attempt_details(rid))
    return out


def test_v2_database_is_upgraded_in_place_on_postgres(postgres_url, tmp_path):
    from tests.test_db_migrations import FIXTURE_RUN_IDS, fixture_copy, migrated_schema_diff

    sqlite_v2 = fixture_copy(2, tmp_path)
    _build_v2_database(postgres_url, sqlite_v2)
    with Store.open(postgres_url, create=False) as store, Store.open(str(sqlite_v2)) as same:
        try:
            assert (store.upgraded_from, store.backup_path) == (2, None)
            assert _contents(store) == _contents(same) and len(store.find_runs()) == 3
            with store._engine.connect() as conn:
                assert migrated_schema_diff(conn) == []
            first = FIXTURE_RUN_IDS[0]
            store.log_artifact(first, "log", f"/runs/{first}/more.txt")  # ids continue
            assert store.adopt_numerics(first, {"threads": 4}) == {"threads": 4}
            store.log_metrics(first, 100, {"loss": 0.25})
            assert store.summary(first)["loss"] == 0.25
        finally:
            _drop_store(store._engine)


def test_a_tuning_study_shares_the_database_with_the_store(pg_store, tmp_path):
    """Optuna's tables (and its own alembic_version) beside the store's, on a real server: a
    study is created, refused when its space changes, and the store still opens as current."""
    from sslbench.errors import ConfigError
    from sslbench.runs.tune import check_study, open_study
    from sslbench.runs.tunespec import load_tune

    path = tmp_path / "s.toml"
    path.write_text('name = "pg"\n[base]\nmethod = "simclr"\n[space]\n'
                    "lr = { low = 0.001, high = 0.01, log = true }\n")
    spec = load_tune(path)
    check_study(spec, pg_store.url)  # no study yet
    study = open_study(spec, pg_store.url)
    trial = study.ask()
    trial.suggest_float("lr", 0.001, 0.01, log=True)
    study.tell(trial, 12.5)
    assert [t.value for t in open_study(spec, pg_store.url).get_trials()] == [12.5]
    path.write_text(path.read_text().replace("high = 0.01", "high = 0.1"))
    with pytest.raises(ConfigError, match="study 'pg' already exists in the store with a "
                                          "different space"):
        check_study(load_tune(path), pg_store.url)
    with Store.open(pg_store.url, create=False) as again:
        assert again.upgraded_from is None and again.find_runs() == []


# ------------------------------------------------- buffered logging and the store bench


def test_buffered_writes_truncation_and_summaries_on_postgres(pg_store):
    from sslbench.db.buffered import BufferedWriter, Limits
    from tests.test_store_buffer import _reference, _same

    run = _run(pg_store, "pgbuffer0001")
    stream = [(0, 5.0), (1, float("nan")), (2, 3.0), (3, 3.0), (4, 4.0)]
    with BufferedWriter(pg_store, Limits(batch_points=3, interval_s=0.05)) as writer:
        for step, value in stream:
            writer.log_metrics(run, step, {"loss": value, "online_top1": 10.0 * step}, epoch=1)
        writer.flush()
        writer.truncate_metrics(run, 2)  # a resume from step 2: 3 and 4 are recomputed
        writer.log_metrics(run, 3, {"loss": 1.0})
        writer.log_artifact(run, "checkpoint", "/runs/pg/checkpoint.pt", size=7)
        writer.heartbeat(run)
        writer.flush()
    frame = pg_store.metrics_frame(run)
    assert not frame.duplicated(["key", "step"]).any()
    history = {(r.key, r.step): None if r.value != r.value else r.value
               for r in frame.itertuples()}
    assert set(history) == {("loss", s) for s in range(4)} | {("online_top1", s) for s in
                                                              range(3)}
    stored, expected = pg_store.summary_stats(run), _reference(history)
    assert all(_same(stored[key], expected[key]) for key in expected), stored
    assert pg_store.artifacts(run)[0]["size"] == 7
    assert pg_store.get_run(run).heartbeat_at is not None


@pytest.mark.slow  # a benchmark end to end
def test_the_store_bench_runs_on_postgres_and_leaves_the_database_empty(postgres_url,
                                                                       tmp_path, monkeypatch):
    from sqlalchemy import create_engine, inspect

    from sslbench.bench import store as bench_store

    monkeypatch.setitem(sys.modules, "mlflow", None)  # MLflow's column is tested elsewhere

    out = bench_store.run(runs=200, points=2000, steps=50, writers=3, writer_points=400,
                          step_s=0.0005, url=postgres_url, report_all=False, folder=tmp_path)
    assert out["db"].startswith("postgresql+psycopg://")
    assert out["concurrent"]["points"] == 3 * 400  # every point stored, or run() raises
    assert (out["large"]["runs"], out["large"]["eval_pending"]) == (200, 400)
    # The 8-writer target is the for one SQLite store: not judged here.
    assert out["targets_met"]["concurrent_100k_points_per_s"] is None
    engine = create_engine(postgres_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


# ----------------------------------------------------------------- a server that is down

def test_server_down_is_one_line(tmp_path):
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed")
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/nothing"
    with pytest.raises(StoreError) as info:
        Store.open(url)
    message = str(info.value)
    assert "\n" not in message and "cannot reach the database" in message, message


@pytest.mark.slow
def test_sweep_against_a_server_that_is_down_exits_1_and_queues_nothing(tmp_path):
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed")
    from tests.conftest import run_cli

    url = f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/nothing"
    out = run_cli(["--db", url, "sweep", "demo", "--set", "epochs=1"], tmp_path, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the database"), lines
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_a_password_comes_from_the_environment_or_an_owner_only_file(postgres_password, tmp_path,
                                                                     monkeypatch):
    """A URL without its password connects with SSLBENCH_DB_PASSWORD or the file
    SSLBENCH_DB_PASSWORD_FILE names; a file others can read is refused in one line."""
    url, password = postgres_password
    for name in ("SSLBENCH_DB_PASSWORD", "SSLBENCH_DB_PASSWORD_FILE", "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(StoreError):  # the server asks this role for a password
        Store.open(url).close()
    monkeypatch.setenv("SSLBENCH_DB_PASSWORD", password)
    with Store.open(url) as store:
        assert store.url == url and store.find_runs() == []  # connected; the URL keeps no secret
    monkeypatch.delenv("SSLBENCH_DB_PASSWORD")
    secret = tmp_path / "db-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    monkeypatch.setenv("SSLBENCH_DB_PASSWORD_FILE", str(secret))
    with Store.open(url) as store:
        assert store.find_runs() == []
    secret.chmod(0o640)
    with pytest.raises(StoreError, match=r"readable by others \(mode 0640\): chmod 600 ") as err:
        Store.open(url)
    assert "\n" not in str(err.value)


def test_recipe_statistics_on_postgres(pg_store):
    """The recipes stored with the runs group them as version 5's query did (config without
    its seed: jsonb there), after every change to the runs, and give the per-run numbers."""
    from tests.test_report_recipes import check_recipes_against_runs, fill
    from tests.test_store_recipes import change_runs, partitions

    fill(pg_store, random.Random(0), 80)
    change_runs(pg_store, random.Random(0))
    old, new = partitions(pg_store)
    assert old == new
    check_recipes_against_runs(pg_store)


@pytest.mark.parametrize("version", [5, 7])
def test_runs_without_recipe_get_theirs_on_postgres(pg_store, version):
    from tests.test_store_recipes import check_runs_without_recipe_get_theirs

    check_runs_without_recipe_get_theirs(pg_store, version)


@pytest.mark.parametrize("version", [5, 7])
def test_an_older_database_upgrades_to_the_same_table_s5_on_postgres(postgres_url, version):
    from tests.test_store_recipes import check_upgrade_keeps_table_s5

    try:
        check_upgrade_keeps_table_s5(postgres_url, random.Random(3), version)
    finally:
        with Store.open(postgres_url) as store:
            _drop_store(store._engine)


def test_every_report_on_postgres_reads_the_runs_as_the_per_run_frame_did(pg_store,
                                                                          monkeypatch):
    from tests.test_report_recipes import check_reports_against_runs, evaluate_some, fill

    fill(pg_store, random.Random(1), 80)
    evaluate_some(pg_store, random.Random(1), 40)
    check_reports_against_runs(pg_store, monkeypatch)
