"""Ogg Vorbis excerpts decoded by FFmpeg, placed by the pages' own granule positions.

Why: a spread analysis of an Ogg Vorbis file decodes about a quarter of it (six patches and
three attribute excerpts), and that decode was the largest cost of a track beside the
networks.  FFmpeg's Vorbis decoder is ~1.7x faster than libvorbis (through libsndfile) on
the same data, and its samples agree with libsndfile's to ~1e-6.  What FFmpeg gets wrong is
*where* a seek lands: its Ogg demuxer times the first packet after a seek without knowing
the block before it, so ~1 seek in 15 comes out 448 samples off (measured on 117 real game
soundtracks; libsndfile's own Vorbis seek has its flaws too, see ``io._excerpts_on_one_handle``).

So here the Ogg pages are read by us and only the packets go to FFmpeg's decoder.  A page's
granule position is the exact sample index at the end of the last packet completed on it;
counting the samples the decoder puts out up to such a packet places every sample of the
span exactly, whatever the decoder does with the first packets after a reset.  A second
granule inside the span checks the placement.

Anything unexpected — another logical stream, a page that does not parse or fails its
checksum, a gap in the page sequence, a page continuing a packet no page began (libogg
drops it), 3 or 5-8 channels (FFmpeg reorders them), a decoder error, two granules that
disagree, a span in the first or the last page (whose granule trims the end) — raises
:class:`Unsupported`, and the caller reads that span
through libsndfile as before, so errors and edge cases behave exactly as they did.
"""

from __future__ import annotations

import bisect
import functools
import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["Unsupported", "VorbisExcerpts", "available"]

#: Samples decoded before a span's first sample (at least one packet's output, the most
#: a Vorbis packet can add being 4096 samples with 8192-sample blocks).
PREROLL_SAMPLES = 4096

_PAGE = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, seq, crc, segments
_CONTINUED, _BOS, _EOS = 1, 2, 4


# Ogg's CRC-32 (polynomial 0x04C11DB7, MSB first, no reflection, initial value 0, no final
# xor) computed by zlib's reflected CRC-32 on bit-reversed bytes: both are the same division,
# read in opposite bit order, so the result is zlib's register with its bits reversed.
_REVERSE = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def ogg_crc(page: bytes) -> int:
    """The CRC an Ogg page stores at bytes 22-25 (computed as if those four bytes were zero,
    so a page can be checked as read)."""
    reg = zlib.crc32(page[:22].translate(_REVERSE), 0xFFFFFFFF)
    reg = zlib.crc32(b"\0\0\0\0", reg)
    reg = zlib.crc32(page[26:].translate(_REVERSE), reg) ^ 0xFFFFFFFF
    return int(f"{reg:032b}"[::-1], 2)


class Unsupported(Exception):
    """This file or span is not for this reader (the caller uses libsndfile instead)."""


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether PyAV (FFmpeg) with a Vorbis decoder can be imported."""
    try:
        import av

        av.CodecContext.create("vorbis", "r")
    except Exception:  # noqa: BLE001 - any failure means: use libsndfile
        return False
    return True


def _xiph_lacing(packets: list[bytes]) -> bytes:
    """The codec headers as FFmpeg's Vorbis decoder takes them (Xiph lacing)."""
    out = bytearray([len(packets) - 1])
    for p in packets[:-1]:
        n = len(p)
        out += b"\xff" * (n // 255) + bytes([n % 255])
    for p in packets:
        out += p
    return bytes(out)


class VorbisExcerpts:
    """Spans of one Ogg Vorbis file, decoded by FFmpeg and placed by granule positions.

    ``frames``, ``sr`` and ``channels`` are libsndfile's header for the file; a file whose
    last granule is not ``frames`` (a stream that starts at a nonzero granule, a chained
    file) raises :class:`Unsupported` here, before anything is decoded.

    Raises
    ------
    Unsupported
        The file is not a single plain Vorbis stream this reader can place exactly.
    """

    def __init__(self, path: str | os.PathLike, *, frames: int, sr: int, channels: int):
        import av

        self.path = Path(path)
        self.frames, self.sr, self.channels = int(frames), int(sr), int(channels)
        # Plain reads, not mmap: a file cut short while it is read then reads short (and the
        # span goes to libsndfile), where a mapped page past the new end would be SIGBUS.
        try:
            self._fh = open(self.path, "rb", buffering=0)
            self._size = os.fstat(self._fh.fileno()).st_size
        except OSError as exc:
            raise Unsupported(f"cannot read the file: {exc}") from exc
        self._win, self._win_at = b"", 0  # the bytes last read, and where they begin
        # the page index, built as far as it is needed: (offset, granule, flags, segment lengths, body start)
        self._pages: list[tuple[int, int, int, bytes, int]] = []
        self._reach: list[int] = []  # per page: the granule reached by its end (monotone)
        self._next = 0  # byte offset of the next page to index
        self._serial: int | None = None
        self._seq: int | None = None
        self._done = False
        try:
            headers, self._first_audio_page = self._headers()
            ident = headers[0]
            if (len(ident) < 30 or ident[:7] != b"\x01vorbis" or headers[1][:7] != b"\x03vorbis"
                    or headers[2][:7] != b"\x05vorbis"):
                raise Unsupported("not a Vorbis stream")
            ch, rate = ident[11], int.from_bytes(ident[12:16], "little")
            if ch != self.channels or rate != self.sr:
                raise Unsupported(f"the identification header says {ch} channels at {rate} Hz")
            if ch not in (1, 2, 4):  # FFmpeg reorders 3 and 5-8 channels (5.1: L C R Ls Rs LFE -> L R C LFE Ls Rs)
                raise Unsupported(f"{ch} channels: FFmpeg's order is not the stream's")
            if self._last_granule() != self.frames:
                raise Unsupported("the last granule is not the header's length")
            ctx = av.CodecContext.create("vorbis", "r")
            ctx.extradata = _xiph_lacing(headers)
            ctx.open()
        except Unsupported:
            self.close()
            raise
        except Exception as exc:  # noqa: BLE001 - FFmpeg refused the headers
            self.close()
            raise Unsupported(f"FFmpeg cannot decode this stream: {exc}") from exc
        self._ctx = ctx
        self._av = av

    def close(self) -> None:
        fh, self._fh = getattr(self, "_fh", None), None
        if fh is not None:
            fh.close()

    def __enter__(self) -> "VorbisExcerpts":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- pages

    #: Bytes read at a time (pages are read in order, so one read serves ~200 of them).
    WINDOW = 1 << 20

    def _bytes(self, off: int, n: int) -> bytes:
        """``n`` bytes of the file from ``off`` (fewer at its end)."""
        at = off - self._win_at
        if 0 <= at and at + n <= len(self._win):
            return self._win[at : at + n]
        self._fh.seek(off)
        self._win, self._win_at = self._fh.read(max(n, self.WINDOW)), off
        return self._win[:n]

    def _page_at(self, off: int) -> tuple[int, int, int, bytes, int] | None:
        if off + _PAGE.size > self._size:
            return None
        head = self._bytes(off, _PAGE.size)
        if len(head) < _PAGE.size:
            raise Unsupported(f"the file is shorter than it was at byte {off}")
        cap, version, flags, granule, serial, seq, _crc, nseg = _PAGE.unpack_from(head)
        if cap != b"OggS" or version != 0:
            raise Unsupported(f"no Ogg page at byte {off}")
        lacing = self._bytes(off + _PAGE.size, nseg)
        body = off + _PAGE.size + nseg
        if len(lacing) != nseg or body + sum(lacing) > self._size:
            raise Unsupported(f"the page at byte {off} is cut short")
        if self._serial is None:
            self._serial = serial
        elif serial != self._serial:
            raise Unsupported("more than one logical stream")
        if self._seq is not None and seq != self._seq + 1:
            raise Unsupported(f"a gap in the page sequence at byte {off}")
        self._seq = seq
        return off, granule, flags, lacing, body

    def _page(self, i: int) -> tuple[int, int, int, bytes, int] | None:
        """Page ``i`` of the stream (indexed on first use), or ``None`` past the end."""
        while len(self._pages) <= i and not self._done:
            page = self._page_at(self._next)
            if page is None:
                if self._next != self._size:
                    raise Unsupported("trailing bytes after the last page")
                self._done = True
                break
            self._pages.append(page)
            g = page[1]
            self._reach.append(g if g >= 0 else (self._reach[-1] if self._reach else 0))
            self._next = page[4] + sum(page[3])
            if page[2] & _EOS:
                self._done = True
        return self._pages[i] if i < len(self._pages) else None

    def _checked_body(self, i: int) -> bytes:
        """Page ``i``'s body, its checksum checked (libogg drops a page that fails it, and
        so libsndfile does too)."""
        off, _, _, lacing, body = self._pages[i]
        page = self._bytes(off, body + sum(lacing) - off)
        if len(page) != body + sum(lacing) - off:
            raise Unsupported(f"the file is shorter than it was at byte {off}")
        if ogg_crc(page) != int.from_bytes(page[22:26], "little"):
            raise Unsupported(f"the page at byte {off} fails its checksum")
        return page[body - off :]

    def _packets(self, first_page: int):
        """``(packet, page index or -1)`` from the first packet that *starts* on
        ``first_page``; the index is given on the last packet completed on a page."""
        i = first_page
        parts: list[bytes] = []
        skipping = False
        while True:
            page = self._page(i)
            if page is None:
                return
            _, _, flags, lacing, _ = page
            body = self._checked_body(i)
            pos = 0
            if i == first_page:
                skipping = bool(flags & _CONTINUED)
            elif not (flags & _CONTINUED) and parts:
                raise Unsupported(f"a packet is cut off before page {i}")
            elif flags & _CONTINUED and not parts:  # libogg drops such an orphan; so must we
                raise Unsupported(f"page {i} continues a packet that no page began")
            ends = [k for k, n in enumerate(lacing) if n < 255]
            last_end = ends[-1] if ends else -1
            start = 0  # where the packet being read began on this page
            for k, n in enumerate(lacing):
                pos += n
                if n < 255:  # a packet ends here (sliced once, not segment by segment)
                    packet = body[start:pos]
                    start = pos
                    if parts:  # it began on an earlier page
                        packet = b"".join(parts) + packet
                        parts = []
                    if skipping:
                        skipping = False
                        continue
                    yield packet, (i if k == last_end else -1)
            if start < pos or (lacing and lacing[-1] == 255):
                parts.append(body[start:pos])  # continued on the next page
            i += 1

    def _headers(self) -> tuple[list[bytes], int]:
        """The three codec headers and the index of the page where audio packets begin."""
        page = self._page(0)
        if page is None or not (page[2] & _BOS):
            raise Unsupported("the file does not begin a stream")
        headers: list[bytes] = []
        parts: list[bytes] = []
        i = 0
        while len(headers) < 3:
            page = self._page(i)
            if page is None:
                raise Unsupported("the stream ends inside its headers")
            _, _, flags, lacing, pos = page
            if parts and not (flags & _CONTINUED):
                raise Unsupported("a header is cut off")
            body = self._bytes(pos, sum(lacing))
            pos = 0
            for n in lacing:
                if len(headers) == 3:
                    return headers, i  # audio begins on the headers' last page
                parts.append(body[pos : pos + n])
                pos += n
                if n < 255:
                    headers.append(b"".join(parts))
                    parts = []
            i += 1
        return headers, i

    def _last_granule(self) -> int | None:
        """The granule of the file's last page (read from its tail), ``None`` if that page
        belongs to another logical stream (a chained file)."""
        tail = self._bytes(max(0, self._size - 65536 - 282), 65536 + 282)
        i = tail.rfind(b"OggS")
        while i >= 0:
            if i + _PAGE.size <= len(tail) and tail[i + 4] == 0:
                _, _, _, granule, serial, *_ = _PAGE.unpack_from(tail, i)
                return granule if serial == self._serial else None
            i = tail.rfind(b"OggS", 0, i)
        return None

    def _start_page(self, a: int) -> int:
        """The page to decode from for a span starting at sample ``a``: the page after the
        last one whose packets end ``PREROLL_SAMPLES`` or more before ``a``."""
        x = a - PREROLL_SAMPLES
        i = len(self._pages)
        while not self._done and (not self._reach or self._reach[-1] <= x):
            self._page(i)
            i += 1
        return max(self._first_audio_page, bisect.bisect_right(self._reach, x))

    # ----------------------------------------------------------------- spans

    def span(self, a: int, n: int) -> list[np.ndarray]:
        """Samples ``[a, a + n)`` (fewer past the end) as float32 channel arrays.

        Raises
        ------
        Unsupported
            The span cannot be placed exactly here (read it through libsndfile).
        """
        av = self._av
        if a < 0 or n <= 0:
            raise Unsupported("an empty or negative span")
        if a >= self.frames:
            raise Unsupported("a span past the end")
        stop = min(a + n, self.frames)
        first = self._start_page(a)
        if first == self._first_audio_page:
            raise Unsupported("a span at the stream's start")
        ctx = self._ctx
        ctx.flush_buffers()
        fifo = av.AudioFifo()  # the output since the reset, gathered in C
        out = 0  # samples put out since the reset
        origin: int | None = None  # the sample index of the first sample put out
        anchors = 0  # granules that placed (then confirmed) the output
        try:
            for packet, page_i in self._packets(first):
                for frame in ctx.decode(av.Packet(packet)):
                    fifo.write(frame)
                    out += frame.samples
                if page_i >= 0:
                    page = self._pages[page_i]
                    if page[2] & _EOS:
                        raise Unsupported("a span in the last page")
                    where = page[1] - out
                    if origin is None:
                        origin = where
                        if origin > a:
                            raise Unsupported("decoding began after the span")
                    elif where != origin:
                        raise Unsupported(f"granules disagree by {where - origin} samples")
                    anchors += 1
                if anchors >= 2 and origin + out >= stop:
                    break
            else:
                raise Unsupported("the stream ended inside the span")
            whole = fifo.read()
        except (av.error.FFmpegError, ValueError) as exc:
            raise Unsupported(f"FFmpeg: {exc}") from exc
        if origin is None:
            raise Unsupported("no granule placed the span")
        if whole is None or whole.format.name != "fltp" or len(whole.planes) != self.channels:
            raise Unsupported("FFmpeg put out no planar float samples")
        if whole.samples != out:
            raise Unsupported(f"FFmpeg put out {whole.samples} samples, not {out}")
        # views of the frame's planes (each keeps the frame's buffer alive): no copy
        return [np.frombuffer(plane, np.float32, count=out)[a - origin : stop - origin]
                for plane in whole.planes]
