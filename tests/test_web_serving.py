"""`soundalike serve --workers 2` as a user runs it: a real uvicorn supervisor, two worker
processes, each with its own accept queue, and the per-request timing log."""

from __future__ import annotations

import gc
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient

from soundalike.web.app import create_app
from soundalike.web.serving import listening_sockets
from test_search_fixtures import demo_catalog  # noqa: F401 - fixture


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_share_connections_and_log_each_request(demo_catalog, tmp_path):  # noqa: F811
    """16 keep-alive connections opened together reach both workers (uvicorn's shared accept
    queue gave them all to whichever woke first), every answer is the single-process one,
    and ``SOUNDALIKE_TIMINGS`` logs each request's stages in order, per worker."""
    port = _free_port()
    log = tmp_path / "timings"
    env = {**os.environ, "SOUNDALIKE_DATA_DIR": str(tmp_path / "data"), "SOUNDALIKE_TIMINGS": str(log)}
    proc = subprocess.Popen([sys.executable, "-m", "soundalike", "serve", "--catalog", str(demo_catalog.path),
                             "--port", str(port), "--workers", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tid = demo_catalog.ids["piano-arpeggio"][0]
    try:
        deadline = time.time() + 120
        while listening_sockets(port) < 2:  # each worker listens once its app is loaded
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.time() < deadline, f"{listening_sockets(port)} of 2 workers listening"
            time.sleep(0.2)
        answers, errors = [], []
        barrier = threading.Barrier(16)

        def client(j: int) -> None:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                c.connect()
                barrier.wait()  # all 16 connected before any asks: as wrk opens them
                for where in (None, "mood:calm|dark"):
                    c.request("GET", f"/api/similar?id={tid}&k=5" + (f"&where={where}" if where else ""))
                    r = c.getresponse()
                    answers.append((where, r.status, json.loads(r.read())))
                c.close()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(repr(exc))

        threads = [threading.Thread(target=client, args=(j,)) for j in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert not errors, errors
    with TestClient(create_app(demo_catalog.path), base_url="http://127.0.0.1") as ref:
        expected = {w: ref.get("/api/similar", params={"id": tid, "k": 5, **({"where": w} if w else {})}).json()
                    for w in (None, "mood:calm|dark")}
    assert len(answers) == 32 and all(s == 200 and a == expected[w] for w, s, a in answers)
    files = sorted(Path(tmp_path).glob("timings.*"))
    per_worker = {}
    for f in files:
        lines = [json.loads(x) for x in f.read_text().splitlines()]
        reqs = [x for x in lines if "recv" in x]
        per_worker[f.suffix] = len(reqs)
        for r in reqs:
            names = [n for n, _ in r["stages"]]
            assert names[0] == "start" and names[-1] == "json" and "search" in names and "filter" in names
            times = [t for _, t in r["stages"]] + [r["sent"]]
            assert times == sorted(times) and times[0] >= 0
        assert all(x["dur"] >= 0 for x in lines if "gc" in x)
    # 2 of 2**16 ways to hash 16 connections put them all on one worker
    assert len(per_worker) == 2 and sum(per_worker.values()) == 32 and min(per_worker.values()) >= 1, per_worker


def test_start_up_objects_are_frozen_out_of_the_collector(demo_catalog):  # noqa: F811
    """After start-up the index, the browse tables and the modules are out of the garbage
    collector's sight (a full collection walked them all: a 73 ms pause under load)."""
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        with TestClient(create_app(demo_catalog.path), base_url="http://127.0.0.1") as c:
            assert gc.get_freeze_count() > 0
            assert c.get("/api/similar", params={"id": demo_catalog.ids["piano-arpeggio"][0]}).status_code == 200
    finally:
        gc.unfreeze()
