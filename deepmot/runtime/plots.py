"""Curves of a run -> PNG: a DeepMOT fine-tuning run's loss terms and validation metrics
(:func:`plot_curves`), any run's ``metrics.csv`` keys (:func:`plot_scalars`, e.g. DHN training)."""

from __future__ import annotations

from pathlib import Path

from deepmot.runtime.checkpoint import atomic_write

__all__ = ["plot_curves", "plot_scalars"]


def plot_curves(run_dir: Path, history: list[dict], metrics_csv: Path) -> Path | None:
    """Training-loss and validation curves (ratios in percent) -> ``run_dir/curves.png``
    (None if nothing to plot)."""
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
        pts = [(h["step"], 100 * h[k]) for h in history if k in h]
        axes[1].plot(*zip(*pts), marker="o", label=k)
    axes[1].set_xlabel("step")
    axes[1].set_title("validation %")
    if val_keys:
        axes[1].legend()
    fig.tight_layout()
    out = run_dir / "curves.png"
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return out


def plot_scalars(out: Path, metrics_csv: Path, panels: dict[str, list[str]],
                 percent: bool = False) -> Path | None:
    """Curves of ``metrics.csv`` keys (long format ``step,key,value``) -> PNG ``out``.

    ``panels``: title -> keys drawn in that panel against the step; keys absent from the CSV
    are skipped, and a panel of ratios is drawn in percent when its title ends with ``%``
    (``percent=True``: every panel). Returns ``out``, or None when no key had a value.
    """
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wanted = {k for keys in panels.values() for k in keys}
    series: dict[str, list[tuple[int, float]]] = {}
    if metrics_csv.is_file():
        with open(metrics_csv, newline="") as f:
            for row in csv.DictReader(f):
                if row["key"] in wanted:
                    series.setdefault(row["key"], []).append((int(row["step"]), float(row["value"])))
    shown = {t: [k for k in keys if k in series] for t, keys in panels.items()}
    shown = {t: keys for t, keys in shown.items() if keys}
    if not shown:
        return None
    fig, axes = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 4), squeeze=False)
    for ax, (title, keys) in zip(axes[0], shown.items()):
        scale = 100.0 if percent or title.endswith("%") else 1.0
        for k in keys:
            s, v = zip(*sorted(series[k]))
            ax.plot(s, [scale * x for x in v], marker="o" if len(s) < 30 else None, label=k)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return out
