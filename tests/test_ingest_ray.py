"""Ingest on a real multi-node Ray cluster on this machine (127.0.0.1 only).

One cluster per module (a head and one more node, 1 CPU each, small object stores, its
own temp dir), shut down at the end.  The faults are real: a worker process SIGKILLed
mid-run, a driver process SIGKILLed mid-run, a node removed from the cluster mid-run.
``mfcc-stats`` is the analyzer wherever the model does not matter (quick on 2 cores).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundalike.audio import synth
from soundalike.ingest import ingest
from soundalike.catalog.store import Catalog

pytestmark = pytest.mark.ray

SR = 22050
NODE = dict(num_cpus=1, object_store_memory=80 * 1024 * 1024, node_ip_address="127.0.0.1")


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray", reason="Ray is the optional extra soundalike[ray]")
    from ray.cluster_utils import Cluster

    # A short path of its own: Ray's unix sockets live under it (108-byte limit), and
    # RAY_TMPDIR keeps `address="auto"` and the address file away from any other Ray.
    root = tempfile.mkdtemp(prefix="sa-ray-", dir="/tmp")
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = root
    os.makedirs(os.path.join(root, "ray"))
    c = Cluster(initialize_head=True, head_node_args=dict(
        NODE, temp_dir=os.path.join(root, "ray"), include_dashboard=False,
        # notice a removed node within ~2 s instead of ~15 s
        _system_config={"health_check_period_ms": 500, "health_check_failure_threshold": 3}))
    c.add_node(**NODE, temp_dir=os.path.join(root, "ray"))
    c.wait_for_nodes()
    c.sa_temp_dir = os.path.join(root, "ray")
    try:
        yield c
    finally:
        c.shutdown()
        if old is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old
        shutil.rmtree(root, ignore_errors=True)


def _tracks(folder: Path, n: int, *, duration_s: float = 6.0, fmt: str = "flac") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    styles = ["drum-loop", "piano-arpeggio", "ambient-drone", "bass-groove", "noise-texture"]
    out = []
    for i in range(n):
        y = synth.demo_track(styles[i % len(styles)], seed=i, duration_s=duration_s, sr=SR)
        p = folder / f"t{i:03d}.{fmt}"
        sf.write(p, np.stack([y, 0.7 * y], axis=1), SR)
        out.append(p)
    return out


def _snapshot(db: Path) -> dict[str, tuple]:
    """path -> (hash, duration, sorted model/file tags, embedding, analysis, attributes, peaks)
    of every track (attributes without the time they were computed)."""
    out = {}
    with Catalog.open(db) as cat:
        mid = cat.default_model_id()
        for t in cat.iter_tracks():
            a = cat.get_analysis(t.id, mid)
            tags = sorted((g.category, g.tag, g.source, round(g.confidence, 4)) for g in cat.track_tags(t.id))
            attrs = {k: v for k, v in (cat.track_attributes(t.id) or {}).items() if k != "computed_at"}
            peaks = cat.get_peaks(t.id)
            out[t.path] = (t.content_hash, round(t.duration_s, 4), tags, a.embedding, a.analysis, attrs,
                           None if peaks is None else peaks.to_bytes())
    return out


def _exactly_once(db: Path, n: int) -> None:
    with Catalog.open(db) as cat:
        assert cat.count_tracks() == n
    with sqlite3.connect(db) as conn:  # the raw file, as an outside checker sees it
        assert conn.execute("SELECT COUNT(*) FROM analyses").fetchone()[0] == n
        assert conn.execute("SELECT COUNT(*) - COUNT(DISTINCT path) FROM tracks").fetchone()[0] == 0
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_ray_ingest_gives_what_local_ingest_gives(cluster, tmp_path):
    music = tmp_path / "m"
    files = _tracks(music, 4, duration_s=14.0)  # 4 patches each: spread:2 samples them
    y, _ = sf.read(files[0], dtype="float32")
    with sf.SoundFile(files[0], "w", SR, 2, format="FLAC") as f:  # with the file's own tags
        f.artist, f.genre = "Tester", "Rock"
        f.write(y)
    (music / "broken.mp3").write_text("not audio at all\n" * 30)
    local, remote = tmp_path / "local.sqlite", tmp_path / "ray.sqlite"
    # with --peaks (each file decoded whole on the worker): the peaks travel back too
    s1 = ingest([music], catalog=local, model="MTT_musicnn", workers=1, analysis="spread:2", peaks=True)
    events = []
    s2 = ingest([music], catalog=remote, model="MTT_musicnn", ray=cluster.address, analysis="spread:2",
                peaks=True, on_event=events.append)
    assert (s1.ingested, s1.failed) == (s2.ingested, s2.failed) == (4, 1)
    a, b = _snapshot(local), _snapshot(remote)
    assert set(a) == set(b) == {str(p.resolve()) for p in files}
    for path in a:
        assert a[path][:3] == b[path][:3], path  # hash, duration, file + model tags
        np.testing.assert_allclose(a[path][3], b[path][3], rtol=0, atol=1e-5)
        assert a[path][4] == b[path][4] == "spread:2"
        # what the local path computes besides the analysis travels back from the workers too
        assert a[path][5] and a[path][5] == b[path][5], path  # tempo, key, loudness, duration ...
        assert a[path][5]["bpm"] is not None and a[path][5]["loudness_lufs"] is not None
        assert a[path][6] is not None and a[path][6] == b[path][6], path  # the waveform's peaks
    assert any(t[0] == "artist" and t[1] == "tester" for t in a[str(files[0].resolve())][2])
    with Catalog.open(remote) as cat:
        (err,) = cat.errors()
        assert err.path.endswith("broken.mp3") and "not an audio file" in err.reason
    workers = [e for e in events if e["event"] == "ray-worker"]
    assert workers and all(e["node"] == "127.0.0.1" for e in workers)
    assert sum(e["event"] == "file" for e in events) == 5
    # resumable: a second run through the cluster finds everything done
    s3 = ingest([music], catalog=remote, model="MTT_musicnn", ray=cluster.address, analysis="spread:2")
    assert (s3.ingested, s3.unchanged, s3.known_failures) == (0, 4, 1)


def test_a_path_a_worker_cannot_read_is_an_error_for_that_file(cluster, tmp_path):
    from soundalike.ingest.pipeline import analyze_file
    from soundalike.ingest.ray_runner import run

    good = _tracks(tmp_path / "m", 1)[0]
    got = []
    run([(str(tmp_path / "elsewhere" / "gone.flac"), None, True), (str(good), None, True)],
        model="mfcc-stats", analysis="spread:10", handle=got.extend, analyze_file=analyze_file,
        address=cluster.address)
    by = {Path(r["path"]).name: r for r in got}
    assert by["t000.flac"]["kind"] == "ok"
    bad = by["gone.flac"]
    assert bad["kind"] == "error" and "file not found" in bad["reason"] and "on Ray node 127.0.0.1" in bad["reason"]


def test_a_killed_worker_s_files_are_retried_elsewhere_exactly_once(cluster, tmp_path):
    n = 16
    _tracks(tmp_path / "m", n, duration_s=12.0)
    db = tmp_path / "c.sqlite"
    events, killed = [], []

    def on_event(e):
        events.append(e)
        if e["event"] == "file" and not killed:
            busy = [w for w in events if w["event"] == "ray-worker"]
            victim = busy[-1]["pid"]
            os.kill(victim, signal.SIGKILL)  # a real worker process, mid-run
            killed.append(victim)

    s = ingest([tmp_path / "m"], catalog=db, model="mfcc-stats", ray=cluster.address, on_event=on_event)
    assert killed
    lost = [e for e in events if e["event"] == "ray-worker-lost"]
    assert [e["pid"] for e in lost] == killed
    assert lost[0]["retried"], "the killed worker had files in flight; they must be retried"
    assert (s.ingested, s.failed) == (n, 0)
    _exactly_once(db, n)


def _dies_on_poison(path, *args, **kwargs):
    """``analyze_file``, except that the worker process dies (as a decoder's segfault would end
    it) whenever it is given the file named poison.flac."""
    from soundalike.ingest import pipeline

    if os.path.basename(path) == "poison.flac":
        os._exit(3)
    return pipeline.analyze_file(path, *args, **kwargs)  # in a worker: the real one


def test_a_file_that_kills_its_worker_costs_that_file_only(cluster, tmp_path, monkeypatch):
    """The poisonous file is in flight beside others on a worker (2 calls a worker) when it kills
    it; those others are retried and ingested, and only the file that killed a worker on its own
    is recorded, once."""
    import ray.cloudpickle as cloudpickle

    from soundalike.ingest import pipeline

    n = 6
    _tracks(tmp_path / "m", n, duration_s=6.0)
    (tmp_path / "m" / "t000.flac").rename(tmp_path / "m" / "poison.flac")  # first in the queue
    monkeypatch.setattr(pipeline, "analyze_file", _dies_on_poison)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    events = []
    try:
        s = ingest([tmp_path / "m"], catalog=tmp_path / "c.sqlite", model="mfcc-stats", ray=cluster.address,
                   on_event=events.append)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    lost = [e for e in events if e["event"] == "ray-worker-lost"]
    assert len(lost) == 2 and len(lost[0]["retried"]) >= 2, lost  # bystanders were in flight
    assert (s.ingested, s.failed) == (n - 1, 1)
    (path, reason), = s.errors
    assert path == str(tmp_path / "m" / "poison.flac") and "the second time alone" in reason
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        assert cat.count_analyses() == n - 1


def test_workers_that_cannot_start_stop_ingest_with_the_reason(cluster, tmp_path, monkeypatch):
    """Every worker fails as it starts (here the function it is handed comes from a module the
    workers cannot import, as a model missing on a node would): ingest stops with why, instead
    of starting workers for ever."""
    from soundalike.ingest import pipeline
    from soundalike.ingest.ray_runner import RayUnavailableError

    _tracks(tmp_path / "m", 3)
    monkeypatch.setattr(pipeline, "analyze_file", _dies_on_poison)  # not importable there
    with pytest.raises(RayUnavailableError, match=r"Ray workers in a row failed as they started "
                                                  r"\(ModuleNotFoundError: No module named '[\w.]*test_ingest_ray'\); "
                                                  r"3 files left"):
        ingest([tmp_path / "m"], catalog=tmp_path / "c.sqlite", model="mfcc-stats", ray=cluster.address)
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        assert cat.count_analyses() == 0


def test_a_killed_driver_loses_nothing_and_a_rerun_finishes(cluster, tmp_path):
    n = 24
    _tracks(tmp_path / "m", n, duration_s=8.0)
    db = tmp_path / "c.sqlite"
    cmd = [sys.executable, "-m", "soundalike", "ingest", str(tmp_path / "m"), "--catalog", str(db),
           "--model", "mfcc-stats", "--ray", cluster.address]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    committed = 0
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as conn:
                    committed = conn.execute("SELECT COUNT(*) FROM analyses").fetchone()[0]
            except sqlite3.OperationalError:
                committed = 0
        if committed >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the driver ended before it could be killed: {proc.stderr.read()!r}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with Catalog.open(db) as cat:
        before = cat.count_tracks()
    assert 0 < before < n
    s = ingest([tmp_path / "m"], catalog=db, model="mfcc-stats", ray=cluster.address)
    assert s.failed == 0 and s.ingested + s.unchanged == n and s.unchanged >= before
    _exactly_once(db, n)


def _workers_under(node) -> list[int]:
    """The pids of the soundalike worker processes ``node``'s raylet runs."""
    from ray._private import ray_constants

    raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == raylet \
                    and b"_Worker" in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _wait_for_worker_on(node, timeout_s: float = 90.0) -> bool:
    """Wait until a soundalike worker process runs under ``node``'s raylet (then 3 s more,
    for it to load its analyzer)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if _workers_under(node):
            time.sleep(3.0)
            return True
        time.sleep(0.2)
    return False


def test_a_node_leaving_mid_run_the_run_completes_on_the_rest(cluster, tmp_path):
    n = 24
    _tracks(tmp_path / "m", n, duration_s=8.0)
    db = tmp_path / "c.sqlite"
    extra = cluster.add_node(**NODE, temp_dir=cluster.sa_temp_dir)
    cluster.wait_for_nodes()
    events, removed, waited = [], [], []

    def on_event(e):
        events.append(e)
        if e["event"] == "ray-worker" and e["node_id"] == extra.node_id and not removed:
            # The extra node's worker is ready and the driver hands it files right after this
            # event: the node goes now, without warning, so those files are surely in flight
            # on a dead worker.  (Removing it at a later commit raced on a quiet machine: its
            # files were often done, and no more were left for it.)
            # A machine that vanishes takes its worker processes with it at once (a raylet
            # killed alone leaves them running long enough to finish what they were sent).
            doomed = _workers_under(extra)
            cluster.remove_node(extra, allow_graceful=False)
            for pid in doomed:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            removed.append(extra.node_id)
        if e["event"] == "file" and not waited and not removed:
            # Hold the driver until the extra node's worker exists (on 2 cores the run could
            # otherwise end before it starts), so that it surely gets files.
            waited.append(_wait_for_worker_on(extra))

    s = ingest([tmp_path / "m"], catalog=db, model="mfcc-stats", ray=cluster.address, on_event=on_event)
    assert removed and waited in ([], [True]), "no worker ever ran on the extra node"
    lost = [e for e in events if e["event"] == "ray-worker-lost"]
    assert lost and all(e["node"] == "127.0.0.1" for e in lost)
    assert sum(len(e["retried"]) for e in lost) >= 1  # the files it was given ran elsewhere
    assert (s.ingested, s.failed) == (n, 0)
    _exactly_once(db, n)


def test_without_ray_ingest_never_imports_it(tmp_path):
    _tracks(tmp_path / "m", 2)
    code = ("import sys; from soundalike.ingest import ingest; "
            f"s = ingest([{str(tmp_path / 'm')!r}], catalog={str(tmp_path / 'c.sqlite')!r}, "
            "model='mfcc-stats', workers=1); "
            "assert s.ingested == 2; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
