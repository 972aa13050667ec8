"""CLI commands of the live area: ``soundalike listen``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from soundalike.cli.common import CatalogOpt, JsonOpt


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("listen")(listen)


def listen(
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Model name (MTT_musicnn, mfcc-stats, ...) or trained run folder. "
        "Default: the catalog's default model, else mfcc-stats.")] = None,
    window: Annotated[str | None, typer.Option(
        help="Analysis window, e.g. 3s, 2500ms. Default: a trained run's own window, else 3s.")] = None,
    hop: Annotated[str, typer.Option(help="Time between predictions, e.g. 0.5s, 250ms.")] = "0.5s",
    smooth: Annotated[int, typer.Option(help="Average over the last N windows.", min=1)] = 4,
    catalog: CatalogOpt = None,
    top: Annotated[int, typer.Option(help="Labels and nearest tracks shown.", min=1)] = 5,
    device: Annotated[str | None, typer.Option(
        help="Input device: index or name substring (see --list-devices). Default: the default input.")] = None,
    list_devices: Annotated[bool, typer.Option("--list-devices", help="List input devices and exit.")] = False,
    file: Annotated[Path | None, typer.Option(help="Play this audio file as if it were live.")] = None,
    realtime: Annotated[bool, typer.Option(
        "--realtime/--fast", help="With --file: pace at playing speed, or as fast as possible.")] = True,
    stdin: Annotated[bool, typer.Option("--stdin", help="Read raw PCM from standard input.")] = False,
    stdin_rate: Annotated[int, typer.Option(help="--stdin sample rate in Hz.")] = 22050,
    stdin_format: Annotated[str, typer.Option(help="--stdin format: s16le, s32le, f32le, f64le, u8.")] = "s16le",
    stdin_channels: Annotated[int, typer.Option(help="--stdin interleaved channels.", min=1)] = 1,
    duration: Annotated[str | None, typer.Option(
        help="Stop after this much audio, e.g. 30s (default: until the source ends or Ctrl-C).")] = None,
    silence_db: Annotated[float, typer.Option(help="Frames quieter than this (dBFS) are silence.")] = -50.0,
    threads: Annotated[int, typer.Option(help="CPU threads for the model (1 keeps a core free).", min=1)] = 1,
    json_out: JsonOpt = False,
) -> None:
    """Recognise music live: top labels and the nearest catalog tracks, updated every hop.

    Listens to the default microphone unless --file or --stdin is given.
    """
    from soundalike.errors import ConfigError
    from soundalike.live import sources

    if list_devices:
        _print_devices(json_out)
        return
    if file is not None and stdin:
        raise ConfigError("give either --file or --stdin, not both")

    from soundalike.cli.common import catalog_path
    from soundalike.live.recognize import LiveConfig, listen as run, open_recognizer, parse_duration

    config = LiveConfig(window_s=parse_duration(window or "3s"), hop_s=parse_duration(hop),
                        smooth=smooth, top=top, silence_db=silence_db)
    limit = parse_duration(duration) if duration is not None else None
    recognizer, cat = open_recognizer(model=model, catalog_path=catalog_path(catalog),
                                      require_catalog=catalog is not None, config=config,
                                      threads=threads, on_warning=lambda m: typer.echo(f"warning: {m}", err=True))
    run_window = float(getattr(recognizer.analyzer, "min_duration_s", 0.0) or 0.0)
    if window is None and 0.0 < run_window < config.window_s:
        # A run trained on short windows (e.g. 1.5-s instrument notes) listens in those.
        from dataclasses import replace

        from soundalike.live.recognize import Recognizer

        recognizer = Recognizer(recognizer.analyzer, config=replace(config, window_s=run_window),
                                matcher=recognizer.matcher)
    try:
        recognizer.warmup()
        if file is not None:
            source = sources.FileSource(file, realtime=realtime)
        elif stdin:
            source = sources.PCMStreamSource(sr=stdin_rate, format=stdin_format,  # type: ignore[arg-type]
                                             channels=stdin_channels)
        else:
            source = sources.MicrophoneSource(device, prefer_sr=recognizer.sr)
        with source:
            hops = run(source, recognizer, duration_s=limit)
            if json_out:
                from soundalike.live.display import write_json_line

                for r in hops:
                    write_json_line(r)
            else:
                from soundalike.live.display import LiveDisplay

                a = recognizer.analyzer
                with LiveDisplay(model=a.name, source=source.name, label_category=a.label_category,
                                 has_labels=bool(a.labels), has_catalog=recognizer.matcher is not None) as d:
                    for r in hops:
                        d.update(r)
    finally:
        if cat is not None:
            cat.close()


def _print_devices(json_out: bool) -> None:
    from soundalike.live.sources import list_input_devices

    devices = list_input_devices()
    if json_out:
        from soundalike.cli.common import print_json

        print_json([d.to_dict() for d in devices])
        return
    if not devices:
        typer.echo("no audio input devices found (no microphone, or no sound server for PortAudio)")
        return
    for d in devices:
        mark = "*" if d.is_default else " "
        typer.echo(f"{mark} {d.index:3d}  {d.name}  ({d.hostapi}, {d.max_input_channels} ch, "
                   f"{d.default_samplerate:.0f} Hz)")
