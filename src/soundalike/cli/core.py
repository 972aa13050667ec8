"""CLI commands of the core area: ingest, info, plot, catalog stats/errors/tag, demo."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from soundalike.cli.common import CatalogOpt, JsonOpt, catalog_path, console, print_json

catalog_app = typer.Typer(help="Look after the catalog: statistics, ingest errors, user tags.",
                          no_args_is_help=True)

ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="Analyzer: mfcc-stats, MTT_musicnn, MTT_vgg, MSD_musicnn, MSD_vgg, or a trained run folder.")]


def register(app: typer.Typer) -> None:
    app.command()(ingest)
    app.command()(info)
    app.command()(plot)
    app.command()(demo)
    app.add_typer(catalog_app, name="catalog")


def _refresh(what: list[str], *, cat, paths, model, force, workers, top_tags, json_out) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from soundalike.ingest.refresh import refresh

    err = Console(stderr=True)
    progress = Progress(TextColumn("[bold]refresh"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=err, transient=True, disable=json_out or not err.is_terminal)
    task = None

    def on_event(e: dict) -> None:
        nonlocal task
        if e["event"] == "start":
            task = progress.add_task("refresh", total=e["total"])
        elif task is not None:
            progress.update(task, advance=1)

    with progress:
        s = refresh([w.strip().lower() for item in what for w in item.split(",") if w.strip()],
                    catalog=cat, paths=paths, model=model, force=force, workers=workers,
                    top_tags=top_tags, on_event=on_event)
    if json_out:
        print_json({"catalog": str(cat), **s.to_dict()})
        return
    out = Console()
    out.print(f"refreshed in {s.elapsed_s:.1f} s → {cat}")
    out.print(f"  attributes  {s.attributes}")
    out.print(f"  tags        {s.tags} tracks re-filed")
    if s.failed:
        out.print(f"  failed      {s.failed}")
        for path, reason in s.errors[:20]:
            out.print(f"    {path}: {reason}", highlight=False, markup=False, soft_wrap=True)


def ingest(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Folders (scanned recursively) or files (with --refresh: only tracks under them).")] = None,
    catalog: CatalogOpt = None,
    model: ModelOpt = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: CPU count).")] = None,
    top_tags: Annotated[int, typer.Option(help="Top predicted labels stored as tags per track.")] = 5,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Retry files that failed before.")] = False,
    refresh: Annotated[list[str] | None, typer.Option(
        "--refresh", help="Recompute for tracks already in the catalog, without the network: "
        "'attributes' (tempo, key, loudness, vocals, energy, decoded length; missing or stale ones) "
        "and/or 'tags' (model tags into their categories). Repeatable.")] = None,
    force: Annotated[bool, typer.Option("--force", help="With --refresh attributes: every track.")] = False,
    adapt: Annotated[bool, typer.Option("--adapt/--no-adapt", help=(
        "Fit the catalog's own normalisation (`index adapt`) once it holds --adapt-at tracks of "
        "the model, and again each time its tracks have doubled since."))] = True,
    adapt_at: Annotated[int, typer.Option(
        "--adapt-at", min=3, envvar="SOUNDALIKE_ADAPT_AT", metavar="N",
        help="Catalog size (tracks of the model) at which ingest adapts it by itself.")] = 200,  # AUTO_ADAPT_TRACKS
    analysis: Annotated[str | None, typer.Option(
        "--analysis", help="How much of each track to analyze: 'spread:N' (N patches spread evenly, "
                           "read by seeking; default: the model's, spread:6 for musicnn-fusion, else spread:10), "
                           "'spread:N+opening' (the first of them at 3-6 s: clips of a track's opening "
                           "find it far more often, similar a little less) or 'full' (every patch).")] = None,
    patches: Annotated[int | None, typer.Option(
        "--patches", min=1, help="Same as --analysis spread:N.")] = None,
    precision: Annotated[str | None, typer.Option(
        "--precision", help="Network arithmetic of a pretrained model: fp32 (the reference; a named "
                            "--model's default), "
                            "bf16, int8, mixed (bf16 front end on centred input, the rest fp32; musicnn only) or "
                            "mixed-ef (mixed with error-fed bf16 filters, nearer fp32 at the same speed; the default "
                            "analyzer's): "
                            "faster, close but not equal, each its own model id.")] = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="ADDRESS", help="Analyze on a Ray cluster: 'auto' (the one `ray start` runs here), "
                                         "HOST:PORT of its head, or 'local' (a private one-node Ray). "
                                         "Files are read by path on the workers. Needs soundalike[ray].")] = None,
    ray_cpus_per_worker: Annotated[int, typer.Option(
        "--ray-cpus-per-worker", min=1, help="CPUs (and torch threads) per Ray worker.")] = 1,
    peaks: Annotated[bool, typer.Option(
        "--peaks", help="Also store the waveform peaks the web page draws (decodes every file whole; "
                        "by default the page computes a track's peaks when it is first shown).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Add new or changed audio files to the catalog (resumable; bad files are recorded, not fatal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from soundalike.ingest import ingest as run_ingest

    from soundalike.errors import ConfigError

    if patches is not None and analysis is not None:
        raise ConfigError("give --analysis or --patches, not both")
    if patches is not None:
        analysis = f"spread:{patches}"
    err = Console(stderr=True)
    cat = catalog_path(catalog)
    if refresh:
        _refresh(refresh, cat=cat, paths=paths or [], model=model, force=force, workers=workers,
                 top_tags=top_tags, json_out=json_out)
        return
    if not paths:
        raise typer.BadParameter("give folders or files to ingest (or --refresh attributes|tags)",
                                 param_hint="PATHS")
    progress = Progress(TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[hours]:.2f} h audio"),
                        TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                        console=err, transient=True, disable=json_out or not err.is_terminal)
    task = None
    total = 0
    counts = {"ingested": 0, "unchanged": 0, "failed": 0, "known-failure": 0}
    nonlocal_hours = [0.0]  # audio hours ingested so far

    def on_event(e: dict) -> None:
        nonlocal task, total
        if e["event"].startswith("ray-"):
            if e["event"] == "ray-worker-lost" and not json_out:
                err.print(f"ray: worker {e['pid']} on {e['node']} lost; "
                          f"{len(e['retried'])} files retried elsewhere", highlight=False)
            return
        if e["event"] == "start":
            total = e["total"]
            task = progress.add_task("ingest", total=total, status="", hours=0.0)
            return
        if e["event"] != "file":
            return
        nonlocal_hours[0] += float(e.get("duration_s") or 0.0) / 3600
        counts[e["status"]] = counts.get(e["status"], 0) + 1
        status = f"{counts['ingested']} new, {counts['failed']} failed"
        progress.update(task, advance=1, status=status, hours=nonlocal_hours[0])
        if not err.is_terminal and not json_out and e["status"] in ("ingested", "failed"):
            done = sum(counts.values())
            if done % 100 == 0:  # a log line now and then when stderr is not a terminal
                err.print(f"ingest: {done}/{total} files, {nonlocal_hours[0]:.2f} h of audio ({status})",
                          highlight=False)

    with progress:
        summary = run_ingest(paths, catalog=cat, model=model, workers=workers, top_tags=top_tags,
                             retry_failed=retry_failed, analysis=analysis, precision=precision,
                             ray=ray, ray_cpus_per_worker=ray_cpus_per_worker, peaks=peaks, on_event=on_event)
    adapted = None
    if adapt and summary.model_id:
        from soundalike.catalog.store import Catalog
        from soundalike.search.adapt import maybe_auto_adapt

        def fitting(n: int, last: int) -> None:  # the files are in; a fit at 10k tracks takes minutes
            if not json_out:
                what = (f"re-adapting the catalog: {n} tracks (the last fit had {last})" if last
                        else f"adapting the catalog: {n} tracks")
                err.print(f"ingest: {what} …", highlight=False)

        with Catalog.open(cat, create=False) as c:
            adapted = maybe_auto_adapt(c, model_id=summary.model_id, min_tracks=adapt_at, on_fit=fitting)
    if json_out:
        print_json({"catalog": str(cat), **summary.to_dict(),
                    "adapted": adapted.to_dict() if adapted else None})
        return
    out = console()
    out.print(f"[bold]{summary.scanned}[/] audio files scanned in {summary.elapsed_s:.1f} s "
              f"with [bold]{summary.model_name}[/] ({summary.analysis} analysis) → {cat}")
    out.print(f"  ingested   {summary.ingested}" + (f"  ({summary.audio_s / 3600:.2f} h of audio)"
                                                   if summary.ingested else ""))
    out.print(f"  unchanged  {summary.unchanged}")
    out.print(f"  failed     {summary.failed}" + (f"  (+{summary.known_failures} known failures skipped; "
                                                 "--retry-failed to retry)" if summary.known_failures else ""))
    if summary.missing:
        out.print(f"  missing    {summary.missing} (files gone; marked missing, not deleted)")
    if adapted and adapted.refit_from_tracks:
        out.print(f"  re-adapted {adapted.tracks} tracks (the last fit had {adapted.refit_from_tracks}) -> "
                  f"{adapted.name} {adapted.model_id} ({adapted.dim}-d), now the default for similar/serve/listen"
                  + (f"; the earlier automatic fit {adapted.replaced} was removed" if adapted.replaced else ""))
    elif adapted:
        out.print(f"  adapted    {adapted.tracks} tracks -> {adapted.name} ({adapted.dim}-d), "
                  f"now the default for similar/serve/listen")
    if summary.errors:
        from collections import Counter

        kinds = Counter(reason.split(":")[0].split(" (")[0] for _, reason in summary.errors)
        out.print("[bold red]failures by reason:[/]")
        for kind, n in kinds.most_common():
            out.print(f"  {n:>5}  {kind}", highlight=False, markup=False, soft_wrap=True)
        out.print("[bold red]failed files:[/]")
        for path, reason in summary.errors[:10]:
            out.print(f"  {path}: {reason}", highlight=False, markup=False, soft_wrap=True)
        if len(summary.errors) > 10:
            out.print(f"  ... and {len(summary.errors) - 10} more (soundalike catalog errors)")


def info(
    ref: Annotated[str, typer.Argument(help="Catalog track (id, path or title) or any audio file.")],
    catalog: CatalogOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a track's metadata, tags and analyses, or an outside file's audio properties."""
    from soundalike.catalog.store import Catalog
    from soundalike.errors import TrackNotFoundError

    from soundalike.catalog.backends import is_url

    cat_file = catalog_path(catalog)
    track = None
    if is_url(cat_file) or Path(cat_file).exists():
        with Catalog.open(cat_file, create=False) as cat:
            matches = cat.find_tracks(ref)
            if matches:
                track = matches[0]
                data = {"track": track.to_dict(),
                        "tags": [t.__dict__ for t in cat.track_tags(track.id)],
                        "analyses": [], "other_matches": [m.id for m in matches[1:]],
                        "attributes": cat.track_attributes(track.id)}
                names = {m.model_id: m.name for m in cat.models()}
                for a in cat.track_analyses(track.id):
                    top = sorted(a.predictions.items(), key=lambda kv: kv[1], reverse=True)[:10]
                    data["analyses"].append({"model_id": a.model_id, "model": names.get(a.model_id, "?"),
                                             "dim": int(a.embedding.size), "analysis": a.analysis,
                                             "top_predictions": top})
    if track is None:
        p = Path(ref).expanduser()
        if not p.is_file():
            raise TrackNotFoundError(f"{ref!r}: no catalog track matches and it is not a file")
        from soundalike.audio.io import info as audio_info
        from soundalike.ingest import read_file_tags

        meta = audio_info(p)
        data = {"file": str(p), "in_catalog": False, "sr": meta.sr, "channels": meta.channels,
                "duration_s": round(meta.duration_s, 3), "format": meta.format, "codec": meta.subtype,
                "decoder": meta.backend, "tags": read_file_tags(p)}
    if json_out:
        print_json(data)
        return
    _print_info(data)


def _print_info(data: dict) -> None:
    from rich.table import Table

    out = console()
    if "file" in data:
        out.print(f"[bold]{data['file']}[/] (not in the catalog)", highlight=False)
        for k in ("duration_s", "sr", "channels", "format", "codec", "decoder"):
            out.print(f"  {k:<11} {data[k]}")
        for k, v in data["tags"].items():
            out.print(f"  {k:<11} {v}", markup=False)
        return
    t = data["track"]
    out.print(f"[bold]#{t['id']}[/] {t['path']}", highlight=False)
    for k in ("title", "artist", "album", "genre", "year", "duration_s", "sr", "channels", "format",
              "status", "content_hash"):
        if t[k] is not None:
            v = f"{t[k]:.2f}" if k == "duration_s" else t[k]
            out.print(f"  {k:<13} {v}", markup=False, highlight=False)
    a = data.get("attributes")
    if a:
        from soundalike.audio.attributes import PITCH_CLASSES

        key = (f"{PITCH_CLASSES[int(a['key_tonic'])]} {a['key_mode']} ({a['camelot']}, confidence "
               f"{a['key_confidence']:.2f})" if a.get("camelot") else "?")
        from soundalike.audio.attributes import TEMPO_MIN_CONFIDENCE, tempo_unsure

        bpm = (f"{a['bpm']:.1f} (confidence {a['bpm_confidence']:.2f}"
               + (f"; {a['bpm_alternative']:.1f} plausible too)" if a.get("bpm_ambiguous") else ")")
               if a.get("bpm") else "?")
        if tempo_unsure(a):  # no steady beat: the number would mislead
            bpm = (f"? (no steady beat: {a['bpm']:.1f} at confidence {a['bpm_confidence']:.2f}, "
                   f"under {TEMPO_MIN_CONFIDENCE:.2f})")
        fmt = lambda v, f: f.format(v) if v is not None else "?"  # noqa: E731
        out.print(f"  {'tempo':<13} {bpm}", highlight=False)
        out.print(f"  {'key':<13} {key}", highlight=False)
        out.print(f"  {'loudness':<13} {fmt(a.get('loudness_lufs'), '{:.1f} LUFS')}, range "
                  f"{fmt(a.get('loudness_range_lu'), '{:.1f} LU')}", highlight=False)
        out.print(f"  {'vocals':<13} {fmt(a.get('vocals'), '{:.2f}')}   energy {fmt(a.get('energy'), '{:.2f}')}"
                  f"   decoded {fmt(a.get('duration_s'), '{:.2f} s')}", highlight=False)
    if data["tags"]:
        table = Table("category", "tag", "source", "confidence", title="tags", title_justify="left")
        for tag in data["tags"]:
            table.add_row(tag["category"], tag["tag"], tag["source"], f"{tag['confidence']:.2f}")
        out.print(table)
    for a in data["analyses"]:
        top = ", ".join(f"{k} {v:.2f}" for k, v in a["top_predictions"][:8])
        out.print(f"  analysis [bold]{a['model']}[/] ({a['dim']}-d, {a.get('analysis', 'full')})"
                  f"{': ' + top if top else ''}",
                  highlight=False)
    if data["other_matches"]:
        out.print(f"  (also matched: {', '.join(map(str, data['other_matches']))})")


def plot(
    file: Annotated[Path, typer.Argument(help="Audio file.")],
    kind: Annotated[str, typer.Option(help="mel, mfcc or stft.")] = "mel",
    out: Annotated[Path, typer.Option("-o", "--out", help="PNG to write.")] = Path("spectrogram.png"),
    offset: Annotated[float, typer.Option(help="Start, seconds.")] = 0.0,
    duration: Annotated[float | None, typer.Option(help="Length, seconds (default: whole file).")] = None,
) -> None:
    """Save a spectrogram (mel, MFCC or linear STFT) of FILE as a PNG with labelled axes."""
    from soundalike.errors import ConfigError

    if kind not in ("mel", "mfcc", "stft"):
        raise ConfigError(f"--kind must be mel, mfcc or stft, not {kind!r}")
    from soundalike.audio.io import load
    from soundalike.audio.plot import save_spectrogram

    wav = load(file, sr=22050, offset_s=offset, duration_s=duration)
    save_spectrogram(out, y=wav.y, sr=wav.sr, kind=kind, title=f"{file.name} ({kind})")
    print(f"wrote {out}")


def demo(
    catalog: CatalogOpt = None,
    tracks_dir: Annotated[Path | None, typer.Option(help="Where to write the generated tracks.")] = None,
    model: ModelOpt = None,
    per_style: Annotated[int, typer.Option(help="Tracks per style.")] = 4,
) -> None:
    """Build a small demo catalog from generated tracks (no network) and show what to try next."""

    from soundalike.ingest import ingest as run_ingest
    from soundalike.demo import write_demo_tracks
    from soundalike.paths import data_dir

    out = console()
    cat = catalog_path(catalog)
    tdir = tracks_dir or (data_dir() / "demo-tracks")
    paths = write_demo_tracks(tdir, per_style=per_style)
    out.print(f"{len(paths)} demo tracks in {tdir}", highlight=False, soft_wrap=True)
    summary = run_ingest([tdir], catalog=cat, model=model)
    out.print(f"catalog {cat}: {summary.ingested} ingested, {summary.unchanged} unchanged, "
              f"{summary.failed} failed (model {summary.model_name})", highlight=False, soft_wrap=True)
    example = paths[0]
    copt = "" if catalog is None else f" --catalog {cat}"
    out.print("\n[bold]Try next:[/]")
    for line in (
        f"soundalike catalog stats{copt}",
        f"soundalike info 1{copt}",
        f"soundalike similar 1 --k 5{copt}",
        f"soundalike similar 1 --where 'genre:electronic|ambient'{copt}",
        f"soundalike tag {example}",
        f"soundalike plot {example} --kind mel -o mel.png",
        f"soundalike serve{copt}    # then open http://127.0.0.1:8000",
    ):
        print(f"  {line}")


@catalog_app.command("stats")
def catalog_stats(catalog: CatalogOpt = None, json_out: JsonOpt = False) -> None:
    """Counts of tracks, missing files, errors, formats, tags and models."""
    from soundalike.catalog.store import Catalog

    from soundalike.search.adapt import AUTO_ADAPT_TRACKS, adaptation_status
    from soundalike.search.sync import default_model_id

    raw = os.environ.get("SOUNDALIKE_ADAPT_AT", "").strip()  # what ingest --adapt-at reads from it
    adapt_at = int(raw) if raw.isdigit() and int(raw) >= 3 else AUTO_ADAPT_TRACKS
    if raw and str(adapt_at) != raw.lstrip("0"):
        print(f"warning: SOUNDALIKE_ADAPT_AT={raw!r} is not a whole number >= 3 (ingest refuses it); "
              f"shown for {AUTO_ADAPT_TRACKS}", file=sys.stderr)
    with Catalog.open(catalog_path(catalog), create=False) as cat:
        s = cat.stats()
        s["default_model_id"] = default_model_id(cat)
        s["adaptation"] = adaptation_status(cat, min_tracks=adapt_at)
    if json_out:
        print_json(s)
        return

    out = console()
    hours = s["total_duration_s"] / 3600
    out.print(f"[bold]{s['path']}[/] (schema v{s['schema_version']})", highlight=False)
    out.print(f"  tracks    {s['tracks']}  ({hours:.2f} h)")
    out.print(f"  missing   {s['missing']}")
    out.print(f"  errors    {s['errors']}")
    if s["formats"]:
        out.print("  formats   " + ", ".join(f"{k} {v}" for k, v in s["formats"].items()))
    if s["tags_by_source"]:
        out.print("  tags      " + ", ".join(f"{k} {v}" for k, v in s["tags_by_source"].items()))
    if s.get("tag_values_by_category"):
        out.print("  facets    " + ", ".join(f"{k} ({v} values)" for k, v in s["tag_values_by_category"].items()),
                  highlight=False)
    at = s.get("attributes") or {}
    if at.get("tracks"):
        lo, hi = at["bpm_range"]
        llo, lhi = at["loudness_range_lufs"]
        # a range is empty (None) when no track has that attribute (e.g. single notes: no tempo)
        bpm = f"{lo:.0f}-{hi:.0f} BPM" if lo is not None and hi is not None else "no tempo"
        lufs = f"{llo:.1f} to {lhi:.1f} LUFS" if llo is not None and lhi is not None else "no loudness"
        keys = ", ".join(f"{k} {n}" for k, n in list(at["keys"].items())[:6]) or "none"
        out.print(f"  attributes {at['tracks']} tracks: {bpm}, {lufs}, "
                  f"vocals yes {at['vocals']['yes']} / no {at['vocals']['no']}; keys {keys} ...", highlight=False)
    elif s["tracks"]:
        out.print("  attributes none yet: `soundalike ingest --refresh attributes`")
    fits = {f["model_id"]: f for b in s["adaptation"] for f in b["adaptations"]}
    for m in s["models"]:
        how = ""
        f = fits.get(m["model_id"])
        if f is not None:
            how = (f"; fitted on {f['tracks']} tracks "
                   + ("by ingest" if f["auto"] else "by index adapt"))
        mark = "  <- similar's default" if m["model_id"] == s["default_model_id"] else ""
        plans = ", ".join(f"{k} {v}" for k, v in (m.get("analyses") or {}).items())
        out.print(f"  model     {m['name']} ({m['dim']}-d, id {m['model_id']}): {m['tracks']} tracks"
                  + (f" ({plans})" if plans else "") + f"{how}{mark}", highlight=False)
    for b in s["adaptation"]:
        if b["next_fit_at"] is None:
            continue
        if b["adaptations"]:
            why = f"twice the {b['adaptations'][0]['tracks']} of the last fit, at least --adapt-at {adapt_at}"
            verb = "refits"
        else:
            why, verb = f"--adapt-at {adapt_at}", "adapts"
        out.print(f"  adapt     ingest {verb} {b['name']} at {b['next_fit_at']} tracks ({why}; has {b['tracks']}; "
                  f"--no-adapt: never)", highlight=False)


@catalog_app.command("peaks")
def catalog_peaks(catalog: CatalogOpt = None, json_out: JsonOpt = False) -> None:
    """Compute the waveform peaks the web page draws, for tracks that have none yet
    (ingest stores them only with --peaks or a full analysis; the page computes a missing
    track's peaks on first view: this does them all ahead)."""
    from soundalike.catalog.store import Catalog
    from soundalike.ingest.peaks import backfill_peaks

    with Catalog.open(catalog_path(catalog), create=False) as cat:
        todo = len(cat.ids_without_peaks())
        if json_out:
            r = backfill_peaks(cat)
        else:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("waveforms"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          transient=True) as bar:
                task = bar.add_task("peaks", total=todo)
                r = backfill_peaks(cat, on_progress=lambda done, total: bar.update(task, completed=done))
    if json_out:
        print_json(r.to_dict())
        return
    for path, reason in r.failed:
        print(f"{path}: {reason}", file=sys.stderr)
    print(f"{r.computed} track(s) got waveform peaks" + (f", {len(r.failed)} could not be decoded" if r.failed else ""))


@catalog_app.command("errors")
def catalog_errors(catalog: CatalogOpt = None, json_out: JsonOpt = False) -> None:
    """Files that failed to ingest, with the reason."""
    from soundalike.catalog.store import Catalog

    with Catalog.open(catalog_path(catalog), create=False) as cat:
        errs = cat.errors()
    if json_out:
        print_json([e.__dict__ for e in errs])
        return
    for e in errs:
        print(f"{e.path}: {e.reason}")
    print(f"{len(errs)} failed file(s)", file=sys.stderr)


# "-mood:calm" is a tag to remove, not an option: unknown dashed words stay arguments
@catalog_app.command("tag", context_settings={"ignore_unknown_options": True})
def catalog_tag(
    ref: Annotated[str, typer.Argument(help="Track id, path or title.")],
    tags: Annotated[list[str], typer.Argument(help="Tags as category:value (e.g. mood:calm); -category:value removes.")],
    catalog: CatalogOpt = None,
) -> None:
    """Add (or with a leading '-', remove) user tags on a catalog track."""
    from soundalike.catalog.store import Catalog, Tag
    from soundalike.errors import QueryError, TrackNotFoundError

    with Catalog.open(catalog_path(catalog), create=False) as cat:
        matches = cat.find_tracks(ref)
        if not matches:
            raise TrackNotFoundError(f"{ref!r}: no catalog track matches")
        track = matches[0]
        for spec in tags:
            remove = spec.startswith("-")
            cat_name, sep, value = spec.lstrip("-").partition(":")
            if not sep or not cat_name or not value:
                raise QueryError(f"{spec!r}: write tags as category:value, e.g. mood:calm")
            if remove:
                n = cat.remove_tag(track.id, tag=value, category=cat_name, source="user")
                print(f"#{track.id}: removed {cat_name}:{value}" if n else f"#{track.id}: had no user tag {spec[1:]}")
            else:
                cat.add_tag(track.id, Tag(value, cat_name, "user"))
                print(f"#{track.id}: tagged {cat_name}:{value}")




@catalog_app.command("copy")
def catalog_copy(
    src: Annotated[str, typer.Argument(help="Catalog to copy: a SQLite file or postgresql://user@host:port/db.")],
    dst: Annotated[str, typer.Argument(help="Empty destination: a new file or an empty PostgreSQL database.")],
    json_out: JsonOpt = False,
) -> None:
    """Copy a catalog to another backend (or file), verifying row counts and an embeddings checksum."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from soundalike.catalog.copy import copy_catalog
    from soundalike.paths import catalog_target

    err = Console(stderr=True)
    progress = Progress(TextColumn("[bold]copy {task.fields[table]:<14}"), BarColumn(), MofNCompleteColumn(),
                        console=err, transient=True, disable=json_out or not err.is_terminal)
    tasks: dict[str, Any] = {}

    def on_progress(table: str, done: int, total: int) -> None:
        if table not in tasks:
            tasks[table] = progress.add_task(table, total=max(total, 1), table=table)
        progress.update(tasks[table], completed=done)

    with progress:
        report = copy_catalog(catalog_target(src), catalog_target(dst), on_progress=on_progress)
    if json_out:
        print_json(report.to_dict())
        return
    out = Console()
    out.print(f"copied [bold]{report.source}[/] → [bold]{report.destination}[/]", highlight=False)
    for table, n in report.rows.items():
        out.print(f"  {table:<14} {n:>8} rows")
    out.print(f"  verified: row counts equal; {report.embeddings} embeddings, sha256 {report.checksum[:16]}…")
