"""The web server's front door: Host and origin checks, request body limits, safety headers.

:class:`Guard` is a plain ASGI middleware in front of the whole app, so it sees every
request before FastAPI parses anything:

* **Host** must be one the server was started for (loopback names by default,
  ``soundalike serve --allowed-host NAME`` adds more).  A DNS-rebinding page on
  ``evil.example`` that resolves to 127.0.0.1 sends ``Host: evil.example`` and gets 400.
* **Cross-site writes** are refused: a POST (PUT, PATCH, DELETE) whose ``Sec-Fetch-Site``
  says ``cross-site``/``same-site`` or whose ``Origin`` is not this server gets 403.
  Requests without either header (curl, scripts) are not from a browser page and pass.
* **Body size**: a declared ``Content-Length`` over the route's limit is answered 413
  before one byte of the body is read; a chunked body is counted as it arrives and
  reading stops at the limit (413), so nothing larger is ever received or spooled.
* **Headers** on every response: ``X-Content-Type-Options: nosniff``, a
  ``Content-Security-Policy`` that allows only this origin's scripts, styles and media,
  ``Referrer-Policy`` and framing refused.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException

#: Names a server bound to loopback answers to.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: Addresses that mean "every interface".
WILDCARD_BINDS = ("0.0.0.0", "::", "")
#: Body limit of routes that take no upload (bytes).
DEFAULT_BODY_LIMIT = 1_000_000
#: What the page needs and nothing more: own scripts, styles, images (spectrograms; blob:
#: for a dropped clip's preview), audio; no inline script, no plugins, no framing.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SAFETY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its limit (FastAPI answers 413)."""

    def __init__(self, limit: int):
        super().__init__(status_code=413, detail=f"request body too large: the limit is {_mb(limit)}")


def _mb(n: int) -> str:
    return f"{n / 1_000_000:g} MB" if n >= 1_000_000 else f"{n // 1000} kB"


def host_name(host_header: str) -> str:
    """The name part of a ``Host`` header, lower case, without port or IPv6 brackets."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    if h.count(":") == 1:
        h = h.rsplit(":", 1)[0]
    return h.rstrip(".")


def allowed_hosts_for(bind: str, extra: Iterable[str] = ()) -> list[str]:
    """The ``Host`` names a server bound to ``bind`` answers to.

    Loopback names always; the bound address itself; for a wildcard bind (0.0.0.0, ::)
    this machine's name and its addresses; plus ``extra`` (``"*"`` turns the check off).
    """
    names = [*LOOPBACK_HOSTS]
    if bind not in WILDCARD_BINDS:
        names.append(host_name(bind) if not bind.startswith("[") else bind.strip("[]"))
    else:
        try:
            hn = socket.gethostname()
            names += [hn, socket.getfqdn()]
            names += [ai[4][0] for ai in socket.getaddrinfo(hn, None)]
        except OSError:  # no resolver: loopback and --allowed-host only
            pass
    names += [host_name(e) if e != "*" else "*" for e in extra]
    out: list[str] = []
    for n in names:
        n = n.lower()
        if n and n not in out:
            out.append(n)
    return out


class Guard:
    """ASGI middleware: Host allow-list, cross-site write refusal, body limits, safety headers.

    Parameters
    ----------
    app : the ASGI app behind it
    allowed_hosts : ``Host`` names accepted (without port); ``"*"`` accepts any
    body_limits : path -> largest body in bytes for that path (uploads)
    default_body_limit : largest body for every other path, in bytes
    """

    def __init__(self, app, *, allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
                 body_limits: Mapping[str, int] | None = None, default_body_limit: int = DEFAULT_BODY_LIMIT):
        self.app = app
        self.allowed = frozenset(host_name(h) if h != "*" else "*" for h in allowed_hosts)
        self.body_limits = dict(body_limits or {})
        self.default_body_limit = int(default_body_limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        host = headers.get("host", "")
        if "*" not in self.allowed and host_name(host) not in self.allowed:
            await _refuse(send, 400, f"Host {host!r} is not one this server answers to "
                                     f"({', '.join(sorted(self.allowed))}); start it with "
                                     f"`soundalike serve --allowed-host NAME` to add a name")
            return
        if scope["method"] in _UNSAFE_METHODS:
            why = _cross_site(headers, host)
            if why:
                await _refuse(send, 403, f"cross-site {scope['method']} refused: {why}")
                return
        limit = self.body_limits.get(scope.get("path", ""), self.default_body_limit)
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _refuse(send, 400, "invalid Content-Length header")
                return
            if int(declared) > limit:
                # answered before reading: the client may still be sending, so close afterwards
                await _refuse(send, 413, f"request body too large: {_mb(int(declared))} declared, "
                                         f"the limit is {_mb(limit)}", close=True)
                return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        started = False

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                have = {k.lower() for k, _ in message.get("headers", ())}
                extra = [(k, v) for k, v in SAFETY_HEADERS if k not in have]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except BodyTooLarge as exc:  # raised outside FastAPI's handlers (e.g. a mounted app)
            if started:
                raise
            await _refuse(send, 413, exc.detail, close=True)


def _cross_site(headers: dict[str, str], host: str) -> str | None:
    """Why a state-changing request comes from another site's page, or None."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {site!r}"
    origin = headers.get("origin")
    if origin is None:
        return None
    if origin == "null":
        return "the request comes from an opaque origin (Origin: null)"
    o = urlsplit(origin)
    if (o.netloc or "").lower() != host.strip().lower():
        return f"Origin {origin!r} is not this server"
    return None


async def _refuse(send, status: int, detail: str, *, close: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *SAFETY_HEADERS]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
