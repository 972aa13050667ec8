"""Web page benchmark: server time of what the buyer's page asks for, on a 100k-track catalog.

Builds (once, cached under ``--cache``) a synthetic catalog of ``--tracks`` tracks with
realistic tag density -- genre, instrument, mood, vocals from files; five model tags per
track from a 50-label vocabulary; lengths 10 s .. 10 min; BPM and key where the catalog
has those columns -- then times the requests the page makes, in-process through the
ASGI app (server time, measured around the app: routing, validation, SQL and JSON; not
the network nor the test client's own thread hand-offs):

- **first page**: ``/api/tracks`` (50 rows, default sort) + ``/api/facets`` (all categories);
- **facet counts** alone;
- **filter change**: a random facet + length range + sort, as the page sends them:
  ``/api/tracks`` + ``/api/facets`` + one ``/api/facets?categories=<c>`` per chosen
  category (counts without the category's own term, for OR within a category);
- **text search** (``q=`` over titles, artists, albums and file names: a word or two);
- **short text search**: ``q=`` of one or two characters.

Each scenario's p50 / p99 over ``--repeat`` runs (distinct random filters) is printed next
to the 150 ms target with the load average (a shared machine moves every figure).

    python benchmarks/bench_web.py                     # 100k tracks
    python benchmarks/bench_web.py --tracks 20000 --repeat 30
    python benchmarks/bench_web.py --peaks ~/Music --files 12   # cost of waveform peaks at ingest

``--state-change`` instead times what a commit into a served catalog costs the next page
request: one transaction changes 1 or 50 tracks (re-tagged and re-measured; half of the 50
new), then the first requests after it (``page`` in relevance order + ``facets``, and a
facet + length filter's ``page`` + ``facets``), with the tables
brought forward from the changed tracks, against the same requests after a full rebuild
(the tables forgotten), side by side on a scratch copy of the catalog:

    python benchmarks/bench_web.py --state-change --tracks 20000 --backend sqlite

``--peaks DIR`` instead times, per real file, the whole-file decode that computes the
waveform peaks against the analysis ingest runs anyway: the whole file through the default
model, and a 10-patch budget (10 seeks, 3 s each) as an analysis budget reads.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

TARGET_MS = 150.0
GENRES = ("ambient", "rock", "pop", "electronic", "hip hop", "jazz", "classical", "folk", "cinematic",
          "corporate", "funk", "soul", "metal", "country", "reggae", "latin", "lofi", "house",
          "techno", "world")
INSTRUMENTS = ("piano", "guitar", "strings", "synth", "drums", "bass", "brass", "vocals", "ukulele",
               "organ", "percussion", "flute", "violin", "cello", "harp", "banjo", "saxophone",
               "trumpet", "marimba", "choir", "pads", "bells", "harmonica", "mandolin", "accordion")
MOODS = ("happy", "calm", "dark", "epic", "sad", "uplifting", "tense", "romantic", "playful",
         "dreamy", "angry", "hopeful", "mysterious", "relaxing", "energetic")
VOCALS = ("instrumental", "female", "male")
LABELS = tuple(f"label{i:02d}" for i in range(50))
WORDS = ("sun", "night", "river", "city", "dream", "fire", "road", "blue", "echo", "wild", "gold",
         "rain", "summer", "ghost", "heart", "storm", "light", "ocean", "forest", "neon", "velvet")


def build(path: Path, n: int, *, seed: int = 0) -> None:
    """Write the synthetic catalog (tracks + tags) with the Catalog API."""
    from soundalike.catalog.store import Catalog, Tag

    rng = random.Random(seed)
    tmp = path.with_suffix(".building")
    for p in (tmp, Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm")):
        p.unlink(missing_ok=True)
    cat = Catalog.open(tmp)
    t0 = time.perf_counter()
    with cat.transaction():
        for i in range(n):
            title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))).title()
            genre = rng.choice(GENRES)
            p = f"/bench/{genre.replace(' ', '-')}/{title.replace(' ', '_').lower()}_{i:06d}.mp3"
            kw = dict(path=p, content_hash=hashlib.sha1(p.encode()).hexdigest(), size=1_000_000 + i, mtime=1.7e9,
                      duration_s=round(rng.uniform(10, 600), 2), sr=44100, channels=2, format="mp3",
                      title=title if rng.random() > 0.1 else None, artist=f"artist {rng.randint(1, 4000)}",
                      album=f"album {rng.randint(1, 12000)}", year=rng.randint(1960, 2025))
            tid = cat.upsert_track(**kw)
            tags = [Tag(genre, "genre", "file"), Tag(rng.choice(MOODS), "mood", "file"),
                    Tag(rng.choice(VOCALS), "vocals", "file")]
            tags += [Tag(x, "instrument", "file") for x in rng.sample(INSTRUMENTS, rng.randint(1, 3))]
            cat.set_tags(tid, tags, source="file")
            cat.set_tags(tid, [Tag(x, "tag", "model", confidence=rng.random()) for x in rng.sample(LABELS, 5)],
                         source="model", model_id="bench")
            if i and i % 20000 == 0:
                print(f"  built {i} tracks ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    add_attributes(cat, seed=seed)
    cat.close()
    os.replace(tmp, path)
    print(f"built {n} tracks in {time.perf_counter() - t0:.0f} s -> {path}", file=sys.stderr)


def add_attributes(cat, *, seed: int = 0) -> None:
    """Tempo, key, loudness, vocals and energy for 90% of the tracks (as ingest stores them)."""
    rng = random.Random(seed + 1)
    ids = [t.id for t in cat.iter_tracks()]
    with cat.transaction():
        for tid in ids:
            if rng.random() < 0.9:
                cat.put_attributes(tid, {"bpm": round(rng.uniform(60, 180), 1),
                                         "camelot": f"{rng.randint(1, 12)}{rng.choice('AB')}",
                                         "loudness_lufs": round(rng.uniform(-30, -6), 1),
                                         "vocals": rng.random(), "energy": rng.random()})
    print(f"attributes for {len(ids)} tracks", file=sys.stderr)


def random_filter(rng: random.Random) -> tuple[str, dict[str, str], list[str]]:
    """A filter like a buyer's: one or two facets, often a length range; and a sort."""
    terms, chosen = [], []
    cats = rng.sample([("genre", GENRES), ("mood", MOODS), ("instrument", INSTRUMENTS), ("vocals", VOCALS)],
                      rng.randint(1, 2))
    for c, vals in cats:
        picked = rng.sample(vals, rng.randint(1, 2))
        terms.append(f"{c}:" + "|".join(f'"{v}"' if " " in v else v for v in picked))
        chosen.append(c)
    if rng.random() < 0.7:
        lo = rng.choice((0, 30, 60, 90))
        terms.append(f"duration:{lo}..{lo + rng.choice((60, 120, 240))}")
    if rng.random() < 0.3:
        lo = rng.choice((70, 90, 110, 130))
        terms.append(f"bpm:{lo}..{lo + rng.choice((10, 20, 40))}")
    sort = rng.choice(("relevance", "title", "length", "added", "bpm"))
    return " ".join(terms), {"sort": sort}, chosen


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def bench_peaks(folder: Path, n_files: int) -> int:
    """Peaks' cost next to the analysis, per file, side by side in one run."""
    import numpy as np

    from soundalike.audio.io import info, is_audio_path, load
    from soundalike.audio.peaks import peaks_of_file
    from soundalike.models.zoo import DEFAULT_ANALYZER, load_analyzer

    files = sorted(p for p in folder.expanduser().rglob("*") if p.is_file() and is_audio_path(p))
    if not files:
        print(f"no audio files under {folder}", file=sys.stderr)
        return 1
    step = max(1, len(files) // n_files)
    files = files[::step][:n_files]
    an = load_analyzer(DEFAULT_ANALYZER)
    sr = an.sample_rate
    rows = []
    for f in files:
        dur = info(f).duration_s
        t = time.perf_counter(); p = peaks_of_file(f); t_peaks = time.perf_counter() - t
        t = time.perf_counter(); an.analyze(load(f, sr=sr).y, sr); t_full = time.perf_counter() - t
        t = time.perf_counter()
        starts = np.linspace(0, max(0.0, dur - 3.0), 10)
        y = np.concatenate([load(f, sr=sr, offset_s=float(s0), duration_s=min(3.0, dur), min_duration_s=0.0).y
                            for s0 in starts])
        an.analyze(y, sr)
        t_budget = time.perf_counter() - t
        rows.append((f.name[:40], dur, t_peaks, t_full, t_budget, len(p.to_bytes())))
    load_avg = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else ["?"] * 3
    print(f"\npeaks vs analysis ({an.name}), load average {' '.join(load_avg)}")
    print(f"{'file':<40} {'len s':>7} {'peaks s':>8} {'full s':>8} {'10-patch s':>10} {'bytes':>6}")
    for r in rows:
        print(f"{r[0]:<40} {r[1]:7.1f} {r[2]:8.3f} {r[3]:8.3f} {r[4]:10.3f} {r[5]:6d}")
    tot = [sum(r[i] for r in rows) for i in (1, 2, 3, 4)]
    print(f"{'total':<40} {tot[0]:7.1f} {tot[1]:8.3f} {tot[2]:8.3f} {tot[3]:10.3f}")
    print(f"peaks = {tot[1] / tot[2]:.2f}x the whole-file analysis, {tot[1] / tot[3]:.2f}x a 10-patch analysis; "
          f"{tot[0] / tot[1]:.0f}x real time")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tracks", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=40, help="runs per scenario")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "soundalike-bench-web")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--peaks", type=Path, help="time waveform peaks against analysis on this folder instead")
    ap.add_argument("--files", type=int, default=10, help="files for --peaks")
    ap.add_argument("--state-change", action="store_true",
                    help="time a commit's cost to the next request (tables brought forward vs rebuilt)")
    ap.add_argument("--backend", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"],
                    help="catalog backends to time (postgresql: a throw-away server with a copy)")
    args = ap.parse_args(argv)
    if args.peaks:
        return bench_peaks(args.peaks, args.files)

    args.cache.mkdir(parents=True, exist_ok=True)
    path = args.cache / f"catalog-{args.tracks}.sqlite"
    if args.rebuild or not path.exists():
        build(path, args.tracks)
    from soundalike.catalog.store import Catalog

    with Catalog.open(path) as cat:  # an older cache (or catalog schema) is brought up to date
        if cat.attribute_summary()["tracks"] == 0:
            add_attributes(cat)
    table: dict[str, dict[str, tuple[float, float]]] = {}
    loads: dict[str, str] = {}
    server = None
    if args.state_change:
        import shutil

        scratch = args.cache / f"scratch-{args.tracks}.sqlite"
        shutil.copyfile(path, scratch)  # the changes are committed: keep the cached catalog as built
        path = scratch
    try:
        for backend in args.backend:
            target: str | Path = path
            if backend == "postgresql":
                server, target = postgres_copy(path)
            if args.state_change:
                table[backend] = state_change(target, repeat=min(args.repeat, 5))
                loads[backend] = " ".join(open("/proc/loadavg").read().split()[:3])
                continue
            table[backend] = run_scenarios(target, repeat=args.repeat)
            loads[backend] = " ".join(open("/proc/loadavg").read().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    finally:
        if server is not None:
            server.stop()

    if args.state_change:
        print(f"\nbench_web --state-change: {args.tracks} tracks, {os.cpu_count()} CPUs; first page + facets + "
              f"a filter change after a commit, ms, median of {min(args.repeat, 5)} (min-max)")
        print("| changed tracks | " + " | ".join(f"{b} brought forward | {b} rebuilt | ratio" for b in table) + " |")
        print("|---|" + "---|---|---|" * len(table))
        for name in next(iter(table.values())):
            cells = []
            for b in table:
                (inc, inc_lo, inc_hi), (full, full_lo, full_hi) = table[b][name]
                cells.append(f"{inc:.0f} ({inc_lo:.0f}-{inc_hi:.0f}) | {full:.0f} ({full_lo:.0f}-{full_hi:.0f}) | "
                             f"{full / inc:.0f}x")
            print(f"| {name} | " + " | ".join(cells) + " |")
        print("load average after each backend's runs: " + "; ".join(f"{b} {l}" for b, l in loads.items()))
        return 0
    print(f"\nbench_web: {args.tracks} tracks, {args.repeat} runs per scenario, {os.cpu_count()} CPUs; "
          f"server time in ms, target {TARGET_MS:.0f} ms each")
    print("| scenario | " + " | ".join(f"{b} p50 | {b} p99" for b in table) + " | target |")
    print("|---|" + "---|---|" * len(table) + "---|")
    for name in next(iter(table.values())):
        cells = " | ".join(f"{table[b][name][0]:.1f} | {table[b][name][1]:.1f}" for b in table)
        worst = max(v[name][1] for v in table.values())
        print(f"| {name} | {cells} | <= {TARGET_MS:.0f}: {'met' if worst <= TARGET_MS else 'p99 over' if max(v[name][0] for v in table.values()) <= TARGET_MS else 'MISSED'} |")
    print("load average after each backend's runs: " + "; ".join(f"{b} {l}" for b, l in loads.items()))
    return 0


def postgres_copy(path: Path):
    """A throw-away PostgreSQL server (tests/pgserver.py) holding a copy of the catalog."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from pgserver import PgServer, find_bin_dir

    from soundalike.catalog.copy import copy_catalog

    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("--backend postgresql needs Debian's postgresql (initdb, pg_ctl)")
    server = PgServer(bin_dir).start()
    url = server.new_database("bench")
    t0 = time.perf_counter()
    copy_catalog(path, url, batch=5000)
    print(f"copied {path.name} into PostgreSQL in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return server, url


def _forget_tables() -> None:
    """Drop this process's browse and facet tables (the next request rebuilds them)."""
    from soundalike.catalog.browse import forget_cached

    forget_cached()


def state_change(target, *, repeat: int) -> dict[str, tuple[tuple, tuple]]:
    """Per number of changed tracks: ``((median, min, max) brought forward, (median, min,
    max) rebuilt)`` ms of the first page + facets after one committing transaction."""
    from soundalike.catalog.store import Catalog, Tag

    rng = random.Random(5)
    out = {}
    with Catalog.open(target) as cat:
        ids = cat.match("").tolist()

        def first_request() -> float:
            t = time.perf_counter()
            cat.page(limit=50, order="relevance")
            cat.facets()
            cat.page(where="genre:rock duration:30..240", limit=50, order="title")  # a filter change
            cat.facets(where="genre:rock duration:30..240")
            return (time.perf_counter() - t) * 1000

        def commit(k: int, round_: int) -> None:
            with cat.transaction():
                for j in range(k):
                    if k > 1 and j % 2:
                        p = f"/bench/new/{k}-{round_}-{j}-{rng.random()}.mp3"
                        tid = cat.upsert_track(path=p, content_hash=p, size=1, mtime=1.7e9,
                                               duration_s=rng.uniform(10, 600), title=rng.choice(WORDS).title())
                    else:
                        tid = rng.choice(ids)
                    cat.set_tags(tid, [Tag(rng.choice(GENRES), "genre", "file"), Tag(rng.choice(MOODS), "mood", "file")],
                                 source="file")
                    cat.put_attributes(tid, {"bpm": rng.uniform(60, 180), "camelot": f"{rng.randint(1, 12)}A"})

        first_request()  # the tables of the state as copied
        for k in (1, 50):
            inc, full = [], []
            for r in range(repeat):
                commit(k, r)
                inc.append(first_request())
                commit(k, r + 1000)
                _forget_tables()
                full.append(first_request())
            out[f"{k}"] = ((statistics.median(inc), min(inc), max(inc)), (statistics.median(full), min(full), max(full)))
            print(f"  {k} changed: brought forward {statistics.median(inc):.0f} ms, rebuilt "
                  f"{statistics.median(full):.0f} ms", file=sys.stderr)
    return out


def run_scenarios(target, *, repeat: int) -> dict[str, tuple[float, float]]:
    """p50 / p99 server time per scenario over ``repeat`` runs against the catalog ``target``."""
    from fastapi.testclient import TestClient

    from soundalike.web.app import create_app

    t0 = time.perf_counter()
    inner = create_app(target)  # loads the search index and builds the browse tables
    print(f"server start (index + browse tables): {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    served: list[float] = []

    async def timed(scope, receive, send):
        """Server time: from the request entering the app to its last byte leaving it
        (routing, validation, SQL, JSON; not the test client's own thread hand-offs)."""
        t = time.perf_counter()
        await inner(scope, receive, send)
        if scope["type"] == "http":
            served.append((time.perf_counter() - t) * 1000)

    client = TestClient(timed, base_url="http://127.0.0.1")  # a Host the server answers to
    client.__enter__()
    rng = random.Random(1)

    def get(url: str, params: dict | None = None) -> float:
        r = client.get(url, params=params)
        assert r.status_code == 200, (url, params, r.status_code, r.text[:200])
        return served[-1]

    t0 = time.perf_counter()
    get("/api/tracks", {"limit": 50})
    get("/api/facets", {"per_category": 40})
    print(f"first page after start: {(time.perf_counter() - t0) * 1000:.0f} ms", file=sys.stderr)

    results: dict[str, list[float]] = {k: [] for k in ("first page", "facet counts", "filter change", "text search",
                                                       "short text search")}
    for _ in range(repeat):
        results["first page"].append(get("/api/tracks", {"limit": 50}) + get("/api/facets", {"per_category": 40}))
        results["facet counts"].append(get("/api/facets", {"per_category": 40}))
        where, extra, chosen = random_filter(rng)
        ms = get("/api/tracks", {"where": where, "limit": 50, **extra})
        ms += get("/api/facets", {"where": where, "per_category": 40})
        for c in chosen:  # the page's OR-within-a-category counts
            rest = " ".join(t for t in re.findall(r'(?:[^\s"]|"[^"]*")+', where) if not t.startswith(c + ":"))
            ms += get("/api/facets", {"where": rest, "per_category": 40, "categories": c})
        results["filter change"].append(ms)
        word = rng.choice(WORDS) + rng.choice(("", "", " " + rng.choice(WORDS)))
        results["text search"].append(get("/api/tracks", {"q": word, "limit": 50}) + get("/api/facets", {"q": word}))
        # one or two characters (a trigram index cannot look these up; the browse tables can)
        short = rng.choice("abcdeghilnorstu") + rng.choice(("", rng.choice("aeinorsu")))
        results["short text search"].append(get("/api/tracks", {"q": short, "limit": 50})
                                            + get("/api/facets", {"q": short}))
    client.__exit__(None, None, None)
    return {k: (statistics.median(xs), pct(xs, 0.99)) for k, xs in results.items()}


if __name__ == "__main__":
    raise SystemExit(main())
