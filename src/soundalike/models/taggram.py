"""The taggram: a heat map of tag probabilities over time (tags x patches)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from soundalike.models.pretrained import Prediction


def plot_taggram(prediction: Prediction, path: str | Path, *, title: str | None = None,
                 top: int | None = None, patch_s: float = 3.0) -> Path:
    """Draw ``prediction.patch_probs`` as a tags x time heat map and save it as PNG.

    Parameters
    ----------
    prediction : an unbatched :class:`~soundalike.models.pretrained.Prediction`
        (``patch_probs`` ``(n_patches, n_labels)``)
    path : output file (the format follows the suffix; ``.png`` recommended)
    title : figure title
    top : show only the ``top`` tags with the highest track-level probability
        (ordered from most to least probable); ``None`` shows all, in model order
    patch_s : duration of one patch in seconds (sets the time axis)

    Returns
    -------
    Path
        ``path``, written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    pp = np.asarray(prediction.patch_probs, dtype=np.float32)
    if pp.ndim != 2:
        raise ValueError(f"plot_taggram needs one signal's patch_probs (n_patches, n_labels), got {pp.shape}")
    labels = list(prediction.labels)
    rows = np.arange(len(labels))
    if top is not None:
        rows = np.argsort(-prediction.probs, kind="stable")[: max(1, top)]
    grid = pp[:, rows].T  # (tags, time)
    starts = np.asarray(prediction.patch_starts_s, dtype=np.float64)
    t_end = float(starts[-1] + patch_s) if len(starts) else patch_s

    height = max(3.0, 0.18 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(min(16.0, 4.0 + 0.25 * grid.shape[1]), height))
    try:
        im = ax.imshow(grid, aspect="auto", origin="upper", interpolation="nearest", cmap="viridis",
                       vmin=0.0, vmax=max(float(grid.max()), 1e-3),
                       extent=(0.0, t_end, len(rows) - 0.5, -0.5))
        ax.set_yticks(np.arange(len(rows)))
        ax.set_yticklabels([labels[i] for i in rows], fontsize=7)
        ax.set_xlabel("time (s)")
        import textwrap

        width = max(30, int(fig.get_figwidth() * 9))  # characters that fit at fontsize 10
        ax.set_title("\n".join(textwrap.wrap(title or "taggram", width)), fontsize=10)
        fig.colorbar(im, ax=ax, label="probability", fraction=0.03, pad=0.02)
        fig.tight_layout()
        out = Path(path)
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out
