"""The drift heatmap: features by window, coloured by drift score (>= 1 means drifted)."""

from __future__ import annotations

import numpy as np
import polars as pl
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from ml_assets.evaluation.plots import message_png, render_png


def drift_heatmap_png(table: pl.DataFrame, windows: int) -> bytes:
    """`table`: feature_drift rows (feature, window_end, score); the last `windows` windows."""
    if table.is_empty():
        return message_png("no drift windows yet")
    ends = table.get_column("window_end").unique().sort().tail(windows)
    wide = (table.filter(pl.col("window_end").is_in(ends.implode()))
            .pivot(on="window_end", index="feature", values="score", sort_columns=True)
            .sort("feature"))
    features = wide.get_column("feature").to_list()
    values = wide.drop("feature").to_numpy().astype(float)
    fig = Figure(figsize=(min(12.0, 2.5 + 0.3 * values.shape[1]), 1.0 + 0.22 * len(features)))
    ax = fig.add_subplot()
    # white at 1 (the threshold): blue is calm, red drifted
    norm = TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=max(2.0, float(np.nanmax(values, initial=0))))
    image = ax.imshow(values, aspect="auto", cmap="RdBu_r", norm=norm)
    ax.set_yticks(range(len(features)), features, fontsize=7)
    labels = [str(c)[5:] for c in wide.columns[1:]]
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    fig.colorbar(image, ax=ax, label="score")
    fig.tight_layout()
    return render_png(fig)
