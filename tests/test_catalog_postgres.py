"""A PostgreSQL catalog shared by many processes: killed writers, concurrent writers on
overlapping folders, several servers that see each other's new tracks.

Everything is real: a private PostgreSQL server (``pg_server``), ``soundalike`` CLI
subprocesses, uvicorn servers on free ports.  The checks read the database with their
own psycopg connection, apart from the code under test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from soundalike.catalog.store import Catalog
from soundalike.ingest import ingest

from test_ingest import _write_tracks

pytestmark = pytest.mark.postgres


def _sql(url: str, query: str):
    import psycopg

    with psycopg.connect(url) as c:
        return c.execute(query).fetchall()


def _no_duplicates(url: str) -> dict[str, int]:
    (tracks, paths), = _sql(url, "SELECT count(*), count(DISTINCT path) FROM tracks")
    (analyses, pairs), = _sql(url, "SELECT count(*), count(DISTINCT (track_id, model_id)) FROM analyses")
    assert tracks == paths and analyses == pairs
    return {"tracks": tracks, "analyses": analyses}


def _env(tmp_path: Path, name: str) -> dict[str, str]:
    return {**os.environ, "SOUNDALIKE_DATA_DIR": str(tmp_path / f"data-{name}")}


def test_sigkill_mid_ingest_loses_and_duplicates_nothing(tmp_path, pg_server):
    url = pg_server.new_database()
    n = 40
    _write_tracks(tmp_path / "m", n, duration_s=6.0, stereo=True)
    cmd = [sys.executable, "-m", "soundalike", "ingest", str(tmp_path / "m"), "--catalog", url,
           "--model", "mfcc-stats", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(tmp_path, "a"))
    committed, deadline = 0, time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            committed = _sql(url, "SELECT count(*) FROM analyses")[0][0]
        except Exception:  # noqa: BLE001 - the schema may not exist yet
            committed = 0
        if committed >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "ingest finished before it could be killed; make the test data bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    before = _no_duplicates(url)
    assert 0 < before["tracks"] < n and before["tracks"] == before["analyses"]  # no half-written track
    s = ingest([tmp_path / "m"], catalog=url, model="mfcc-stats", workers=2)
    assert s.failed == 0 and s.ingested + s.unchanged == n and s.unchanged >= before["tracks"]
    assert _no_duplicates(url) == {"tracks": n, "analyses": n}
    with Catalog.open(url) as cat:
        ids, X = cat.embeddings(cat.default_model_id())
        assert len(ids) == n and np.isfinite(X).all()


def test_concurrent_ingests_of_overlapping_folders_make_no_duplicates(tmp_path, pg_server):
    url = pg_server.new_database()
    m = tmp_path / "m"
    _write_tracks(m / "a", 6)
    _write_tracks(m / "b", 10)  # both runs ingest these at the same time
    _write_tracks(m / "c", 6)
    Catalog.open(url).close()  # the schema exists before the race (its creation is tested below)
    runs = [[str(m / "a"), str(m / "b")], [str(m / "b"), str(m / "c")], [str(m)]]
    procs = [subprocess.Popen([sys.executable, "-m", "soundalike", "ingest", *folders, "--catalog", url,
                               "--model", "mfcc-stats", "--workers", "1", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(tmp_path, str(i)))
             for i, folders in enumerate(runs)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    summaries = [json.loads(out) for out, _ in outs]
    assert all(s["failed"] == 0 for s in summaries)
    assert _no_duplicates(url) == {"tracks": 22, "analyses": 22}
    with Catalog.open(url) as cat:
        assert cat.count_tracks("ok") == 22
        assert {Path(t.path).parent.name for t in cat.iter_tracks()} == {"a", "b", "c"}


def test_first_open_by_many_processes_migrates_once(tmp_path, pg_server):
    url = pg_server.new_database()
    code = ("import sys; from soundalike.catalog.store import Catalog; "
            "c = Catalog.open(sys.argv[1]); print(c.schema_version); c.close()")
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-500:] for _, e in outs]
    from soundalike.catalog.schema import SCHEMA_VERSION

    assert {int(o.strip()) for o, _ in outs} == {SCHEMA_VERSION}
    assert _sql(url, "SELECT count(*) FROM counters")[0][0] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def test_two_servers_see_each_others_new_tracks(tmp_path, pg_server):
    url = pg_server.new_database()
    m = tmp_path / "m"
    _write_tracks(m / "old", 5)
    ingest([m / "old"], catalog=url, model="mfcc-stats", workers=1)
    ports = [_free_port(), _free_port()]
    servers = [subprocess.Popen([sys.executable, "-m", "soundalike", "serve", "--catalog", url, "--port", str(p)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=_env(tmp_path, f"host{i}"))  # two hosts: two index folders
               for i, p in enumerate(ports)]
    try:
        deadline = time.time() + 120
        up = set()
        while len(up) < 2 and time.time() < deadline:
            for p, s in zip(ports, servers, strict=True):
                assert s.poll() is None, s.stderr.read()[-2000:]
                try:
                    _get(f"http://127.0.0.1:{p}/api/tracks?limit=1", timeout=2)
                    up.add(p)
                except OSError:
                    pass
            time.sleep(0.2)
        assert len(up) == 2, "servers did not start"
        first = _get(f"http://127.0.0.1:{ports[0]}/api/tracks?limit=50")["tracks"]
        query_id = first[0]["id"]
        before = [_get(f"http://127.0.0.1:{p}/api/similar?id={query_id}&k=50") for p in ports]
        assert all(len(b["hits"]) == 4 for b in before)
        # a third process adds tracks while both servers run
        _write_tracks(m / "new", 3)
        subprocess.run([sys.executable, "-m", "soundalike", "ingest", str(m / "new"), "--catalog", url,
                        "--model", "mfcc-stats", "--workers", "1"], check=True, capture_output=True,
                       env=_env(tmp_path, "writer"), timeout=300)
        with Catalog.open(url) as cat:
            new_ids = {t.id for t in cat.iter_tracks() if "/new/" in t.path}
        assert len(new_ids) == 3
        seen: dict[int, float] = {}
        t0 = time.time()
        while len(seen) < 2 and time.time() - t0 < 30:
            for p in ports:
                # include_duplicates: new/track000 is a byte copy of the query, which
                # similar leaves out by default (search/diversity.py)
                hits = _get(f"http://127.0.0.1:{p}/api/similar?id={query_id}&k=50"
                            f"&include_duplicates=true")["hits"]
                if p not in seen and new_ids <= {h["id"] for h in hits}:
                    seen[p] = time.time() - t0
            time.sleep(0.1)
        assert set(seen) == set(ports), f"new tracks seen by {seen} only"
        detail = _get(f"http://127.0.0.1:{ports[1]}/api/tracks/{min(new_ids)}")
        assert detail["id"] == min(new_ids)
    finally:
        for s in servers:
            s.send_signal(signal.SIGTERM)
        for s in servers:
            try:
                s.wait(timeout=15)
            except subprocess.TimeoutExpired:
                s.kill()


def test_a_busy_server_holds_a_bounded_number_of_connections(tmp_path, pg_server):
    """32 clients at once on one serve process: it answers them all, over at most
    SERVER_THREADS (+ the one opened at start) connections to the database."""
    import threading

    from soundalike.web.app import SERVER_THREADS, server_threads

    assert server_threads() == SERVER_THREADS  # no override in the test environment

    url = pg_server.new_database()
    _write_tracks(tmp_path / "m", 5)
    ingest([tmp_path / "m"], catalog=url, model="mfcc-stats", workers=1)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "soundalike", "serve", "--catalog", url, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=_env(tmp_path, "host"))
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None, server.stderr.read()[-2000:]
            try:
                tid = _get(f"http://127.0.0.1:{port}/api/tracks?limit=1", timeout=2)["tracks"][0]["id"]
                break
            except OSError:
                assert time.time() < deadline, "server did not start"
                time.sleep(0.2)
        answers: list[int] = []
        peak = [0]
        db = url.rsplit("/", 1)[1]

        def client() -> None:
            for _ in range(6):
                answers.append(len(_get(f"http://127.0.0.1:{port}/api/similar?id={tid}&k=3", timeout=60)["hits"]))

        def watch() -> None:
            while any(t.is_alive() for t in clients):
                n = _sql(pg_server.url(), f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'")[0][0]
                peak[0] = max(peak[0], int(n))
                time.sleep(0.05)

        clients = [threading.Thread(target=client) for _ in range(32)]
        for t in clients:
            t.start()
        watcher = threading.Thread(target=watch)
        watcher.start()
        for t in clients:
            t.join()
        watcher.join()
        assert answers == [3] * (32 * 6)
        assert 1 <= peak[0] <= SERVER_THREADS + 1, peak[0]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
