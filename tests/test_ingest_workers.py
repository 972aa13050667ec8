"""Ingest's worker processes, as Python callers start them: a worker that really dies on a file,
a script without a ``__main__`` guard, and a program read from standard input.

Each runs in a fresh interpreter (a subprocess), because spawned workers import the caller's
main program again: what the test checks is what happens to that program.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import soundfile as sf

from soundalike.catalog.store import Catalog

SR = 22050


def _music(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(2.0 * SR), dtype=np.float32) / SR
    for i, name in enumerate(names):
        y = 0.3 * np.sin(2 * np.pi * (220 + 55 * i) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(folder / name, y.astype(np.float32), SR)
    return folder


def _run(args: list[str], *, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


# The worker dies (os._exit, as a decoder's segfault would end it) on the file named poison.wav,
# every time it is given that file.  The patch is at the script's top level, so the spawned
# workers, which import the script again, run it too; pickle finds the wrapper by the name it
# replaces.
_CRASHING = textwrap.dedent("""
    import json, os, sys
    import soundalike.ingest.pipeline as pipeline

    _real = pipeline.analyze_file

    def analyze_file(path, *args, **kwargs):
        if os.path.basename(path) == "poison.wav" and kwargs.get("analyzer") is None:
            os._exit(3)
        return _real(path, *args, **kwargs)

    analyze_file.__module__, analyze_file.__qualname__ = "soundalike.ingest.pipeline", "analyze_file"
    pipeline.analyze_file = analyze_file

    if __name__ == "__main__":
        s = pipeline.ingest([sys.argv[1]], catalog=sys.argv[2], model="mfcc-stats", workers=2)
        print(json.dumps(s.to_dict()))
""")


def test_a_worker_that_dies_on_one_file_costs_that_file_only(tmp_path):
    music = _music(tmp_path / "m", [f"t{i}.wav" for i in range(5)] + ["poison.wav"])
    script = tmp_path / "crashing.py"
    script.write_text(_CRASHING)
    out = _run([str(script), str(music), str(tmp_path / "c.sqlite")])
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout.strip().splitlines()[-1])
    assert s["ingested"] == 5 and s["failed"] == 1
    (path, reason), = s["errors"]
    assert path == str(music / "poison.wav")
    assert "crashed the worker process" in reason
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        assert cat.count_analyses() == 5


def test_a_script_without_a_main_guard_gets_one_clear_error_not_a_failed_file_each(tmp_path):
    music = _music(tmp_path / "m", [f"t{i}.wav" for i in range(4)])
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        from soundalike.ingest.pipeline import ingest
        ingest([{str(music)!r}], catalog={str(tmp_path / 'c.sqlite')!r}, model="mfcc-stats", workers=2)
        print("finished")
    """))
    out = _run([str(script)])
    assert out.returncode != 0
    assert "finished" not in out.stdout
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("soundalike.errors.WorkerStartError:"), out.stderr[-2000:]
    assert 'if __name__ == "__main__":' in last and "workers=1" in last


def test_a_program_read_from_stdin_analyses_in_process_with_a_warning(tmp_path):
    music = _music(tmp_path / "m", [f"t{i}.wav" for i in range(4)])
    program = textwrap.dedent(f"""
        import json
        from soundalike.ingest.pipeline import ingest
        s = ingest([{str(music)!r}], catalog={str(tmp_path / 'c.sqlite')!r}, model="mfcc-stats", workers=2)
        print(json.dumps(s.to_dict()))
    """)
    out = _run(["-"], stdin=program)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout.strip().splitlines()[-1])
    assert s["ingested"] == 4 and s["failed"] == 0
    assert "RuntimeWarning: ingest: analysing in this process, not in 2 worker processes" in out.stderr
    assert "<stdin>" in out.stderr
