"""A file's own tags as ingest reads them (``ingest.pipeline.read_file_tags``), on real files.

Vorbis comments must be UTF-8; some writers store Latin-1 / Windows-1252 bytes there (the
"Apnee" soundtrack's album is ``Apn\\xe9e``), which mutagen reads as U+FFFD.  Files with such
bytes are written here with mutagen's own writer (its check for text values stepped
around), then read back.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from soundalike.ingest.pipeline import read_file_tags


def _write(path, fmt: str, subtype: str, sr: int, comments: list[tuple[str, bytes | str]]) -> None:
    import mutagen

    sf.write(str(path), np.zeros(sr // 2, np.float32), sr, format=fmt, subtype=subtype)
    f = mutagen.File(str(path))
    if f.tags is None:
        f.add_tags()
    f.tags.clear()
    for key, value in comments:
        f.tags.append((key, value))
    f.tags.validate = lambda: True  # write the bytes as given (mutagen would refuse non-str)
    f.save()


@pytest.mark.parametrize("kind", [("ogg", "OGG", "VORBIS", 22050), ("opus", "OGG", "OPUS", 48000),
                                  ("flac", "FLAC", "PCM_16", 22050)], ids=["vorbis", "opus", "flac"])
def test_latin1_vorbis_comments_are_recovered(tmp_path, kind):
    ext, fmt, subtype, sr = kind
    p = tmp_path / f"apnee.{ext}"
    _write(p, fmt, subtype, sr, [("ALBUM", b"Apn\xe9e"), ("TITLE", "Café déjà vu"), ("ARTIST", b"Don\x92t Panic"),
                                 ("GENRE", "Soundtrack"), ("DATE", "2005")])
    import mutagen

    assert mutagen.File(str(p)).tags["album"] == ["Apn\ufffde"]  # what mutagen alone reads
    assert read_file_tags(p) == {"album": "Apnée", "title": "Café déjà vu", "artist": "Don’t Panic",
                                 "genre": "Soundtrack", "year": 2005}
    assert sf.info(str(p)).frames > 0  # still a playable file


def test_good_utf8_tags_are_left_alone(tmp_path):
    p = tmp_path / "fine.ogg"
    _write(p, "OGG", "VORBIS", 22050, [("ALBUM", "Apnée"), ("TITLE", "Ünïcödé \ufffd kept")])
    assert read_file_tags(p) == {"album": "Apnée", "title": "Ünïcödé \ufffd kept"}
