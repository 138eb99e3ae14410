"""Curves of a DeepMOT fine-tuning run: training loss terms and validation metrics -> PNG."""

from __future__ import annotations

from pathlib import Path

from deepmot.runtime.checkpoint import atomic_write

__all__ = ["plot_curves"]


def plot_curves(run_dir: Path, history: list[dict], metrics_csv: Path) -> Path | None:
    """Training-loss and validation curves -> ``run_dir/curves.png`` (None if nothing to plot)."""
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train: dict[str, list[tuple[int, float]]] = {}
    if metrics_csv.is_file():
        with open(metrics_csv, newline="") as f:
            for row in csv.DictReader(f):
                if row["key"].startswith("train/"):
                    train.setdefault(row["key"][6:], []).append((int(row["step"]), float(row["value"])))
    val_keys = [k for k in ("MOTA", "IDF1", "HOTA") if any(k in h for h in history)]
    if not train and not val_keys:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k in ("loss", "dmota", "dmotp", "focal"):
        if k in train:
            s, v = zip(*train[k])
            axes[0].plot(s, v, label=k)
    axes[0].set_xlabel("step")
    axes[0].set_title("training terms")
    if train:
        axes[0].legend()
    for k in val_keys:
        pts = [(h["step"], h[k]) for h in history if k in h]
        axes[1].plot(*zip(*pts), marker="o", label=k)
    axes[1].set_xlabel("step")
    axes[1].set_title("validation")
    if val_keys:
        axes[1].legend()
    fig.tight_layout()
    out = run_dir / "curves.png"
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return out
