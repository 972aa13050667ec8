"""CLI commands of the search area: similar, export, tags suggest, index, serve.

Each command parses its options, calls one library function
(:mod:`soundalike.search`, :mod:`soundalike.web`) and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from soundalike.cli.common import CatalogOpt, JsonOpt, catalog_path, console, print_json

export_app = typer.Typer(help="Export catalog data for use elsewhere.", no_args_is_help=True)
tags_app = typer.Typer(help="Tag completion: suggest tags where a category is missing.", no_args_is_help=True)
index_app = typer.Typer(help="The similarity index beside the catalog (faiss, one per model).",
                        no_args_is_help=True)

ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="Model name or id whose embeddings to use (default: the catalog's most used).")]
WhereOpt = Annotated[str | None, typer.Option(
    "--where", "-w", help="Filter, e.g. 'genre:rock|pop instrument:piano -mood:sad year:1990..1999'.")]
SuggestedOpt = Annotated[bool, typer.Option(
    "--include-suggested", help="Let filters match suggested tags too.")]


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    app.command()(similar)
    app.command()(playlist)
    app.command()(serve)
    app.add_typer(export_app, name="export")
    app.add_typer(tags_app, name="tags")
    app.add_typer(index_app, name="index")


def _open(catalog: Path | None):
    from soundalike.catalog.store import Catalog

    return Catalog.open(catalog_path(catalog), create=False)


def similar(
    query: Annotated[str, typer.Argument(help="Track id, catalog path, title/artist text, or any audio file.")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=1000, help="Number of similar tracks.")] = 10,
    where: WhereOpt = None,
    model: ModelOpt = None,
    exclude_same_artist: Annotated[bool, typer.Option(
        "--exclude-same-artist", help="Leave out tracks by the query's artist.")] = False,
    include_suggested: SuggestedOpt = False,
    max_per_artist: Annotated[int | None, typer.Option(
        "--max-per-artist", min=1, help="At most N hits by one artist.")] = None,
    max_per_album: Annotated[int | None, typer.Option(
        "--max-per-album", min=1, help="At most N hits from one album.")] = None,
    include_duplicates: Annotated[bool, typer.Option(
        "--include-duplicates", help="Keep other copies/versions of the query (left out by default).")] = False,
    bpm_tolerance: Annotated[str | None, typer.Option(
        "--bpm-tolerance", help="Only tempi within this of the query's (or half/double), e.g. 6%.")] = None,
    rerank: Annotated[bool | None, typer.Option(
        "--rerank/--no-rerank", help="Re-rank a catalog track's nearest by their own neighbour graph "
        "(default on; SOUNDALIKE_RERANK=0 turns it off).")] = None,
    catalog: CatalogOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Find the tracks that sound most like QUERY, optionally within a filter."""
    from soundalike.search.similar import similar_with_query

    with _open(catalog) as cat:
        rq, hits = similar_with_query(query, k=k, where=where, model=model,
                                      exclude_same_artist=exclude_same_artist,
                                      include_suggested=include_suggested, max_per_artist=max_per_artist,
                                      max_per_album=max_per_album, include_duplicates=include_duplicates,
                                      bpm_tolerance=bpm_tolerance, catalog=cat, rerank=rerank)
        notes = cat.filter_notes(where, include_suggested=include_suggested)
    for note in notes:  # on stderr: --json output stays one JSON document
        typer.echo(f"note: {note}", err=True)
    if json_out:
        print_json({"query": rq.to_dict(), "where": where, "notes": notes, "hits": [h.to_dict() for h in hits]})
        return
    from rich.table import Table

    out = console()
    src = f"track {rq.track.id}" if rq.track else "outside file, analyzed now"
    out.print(f"[bold]{rq.label}[/] ({src})" + (f"  where [cyan]{where}[/]" if where else ""))
    if not hits:
        out.print("no similar tracks" + (" match the filter" if where else ""))
        return
    table = Table(show_edge=False, pad_edge=False)
    for col in ("#", "cosine", "id", "track", "file", "why"):
        table.add_column(col, justify="right" if col in ("#", "cosine", "id") else "left",
                         overflow="fold")
    for h in hits:
        table.add_row(str(h.rank), f"{h.score:.3f}", str(h.track.id), h.track.display_name,
                      Path(h.track.path).name, h.why)
    out.print(table)
    if any(a.score < b.score for a, b in zip(hits, hits[1:])):
        # the order is the re-rank's, the column the plain similarity: say so, or it reads as a bug
        out.print("[dim]order: re-ranked by the catalog's own neighbour graph, so the cosine is not "
                  "always falling (--no-rerank orders by it)[/]")


def playlist(
    seed: Annotated[str | None, typer.Option("--seed", help="Radio: start here and drift (track id, path or text).")] = None,
    start: Annotated[str | None, typer.Option("--from", help="Path: the first track.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Path: the last track.")] = None,
    length: Annotated[int, typer.Option("--length", "-n", min=1, max=1000, help="Tracks in the playlist.")] = 30,
    where: WhereOpt = None,
    model: ModelOpt = None,
    max_per_artist: Annotated[int | None, typer.Option("--max-per-artist", min=1, help="At most N tracks from one artist.")] = None,
    max_per_album: Annotated[int | None, typer.Option("--max-per-album", min=1, help="At most N tracks from one album.")] = None,
    drift: Annotated[float, typer.Option(min=0.0, max=1.0, help="Radio: 0 stays near the seed, 1 follows "
                                         "the last track.")] = 0.7,
    bpm: Annotated[bool, typer.Option("--bpm", help="Path: move the tempo from A's to B's too.")] = False,
    include_duplicates: Annotated[bool, typer.Option(
        "--include-duplicates", help="Keep other copies/versions of tracks already in the list.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write .m3u8, .csv or .json.")] = None,
    catalog: CatalogOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make a playlist: a radio from --seed, or a path --from A --to B (no repeats)."""
    from soundalike.search.playlist import playlist as make

    with _open(catalog) as cat:
        pl = make(seed=seed, start=start, end=end, length=length, where=where, model=model, drift=drift,
                  bpm_path=bpm, max_per_artist=max_per_artist, max_per_album=max_per_album,
                  include_duplicates=include_duplicates, catalog=cat)
    if output is not None:
        pl.write(output)
    if json_out:
        print_json(pl.to_dict())
        return
    from rich.console import Console
    from rich.table import Table

    out = Console()
    table = Table(show_edge=False, pad_edge=False)
    cols = ["#", "id", "track", "BPM", "key", "length", "score"] + (["progress"] if pl.kind == "path" else [])
    for col in cols:
        table.add_column(col, justify="left" if col == "track" else "right", overflow="fold")
    for e in pl.entries:
        d = e.track.duration_s
        row = [str(e.position), str(e.track.id), e.track.display_name,
               f"{e.bpm:.0f}" if e.bpm else "", e.camelot or "",
               f"{int(d // 60)}:{int(d % 60):02d}" if d else "", f"{e.score:.3f}"]
        if pl.kind == "path":
            row.append(f"{e.progress:.2f}" if e.progress is not None else "")
        table.add_row(*row)
    out.print(table)
    if output is not None:
        out.print(f"{len(pl)} tracks -> {output}")


@export_app.command("embeddings")
def export_embeddings(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file.")],
    format: Annotated[str, typer.Option("--format", "-f", help="csv or npy (+ .ids.npy, .paths.txt).")] = "npy",
    model: ModelOpt = None,
    normalized: Annotated[bool, typer.Option("--normalized", help="L2-normalise the vectors.")] = False,
    catalog: CatalogOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write track ids, paths and embedding vectors (csv, or npy with sidecars)."""
    from soundalike.search.export import export_embeddings as run

    with _open(catalog) as cat:
        rep = run(cat, path=output, format=format, model=model, normalized=normalized)  # type: ignore[arg-type]
    if json_out:
        print_json(rep)
    else:
        typer.echo(f"{rep['count']} embeddings ({rep['dim']}-d, {rep['model']}) -> {', '.join(rep['files'])}")


@tags_app.command("suggest")
def tags_suggest(
    apply: Annotated[bool, typer.Option("--apply", help="Store them as suggested tags (replacing older ones).")] = False,
    model: ModelOpt = None,
    category: Annotated[list[str] | None, typer.Option(
        "--category", "-c", help="Only these categories (repeatable).")] = None,
    min_confidence: Annotated[float, typer.Option(min=0.0, max=1.0, help="Drop weaker suggestions.")] = 0.3,
    neighbors: Annotated[int, typer.Option(min=1, help="Neighbours consulted per track.")] = 10,
    limit: Annotated[int, typer.Option(min=0, help="Print at most this many (0: all).")] = 50,
    catalog: CatalogOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Suggest tags for tracks lacking a category, from model predictions and neighbours' tags."""
    from soundalike.search.sync import model_info
    from soundalike.search.suggest import apply_suggestions, suggest_tags

    with _open(catalog) as cat:
        info = model_info(cat, model)
        sugg = suggest_tags(cat, model=info.model_id, categories=category or None, k_neighbors=neighbors,
                            min_confidence=min_confidence)
        stored = apply_suggestions(cat, sugg, model_id=info.model_id) if apply else 0
        names = {t.id: t.display_name for t in cat.get_tracks({s.track_id for s in sugg}).values()}
    if json_out:
        print_json({"model_id": info.model_id, "applied": apply, "stored": stored,
                    "suggestions": [s.to_dict() | {"track": names.get(s.track_id)} for s in sugg]})
        return
    shown = sugg if limit == 0 else sugg[:limit]
    for s in shown:
        typer.echo(f"{s.track_id:>6}  {names.get(s.track_id, '?')[:48]:<48}  {s.category}:{s.tag}  "
                   f"{s.confidence:.2f}  ({s.why})")
    more = len(sugg) - len(shown)
    typer.echo(f"{len(sugg)} suggestions for {len({s.track_id for s in sugg})} tracks"
               + (f" ({more} not shown; --limit 0 for all)" if more else "")
               + (f"; stored {stored} as source=suggested" if apply else "; --apply to store them"))


@index_app.command("rebuild")
def index_rebuild(
    model: ModelOpt = None,
    hnsw_threshold: Annotated[int | None, typer.Option(
        help="Use HNSW above this many tracks (default 50000).")] = None,
    catalog: CatalogOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Rebuild a model's similarity index from the catalog's embeddings."""
    from soundalike.search.index import IndexConfig
    from soundalike.search.sync import forget_cached, model_info, open_index

    with _open(catalog) as cat:
        info = model_info(cat, model)
        cfg = IndexConfig() if hnsw_threshold is None else IndexConfig(hnsw_threshold=hnsw_threshold)
        _, rep = open_index(cat, info.model_id, config=cfg, rebuild=True)
        forget_cached(cat)
    rep = {"model": info.name, "model_id": info.model_id, **rep}
    if json_out:
        print_json(rep)
    else:
        typer.echo(f"rebuilt {rep['kind']} index of {rep['model']} ({rep['model_id']}): "
                   f"{rep['count']} tracks, {rep['dim']}-d, {rep.get('build_s', 0):.2f} s")


@index_app.command("adapt")
def index_adapt(
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Base model name or id (default: the catalog's most used).")] = None,
    dim: Annotated[int, typer.Option(min=2, max=4096, help="Adapted vector length (PCA).")] = 256,
    neighbours: Annotated[int, typer.Option(
        min=0, max=100, help="Pull each track's mutual nearest neighbours closer: k (0: off; "
                             "adds up to 64 dimensions).")] = 5,
    power: Annotated[float, typer.Option(
        min=0.05, max=1.0, help="Signed power taken of a fused model's mean-pool blocks first "
                                "(power normalisation; 1: none). 0.5: higher same-soundtrack "
                                "precision, slightly lower clip-to-track precision (README).")] = 1.0,
    catalog: CatalogOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Fit the catalog's own normalisation of a model's vectors (no labels); a model id of its own.

    Similar, serve and listen then use the adapted vectors by default; `--model BASE` still
    names the old ones.  Ingest keeps new tracks adapted.
    """
    from soundalike.search.adapt import adapt_catalog, catalog_size
    from soundalike.search.sync import forget_cached

    with _open(catalog) as cat:
        before = catalog_size(cat)
        rep = adapt_catalog(cat, model=model, dim=dim, neighbours=neighbours, power=power)
        forget_cached(cat)
        after = catalog_size(cat)
    out = {**rep.to_dict(), "catalog_bytes_before": before, "catalog_bytes_after": after}
    if json_out:
        print_json(out)
        return
    typer.echo(f"adapted {rep.base_name} ({rep.base_model_id}) -> {rep.name} ({rep.model_id}): "
               f"{rep.tracks} tracks, {rep.dim}-d{f', power {rep.power:g} on the mean-pool blocks' if rep.power != 1 else ''}, "
               f"fit {rep.fit_s:.2f} s, stored {rep.write_s:.2f} s; "
               f"catalog {before / 1e6:.1f} -> {after / 1e6:.1f} MB")
    typer.echo(f"similar/serve/listen now use {rep.name} by default; --model {rep.base_name} for the old vectors")


@index_app.command("status")
def index_status(catalog: CatalogOpt = None, json_out: JsonOpt = False) -> None:
    """Show each model's index: kind, size, and whether it is in step with the catalog."""
    import json

    from soundalike.search.index import _safe_name
    from soundalike.search.sync import index_dir

    rows = []
    with _open(catalog) as cat:
        d = index_dir(cat)
        for m in cat.models():
            meta_path = d / (_safe_name(m.model_id) + ".json")
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
            rows.append({"model": m.name, "model_id": m.model_id, "catalog_tracks": m.n_tracks,
                         "indexed": meta["count"] if meta else None, "kind": meta["kind"] if meta else None,
                         "dim": m.dim, "in_step": bool(meta and meta["count"] == m.n_tracks
                                                       and meta["dim"] == m.dim),
                         "path": str(meta_path.with_suffix(".faiss")) if meta else None})
    if json_out:
        print_json({"index_dir": str(d), "models": rows})
        return
    typer.echo(f"indexes in {d}")
    for r in rows:
        state = ("not built (built on first search)" if r["indexed"] is None else
                 f"{r['kind']}, {r['indexed']} tracks" + ("" if r["in_step"] else
                                                          " (updated on next search)"))
        typer.echo(f"  {r['model']:<16} {r['model_id']:<28} {r['catalog_tracks']:>7} analysed  {state}")


def serve(
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    model: ModelOpt = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest clip accepted by the upload box (MB).")] = 20.0,
    max_clip_s: Annotated[float, typer.Option(min=1.0, help=(
        "Longest clip accepted by the upload box, in seconds of audio (decoding stops there)."))] = 600.0,
    allowed_host: Annotated[list[str] | None, typer.Option(
        "--allowed-host", metavar="NAME", help=(
            "Another Host name the server answers to (repeatable; '*' for any). Loopback names "
            "and the --host address always work; others are refused (DNS rebinding)."))] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help=(
        "Server processes. Each holds its own copy of the index in memory; more than one lets "
        "requests use several CPU cores (Python serialises the request handling of one process)."))] = 1,
    catalog: CatalogOpt = None,
) -> None:
    """Serve the web page and JSON API (/api, OpenAPI schema at /openapi.json) to browse, filter, listen and search."""
    import os

    import uvicorn

    from soundalike.web.app import create_app, serve_settings_env
    from soundalike.web.guard import allowed_hosts_for

    path = catalog_path(catalog)
    max_bytes = int(max_upload_mb * 1_000_000)
    hosts = allowed_hosts_for(host, allowed_host or ())
    settings = {"model": model, "max_upload_bytes": max_bytes, "max_clip_s": max_clip_s, "allowed_hosts": hosts}
    if workers == 1:
        app = create_app(path, **settings)
    else:
        # fail here, once, on a bad catalog/model, and build the index before the workers load it
        create_app(path, **settings).state.catalogs.close()
        os.environ.update(serve_settings_env(path, **settings))
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: serving on {host}: anyone who can reach this address can browse and "
                   f"play the catalog", err=True)
    typer.echo(f"soundalike: http://{host}:{port}/  (catalog {path}; {workers} worker"
               f"{'s' if workers > 1 else ''}; Ctrl-C to stop)")
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    else:
        from soundalike.web.serving import run_workers

        # each worker with its own accept queue: uvicorn's shared one gave every keep-alive
        # connection to whichever worker woke first
        run_workers("soundalike.web.app:app_from_env", workers=workers, host=host, port=port)
