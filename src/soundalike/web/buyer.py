"""The buyer's routes: waveform peaks, download, favourites, saved playlists and exports.

Registered by :func:`soundalike.web.app.create_app`; the page (``static/app.js``) uses them:

==============================================  ==============================================
``GET /api/tracks/{id}/peaks``                  the waveform peaks (JSON, 2 x 1000 int8), computed once
``GET /api/tracks/{id}/download``               the original file as an attachment
``GET /api/favourites`` / ``.../ids``           favourite tracks (newest first) / their ids
``PUT|DELETE /api/favourites/{id}``             mark / unmark a favourite
``GET /api/similar/favourites``                 tracks like the favourites as a whole
``GET /api/favourites/export.{m3u8,csv}``       the favourites as a playlist file
``GET|POST /api/playlists``                     saved playlists / create one (``{"name"}``)
``GET|DELETE /api/playlists/{pid}``             one playlist with its tracks / delete it
``POST /api/playlists/{pid}/tracks``            append tracks (``{"track_ids": [...]}``)
``DELETE /api/playlists/{pid}/tracks/{id}``     remove a track
``GET /api/playlists/{pid}/export.{m3u8,csv}``  the playlist as a file
==============================================  ==============================================

Cross-site request forgery: these are the first routes that change the catalog, so every
state-changing one (PUT, POST, DELETE) requires the *double-submit* token -- the page
sends the ``soundalike_csrf`` cookie's value back in an ``X-CSRF-Token`` header.  Another
site can make a browser send the cookie (it is SameSite=Strict, so not even that) but can
neither read it nor set a custom header without a CORS preflight this server never
grants; a request whose ``Origin`` names another host is refused as well.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

#: Cookie holding the CSRF token and the header that must echo it.
CSRF_COOKIE, CSRF_HEADER = "soundalike_csrf", "x-csrf-token"
#: Most tracks one playlist request may add, and the longest playlist name.
MAX_ADD, MAX_NAME = 500, 100


def _problem(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)  # answered as {"detail": ...}, as every error


def set_csrf_cookie(request: Request, response: Response) -> None:
    """Give the page a CSRF token cookie (kept if the browser has a well-formed one)."""
    tok = request.cookies.get(CSRF_COOKIE, "")
    if not (20 <= len(tok) <= 100 and tok.replace("-", "").replace("_", "").isalnum()):
        tok = secrets.token_urlsafe(24)
    # not HttpOnly: the page's script reads it to echo it in the header (that is the check)
    response.set_cookie(CSRF_COOKIE, tok, samesite="strict", httponly=False, path="/",
                        secure=request.url.scheme == "https")


def check_csrf(request: Request) -> None:
    """Refuse a state-changing request that lacks the token or comes from another origin.

    Raises
    ------
    HTTPException
        403 naming what is missing.
    """
    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    if origin and origin != "null" and origin.split("://", 1)[-1].rstrip("/") != host:
        raise _problem(403, f"cross-site request refused: Origin {origin!r} is not this server ({host})")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not cookie or not header or not hmac.compare_digest(cookie.encode(), header.encode()):
        raise _problem(403, "missing or wrong X-CSRF-Token header: reload the page (it sets the "
                               f"{CSRF_COOKIE} cookie the header must repeat)")


class _FirstPeaks:
    """One track's peaks being computed: the first request decodes, the others wait for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.peaks = None
        self.error: BaseException | None = None


def register(app: FastAPI, *, cats, model_id, get_track, track_json, hits_json, open_ingested=None) -> None:
    """Add the routes above to ``app``.

    Parameters
    ----------
    cats : per-thread catalog opener (``cats.get()`` returns this thread's Catalog)
    model_id : ``() -> str``, the model similarity uses
    get_track : ``(id) -> Track``; raises a 404 problem for an unknown or missing track
    track_json : ``(track, tags) -> dict``, the API's track representation
    hits_json : ``(catalog, hits) -> list[dict]``, the API's similar-hit representation
    open_ingested : ``(track) -> fd``, an open descriptor of the track's file if it is still
        the one ingested (else a 404/409 problem); checked before a track's peaks are
        computed from its file
    """
    from soundalike.web import present

    def page_tracks(ids: list[int]) -> list[dict[str, Any]]:
        cat = cats.get()
        tracks = cat.get_tracks(ids)
        tags = cat.tag_lists(ids, sources=("file", "user", "model"), limit_per_track=8)
        return [track_json(tracks[i], tags[i]) for i in ids if i in tracks and tracks[i].status == "ok"]

    def playlist_or_404(pid: int):
        p = cats.get().playlist(pid)
        if p is None:
            raise _problem(404, f"no playlist {pid} in the catalog")
        return p

    def url_for_track(request: Request):
        base = str(request.base_url).rstrip("/")
        return lambda t: f"{base}/api/tracks/{t.id}/audio"

    def export(request: Request, ids: list[int], name: str, fmt: str) -> Response:
        cat = cats.get()
        tracks = cat.get_tracks(ids)
        ordered = [tracks[i] for i in ids if i in tracks]
        stem = present.ascii_filename(name).replace(" ", "-") or "playlist"
        if fmt == "m3u8":
            body = present.m3u8(ordered, url_of=url_for_track(request), name=name)
            ctype = "audio/x-mpegurl; charset=utf-8"
        else:
            body = present.playlist_csv(ordered, url_of=url_for_track(request))
            ctype = "text/csv; charset=utf-8"
        disp = f"attachment; filename=\"{stem}.{fmt}\"; filename*=UTF-8''{quote(name)}.{fmt}"
        return Response(body.encode("utf-8"), media_type=ctype, headers={"Content-Disposition": disp})

    # -------------------------------------------------------------- peaks and files

    computing: dict[int, _FirstPeaks] = {}  # track id -> its peaks being computed now
    computing_lock = threading.Lock()

    def first_peaks(t):
        """Decode ``t``'s file for its peaks and store them; concurrent callers decode once.

        Ingest does not decode a whole file for a spread analysis, so a track's peaks are
        made when it is first shown.  The first request for a track decodes (at the file's
        own rate, :func:`soundalike.audio.peaks.peaks_of_file`) and stores them
        (``put_peaks``); requests that come meanwhile wait for its answer, error included.
        """
        from soundalike.audio.peaks import peaks_of_file

        with computing_lock:
            job = computing.get(t.id)
            leader = job is None
            if leader:
                job = computing[t.id] = _FirstPeaks()
        if not leader:
            job.done.wait()
        else:
            try:
                cat = cats.get()
                job.peaks = cat.get_peaks(t.id)  # stored by a request that finished just before
                if job.peaks is None:
                    if open_ingested is not None:
                        import os

                        os.close(open_ingested(t))  # the file is still the one ingested
                    job.peaks = peaks_of_file(t.path)
                    cat.put_peaks(t.id, job.peaks)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
                job.error = exc
            finally:
                with computing_lock:
                    computing.pop(t.id, None)
                job.done.set()
        if job.error is not None:
            raise job.error
        return job.peaks

    @app.get("/api/tracks/{track_id}/peaks", summary="Waveform peaks (min/max per column), computed once")
    def peaks(track_id: int) -> JSONResponse:
        t = get_track(track_id)
        p = cats.get().get_peaks(track_id)
        if p is None:  # not made at ingest (a spread analysis decodes only its excerpts)
            p = first_peaks(t)
        return JSONResponse(p.to_json(), headers={"Cache-Control": "max-age=86400"})

    @app.get("/api/tracks/{track_id}/download", summary="The original file, as an attachment",
             response_class=Response)
    def download(track_id: int) -> Response:
        t = get_track(track_id)
        p = Path(t.path)
        if not p.is_file():
            raise _problem(404, f"the file of track {track_id} is gone")
        return FileResponse(p, filename=p.name, content_disposition_type="attachment",
                            media_type="application/octet-stream")

    # -------------------------------------------------------------- favourites

    @app.get("/api/favourites/ids", summary="Ids of the favourite tracks, newest first")
    def favourite_ids() -> dict[str, Any]:
        return {"ids": cats.get().favourite_ids()}

    @app.get("/api/favourites", summary="The favourite tracks, newest first")
    def favourites() -> dict[str, Any]:
        return {"tracks": page_tracks(cats.get().favourite_ids())}

    @app.put("/api/favourites/{track_id}", summary="Mark a track as a favourite (CSRF token required)")
    def add_favourite(track_id: int, request: Request) -> dict[str, Any]:
        check_csrf(request)
        get_track(track_id)
        cats.get().set_favourite(track_id, True)
        return {"id": track_id, "favourite": True}

    @app.delete("/api/favourites/{track_id}", summary="Unmark a favourite (CSRF token required)")
    def remove_favourite(track_id: int, request: Request) -> dict[str, Any]:
        check_csrf(request)
        cats.get().set_favourite(track_id, False)
        return {"id": track_id, "favourite": False}

    @app.get("/api/favourites/export.{fmt}", summary="The favourites as M3U8 or CSV",
             response_class=Response)
    def export_favourites(fmt: str, request: Request) -> Response:
        if fmt not in ("m3u8", "csv"):
            raise _problem(404, f"no export format {fmt!r}: use m3u8 or csv")
        return export(request, cats.get().favourite_ids(), "favourites", fmt)

    @app.get("/api/similar/favourites", summary="Tracks that sound like the favourites, within a filter")
    def similar_to_favourites(k: Annotated[int, Query(ge=1, le=200)] = 10,
                              where: Annotated[str | None, Query(max_length=2000)] = None,
                              include_suggested: bool = False) -> JSONResponse:
        from soundalike.search.taste import similar_to_set

        ids = cats.get().favourite_ids()
        hits = similar_to_set(cats.get(), track_ids=ids, model_id=model_id(), k=k, where=where,
                              include_suggested=include_suggested)
        return JSONResponse({"seed_ids": ids, "where": where, "hits": hits_json(cats.get(), hits)})

    # -------------------------------------------------------------- playlists

    @app.get("/api/playlists", summary="Saved playlists")
    def list_playlists() -> dict[str, Any]:
        return {"playlists": [p.to_dict() for p in cats.get().playlists()]}

    @app.post("/api/playlists", summary="Create a playlist (CSRF token required)", status_code=201)
    def create_playlist(request: Request, body: Annotated[dict, Body()]) -> dict[str, Any]:
        check_csrf(request)
        name = " ".join(str(body.get("name", "")).split())
        if not name or len(name) > MAX_NAME:
            raise _problem(422, f"a playlist needs a name of 1 to {MAX_NAME} characters")
        if cats.get().playlist_by_name(name) is not None:
            raise _problem(409, f"a playlist named {name!r} exists already: add to it, or pick another name")
        return cats.get().create_playlist(name).to_dict()

    @app.get("/api/playlists/{pid}", summary="One playlist and its tracks in order")
    def get_playlist(pid: int) -> dict[str, Any]:
        p = playlist_or_404(pid)
        return {**p.to_dict(), "tracks": page_tracks(cats.get().playlist_track_ids(pid))}

    @app.delete("/api/playlists/{pid}", summary="Delete a playlist (CSRF token required)")
    def delete_playlist(pid: int, request: Request) -> dict[str, Any]:
        check_csrf(request)
        playlist_or_404(pid)
        cats.get().delete_playlist(pid)
        return {"id": pid, "deleted": True}

    @app.post("/api/playlists/{pid}/tracks", summary="Append tracks to a playlist (CSRF token required)")
    def add_to_playlist(pid: int, request: Request, body: Annotated[dict, Body()]) -> dict[str, Any]:
        check_csrf(request)
        playlist_or_404(pid)
        raw = body.get("track_ids")
        if not isinstance(raw, list) or not raw or len(raw) > MAX_ADD or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in raw):
            raise _problem(422, f"track_ids must be a list of 1 to {MAX_ADD} integer track ids")
        for i in raw:
            get_track(i)
        n = cats.get().add_to_playlist(pid, present.unique_ids(raw))
        return {**playlist_or_404(pid).to_dict(), "added": n}

    @app.delete("/api/playlists/{pid}/tracks/{track_id}", summary="Remove a track from a playlist (CSRF token required)")
    def remove_from_playlist(pid: int, track_id: int, request: Request) -> dict[str, Any]:
        check_csrf(request)
        playlist_or_404(pid)
        cats.get().remove_from_playlist(pid, track_id)
        return playlist_or_404(pid).to_dict()

    @app.get("/api/playlists/{pid}/export.{fmt}", summary="A playlist as M3U8 or CSV", response_class=Response)
    def export_playlist(pid: int, fmt: str, request: Request) -> Response:
        if fmt not in ("m3u8", "csv"):
            raise _problem(404, f"no export format {fmt!r}: use m3u8 or csv")
        p = playlist_or_404(pid)
        return export(request, cats.get().playlist_track_ids(pid), p.name, fmt)
