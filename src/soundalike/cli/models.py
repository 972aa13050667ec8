"""CLI commands of the models area: ``tag`` and ``model list``.

Another area adds ``model summary`` to :data:`model_app` (import it from here).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from soundalike.cli.common import JsonOpt, print_json

model_app = typer.Typer(help="Pretrained and trained models: list them, inspect runs.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command()(tag)
    model_app.command("list")(list_models)
    app.add_typer(model_app, name="model")


def _plot_path(plot: Path, audio: Path, n_files: int) -> Path:
    if n_files == 1:
        return plot
    return plot.with_name(f"{plot.stem}-{audio.stem}{plot.suffix or '.png'}")


def tag(
    files: Annotated[list[Path], typer.Argument(help="Audio files to tag.")],
    model: Annotated[str, typer.Option("--model", "-m",
                                       help="MTT_musicnn, MTT_vgg, MSD_musicnn or MSD_vgg, optionally "
                                            "with a precision (MTT_musicnn@mixed-ef, MSD_vgg@int8).")] = "MTT_musicnn",
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="Tags to print per file.")] = 5,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write the taggram (tags x time heat map) PNG here; with several files, "
                       "one per file named PLOT-STEM-FILESTEM.png.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Tag audio files with a pretrained model (top tags per file; bad files are reported, not fatal)."""
    from soundalike.errors import ModelError, SoundalikeError
    from soundalike.models.pretrained import SPECS
    from soundalike.models.zoo import split_precision

    name, precision = split_precision(model)
    if name not in SPECS:
        raise ModelError(f"unknown pretrained model {model!r}; choose one of {', '.join(SPECS)} "
                         "(with @PRECISION for another arithmetic)")
    from soundalike.audio.io import load as load_audio
    from soundalike.models.pretrained import load

    m = load(name, precision=precision)
    results, failures = [], []
    for f in files:
        try:
            wav = load_audio(f, sr=m.sample_rate)
            pred = m.predict(wav.y, wav.sr)
            entry = {"path": str(f), "model": m.name, "model_id": m.model_id,
                     "duration_s": round(wav.duration_s, 3), "n_patches": int(pred.patch_probs.shape[0]),
                     "tags": [{"tag": t, "probability": round(p, 4)} for t, p in pred.top(top)]}
            if plot is not None:
                from soundalike.models.taggram import plot_taggram

                out = _plot_path(plot, f, len(files))
                plot_taggram(pred, out, title=f"{f.name} — {m.name}")
                entry["plot"] = str(out)
        except SoundalikeError as exc:
            failures.append({"path": str(f), "error": str(exc)})
            print(f"error: {exc}", file=sys.stderr)
            continue
        results.append(entry)
        if not json_out:
            tags = "  ".join(f"{t['tag']} {t['probability']:.2f}" for t in entry["tags"])
            print(f"{f}  ({entry['duration_s']:.1f} s, {entry['n_patches']} patches)\n  {tags}"
                  + (f"\n  taggram: {entry['plot']}" if "plot" in entry else ""))
    if json_out:
        print_json({"model": m.name, "model_id": m.model_id, "results": results, "errors": failures})
    if failures:
        raise typer.Exit(code=1)


def list_models(json_out: JsonOpt = False) -> None:
    """List the models that ingest, tag and similar can use (no weights are loaded)."""
    from soundalike.models.baseline import MFCCStats
    from soundalike.models.pretrained import SPECS
    from soundalike.models.zoo import DEFAULT_ANALYZER, FUSED, available, split_precision

    default, default_precision = split_precision(DEFAULT_ANALYZER)
    rows = []
    for name in available():
        if name in SPECS:
            s = SPECS[name]
            rows.append({"name": name, "kind": f"pretrained {s.arch} ({s.dataset})", "labels": len(s.labels),
                         "label_names": list(s.labels), "label_category": "tag",
                         "embedding_dims": s.embedding_dims, "roc_auc": s.roc_auc, "pr_auc": s.pr_auc,
                         "default": name == default})
        elif name in FUSED:
            from soundalike.models.fusion import LAYOUTS

            blocks = LAYOUTS[name]
            dims = {f"{m}.{layer}": SPECS[m].embedding_dims[layer] for m, layer in blocks}
            fused_labels = list(dict.fromkeys(lab for m in dict.fromkeys(m for m, _ in blocks)
                                              for lab in SPECS[m].labels))
            nets = "+".join(dict.fromkeys(f"{SPECS[m].dataset}{'' if SPECS[m].arch == 'musicnn' else ' vgg'}"
                                          for m, _ in blocks))
            rows.append({"name": name, "kind": f"fused pretrained ({nets})",
                         "labels": len(fused_labels), "label_names": fused_labels,
                         "label_category": "tag",
                         "embedding_dims": {"embedding": sum(dims.values())}, "roc_auc": None,
                         "pr_auc": None, "default": name == default})
        elif name == MFCCStats.name:
            rows.append({"name": name, "kind": "baseline (no weights)", "labels": 0, "label_names": [],
                         "label_category": None,
                         "embedding_dims": {"embedding": MFCCStats.embedding_dim}, "roc_auc": None,
                         "pr_auc": None, "default": name == default})
    for r in rows:  # the precision ingest runs the default at (fp32 for every other row)
        r["default_precision"] = default_precision if r["default"] else None
    if json_out:
        print_json(rows)
        return
    print(f"{'name':<18} {'kind':<32} {'labels':>6}  {'embedding dims':<28} {'ROC-AUC':>7} {'PR-AUC':>7}")
    for r in rows:
        dims = ", ".join(f"{k} {v}" for k, v in r["embedding_dims"].items())
        auc = f"{r['roc_auc']:7.4f} {r['pr_auc']:7.4f}" if r["roc_auc"] is not None else f"{'-':>7} {'-':>7}"
        print(f"{r['name']:<18} {r['kind']:<32} {r['labels']:>6}  {dims:<28} {auc}"
              + (f"  (default, {r['default_precision']})" if r["default"] else ""))
    import textwrap

    print("\nlabels (model tags, category 'tag'):")
    for r in rows:
        # "\0" keeps a label's words on one line ("alternative rock" never splits)
        names = ", ".join(x.replace(" ", "\0") for x in r["label_names"]) or "none (similarity only)"
        print(textwrap.fill(names, width=100, initial_indent=f"  {r['name']:<13} ", subsequent_indent=" " * 16,
                            break_long_words=False, break_on_hyphens=False).replace("\0", " "))
