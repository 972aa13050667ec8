"""The demo catalog: procedurally generated tracks in clearly different styles.

Nothing is downloaded.  Tracks are written as FLAC files with title/artist/genre tags,
then ingested like any music folder.  About a third of the tracks deliberately carry
no genre tag, as in real catalogs, so tag completion has something to do.
"""

from __future__ import annotations

from pathlib import Path

from soundalike.audio.synth import DEMO_STYLES, demo_track

DEMO_SR = 22050
ARTISTS = {
    "ambient-drone": "Slow Horizons",
    "drum-loop": "Grid Machine",
    "piano-arpeggio": "Clara Keys",
    "noise-texture": "Static Field",
    "bass-groove": "Low End Theory Band",
}


def write_demo_tracks(out_dir: str | Path, *, per_style: int = 4, duration_s: float = 10.0) -> list[Path]:
    """Write ``per_style`` tracks of every demo style into ``out_dir`` (idempotent).

    Returns the paths written (or already there with the same content).
    """
    import mutagen.flac
    import soundfile as sf

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for s_i, (style, tags) in enumerate(DEMO_STYLES.items()):
        for k in range(per_style):
            path = out / style / f"{style}-{k + 1:02d}.flac"
            paths.append(path)
            if path.exists():
                continue
            path.parent.mkdir(exist_ok=True)
            y = demo_track(style, seed=100 * s_i + k, duration_s=duration_s, sr=DEMO_SR)
            tmp = path.with_suffix(".part.flac")
            sf.write(tmp, y, DEMO_SR, format="FLAC")
            f = mutagen.flac.FLAC(tmp)
            f["title"] = f"{style.replace('-', ' ').title()} No. {k + 1}"
            f["artist"] = ARTISTS[style]
            f["album"] = "soundalike demo"
            f["date"] = str(2000 + 5 * s_i + k)
            if k % 3 != 2:  # leave every third track without a genre, like real catalogs
                f["genre"] = tags["genre"]
            f.save()
            tmp.rename(path)
    return paths
