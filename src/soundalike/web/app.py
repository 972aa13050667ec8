"""The web page and JSON API: browse, filter, listen, and follow "more like this".

``create_app(catalog_path)`` returns a FastAPI app; ``soundalike serve`` runs it with
uvicorn on 127.0.0.1 by default.  The page (``templates/index.html`` +
``static/app.js``) is dependency-free and works offline.  The JSON API lives under
``/api`` (OpenAPI schema at ``/openapi.json``; no ``/docs``: Swagger UI would load
scripts from a CDN):

=======================================  =============================================
``GET /api/tracks``                      page of tracks (``where``, ``q``, ``offset``, ``limit``)
``GET /api/facets``                      tag counts per category over the same filter
``GET /api/tracks/{id}``                 one track: tags by source, top predicted tags
``GET|HEAD /api/tracks/{id}/audio``      the file, with HTTP Range (206, multipart, 416)
``GET /api/tracks/{id}/spectrogram.png`` its mel-spectrogram
``GET /api/similar``                     tracks like track ``id`` within ``where`` (caps per
                                         artist/album, near-duplicates left out, BPM tolerance)
``GET /api/playlist``                    ``seed=ID`` (radio) or ``from=A&to=B`` (path), as JSON,
                                         M3U8 or CSV
``POST /api/similar/upload``             tracks like an uploaded clip (size + type checked)
=======================================  =============================================

Safety: audio is served only for catalog tracks, by id -- no path ever comes from the
request; :class:`~soundalike.web.guard.Guard` checks Host and Origin, refuses oversized
bodies before reading them and sets CSP/nosniff; uploads are type-checked and their
decoded length capped; errors reach the client as a one-line JSON ``detail`` without
server paths, never a stack trace.  The web layer writes no SQL: it calls
the Catalog API and :mod:`soundalike.search`.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import logging
import math
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from soundalike.errors import (
    AudioDecodeError,
    AudioTooLongError,
    CatalogError,
    ConfigError,
    ModelMismatchError,
    QueryError,
    SoundalikeError,
    TrackNotFoundError,
)

log = logging.getLogger("soundalike.web")
HERE = Path(__file__).parent
#: Default cap on uploaded clips, in bytes.
MAX_UPLOAD_BYTES = 20_000_000
#: Threads a server process answers its (synchronous) routes on (``SOUNDALIKE_SERVER_THREADS``
#: overrides it).  Each holds one catalog connection, so this bounds a process's PostgreSQL
#: connections (was anyio's default of 40: a few hosts x workers could pass the server's
#: max_connections of 100); the routes are CPU-bound Python, so more threads than this
#: only queue for the GIL (bench_catalog.py measures 8 against 40).
SERVER_THREADS = 8


class FastJSONResponse(JSONResponse):
    """JSON rendered by orjson: for the plain dicts of str/int/float/bool/None the hot
    routes send, the same bytes as Starlette's ``json.dumps`` (compact, UTF-8; a test
    compares), ~15x faster to render (0.09 -> 0.005 ms for ten hits).  NumPy scalars are
    written as numbers; a NaN would be ``null`` where ``json.dumps`` refuses it."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def server_threads() -> int:
    """:data:`SERVER_THREADS`, or ``SOUNDALIKE_SERVER_THREADS`` when set (at least 1)."""
    raw = os.environ.get("SOUNDALIKE_SERVER_THREADS", "").strip()
    try:
        return max(1, int(raw)) if raw else SERVER_THREADS
    except ValueError:
        raise ConfigError(f"SOUNDALIKE_SERVER_THREADS must be a whole number, got {raw!r}") from None
#: Default cap on the decoded length of an uploaded clip, in seconds.
MAX_CLIP_S = 600.0
#: Room for the multipart envelope (boundaries, part headers, the form's small fields).
MULTIPART_OVERHEAD = 64 * 1024
#: Most ranges one request may ask for; more are answered with the whole file (RFC 9110
#: lets a server ignore Range), so a request cannot make us send thousands of parts.
MAX_RANGES = 32
#: Largest page ``/api/tracks`` returns.
PAGE_LIMIT_MAX = 500
#: Largest ``offset`` (beyond any catalog; keeps the value a 64-bit SQL integer).
MAX_OFFSET = 10**12
#: Bytes per chunk when streaming audio.
CHUNK = 256 * 1024
_RANGE_RE = re.compile(r"^(\d*)-(\d*)$")
_PATHS_RE = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s\\/:'\"]+)+[\\/]([^\s\\/:'\"]+)")
#: Sort orders the track list offers (``bpm`` needs per-track attributes in the catalog).
SortKey = Literal["relevance", "title", "length", "bpm", "added"]


class HTTPProblem(Exception):
    """An error answered with ``status`` and a one-line ``detail``."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        self.status, self.detail, self.headers = status, detail, headers or {}


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """Byte ranges ``[(start, end), ...]`` (inclusive) asked by a ``Range`` header, or None for all.

    The unit is case-insensitive (``BYTES=0-9``).  Overlapping or adjacent ranges are
    merged, in the order asked; unsatisfiable ones among satisfiable ones are dropped
    (RFC 9110 14.2).  More than :data:`MAX_RANGES` ranges: None (the whole file).

    Raises
    ------
    HTTPProblem
        416 for a malformed byte range or one that no part of the file satisfies.
    """
    h = header.strip()
    if not h.lower().startswith("bytes="):
        return None  # other units are ignored, as RFC 9110 allows
    unsat = HTTPProblem(416, f"range {h!r} not satisfiable for {size} bytes",
                        {"Content-Range": f"bytes */{size}"})
    specs = [x.strip() for x in h[len("bytes="):].split(",")]
    if len(specs) > MAX_RANGES:
        return None
    out: list[tuple[int, int]] = []
    for spec in specs:
        m = _RANGE_RE.match(spec.replace(" ", ""))
        if not m or (m.group(1) == "" and m.group(2) == ""):
            raise unsat  # malformed: the whole header is invalid
        a, b = m.group(1), m.group(2)
        if a == "":  # suffix: the last b bytes
            n = int(b)
            if n == 0 or size == 0:
                continue
            out.append((max(size - n, 0), size - 1))
            continue
        start = int(a)
        end = int(b) if b else size - 1
        if end < start:
            raise unsat
        if start >= size:
            continue
        out.append((start, min(end, size - 1)))
    if not out:
        raise unsat
    merged: list[tuple[int, int]] = []
    for r in out:  # merge into the first range it touches; keep the requested order otherwise
        for i, (s0, e0) in enumerate(merged):
            if r[0] <= e0 + 1 and s0 <= r[1] + 1:
                merged[i] = (min(s0, r[0]), max(e0, r[1]))
                break
        else:
            merged.append(r)
    return merged


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The one byte range of a ``Range`` header (the first after merging), or None for all."""
    r = parse_ranges(header, size)
    return r[0] if r else None


def public_message(msg: str) -> str:
    """An error message as a client may see it: absolute paths cut to their file names."""
    return _PATHS_RE.sub(lambda m: m.group(1), msg)


class _Catalogs:
    """One open Catalog per live worker thread, reused when its thread is gone.

    A connection is used by one thread at a time (sqlite connections are opened with
    ``check_same_thread=False`` for exactly this hand-over). The server's thread pool
    lets idle threads exit and starts new ones under load; a new thread adopts the
    catalog of a thread that has exited instead of opening another connection, so a
    long-running server holds at most as many connections as it has threads alive
    (before, every replaced thread left its connection open until shutdown).
    """

    #: How long a new thread waits for a retiring one to finish before it opens a
    #: connection past ``limit`` anyway (a server never blocks on this for long).
    ADOPT_WAIT_S = 2.0

    def __init__(self, path: Path, *, limit: int | None = None):
        self.path = path
        self.limit = limit
        self._owned: dict[threading.Thread, Any] = {}
        self._lock = threading.Lock()

    def _adopt(self):
        """The catalog of a thread that has exited, or None."""
        with self._lock:
            gone = [t for t in self._owned if not t.is_alive()]
            return self._owned.pop(gone[0]) if gone else None

    def get(self):
        me = threading.current_thread()
        cat = self._owned.get(me)
        if cat is not None:
            return cat
        cat = self._adopt()
        # the pool starts a new thread while an idle one is still on its way out (alive for
        # a few more milliseconds): at the limit, wait for it rather than open one more
        # connection (seen under load: 10 connections on a server of 8 threads + 1)
        deadline = time.monotonic() + self.ADOPT_WAIT_S
        while cat is None and self.limit is not None and self.open_count() >= self.limit \
                and time.monotonic() < deadline:
            time.sleep(0.005)
            cat = self._adopt()
        if cat is None:
            from soundalike.catalog.store import Catalog

            cat = Catalog.open(self.path, create=False)
        with self._lock:
            self._owned[me] = cat
        return cat

    def open_count(self) -> int:
        """How many catalogs (database connections) this server holds."""
        with self._lock:
            return len(self._owned)

    def close(self) -> None:
        with self._lock:
            cats, self._owned = list(self._owned.values()), {}
        for c in cats:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing at shutdown is best effort
                pass


def _track_json(t, tags=None) -> dict[str, Any]:
    from soundalike.web.present import display_title, is_junk_title

    d = {"id": t.id, "name": t.display_name, "title": t.title, "artist": t.artist, "album": t.album,
         "year": t.year, "duration_s": t.duration_s, "format": t.format,
         "file": os.path.basename(t.path), "display_title": display_title(t.title, t.path),
         "title_is_file": is_junk_title(t.title),
         "added_at": t.added_at}
    for extra in ("bpm", "key"):  # per-track attributes, where the catalog has them
        v = getattr(t, extra, None)
        if v is not None:
            d[extra] = v
    if tags is not None:
        d["tags"] = _tags_json(tags)
    return d


def _tags_json(tags) -> list[dict[str, Any]]:
    return [{"category": g.category, "tag": g.tag, "source": g.source, "confidence": round(g.confidence, 4)}
            for g in tags]


def create_app(catalog_path: str | os.PathLike, *, model: str | None = None,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, max_clip_s: float = MAX_CLIP_S,
               allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """Build the FastAPI app over the catalog at ``catalog_path``.

    Parameters
    ----------
    catalog_path : an existing catalog (a SQLite file or a ``postgresql://`` URL)
    model : model name or id for similarity (default: the catalog's most used model)
    max_upload_bytes : largest accepted upload, in bytes (refused before it is read)
    max_clip_s : longest accepted upload, in seconds of audio (decoding stops there)
    allowed_hosts : ``Host`` names the server answers to (default: loopback names; see
        :func:`soundalike.web.guard.allowed_hosts_for`; ``"*"``: any)

    Raises
    ------
    CatalogError
        The catalog does not exist or cannot be opened.
    """
    from soundalike.audio.io import AUDIO_EXTENSIONS
    from soundalike.catalog.query import parse as parse_filter
    from soundalike.search import similar as sim
    from soundalike.search import stages
    from soundalike.models.adapt import base_model_id_of
    from soundalike.search.sync import cached_index, model_info
    from soundalike.web.guard import LOOPBACK_HOSTS, Guard

    from soundalike.paths import catalog_target

    threads = server_threads()  # a bad setting fails here, before the server starts
    cpath = catalog_target(catalog_path)
    cats = _Catalogs(cpath, limit=threads + 1)  # the pool's threads + this (start-up, event loop) one
    first = cats.get()  # fails early (CatalogError) on a missing or bad catalog
    state: dict[str, Any] = {"model_id": None}

    def model_id() -> str:
        """The model similarity compares, as the catalog is now: an ingest elsewhere may
        have adapted or refitted it (a refit removes the automatic fit it replaces).
        Without ``model``: the catalog's default; a model *name* (``musicnn-fusion+adapt``):
        the newest model of that name; a model id or a trained run: that model, except an
        automatic adaptation that a refit has since removed: then its successor, the newest
        adaptation of the same base model (a line in the log says so)."""
        cat = cats.get()
        if model is None:
            seen = cat.remembered_default_model()
            if seen is not None and seen[1] == cat.change_token():
                return seen[0]
            return model_info(cat, None).model_id
        if state["model_id"] is None:
            info = model_info(cat, model)
            if info.name == model and info.model_id != model:
                return info.model_id  # by name: looked up again next time (one small statement)
            state["model_id"] = info.model_id
        pinned = state["model_id"]
        base = base_model_id_of(pinned)
        if base is not None:  # an adaptation: still there? (asked again only after a change)
            token = cat.change_token()
            if state.get("checked_at") != token:
                if cat.get_adaptation(pinned) is None:
                    newest = cat.adaptations(base)
                    follow = newest[0].model_id if newest else base
                    log.warning("model %s is gone (a refit replaced it); following %s", pinned, follow)
                    state["model_id"] = follow
                state["checked_at"] = token
        return state["model_id"]

    def search_model() -> str | None:
        """``model=`` for the searches: None lets them find the default in the statement
        they read anyway."""
        return None if model is None else model_id()

    try:
        cached_index(first, model_id())  # load or build the index before the first request
    except CatalogError:
        pass  # an empty catalog still serves its (empty) page
    # the browse tables (catalog/browse.py, catalog/facets.py) too: the first page is then
    # as fast as the next (building them reads every track and tag: seconds at 100k)
    first.prepare_browse()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        # what start-up made (the index, the browse tables, modules) lives as long as the
        # server: out of the collector's sight, so a full collection walks only what
        # requests made (measured: a 73 ms gen-2 pause under load at 100k tracks)
        gc.collect()
        gc.freeze()
        yield
        cats.close()

    # no /docs or /redoc: their pages load Swagger/ReDoc from a CDN (not offline, and
    # third-party script on a page that can reach the catalog); /openapi.json stays
    app = FastAPI(lifespan=lifespan, title="soundalike", version="1", docs_url=None, redoc_url=None,
                  description="Browse, filter, listen to and search a "
                  "soundalike catalog. Filters use the soundalike filter grammar "
                  "(e.g. `genre:rock|pop -mood:sad year:1990..1999`).")
    app.state.catalogs = cats
    app.add_middleware(Guard, allowed_hosts=tuple(allowed_hosts or LOOPBACK_HOSTS),
                       body_limits={"/api/similar/upload": max_upload_bytes + MULTIPART_OVERHEAD})
    timing_log = os.environ.get(ENV_TIMINGS, "").strip()
    if timing_log:  # outermost: from the first byte the app sees to the last it sends
        app.add_middleware(TimingLog, path=f"{timing_log}.{os.getpid()}")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    # ------------------------------------------------------------------ errors: one line, no traces

    @app.exception_handler(HTTPProblem)
    async def _problem(request: Request, exc: HTTPProblem):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(SoundalikeError)
    async def _known(request: Request, exc: SoundalikeError):
        status = (404 if isinstance(exc, TrackNotFoundError) else 400 if isinstance(exc, QueryError)
                  else 409 if isinstance(exc, ModelMismatchError)
                  else 413 if isinstance(exc, AudioTooLongError)
                  else 422 if isinstance(exc, AudioDecodeError) else 500)
        if status == 500:
            log.error("catalog error: %s", exc)
        msg = f"{Path(exc.path).name}: {exc.reason}" if isinstance(exc, AudioDecodeError) else str(exc)
        return JSONResponse({"detail": public_message(msg)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "path", "body"))
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": "internal error (see the server log)"}, status_code=500)

    # ------------------------------------------------------------------ page

    @app.get("/", include_in_schema=False)
    def index_page(request: Request) -> Response:
        from soundalike.web.buyer import set_csrf_cookie

        r = FileResponse(HERE / "templates" / "index.html", media_type="text/html")
        set_csrf_cookie(request, r)
        return r

    # ------------------------------------------------------------------ API

    def _open_ingested(t) -> int:
        """An open descriptor of ``t``'s file, if it still is the file that was ingested.

        Opened first, checked after (fstat), and read through the same descriptor: a
        file swapped between the check and the read cannot be sent.  O_NONBLOCK so a
        FIFO put in its place cannot hang the worker.  A gone or changed file takes the
        track out of service (``mark_changed``) and answers 404 / 409.
        """
        try:
            fd = os.open(t.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            cats.get().mark_changed(t.id)
            raise HTTPProblem(404, f"the file of track {t.id} is gone") from None
        problem = t.file_problem(os.fstat(fd))
        if problem:
            os.close(fd)
            cats.get().mark_changed(t.id)
            raise HTTPProblem(409, f"the file of track {t.id} {problem}; run `soundalike ingest` "
                                   f"on its folder to catalogue it again")
        return fd

    def _get_track(track_id: int):
        t = cats.get().get_track(track_id)
        if t is None or t.status != "ok":
            raise HTTPProblem(404, f"no track {track_id} in the catalog")
        return t

    @app.get("/api/tracks", summary="List tracks (filter, text search, pagination)")
    def list_tracks(where: Annotated[str | None, Query(max_length=2000)] = None,
                    q: Annotated[str | None, Query(max_length=200, description="text in title/artist/album or a tag")] = None,
                    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = 50,
                    include_suggested: bool = False,
                    sort: Annotated[SortKey, Query(description="relevance (to q), title, length, bpm or added (newest)")]
                    = "relevance") -> dict[str, Any]:
        from soundalike.audio.attributes import shown_bpm, tempo_unsure
        from soundalike.catalog.store import PAGE_ORDERS

        cat = cats.get()
        if sort not in PAGE_ORDERS:
            raise HTTPProblem(400, f"this catalog cannot sort by {sort}: it has no such per-track attribute")
        sources = ("file", "user", "model", "suggested") if include_suggested else ("file", "user", "model")
        with cat.same_state():  # one change-token read for the whole request (a round trip on a server)
            total, ids = cat.page(where=where, text=q, include_suggested=include_suggested,
                                  offset=offset, limit=limit, order=sort)
            # the rows, their BPM/key and their tags in one round trip (three statements were three)
            tracks, attrs, tags = cat.candidates_and_tags(ids, tag_ids=ids, sources=sources)
            notes = cat.filter_notes(where, include_suggested=include_suggested)
        rows = []
        for i in ids:
            if i in tracks:
                d = _track_json(tracks[i], tags[i][:8])
                a = attrs.get(i, {})
                if shown_bpm(a) is not None:
                    d["bpm"] = round(float(a["bpm"]), 1)
                elif tempo_unsure(a):  # measured, but no steady beat: the page shows "?"
                    d["bpm_unsure"] = True
                if a.get("camelot"):
                    d["key"] = a["camelot"]
                rows.append(d)
        return {"total": total, "offset": offset, "limit": limit, "where": where, "q": q,
                "notes": notes, "tracks": rows}

    @app.get("/api/facets", summary="Tag counts per category over the filtered tracks")
    def facets(where: Annotated[str | None, Query(max_length=2000)] = None,
               q: Annotated[str | None, Query(max_length=200)] = None,
               include_suggested: bool = False,
               per_category: Annotated[int, Query(ge=1, le=500)] = 30,
               categories: Annotated[list[str] | None, Query(max_length=100, description="only these categories")] = None
               ) -> dict[str, Any]:
        cat = cats.get()
        with cat.same_state():  # one change-token read for the whole request
            fc = cat.facets(where=where, text=q, include_suggested=include_suggested,
                            categories=categories or None, limit_per_category=per_category)
            # whole-catalog bounds (a slider's scale must not move) and keys, from the cached table
            br = cat.browse_ranges()
        out: dict[str, Any] = {"facets": {c: [{"tag": t, "count": n} for t, n in v] for c, v in fc.items()}}
        out["ranges"] = {"duration": list(br["duration"])} if br["duration"] else {}
        if br["bpm"]:
            out["ranges"]["bpm"] = [math.floor(br["bpm"][0]), math.ceil(br["bpm"][1])]
        out["keys"] = [{"key": k, "count": n} for k, n in sorted(br["keys"].items())]
        return out

    from soundalike.web.buyer import register as register_buyer_routes

    register_buyer_routes(app, cats=cats, model_id=model_id, get_track=_get_track, track_json=_track_json,
                          open_ingested=_open_ingested,
                          hits_json=_hits_json)

    @app.get("/api/tracks/{track_id}", summary="One track: metadata, tags, top predicted tags")
    def track_detail(track_id: int) -> dict[str, Any]:
        cat = cats.get()
        t = _get_track(track_id)
        d = _track_json(t, cat.track_tags(track_id))
        mid = model_id()
        a = cat.get_analysis(track_id, mid)
        base = base_model_id_of(mid)
        if a is not None and not a.predictions and base is not None:
            # an adaptation keeps vectors only: the tags come from the model it adapts
            a = cat.get_analysis(track_id, base)
        top = sorted((a.predictions if a else {}).items(), key=lambda kv: kv[1], reverse=True)[:10]
        d["predictions"] = [{"label": k, "p": round(float(v), 4)} for k, v in top]
        d["model_id"] = mid
        d["attributes"] = cat.track_attributes(track_id)
        d["audio_url"] = f"/api/tracks/{track_id}/audio"
        d["spectrogram_url"] = f"/api/tracks/{track_id}/spectrogram.png"
        return d

    @app.head("/api/tracks/{track_id}/audio", include_in_schema=False)
    @app.get("/api/tracks/{track_id}/audio", summary="Stream the track's file (HTTP Range supported; HEAD too)",
             response_class=Response, responses={206: {"description": "partial content"},
                                                 416: {"description": "range not satisfiable"}})
    def audio(track_id: int, request: Request) -> Response:
        from soundalike.audio.io import sniff_mime

        t = _get_track(track_id)
        fd = _open_ingested(t)  # the file itself, checked through its open descriptor
        f = os.fdopen(fd, "rb")
        size = os.fstat(fd).st_size
        # from the content, not the name: a FLAC named .mp3 is sent as audio/flac
        ctype = sniff_mime(os.pread(fd, 16, 0)) or "application/octet-stream"
        headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-cache"}
        rng = request.headers.get("range")
        head = request.method == "HEAD"

        def body(parts):
            with f:
                for prefix, start, length in parts:
                    if prefix:
                        yield prefix
                    f.seek(start)
                    left = length
                    while left > 0:
                        chunk = f.read(min(CHUNK, left))
                        if not chunk:
                            break
                        left -= len(chunk)
                        yield chunk

        def respond(status: int, media_type: str, parts, length: int) -> Response:
            headers["Content-Length"] = str(length)
            if head:
                f.close()
                return Response(status_code=status, media_type=media_type, headers=headers)
            return StreamingResponse(body(parts), status_code=status, media_type=media_type, headers=headers)

        try:
            ranges = parse_ranges(rng, size) if rng else None
        except HTTPProblem:
            f.close()
            raise
        if not ranges:
            return respond(200, ctype, [(b"", 0, size)], size)
        if len(ranges) == 1:
            start, end = ranges[0]
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            return respond(206, ctype, [(b"", start, end - start + 1)], end - start + 1)
        boundary = secrets.token_hex(12)
        parts = []
        for i, (start, end) in enumerate(ranges):
            prefix = ((b"\r\n" if i else b"") + f"--{boundary}\r\nContent-Type: {ctype}\r\n"
                      f"Content-Range: bytes {start}-{end}/{size}\r\n\r\n".encode())
            parts.append((prefix, start, end - start + 1))
        parts.append((f"\r\n--{boundary}--\r\n".encode(), 0, 0))
        total = sum(len(pre) + n for pre, _, n in parts)
        return respond(206, f"multipart/byteranges; boundary={boundary}", parts, total)

    @app.get("/api/tracks/{track_id}/spectrogram.png", summary="Mel-spectrogram image",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def spectrogram(track_id: int) -> Response:
        from soundalike.web.spectrogram import spectrogram_png

        t = _get_track(track_id)
        os.close(_open_ingested(t))  # the same check as the audio route before decoding it
        png = spectrogram_png(t.path, content_hash=t.content_hash)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/similar", summary="Tracks that sound like a catalog track, within a filter")
    def similar_to_track(id: int,  # noqa: A002 - the API's name for it
                         k: Annotated[int, Query(ge=1, le=200)] = 10,
                         where: Annotated[str | None, Query(max_length=2000)] = None,
                         exclude_same_artist: bool = False, include_suggested: bool = False,
                         max_per_artist: Annotated[int | None, Query(ge=1)] = None,
                         max_per_album: Annotated[int | None, Query(ge=1)] = None,
                         include_duplicates: bool = False,
                         bpm_tolerance: Annotated[str | None, Query(max_length=16,
                                                                    description="e.g. 6%")] = None,
                         ) -> JSONResponse:
        # the query track is read once, by the search (it says when there is none); only
        # tracks in service are queries here, as in every other route
        timed = _REQUEST_TIMES.get()
        if timed is not None:
            timed["thread"] = threading.get_ident()
            stages.start()
        try:
            rq, hits = sim.similar_with_query(id, k=k, where=where, model=search_model(),
                                              exclude_same_artist=exclude_same_artist,
                                              include_suggested=include_suggested,
                                              max_per_artist=max_per_artist, max_per_album=max_per_album,
                                              include_duplicates=include_duplicates,
                                              bpm_tolerance=bpm_tolerance, catalog=cats.get())
        except TrackNotFoundError:
            raise HTTPProblem(404, f"no track {id} in the catalog") from None
        if rq.track is None or rq.track.status != "ok":
            raise HTTPProblem(404, f"no track {id} in the catalog")
        # a plain dict of str/int/float/None: skip FastAPI's response validation and encoder
        # (the hot path under load: server CPU 3.4 -> 2.8 ms a request at 100k tracks)
        resp = FastJSONResponse({"query": {"id": id, "name": rq.label, **_attr_json(rq.attributes)},
                             "where": where,
                             "notes": cats.get().filter_notes(where, include_suggested=include_suggested,
                                                              token=rq.token),
                             "hits": _hits_json(cats.get(), hits)})
        if timed is not None:
            stages.mark("json")
            timed["stages"] = stages.stop()
        return resp

    @app.get("/api/playlist", summary="A radio from a seed track, or a path from one track to another")
    def playlist_api(seed: int | None = None, start: Annotated[int | None, Query(alias="from")] = None,
                     end: Annotated[int | None, Query(alias="to")] = None,
                     length: Annotated[int, Query(ge=1, le=500)] = 30,
                     where: Annotated[str | None, Query(max_length=2000)] = None,
                     max_per_artist: Annotated[int | None, Query(ge=1)] = None,
                     max_per_album: Annotated[int | None, Query(ge=1)] = None,
                     drift: Annotated[float, Query(ge=0.0, le=1.0)] = 0.7,
                     bpm: bool = False, include_duplicates: bool = False,
                     format: Annotated[str, Query(pattern="^(json|m3u8|csv)$")] = "json",  # noqa: A002
                     ) -> Response:
        from soundalike.search.playlist import playlist

        for ref in (seed, start, end):
            if ref is not None:
                _get_track(ref)
        pl = playlist(seed=seed, start=start, end=end, length=length, where=where, model=search_model(),
                      drift=drift, bpm_path=bpm, max_per_artist=max_per_artist,
                      max_per_album=max_per_album, include_duplicates=include_duplicates,
                      catalog=cats.get())
        if format == "json":
            return JSONResponse(pl.to_dict())
        media = {"m3u8": "audio/x-mpegurl", "csv": "text/csv"}[format]
        return Response(pl.render(format), media_type=f"{media}; charset=utf-8")

    @app.post("/api/similar/upload", summary="Tracks that sound like an uploaded clip",
              responses={413: {"description": "too large"}, 415: {"description": "not an audio type"}})
    async def similar_to_upload(request: Request, file: Annotated[UploadFile, File(description="audio clip")],
                                k: Annotated[int, Query(ge=1, le=200)] = 10,
                                where: Annotated[str | None, Query(max_length=2000)] = None,
                                include_suggested: bool = False) -> dict[str, Any]:
        from starlette.concurrency import run_in_threadpool

        # (a body over the limit never gets here: Guard refuses it on Content-Length or
        # stops reading it at the limit)
        name = Path(file.filename or "clip").name
        ext = Path(name).suffix.lower().lstrip(".")
        ctype = (file.content_type or "").split(";")[0].strip().lower()
        if ext not in AUDIO_EXTENSIONS:
            raise HTTPProblem(415, f"{name!r}: not an audio file type (accepted: "
                                   f"{', '.join(sorted(AUDIO_EXTENSIONS))})")
        if ctype and not (ctype.startswith("audio/") or ctype in ("application/octet-stream", "video/mp4",
                                                                   "video/webm", "application/ogg")):
            raise HTTPProblem(415, f"{name!r}: content type {ctype!r} is not audio")
        parse_filter(where)
        fd, tmp = tempfile.mkstemp(suffix="." + ext, prefix="soundalike-upload-")
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := await file.read(CHUNK):
                    size += len(chunk)
                    if size > max_upload_bytes:
                        raise HTTPProblem(413, f"upload too large: limit is {max_upload_bytes // 1_000_000} MB")
                    out.write(chunk)
            if size == 0:
                raise HTTPProblem(400, f"{name!r}: empty upload")

            def run():
                return sim.similar_with_query(tmp, k=k, where=where, model=search_model(),
                                              include_suggested=include_suggested, catalog=cats.get(),
                                              max_clip_s=max_clip_s)
            try:
                rq, hits = await run_in_threadpool(run)
            except AudioTooLongError:
                raise HTTPProblem(413, f"{name!r}: clip too long: the limit is {max_clip_s:g} s of audio") from None
            except AudioDecodeError as exc:
                raise HTTPProblem(415, f"{name!r}: cannot decode as audio ({exc.reason})") from None
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return {"query": {"id": rq.track.id if rq.track else None, "name": name,
                          "tags": [{"category": c, "tag": t} for c, t in sorted(rq.tags)]},
                "where": where, "hits": _hits_json(cats.get(), hits)}

    return app


#: Environment variables :func:`app_from_env` reads (set by :func:`serve_settings_env`).
ENV_CATALOG, ENV_MODEL, ENV_MAX_UPLOAD = ("SOUNDALIKE_SERVE_CATALOG", "SOUNDALIKE_SERVE_MODEL",
                                          "SOUNDALIKE_SERVE_MAX_UPLOAD")
ENV_MAX_CLIP, ENV_ALLOWED_HOSTS = "SOUNDALIKE_SERVE_MAX_CLIP_S", "SOUNDALIKE_SERVE_ALLOWED_HOSTS"


def serve_settings_env(catalog_path: str | os.PathLike, *, model: str | None = None,
                       max_upload_bytes: int = MAX_UPLOAD_BYTES, max_clip_s: float = MAX_CLIP_S,
                       allowed_hosts: Sequence[str] | None = None) -> dict[str, str]:
    """Environment for :func:`app_from_env`: how ``soundalike serve --workers N`` hands its
    settings to worker processes (uvicorn starts each worker from an import string)."""
    from soundalike.paths import catalog_target

    target = catalog_target(catalog_path)
    env = {ENV_CATALOG: str(target if isinstance(target, str) else target.resolve()),
           ENV_MAX_UPLOAD: str(int(max_upload_bytes)), ENV_MAX_CLIP: repr(float(max_clip_s))}
    if model:
        env[ENV_MODEL] = model
    if allowed_hosts:
        env[ENV_ALLOWED_HOSTS] = ",".join(allowed_hosts)
    return env


def app_from_env() -> FastAPI:
    """:func:`create_app` with the settings of :func:`serve_settings_env` (a uvicorn factory)."""
    path = os.environ.get(ENV_CATALOG)
    if not path:
        raise CatalogError(f"{ENV_CATALOG} is not set; start the server with `soundalike serve`")
    hosts = [h for h in os.environ.get(ENV_ALLOWED_HOSTS, "").split(",") if h]
    return create_app(path, model=os.environ.get(ENV_MODEL) or None,
                      max_upload_bytes=int(os.environ.get(ENV_MAX_UPLOAD, MAX_UPLOAD_BYTES)),
                      max_clip_s=float(os.environ.get(ENV_MAX_CLIP, MAX_CLIP_S)), allowed_hosts=hosts or None)


#: ``SOUNDALIKE_TIMINGS=PREFIX``: each server process appends one JSON line per
#: ``/api/similar`` request to ``PREFIX.<pid>`` (see :class:`TimingLog`); off by default.
ENV_TIMINGS = "SOUNDALIKE_TIMINGS"
_REQUEST_TIMES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("soundalike_request_times",
                                                                              default=None)


class TimingLog:
    """ASGI middleware that logs where each ``/api/similar`` request spent its time.

    One JSON line per request: ``recv`` (the app got the request), ``stages`` (the route's
    thread started, then the end of each :mod:`soundalike.search.stages` mark: query
    read, index, filter, search, candidates read, hits, JSON), ``sent`` (the last body
    byte handed to the server), all in ``time.perf_counter()`` seconds of this process,
    plus ``thread``; and one line per garbage collection (``gc`` generation, ``t``,
    ``dur``), so a slow request can be matched with a pause.  For finding the tail
    (``benchmarks/bench_catalog.py --timings``), not for production.
    """

    def __init__(self, app, *, path: str):
        import gc
        import json
        import time

        self.app, self._json, self._clock = app, json, time.perf_counter
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the server
        self._lock = threading.Lock()
        self._gc_start = 0.0

        def on_gc(phase: str, info: dict) -> None:
            if phase == "start":
                self._gc_start = self._clock()
            else:
                self._write({"gc": info.get("generation"), "t": self._gc_start,
                             "dur": self._clock() - self._gc_start})

        gc.callbacks.append(on_gc)

    def _write(self, rec: dict) -> None:
        line = self._json.dumps(rec) + "\n"
        with self._lock:
            self._file.write(line)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/api/similar":
            return await self.app(scope, receive, send)
        info: dict[str, Any] = {"recv": self._clock()}
        token = _REQUEST_TIMES.set(info)

        async def timed_send(message):
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                info["sent"] = self._clock()

        try:
            await self.app(scope, receive, timed_send)
        finally:
            _REQUEST_TIMES.reset(token)
            st = info.pop("stages", None) or []
            info["stages"] = [(name, round(t - info["recv"], 6)) for name, t in st]
            info["sent"] = round(info.get("sent", self._clock()) - info["recv"], 6)
            self._write(info)


def _hits_json(cat, hits) -> list[dict[str, Any]]:
    """Hits with each track's main tags, as the page's rows show them: the tags the search
    read with the hits, else one query for all."""
    unread = [h.track.id for h in hits if h.tags is None]
    tags = cat.tag_lists(unread, sources=("file", "user", "model"), limit_per_track=8) if unread else {}
    out = []
    for h in hits:
        d = _hit_json(h)
        if h.tags is not None:  # suggested ones come last in them: the same 8 as the query
            d["tags"] = _tags_json([g for g in h.tags if g.source != "suggested"][:8])
        else:
            d["tags"] = _tags_json(tags.get(h.track.id, []))
        out.append(d)
    return out


def _attr_json(a: dict | None) -> dict[str, Any]:
    from soundalike.audio.attributes import shown_bpm, tempo_unsure

    a = a or {}
    return {"bpm": shown_bpm(a), "bpm_unsure": tempo_unsure(a), "camelot": a.get("camelot"), "loudness_lufs": a.get("loudness_lufs"),
            "vocals": a.get("vocals"), "energy": a.get("energy"), "decoded_s": a.get("duration_s")}


def _hit_json(h) -> dict[str, Any]:
    d = _track_json(h.track)
    d.update({"rank": h.rank, "score": round(float(h.score), 4),
              "shared_tags": [{"category": s.category, "tag": s.tag} for s in h.shared_tags],
              **_attr_json(h.attributes), "why": h.why})
    return d
