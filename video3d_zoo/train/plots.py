"""PNG plots of a training run (matplotlib is optional: without it the plot is skipped with a message)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union


def plot_curves(history: Sequence[Dict[str, Any]], path: Union[str, Path], title: str = "") -> Optional[Path]:
    """Loss and accuracy curves (PNG); skipped with a message when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no curves.png (pip install 'video3d-zoo[train]'); log.csv has the numbers",
              file=sys.stderr)
        return None

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], label="train")
    val = [(r["epoch"], r) for r in history if r.get("val_loss") is not None]
    if val:
        ax1.plot([e for e, _ in val], [r["val_loss"] for _, r in val], label="validation (clip)")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    ax2.plot(epochs, [r["train_top1"] for r in history], label="train clip top-1")
    if val:
        ax2.plot([e for e, _ in val], [r["val_clip_top1"] for _, r in val], label="val clip top-1")
        ax2.plot([e for e, _ in val], [r["val_video_top1"] for _, r in val], label="val video top-1")
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.legend()
    if title:
        fig.suptitle(title)
    return save_png(fig, path)


def save_png(fig, path: Union[str, Path]) -> Path:
    """Write a matplotlib figure as PNG atomically (never a half-written file) and close it."""
    import matplotlib.pyplot as plt

    from ..fileio import atomic_path

    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
