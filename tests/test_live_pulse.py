"""Integration: `soundalike listen` hears a catalog track through a virtual microphone.

A private PulseAudio daemon (its own runtime dir, socket and config; no system or user
config) holds a null sink and a remap source over the sink's monitor, set as the
default source.  PortAudio reaches it through ALSA's "pulse" plugin (Debian
libasound2-plugins routes ALSA's "default" to PulseAudio when a server answers).
Needs Debian pulseaudio, pulseaudio-utils, libportaudio2 and libasound2-plugins
(`make test` installs them); skipped, with the reason, where they are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf

from soundalike.audio import synth

pytestmark = pytest.mark.pulse

SR = 22050
STYLES = ("ambient-drone", "drum-loop", "piano-arpeggio")
PLAYED = "drum-loop"

PA_CONFIG = """\
load-module module-native-protocol-unix auth-anonymous=1 socket={socket}
load-module module-null-sink sink_name=soundalike_sink rate={sr} channels=1 sink_properties=device.description=soundalike-sink
load-module module-remap-source master=soundalike_sink.monitor source_name=soundalike_mic source_properties=device.description=soundalike-virtual-mic
set-default-sink soundalike_sink
set-default-source soundalike_mic
"""


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (Debian pulseaudio, pulseaudio-utils; `make test` installs them)")


@pytest.fixture(scope="module")
def pulse():
    """A private PulseAudio daemon with a virtual microphone; yields the client environment."""
    _need("pulseaudio", "paplay", "pactl")
    # a short path: unix socket names are limited to ~108 bytes
    root = Path(tempfile.mkdtemp(prefix="sa-pulse-"))
    runtime = root / "run"
    runtime.mkdir(mode=0o700)
    (root / "home").mkdir()
    socket = root / "native"
    conf = root / "default.pa"
    conf.write_text(PA_CONFIG.format(socket=socket, sr=SR))
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "PULSE_RUNTIME_PATH": str(runtime),
           "PULSE_STATE_PATH": str(root / "state"), "HOME": str(root / "home"),
           "XDG_CONFIG_HOME": str(root / "home" / ".config"), "PULSE_SERVER": f"unix:{socket}"}
    env.pop("DISPLAY", None)
    log = open(root / "pulse.log", "wb")
    daemon = subprocess.Popen(
        ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
         "--disable-shm=yes", "--log-target=stderr", "-F", str(conf)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            ok = subprocess.run(["pactl", "info"], env=env, capture_output=True, timeout=5).returncode == 0
            if ok:
                break
            if daemon.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("PulseAudio did not start:\n" + (root / "pulse.log").read_text()[-2000:])
            time.sleep(0.2)
        yield env
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=5)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def music_catalog(tmp_path_factory):
    from soundalike.ingest import ingest
    from soundalike.catalog.store import Catalog

    root = tmp_path_factory.mktemp("live_pulse")
    music = root / "music"
    music.mkdir()
    files = {}
    for i, style in enumerate(STYLES):
        files[style] = music / f"{style}.wav"
        sf.write(files[style], synth.demo_track(style, seed=10 + i, duration_s=14.0, sr=SR), SR)
    path = root / "cat.sqlite"
    ingest([music], catalog=path, model="mfcc-stats", workers=1)
    with Catalog.open(path, create=False) as cat:
        ids = {Path(t.path).stem: t.id for t in cat.iter_tracks()}
    return path, files, ids


def _soundalike(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from soundalike.cli import main; sys.exit(main())", *args]


def test_virtual_microphone_is_listed(pulse):
    out = subprocess.run(_soundalike("listen", "--list-devices", "--json"), env=pulse,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    devices = json.loads(out.stdout)
    assert devices and any(d["is_default"] for d in devices)


def test_listen_names_the_track_playing_into_the_virtual_mic(pulse, music_catalog):
    catalog, files, ids = music_catalog
    proc = subprocess.Popen(
        _soundalike("listen", "--json", "--catalog", str(catalog), "--model", "mfcc-stats",
                    "--window", "3s", "--hop", "0.5s", "--duration", "8s"),
        env=pulse, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(40, proc.kill)
    watchdog.start()
    player = None
    lines: list[dict] = []
    play_at_t = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            d = json.loads(line)
            lines.append(d)
            if player is None and d["t_s"] >= 3.0:
                # the room is quiet so far: start the music now
                play_at_t = d["t_s"]
                player = subprocess.Popen(["paplay", "--device=soundalike_sink", str(files[PLAYED])],
                                          env=pulse, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        rc = proc.wait(timeout=10)
        err = proc.stderr.read() if proc.stderr else ""
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if player is not None and player.poll() is None:
            player.terminate()
            player.wait(timeout=5)
    assert rc == 0, err
    assert play_at_t is not None, f"no output from listen: {err}"
    before = [d for d in lines if d["t_s"] <= play_at_t]
    assert before and all(d["status"] == "silence" and d["decision"] is None and not d["nearest"]
                          for d in before)
    heard = [d for d in lines if d["status"] == "ok" and d["nearest"]]
    assert len(heard) >= 4, lines
    top = [d["nearest"][0]["track_id"] for d in heard]
    assert top[-1] == ids[PLAYED]
    assert top.count(ids[PLAYED]) > len(top) / 2
