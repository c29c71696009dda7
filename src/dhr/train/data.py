"""Training data: UTKFace-style labelled face crops, preprocessed once into a uint8 array.

File names carry the labels: ``AGE_GENDER_RACE_DATE.jpg.chip.jpg`` (gender 0 male, 1 female).
The validation split is chosen by a hash of the file name, so it never depends on listing order
and no training step ever sees it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FaceDataset", "prepare_dataset", "parse_utkface_name", "is_validation"]

log = logging.getLogger(__name__)
_NAME = re.compile(r"^(\d+)_([01])_(\d)_")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def parse_utkface_name(name: str) -> tuple[int, int, int] | None:
    """Returns (age, gender, race) from a UTKFace file name, or None if it does not follow the pattern."""
    m = _NAME.match(name)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def is_validation(name: str, fraction: float) -> bool:
    """Deterministic held-out split by the sha1 of the file name."""
    h = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 1_000_003
    return h / 1_000_003 < fraction


@dataclass(frozen=True)
class FaceDataset:
    """Preprocessed crops. ``images`` is ``(N, S, S, 3)`` uint8; labels are -1 where unknown."""

    images: np.ndarray
    ages: np.ndarray
    genders: np.ndarray
    races: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx: np.ndarray) -> FaceDataset:
        return FaceDataset(self.images[idx], self.ages[idx], self.genders[idx], self.races[idx],
                           tuple(self.names[i] for i in idx))


def prepare_dataset(folder: str | Path, size: int, cache: str | Path | None = None, *,
                    val_fraction: float = 0.04) -> tuple[FaceDataset, FaceDataset, int]:
    """Loads every readable image of ``folder``, resized to ``size`` (antialiased), split train / val.

    Returns:
        ``(train, val, n_skipped)``; unreadable or non-RGB-convertible files are skipped and counted.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    cache = Path(cache) if cache else None
    if cache and cache.exists():
        z = np.load(cache, allow_pickle=False)
        ds = FaceDataset(z["images"], z["ages"], z["genders"], z["races"], tuple(z["names"].tolist()))
        skipped = int(z["skipped"])
    else:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES or p.name.endswith(".chip.jpg"))
        if not files:
            from dhr.errors import ConfigError

            raise ConfigError(f"no images found in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
        imgs, ages, gens, races, names = [], [], [], [], []
        skipped = 0
        for p in files:
            try:
                with Image.open(p) as im:
                    im = im.convert("RGB")
                    w, h = im.size
                    s = min(w, h)
                    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                    im = im.resize((size, size), Image.Resampling.LANCZOS)
                    imgs.append(np.asarray(im, dtype=np.uint8))
            except (OSError, UnidentifiedImageError, ValueError) as e:
                skipped += 1
                log.warning("skipping unreadable image %s (%s)", p, e)
                continue
            lab = parse_utkface_name(p.name) or (-1, -1, -1)
            ages.append(lab[0]), gens.append(lab[1]), races.append(lab[2]), names.append(p.name)
        if not imgs:
            from dhr.errors import ConfigError

            raise ConfigError(f"no usable images in {folder}: all {len(files)} image files were unreadable "
                              f"(see the warnings above); point --data at a folder of face crops")
        ds = FaceDataset(np.stack(imgs), np.array(ages), np.array(gens), np.array(races), tuple(names))
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, images=ds.images, ages=ds.ages, genders=ds.genders, races=ds.races,
                     names=np.array(ds.names), skipped=skipped)
    val = np.array([is_validation(n, val_fraction) for n in ds.names])
    return ds.subset(np.nonzero(~val)[0]), ds.subset(np.nonzero(val)[0]), skipped


def write_held_out(folder: str | Path, out: str | Path, *, fraction: float = 0.04, link: bool = True) -> list[Path]:
    """Puts the held-out crops of ``folder`` (:func:`is_validation` with ``fraction``) into ``out``.

    These are the images no training step saw: the benchmark and the model card evaluate on them.

    Args:
        folder: The labelled crops (e.g. ``../shared/datasets/utkface``).
        out: Destination folder (created).
        fraction: The held-out fraction the model was trained with (its ``val_fraction``, 0.04).
        link: Symbolic links (default) or copies.

    Returns:
        The written paths, sorted.
    """
    import shutil

    src, dst = Path(folder), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder of face crops")
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for p in sorted(src.iterdir()):
        if p.suffix.lower() not in (".jpg", ".jpeg", ".png") or not is_validation(p.name, fraction):
            continue
        q = dst / p.name
        if q.exists() or q.is_symlink():
            q.unlink()
        if link:
            q.symlink_to(p.resolve())
        else:
            shutil.copyfile(p, q)
        written.append(q)
    return written


def main(argv: list[str] | None = None) -> None:
    """``python -m dhr.train.data held-out DATA OUT [--fraction 0.04] [--copy]``."""
    import argparse

    p = argparse.ArgumentParser(description="Dataset helpers for dhr.train.")
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("held-out", help="put the held-out crops (never trained on) into a folder")
    h.add_argument("data", type=Path)
    h.add_argument("out", type=Path)
    h.add_argument("--fraction", type=float, default=0.04)
    h.add_argument("--copy", action="store_true", help="copy instead of symbolic links")
    a = p.parse_args(argv)
    written = write_held_out(a.data, a.out, fraction=a.fraction, link=not a.copy)
    print(f"{len(written)} held-out crops in {a.out}")


if __name__ == "__main__":
    main()
