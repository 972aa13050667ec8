"""Is SQLAlchemy Core worth it for the catalog?  Per-request cost of the queries
``/api/similar`` runs, through plain DB-API (what the catalog uses) and through
SQLAlchemy Core (``text()`` and the expression language with its compiled cache).

Run: ``python benchmarks/bench_sql_layer.py`` in an environment that has SQLAlchemy
(it is not a soundalike dependency; ``pip install sqlalchemy`` into a scratch venv).
Prints microseconds per "request" (get 10 tracks by id + their tags), median of runs.
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

N_TRACKS = 100_000
N_REQ = 3000


def build(path: Path) -> None:
    c = sqlite3.connect(path)
    c.executescript("""
    CREATE TABLE tracks (id INTEGER PRIMARY KEY, path TEXT UNIQUE, title TEXT, artist TEXT, status TEXT);
    CREATE TABLE tags (track_id INTEGER, category TEXT, tag TEXT, source TEXT,
                       PRIMARY KEY (track_id, category, tag, source));
    """)
    c.executemany("INSERT INTO tracks VALUES (?, ?, ?, ?, 'ok')",
                  ((i, f"/m/{i}.ogg", f"t{i}", f"a{i % 500}") for i in range(1, N_TRACKS + 1)))
    c.executemany("INSERT INTO tags VALUES (?, 'genre', ?, 'file')",
                  ((i, f"g{i % 20}") for i in range(1, N_TRACKS + 1)))
    c.commit()
    c.close()


def timed(fn, ids_list) -> float:
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        for ids in ids_list:
            fn(ids)
        runs.append((time.perf_counter() - t0) / len(ids_list) * 1e6)
    return statistics.median(runs)


def main() -> None:
    import random

    import sqlalchemy as sa

    tmp = Path(tempfile.mkdtemp())
    db = tmp / "b.sqlite"
    build(db)
    rnd = random.Random(0)
    ids_list = [rnd.sample(range(1, N_TRACKS + 1), 10) for _ in range(N_REQ)]

    conn = sqlite3.connect(db, isolation_level=None)

    def dbapi(ids):
        m = ",".join("?" * len(ids))
        conn.execute(f"SELECT id, path, title, artist, status FROM tracks WHERE id IN ({m})", ids).fetchall()
        conn.execute(f"SELECT track_id, category, tag FROM tags WHERE source IN (?, ?, ?) AND track_id IN ({m})",
                     ["file", "user", "model", *ids]).fetchall()

    eng = sa.create_engine(f"sqlite:///{db}")
    sconn = eng.connect()
    md = sa.MetaData()
    tracks = sa.Table("tracks", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("path", sa.Text),
                      sa.Column("title", sa.Text), sa.Column("artist", sa.Text), sa.Column("status", sa.Text))
    tags = sa.Table("tags", md, sa.Column("track_id", sa.Integer), sa.Column("category", sa.Text),
                    sa.Column("tag", sa.Text), sa.Column("source", sa.Text))
    q_tracks = sa.select(tracks).where(tracks.c.id.in_(sa.bindparam("ids", expanding=True)))
    q_tags = sa.select(tags.c.track_id, tags.c.category, tags.c.tag).where(
        tags.c.source.in_(sa.bindparam("srcs", expanding=True)), tags.c.track_id.in_(sa.bindparam("ids", expanding=True)))

    def core(ids):
        sconn.execute(q_tracks, {"ids": ids}).fetchall()
        sconn.execute(q_tags, {"ids": ids, "srcs": ["file", "user", "model"]}).fetchall()

    t_tracks = sa.text("SELECT id, path, title, artist, status FROM tracks WHERE id IN :ids").bindparams(
        sa.bindparam("ids", expanding=True))
    t_tags = sa.text("SELECT track_id, category, tag FROM tags WHERE source IN :srcs AND track_id IN :ids").bindparams(
        sa.bindparam("ids", expanding=True), sa.bindparam("srcs", expanding=True))

    def text(ids):
        sconn.execute(t_tracks, {"ids": ids}).fetchall()
        sconn.execute(t_tags, {"ids": ids, "srcs": ["file", "user", "model"]}).fetchall()

    for fn in (dbapi, core, text):  # warm
        fn(ids_list[0])
    a, b, c = timed(dbapi, ids_list), timed(core, ids_list), timed(text, ids_list)
    print(f"SQLAlchemy {sa.__version__}, Python {sys.version.split()[0]}, {N_TRACKS} tracks, "
          f"2 queries per request (10 tracks by id + their tags)")
    print(f"{'layer':<28}{'us/request':>12}{'vs DB-API':>11}")
    for name, v in (("plain DB-API (sqlite3)", a), ("SQLAlchemy Core select()", b), ("SQLAlchemy text()", c)):
        print(f"{name:<28}{v:>12.1f}{v / a:>10.2f}x")
    print(open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
