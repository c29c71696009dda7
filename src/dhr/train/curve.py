"""Quality-versus-compute curves of training runs (the model card's recipe comparison).

``python -m dhr.train.curve --run runs/a --run runs/b --data DIR --lpips-dir DIR --out curve.json --plot curve.png``

Every milestone a run wrote (``milestones/g_ema_*.pt``, see ``--milestone-kimg`` of
:mod:`dhr.train.gan`) is scored with :func:`dhr.train.quality.sample_quality` on the held-out
crops; results are cached in ``--out`` so a rerun only scores new milestones. The plot shows KID
against thousands of real images seen (kimg) and against CPU-hours of training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from dhr.errors import ConfigError
from dhr.metrics.kid import squeeze_features
from dhr.metrics.lpips import LPIPS
from dhr.models.stylegan2 import Generator, GeneratorConfig
from dhr.train.data import prepare_dataset
from dhr.train.gan import _to_tensor
from dhr.train.quality import face_features, sample_quality

__all__ = ["score_runs", "plot_curves"]


def _load_milestone(path: Path) -> tuple[Generator, dict]:
    st = torch.load(path, map_location="cpu", weights_only=True)
    G = Generator(GeneratorConfig(**json.loads(st["generator_config"])))
    G.load_state_dict(st["G_ema"])
    return G.eval(), {"kimg": float(st["kimg"]), "step": int(st["step"]), "cpu_hours": float(st["cpu_seconds"]) / 3600}


def score_runs(runs: dict[str, Path], data: Path, lpips_dir: Path, cache: dict, *, n: int = 2000, n_face: int = 0,
               every: int = 1, save: Path | None = None, val_fraction: float = 0.04) -> dict:
    """Scores every ``every``-th milestone of each run not yet in ``cache`` (label -> list of points).

    The real images are the held-out split of ``data`` (``val_fraction``, as in training).
    """
    lp = LPIPS("squeeze", backbone=lpips_dir / "squeezenet1_1_features.safetensors",
               linear=lpips_dir / "v0.1" / "squeeze.pth")
    real_feats = face_feats = None
    for label, run in runs.items():
        files = sorted((run / "milestones").glob("g_ema_*.pt"))
        if not files:
            raise ConfigError(f"{run} has no milestones/g_ema_*.pt: train with --milestone-kimg N")
        done = {p["file"] for p in cache.get(label, [])}
        for i, f in enumerate(files):
            if f.name in done or (i % every and i != len(files) - 1):
                continue
            G, meta = _load_milestone(f)
            if real_feats is None:
                _, val, _ = prepare_dataset(data, G.resolution, val_fraction=val_fraction,
                                            cache=Path("/tmp") / f"dhr_eval_data_{G.resolution}.npz"
                                            if val_fraction == 0.04 else None)
                real = _to_tensor(val.images)
                real_feats = squeeze_features(lp.features, real.split(100))
                face_feats = face_features(real)[0] if n_face else None
            q = sample_quality(G, real, lp.features, n=n, n_face=n_face, real_features=real_feats,
                               real_face_features=face_feats)
            cache.setdefault(label, []).append({"file": f.name, **meta, **q})
            cache[label].sort(key=lambda p: p["kimg"])
            print(json.dumps({"run": label, **cache[label][-1]}), flush=True)
            if save is not None:
                save.write_text(json.dumps(cache, indent=1) + "\n")
    return cache


def plot_curves(cache: dict, out: Path, *, extra: dict | None = None) -> None:
    """KID against kimg and against CPU-hours, one line per run; ``extra`` adds labelled points
    ``{label: [{"kimg": .., "kid": ..}, ..]}`` to the kimg panel (e.g. a version without CPU times)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for label, pts in cache.items():
        if label.startswith("_"):
            continue
        for ax, key in zip(axes, ("kimg", "cpu_hours")):
            ax.plot([p[key] for p in pts], [p["kid"] for p in pts], marker="o", ms=3, label=label)
    for label, pts in (extra or {}).items():
        axes[0].plot([p["kimg"] for p in pts], [p["kid"] for p in pts], "s", ms=7, label=label)
    axes[0].set_xlabel("thousands of real images seen (kimg)")
    axes[1].set_xlabel("CPU-hours of training (process time)")
    axes[0].set_ylabel("KID (SqueezeNet features, card protocol)")
    for ax in axes:
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Sample quality against training compute (lower is better)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, help="LABEL=FOLDER or FOLDER (repeat)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--lpips-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="JSON of all points (read first: a cache)")
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--n-face", type=int, default=0, help="also dlib face_rate / kid_face on this many samples")
    p.add_argument("--every", type=int, default=1, help="score every k-th milestone (and the last)")
    p.add_argument("--extra", type=Path, default=None, help="JSON {label: [{kimg, kid}]} of extra points")
    a = p.parse_args(argv)
    runs = {}
    for r in a.run:
        label, _, folder = r.rpartition("=")
        runs[label or Path(folder).name] = Path(folder)
    cache = json.loads(a.out.read_text()) if a.out.exists() else {}
    score_runs(runs, a.data, a.lpips_dir, cache, n=a.n, n_face=a.n_face, every=a.every, save=a.out)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(cache, indent=1) + "\n")
    if a.plot:
        plot_curves(cache, a.plot, extra=json.loads(a.extra.read_text()) if a.extra else None)


if __name__ == "__main__":
    main()
