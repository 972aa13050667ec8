"""Similarity-search benchmark: index build, query latency and recall; HTTP under load.

Synthetic but structured embeddings: ``--clusters`` Gaussian clusters of uneven size
in ``--dim`` dimensions (200 = MTT_musicnn's embedding), plus random tags.  For each
size it measures, for the exact (flat) and HNSW index, with and without a filter that
keeps 10% of the tracks (applied inside the search) -- as a one-off mask and as the
cached filter similar() uses (vectors gathered on first use; that first query is timed
apart): build time, p50/p99 single-query latency, and recall@10 against brute force,
plus an efSearch sweep on HNSW.  Then it serves a 100k-track catalog with ``soundalike
serve --workers 2`` (uvicorn, in a subprocess) and measures /api/similar latency and
throughput under 16 concurrent keep-alive clients (half the requests filtered).  The
load average is printed: on a shared 2-core machine it moves every figure.

    python benchmarks/bench_search.py                       # 100k and 1M, then HTTP
    python benchmarks/bench_search.py --sizes 100000 --http-only

Targets: 1M filtered top-10 p50 <= 5 ms at recall@10 >= 0.95; exact at 100k <= 5 ms;
web p99 <= 100 ms at 16 concurrent clients.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from soundalike.search.index import IndexConfig, VectorIndex, normalize


def clustered(n: int, dim: int, *, clusters: int, seed: int = 0) -> np.ndarray:
    """float32 ``(n, dim)``: Zipf-sized clusters with per-cluster spread, not plain Gaussian."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.8
    assign = rng.choice(clusters, n, p=weights / weights.sum())
    spread = rng.uniform(0.3, 0.8, clusters).astype(np.float32)
    X = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        a = assign[start : start + 100_000]
        X[start : start + len(a)] = centers[a] + spread[a, None] * rng.standard_normal((len(a), dim), np.float32)
    return X


def ground_truth(Xn: np.ndarray, Qn: np.ndarray, k: int, mask: np.ndarray | None) -> np.ndarray:
    out = np.empty((len(Qn), k), np.int64)
    for i, q in enumerate(Qn):
        s = Xn @ q
        if mask is not None:
            s = np.where(mask, s, -np.inf)
        j = np.argpartition(-s, k)[:k]
        out[i] = j[np.argsort(-s[j])]
    return out


def measure(index: VectorIndex, Q: np.ndarray, k: int, mask: np.ndarray | None, truth: np.ndarray) -> dict:
    lat, rec = [], []
    index.search(Q[0], k, allowed=mask)  # warm-up
    for q, t in zip(Q, truth, strict=True):
        t0 = time.perf_counter()
        ids, _ = index.search(q, k, allowed=mask)
        lat.append(time.perf_counter() - t0)
        rec.append(len(set(ids[0].tolist()) & set(t.tolist())) / k)
    return {"p50_ms": 1e3 * float(np.percentile(lat, 50)), "p99_ms": 1e3 * float(np.percentile(lat, 99)),
            "recall10": float(np.mean(rec))}


def bench_index(n: int, args) -> list[dict]:
    rows = []
    t0 = time.perf_counter()
    X = clustered(n, args.dim, clusters=args.clusters, seed=n)
    rng = np.random.default_rng(1)
    keep = rng.random(n) < 0.10  # the "10% filter", e.g. one genre tag
    qi = rng.integers(0, n, args.queries)
    Q = X[qi] + 0.2 * rng.standard_normal((args.queries, args.dim), np.float32)
    Xn, Qn = normalize(X), normalize(Q)
    truth = {False: ground_truth(Xn, Qn, 10, None), True: ground_truth(Xn, Qn, 10, keep)}
    print(f"# n={n:,}: data + ground truth in {time.perf_counter() - t0:.1f} s", flush=True)
    ids = np.arange(n, dtype=np.int64)
    for kind in ("flat", "hnsw"):
        cfg = IndexConfig(hnsw_m=args.hnsw_m, ef_construction=args.ef_construction, ef_search=args.ef_search)
        t0 = time.perf_counter()
        index = VectorIndex.build(ids, X, model_id="bench", kind=kind, config=cfg)
        build_s = time.perf_counter() - t0
        # "10% mask": a one-off bool mask (bitmap selector, or filtered HNSW);
        # "10% cached": what similar() and the web use, a cached Selection whose vectors are
        # gathered on first use (that first query is timed separately, as "first ms").
        for filt in ("none", "10% mask", "10% cached"):
            first_ms = None
            if filt == "none":
                allowed = None
            elif filt == "10% mask":
                allowed = index.allowed_mask(ids[keep])
            else:
                allowed = index.cached_selection("genre:g3", lambda: ids[keep])
                t0 = time.perf_counter()
                index.search(Q[0], 10, allowed=allowed)
                first_ms = 1e3 * (time.perf_counter() - t0)
            m = measure(index, Q, 10, allowed, truth[filt != "none"])
            row = {"n": n, "kind": kind, "filter": filt, "build_s": build_s, "first_ms": first_ms, **m}
            rows.append(row)
            print(f"{n:>9,} {kind:<5} {filt:<10} build {build_s:7.1f} s  p50 {m['p50_ms']:6.2f} ms  "
                  f"p99 {m['p99_ms']:6.2f} ms  recall@10 {m['recall10']:.3f}"
                  + (f"  first {first_ms:.1f} ms" if first_ms is not None else ""), flush=True)
        if kind == "hnsw" and args.ef_sweep:
            for efs in args.ef_sweep:
                sweep = VectorIndex(model_id="bench", dim=index.dim, kind="hnsw", index=index.index, ids=index.ids,
                                    config=IndexConfig(**{**vars(cfg), "ef_search": efs}))
                m = measure(sweep, Q, 10, None, truth[False])
                rows.append({"n": n, "kind": kind, "filter": f"none efS={efs}", "build_s": build_s,
                             "first_ms": None, **m})
                print(f"{n:>9,} hnsw  none efS={efs:<5} p50 {m['p50_ms']:6.2f} ms  p99 {m['p99_ms']:6.2f} ms  "
                      f"recall@10 {m['recall10']:.3f}", flush=True)
        del index
    return rows


# --------------------------------------------------------------------------- HTTP


def make_catalog(path: Path, n: int, dim: int, clusters: int) -> None:
    from soundalike.catalog.store import Catalog, Tag

    X = clustered(n, dim, clusters=clusters, seed=7)
    rng = np.random.default_rng(2)
    genres = [f"g{i}" for i in range(10)]  # each ~10% of tracks
    moods = ["calm", "dark", "happy", "sad"]
    with Catalog.open(path) as cat:
        cat.register_model(model_id="bench-200d", name="bench", dim=dim, labels=[], label_category="tag")
        with cat.transaction():
            for i in range(n):
                tid = cat.upsert_track(path=f"/bench/{i}.mp3", content_hash=str(i), size=1, mtime=0.0,
                                       duration_s=float(rng.uniform(20, 400)), title=f"track {i}",
                                       artist=f"artist {i % 5000}", year=int(rng.integers(1960, 2024)))
                tags = [Tag(genres[int(rng.integers(0, 10))], "genre", "file")]
                if rng.random() < 0.5:  # tags are sparse
                    tags.append(Tag(moods[int(rng.integers(0, 4))], "mood", "file"))
                cat.set_tags(tid, tags, source="file")
                cat.put_analysis(tid, "bench-200d", X[i])


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_http(args) -> dict:
    cat_path = args.http_catalog or Path(tempfile.mkdtemp(prefix="bench-search-")) / "catalog.sqlite"
    if not cat_path.exists():
        t0 = time.perf_counter()
        make_catalog(cat_path, args.http_tracks, args.dim, args.clusters)
        print(f"# catalog of {args.http_tracks:,} tracks built in {time.perf_counter() - t0:.1f} s", flush=True)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from soundalike.cli import main; raise SystemExit(main())",
                             "serve", "--catalog", str(cat_path), "--port", str(port),
                             "--workers", str(args.workers)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/api/facets?per_category=1")
                resp = c.getresponse()
                resp.read()
                if resp.status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError("server did not start")
        rng = np.random.default_rng(3)
        # warm the filter cache the way a user session would (every worker process)
        for _ in range(4 * args.workers):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", "/api/similar?id=1&k=10&where=genre:g3")
            c.getresponse().read()
            c.close()
        lat: list[float] = []
        errors = [0]
        lock = threading.Lock()

        def client(seed: int) -> None:
            r = np.random.default_rng(seed)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine = []
            for j in range(args.http_requests):
                tid = int(r.integers(1, args.http_tracks + 1))
                url = f"/api/similar?id={tid}&k=10" + ("&where=genre:g3" if j % 2 else "")
                t = time.perf_counter()
                conn.request("GET", url)
                resp = conn.getresponse()
                body = resp.read()
                mine.append(time.perf_counter() - t)
                if resp.status != 200 or not json.loads(body)["hits"]:
                    with lock:
                        errors[0] += 1
            with lock:
                lat.extend(mine)

        threads = [threading.Thread(target=client, args=(int(rng.integers(1 << 30)),))
                   for _ in range(args.concurrency)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
        res = {"tracks": args.http_tracks, "clients": args.concurrency, "workers": args.workers,
               "requests": len(lat),
               "errors": errors[0], "rps": len(lat) / wall, "p50_ms": 1e3 * float(np.percentile(lat, 50)),
               "p99_ms": 1e3 * float(np.percentile(lat, 99))}
        print(f"HTTP /api/similar, {res['tracks']:,} tracks, {res['clients']} clients, {args.workers} "
              f"worker(s): {res['rps']:.0f} req/s, "
              f"p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, errors {res['errors']}", flush=True)
        return res
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=200)
    ap.add_argument("--clusters", type=int, default=500)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--hnsw-m", type=int, default=IndexConfig.hnsw_m)
    ap.add_argument("--ef-construction", type=int, default=IndexConfig.ef_construction)
    ap.add_argument("--ef-search", type=int, default=IndexConfig.ef_search)
    ap.add_argument("--ef-sweep", type=int, nargs="*", default=[64, 128], help="also measure these efSearch")
    ap.add_argument("--http-tracks", type=int, default=100_000)
    ap.add_argument("--http-requests", type=int, default=100, help="requests per client")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="`soundalike serve --workers`")
    ap.add_argument("--http-catalog", type=Path, help="reuse (or build once) the HTTP catalog here")
    ap.add_argument("--http-only", action="store_true")
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, dim {args.dim}, "
          f"{args.clusters} clusters, {args.queries} queries, HNSW M={args.hnsw_m} "
          f"efC={args.ef_construction} efS={args.ef_search}; load average at the start: {_loadavg()}", flush=True)
    rows = [] if args.http_only else [r for n in args.sizes for r in bench_index(n, args)]
    http = None if args.no_http else bench_http(args)

    print(f"\n# load average at the end: {_loadavg()}")
    print("\n| n | index | filter | build s | p50 ms | p99 ms | recall@10 | first query ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        first = f"{r['first_ms']:.1f}" if r.get("first_ms") is not None else ""
        print(f"| {r['n']:,} | {r['kind']} | {r['filter']} | {r['build_s']:.1f} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {r['recall10']:.3f} | {first} |")
    print("\n| target | measured | met |")
    print("|---|---|---|")
    by = {(r["n"], r["kind"], r["filter"]): r for r in rows}
    for filt in ("10% cached", "10% mask"):
        if (1_000_000, "hnsw", filt) in by:
            r = by[(1_000_000, "hnsw", filt)]
            ok = r["p50_ms"] <= 5 and r["recall10"] >= 0.95
            print(f"| 1M filtered top-10 p50 <= 5 ms at recall@10 >= 0.95 | {filt}: p50 {r['p50_ms']:.2f} ms, "
                  f"p99 {r['p99_ms']:.2f} ms, recall {r['recall10']:.3f} (HNSW index) | {'yes' if ok else 'NO'} |")
    if (100_000, "flat", "none") in by:
        r = by[(100_000, "flat", "none")]
        print(f"| exact search at 100k <= 5 ms | p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms | "
              f"{'yes' if r['p50_ms'] <= 5 else 'NO'} |")
    if http:
        print(f"| web p99 <= 100 ms at {http['clients']} concurrent clients ({http['tracks']:,} tracks, "
              f"{http['workers']} workers) | p99 {http['p99_ms']:.1f} ms, p50 {http['p50_ms']:.1f} ms, "
              f"{http['rps']:.0f} req/s | {'yes' if http['p99_ms'] <= 100 else 'NO'} |")
    if args.json:
        args.json.write_text(json.dumps({"index": rows, "http": http}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
