"""Ogg Vorbis excerpts through FFmpeg's decoder, placed by the pages' granules
(:mod:`soundalike.audio.oggvorbis`), against libsndfile's decode of the whole file."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from soundalike.audio import io
from soundalike.audio.oggvorbis import Unsupported, VorbisExcerpts, available, ogg_crc


def _music(sr: int, seconds: float, channels: int, seed: int = 0) -> np.ndarray:
    """Tones with a drum-like noise burst every 0.4 s: the bursts make the encoder switch
    between long and short blocks, which is where a seek's placement goes wrong."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    y = np.zeros((n, channels), np.float32)
    for c in range(channels):
        y[:, c] = 0.2 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.1 * np.sin(2 * np.pi * 1375 * t + c)
    hit = int(0.4 * sr)
    env = np.exp(-np.arange(hit) / (0.01 * sr)).astype(np.float32)
    for start in range(0, n - hit, hit):
        y[start : start + hit] += (0.5 * env * rng.standard_normal(hit).astype(np.float32))[:, None]
    return np.clip(y, -1, 1)


def _write_ogg(path, y: np.ndarray, sr: int) -> None:
    with sf.SoundFile(path, "w", sr, y.shape[1], format="OGG", subtype="VORBIS") as f:
        for i in range(0, len(y), 1 << 15):  # blockwise: libsndfile's encoder dislikes huge writes
            f.write(y[i : i + (1 << 15)])


def _pages(data: bytes) -> list[tuple[int, int]]:
    """``(offset, length)`` of every Ogg page in ``data``."""
    out, off = [], 0
    while off < len(data):
        assert data[off : off + 4] == b"OggS"
        nseg = data[off + 26]
        body = sum(data[off + 27 : off + 27 + nseg])
        out.append((off, 27 + nseg + body))
        off += 27 + nseg + body
    return out


@pytest.fixture(scope="module")
def stereo(tmp_path_factory):
    p = tmp_path_factory.mktemp("ogg") / "stereo.ogg"
    _write_ogg(p, _music(44100, 30.0, 2), 44100)
    return p


def _reader(p) -> VorbisExcerpts:
    i = sf.info(str(p))
    return VorbisExcerpts(p, frames=i.frames, sr=i.samplerate, channels=i.channels)


def test_ffmpeg_has_a_vorbis_decoder():
    assert available()


@pytest.mark.parametrize("sr,channels", [(44100, 2), (22050, 1)])
def test_spans_are_the_full_decodes_samples(tmp_path, sr, channels):
    p = tmp_path / "x.ogg"
    _write_ogg(p, _music(sr, 25.0, channels, seed=sr), sr)
    full, _ = sf.read(str(p), dtype="float32", always_2d=True)
    rng = np.random.default_rng(1)
    placed = 0
    with _reader(p) as r:
        for _ in range(40):
            n = int(rng.integers(int(0.05 * sr), 4 * sr))
            a = int(rng.integers(sr, len(full) - n - sr))
            try:
                chans = r.span(a, n)
            except Unsupported:
                continue
            placed += 1
            got = np.stack(chans, axis=1)
            assert got.shape == (n, channels)
            # the same samples, not neighbours: a misplaced span (448 samples off, as
            # FFmpeg's own seek lands ~1 time in 15) differs by the signal itself
            np.testing.assert_allclose(got, full[a : a + n], atol=1e-5, rtol=0)
    assert placed >= 36  # only spans in the first or the last page are left to libsndfile


def test_spans_in_the_first_and_last_page_are_left_to_libsndfile(stereo):
    with _reader(stereo) as r:
        with pytest.raises(Unsupported, match="start"):
            r.span(0, 4410)
        with pytest.raises(Unsupported, match="last page"):
            r.span(r.frames - 4410, 4410)


def test_load_excerpts_reads_vorbis_through_ffmpeg_with_libsndfiles_samples(stereo, monkeypatch):
    src = io._sf_open(stereo)
    try:
        assert io._vorbis_excerpts(src) is not None  # this file takes the FFmpeg path
    finally:
        src.close()
    sr = 16000
    starts = [0, 5 * sr, 5 * sr + 100, 14 * sr, 27 * sr, 30 * sr - 8000]
    now = io.load_excerpts(stereo, sr=sr, starts=starts, length=3 * sr)
    monkeypatch.setattr(io, "FFMPEG_VORBIS", False)
    before = io.load_excerpts(stereo, sr=sr, starts=starts, length=3 * sr)
    ref = io.load(stereo, sr=sr).y
    for j, x, y in zip(starts, now, before):
        assert x.shape == y.shape and x.flags.writeable
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)
        np.testing.assert_allclose(x, ref[j : j + len(x)], atol=1e-4, rtol=0)


def _with_serial(data: bytes, serial: int) -> bytes:
    """The same stream under another serial number (each page's checksum made again)."""
    out = bytearray()
    for off, length in _pages(data):
        page = bytearray(data[off : off + length])
        struct.pack_into("<I", page, 14, serial)
        struct.pack_into("<I", page, 22, ogg_crc(bytes(page)))
        out += page
    return bytes(out)


def test_chained_streams_are_left_to_libsndfile(stereo, tmp_path):
    data = stereo.read_bytes()
    first_serial = struct.unpack_from("<I", data, 14)[0]
    i = sf.info(str(stereo))
    # two logical streams one after the other: libsndfile's header length is not the last
    # page's granule, so the reader refuses on opening
    p = tmp_path / "chained.ogg"
    p.write_bytes(data + _with_serial(data, first_serial ^ 1))
    with pytest.raises(Unsupported, match="length"):
        _reader(p)
    # the same stream twice under one serial: libsndfile reads the first; so does the reader
    q = tmp_path / "twice.ogg"
    q.write_bytes(data * 2)
    assert sf.info(str(q)).frames == i.frames
    full, _ = sf.read(str(stereo), dtype="float32", always_2d=True)
    with _reader(q) as r:
        a = i.frames // 2
        np.testing.assert_allclose(np.stack(r.span(a, 4410), 1), full[a : a + 4410], atol=1e-5, rtol=0)
        with pytest.raises(Unsupported, match="end"):
            r.span(i.frames, 4410)


def test_a_missing_page_or_trailing_garbage_is_refused(stereo, tmp_path):
    data = stereo.read_bytes()
    pages = _pages(data)
    off, length = pages[len(pages) // 2]
    p = tmp_path / "gap.ogg"
    p.write_bytes(data[:off] + data[off + length :])
    i = sf.info(str(stereo))
    with VorbisExcerpts(p, frames=i.frames, sr=i.samplerate, channels=i.channels) as r:
        with pytest.raises(Unsupported, match="gap"):
            r.span(i.frames // 2, i.samplerate * 5)
    # bytes after the last page (ignored, as libogg ignores them): the spans are the clean file's
    q = tmp_path / "garbage.ogg"
    q.write_bytes(data + b"\0" * 100)
    full, _ = sf.read(str(stereo), dtype="float32", always_2d=True)
    with VorbisExcerpts(q, frames=i.frames, sr=i.samplerate, channels=i.channels) as r:
        a = i.frames - 3 * i.samplerate
        np.testing.assert_allclose(np.stack(r.span(a, 1000), 1), full[a : a + 1000], atol=1e-5, rtol=0)


def _excerpts_both_ways(p, starts, sr, monkeypatch):
    def read():
        try:
            return io.load_excerpts(p, sr=sr, starts=starts, length=3 * sr)
        except io.AudioDecodeError as exc:
            return exc

    now = read()
    with monkeypatch.context() as m:
        m.setattr(io, "FFMPEG_VORBIS", False)
        before = read()
    return now, before


def test_a_page_failing_its_checksum_is_read_as_libsndfile_reads_it(stereo, tmp_path, monkeypatch):
    """libogg drops a page whose CRC is wrong; FFmpeg would decode it: the span holding
    it goes through libsndfile, so the answer is the one it always was."""
    data = bytearray(stereo.read_bytes())
    pages = _pages(bytes(data))
    off, _ = pages[len(pages) // 2]
    struct.pack_into("<I", data, off + 22, 12345)
    p = tmp_path / "crc.ogg"
    p.write_bytes(bytes(data))
    i = sf.info(str(p))
    with VorbisExcerpts(p, frames=i.frames, sr=i.samplerate, channels=i.channels) as r:
        with pytest.raises(Unsupported, match="checksum"):
            r.span(i.frames // 2 - 2 * i.samplerate, 4 * i.samplerate)
    sr = 16000
    now, before = _excerpts_both_ways(p, [3 * sr, 14 * sr, 15 * sr], sr, monkeypatch)
    if isinstance(before, Exception):
        assert type(now) is type(before) and str(now) == str(before)
    else:
        for x, y in zip(now, before):
            assert x.shape == y.shape
            np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


def test_a_file_cut_short_while_it_is_read_is_refused_not_a_crash(stereo, tmp_path):
    """Another program truncates the file between the open and the read (a copy being
    replaced): the span is refused (libsndfile then reports it), the process lives on."""
    p = tmp_path / "shrinking.ogg"
    data = stereo.read_bytes()
    p.write_bytes(data)
    i = sf.info(str(p))
    class PageByPage(VorbisExcerpts):
        WINDOW = 4096  # a page or so a read, so that the part cut off is not in memory yet

    with PageByPage(p, frames=i.frames, sr=i.samplerate, channels=i.channels) as r:
        assert len(r.span(i.frames // 4, 4410)[0]) == 4410
        with open(p, "r+b") as fh:
            fh.truncate(len(data) // 2)
        with pytest.raises(Unsupported, match="shorter|cut short"):
            r.span(3 * i.frames // 4, 4410)


def test_more_channels_than_ffmpeg_keeps_in_order_are_left_to_libsndfile(tmp_path, monkeypatch):
    """FFmpeg reorders 3 and 5-8 Vorbis channels (5.1 comes out L R C LFE Ls Rs): such a
    file is refused, and its excerpts are libsndfile's."""
    p = tmp_path / "six.ogg"
    _write_ogg(p, _music(44100, 12.0, 6), 44100)
    with pytest.raises(Unsupported, match="6 channels"):
        _reader(p)
    now, before = _excerpts_both_ways(p, [4 * 16000], 16000, monkeypatch)
    np.testing.assert_array_equal(now[0], before[0])


def test_a_page_continuing_a_packet_no_page_began_is_refused(stereo, tmp_path, monkeypatch):
    """A (spliced or damaged) page flagged "continued" after a page that ended on a whole
    packet: libogg drops its first packet, so the span goes to libsndfile."""
    data = bytearray(stereo.read_bytes())
    pages = _pages(bytes(data))
    k = next(j for j in range(len(pages) // 2, len(pages) - 2)
             if data[pages[j - 1][0] + 27 + data[pages[j - 1][0] + 26] - 1] < 255  # j-1 ends a packet
             and not data[pages[j][0] + 5] & 1)
    off, length = pages[k]
    data[off + 5] |= 1
    struct.pack_into("<I", data, off + 22, ogg_crc(bytes(data[off : off + length])))
    p = tmp_path / "orphan.ogg"
    p.write_bytes(bytes(data))
    i = sf.info(str(p))
    with _reader(p) as r:
        r._page(k + 1)  # the pages indexed up to the edited one
        at = r._reach[k - 2]  # a span whose decode starts on the page before it
        with pytest.raises(Unsupported, match="no page began"):
            r.span(at + 4096 + 1, i.samplerate)
    sr = 16000
    now, before = _excerpts_both_ways(p, [int(at * sr / i.samplerate)], sr, monkeypatch)
    np.testing.assert_allclose(now[0], before[0], atol=1e-5, rtol=0)
