"""Tests of the throwaway PostgreSQL cluster helper and its pytest fixtures."""

from __future__ import annotations

import os
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from market_pipeline_tests import postgres_cluster as pc

pytestmark = pytest.mark.postgres


def _children(pid: int) -> set[int]:
    kids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            kids.add(int(entry))
    return kids


def _procs_mentioning(path: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if path.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _scalar(url: str, sql: str, **params):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    finally:
        engine.dispose()


# ---------------------------------------------------------------------- binaries / plugin
def test_find_bindir_has_server_binaries():
    bindir = pc.find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries")
    for exe in ("initdb", "pg_ctl", "postgres"):
        assert os.access(os.path.join(bindir, exe), os.X_OK)


def test_missing_binaries_skip_locally(monkeypatch):
    monkeypatch.setattr(pc, "find_bindir", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install postgresql-15"):
        pc.require_bindir()


def test_missing_binaries_fail_on_ci(monkeypatch):
    monkeypatch.setattr(pc, "find_bindir", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        pc.require_bindir()


# ---------------------------------------------------------------------- shared cluster
def test_two_databases_and_query(postgres_cluster):
    c = postgres_cluster
    url_a = c.create_database("pgc_test_a")
    url_b = c.create_database("pgc_test_b")
    try:
        assert url_a == f"postgresql+psycopg2://postgres@127.0.0.1:{c.port}/pgc_test_a"
        assert c.url() == f"postgresql+psycopg2://postgres@127.0.0.1:{c.port}/postgres"
        assert (c.host, c.user) == ("127.0.0.1", "postgres")
        assert _scalar(url_a, "SELECT current_database()") == "pgc_test_a"
        assert _scalar(url_b, "SELECT current_database()") == "pgc_test_b"
        assert _scalar(url_a, "SELECT :x + 1", x=41) == 42
        assert _scalar(url_a, "SHOW fsync") == "off"
        assert _scalar(url_a, "SHOW server_encoding") == "UTF8"
    finally:
        c.drop_database("pgc_test_a")
        c.drop_database("pgc_test_b")


def test_postgres_url_is_a_fresh_database(postgres_url, postgres_cluster):
    dbname = postgres_url.rsplit("/", 1)[1]
    assert dbname.startswith("test_")
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM pg_tables WHERE schemaname='public'")).scalar() == 0
            conn.execute(sa.text("CREATE TABLE t (x int)"))
        # Leave a pooled connection open: teardown must still be able to drop the database.
        engine.connect().close()
    finally:
        pass  # deliberately not disposing the engine


def test_kill_connections(postgres_url, postgres_cluster):
    dbname = postgres_url.rsplit("/", 1)[1]
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    try:
        conn = engine.connect()
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        conn.commit()
        assert postgres_cluster.kill_connections(dbname) == 1
        with pytest.raises(OperationalError):
            conn.execute(sa.text("SELECT 1"))
        conn.close()
        with engine.connect() as conn2:
            assert conn2.execute(sa.text("SELECT 2")).scalar() == 2
        assert postgres_cluster.kill_connections(dbname) == 0
    finally:
        engine.dispose()


# ---------------------------------------------------------------------- own cluster: lifecycle
def test_lifecycle_restart_and_stop():
    cluster = pc.PostgresCluster(pc.require_bindir())
    t0 = time.monotonic()
    cluster.start()
    start_s = time.monotonic() - t0
    try:
        base_dir, data_dir, port = cluster.base_dir, cluster.data_dir, cluster.port
        assert os.path.isdir(data_dir)
        postmaster = cluster._postmaster_pid()
        assert postmaster and pc._pid_alive(postmaster)
        if os.geteuid() == 0:
            # The server must not run as root; it runs as the postgres OS user.
            assert os.stat(f"/proc/{postmaster}").st_uid != 0

        url = cluster.create_database("lifecycle")
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE kept (v text)"))
            conn.execute(sa.text("INSERT INTO kept VALUES ('survives')"))
        open_conn = engine.connect()
        open_conn.execute(sa.text("SELECT 1"))
        open_conn.commit()

        cluster.restart()
        assert cluster.port == port and cluster.data_dir == data_dir
        assert cluster._postmaster_pid() != postmaster
        # The old connection is gone; a new one sees the committed data.
        with pytest.raises(OperationalError):
            open_conn.execute(sa.text("SELECT 1"))
        open_conn.close()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT v FROM kept")).scalar() == "survives"
        engine.dispose()

        postmaster = cluster._postmaster_pid()
        server_pids = {postmaster} | _children(postmaster)
        assert len(server_pids) > 1  # checkpointer, walwriter, ...
    finally:
        t0 = time.monotonic()
        cluster.stop()
        stop_s = time.monotonic() - t0
    print(f"\ncluster start {start_s:.2f}s, stop {stop_s:.2f}s")

    assert not any(pc._pid_alive(p) for p in server_pids)
    assert _procs_mentioning(data_dir) == []
    assert not os.path.exists(base_dir)
    assert not cluster.running
    cluster.stop()  # idempotent
    assert start_s < 30
