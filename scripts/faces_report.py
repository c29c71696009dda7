"""Measures the faces stage on a folder of real photos and prints a JSON summary.

(a) alignment success rate on every image under ``--photos`` (recursively; target >= 95%),
    with the failures and their reasons;
(b) identity ROC AUC and accuracy at the recommended threshold on ``master.csv`` (file_x,
    file_y, Decision Yes/No), for dlib descriptors of the photo (landmarks from the photo) and
    of the FFHQ-aligned crop (landmarks re-detected in the crop, as when comparing a
    reconstruction with its target);
(c) round-trip paste-back: align -> paste the unmodified crop -> pixels outside the blend mask
    must be unchanged (count of changed pixels), mean error inside, and the seam score
    (LPIPS-squeeze on patches along the mask border; L1 when LPIPS weights are missing).

Usage::

    python scripts/faces_report.py --out faces_report.json
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from dhr.errors import DHRError
from dhr.faces.align import AlignTemplate, AlignedFace, align_face
from dhr.faces.detect import find_faces
from dhr.faces.identity import DlibIdentity
from dhr.faces.paste import paste_back, seam_score
from dhr.io.image import Photo, load_image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Threshold (midpoint between sorted scores) with the highest accuracy, and that accuracy."""
    s = np.sort(np.unique(scores))
    cands = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
    accs = [((scores > t) == labels).mean() for t in cands]
    i = int(np.argmax(accs))
    return float(cands[i]), float(accs[i])


def make_lpips(backbone: Path | None, linear: Path | None):  # noqa: ANN201 - callable or None
    try:
        from dhr.metrics.lpips import LPIPS
    except ImportError as exc:
        logging.warning("LPIPS not importable (%s); seam score falls back to L1", exc)
        return None, "l1"
    if backbone is None or linear is None or not backbone.is_file() or not linear.is_file():
        logging.warning("LPIPS weights not found; seam score falls back to L1")
        return None, "l1"
    return LPIPS("squeeze", backbone=backbone, linear=linear), "lpips_squeeze"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=SHARED / "datasets" / "photos")
    parser.add_argument("--pairs", type=Path, default=None, help="pair list (default: <photos>/master.csv)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON summary")
    parser.add_argument("--size", type=int, default=256, help="aligned crop side")
    parser.add_argument("--detector", choices=("hog", "cnn"), default="hog")
    parser.add_argument("--lpips-backbone", type=Path, default=SHARED / "weights" / "lpips" / "squeezenet1_1_features.safetensors")
    parser.add_argument("--lpips-linear", type=Path, default=SHARED / "weights" / "lpips" / "v0.1" / "squeeze.pth")
    parser.add_argument("--seam-photos", type=int, default=0, help="limit the round-trip test to N photos (0 = all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    if not args.photos.is_dir():
        print(f"photo folder {args.photos} not found", file=sys.stderr)
        return 2
    template = AlignTemplate.ffhq(args.size)
    files = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    t0 = time.time()

    # (a) alignment
    photos: dict[str, Photo] = {}
    aligned: dict[str, AlignedFace] = {}
    failures: list[dict[str, str]] = []
    faces_per_image: dict[str, int] = {}
    skipped_small = 0
    for path in files:
        rel = str(path.relative_to(args.photos))
        try:
            photo = load_image(path)
            detection = find_faces(photo, detector=args.detector)
            skipped_small += len(detection.skipped)
            faces_per_image[rel] = len(detection.faces)
            if not detection.faces:
                reasons = "; ".join(s.reason for s in detection.skipped) or "no face detected"
                failures.append({"file": rel, "reason": reasons})
                continue
            aligned[rel] = align_face(photo, detection.faces[0], template)
            photos[rel] = photo
        except DHRError as exc:
            failures.append({"file": rel, "reason": f"{type(exc).__name__}: {exc}"})
    alignment = {
        "images": len(files),
        "aligned": len(aligned),
        "success_rate": len(aligned) / max(len(files), 1),
        "target": 0.95,
        "failures": failures,
        "faces_detected": int(sum(faces_per_image.values())),
        "faces_skipped_as_too_small": skipped_small,
        "template": template.to_dict(),
        "seconds": round(time.time() - t0, 1),
    }

    # (b) identity
    t1 = time.time()
    pairs_path = args.pairs or args.photos / "master.csv"
    identity: dict[str, object] = {"pairs_file": str(pairs_path)}
    if pairs_path.is_file():
        ident = DlibIdentity()
        with open(pairs_path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("file_x") and r.get("file_y")]
        needed = sorted({r["file_x"] for r in rows} | {r["file_y"] for r in rows})
        emb_photo, emb_crop, fallbacks = {}, {}, []
        for name in needed:
            if name not in aligned:
                continue
            photo, al = photos[name], aligned[name]
            emb_photo[name] = ident.embed(photo.pixels, al.crop_to_photo(al.landmarks))
            emb_crop[name] = ident.embed(al.crop)
            if ident.last_notes:
                fallbacks.append(name)
        labels = np.array([1 if r["Decision"].strip().lower() in ("yes", "1", "true") else 0 for r in rows])
        usable = np.array([r["file_x"] in emb_photo and r["file_y"] in emb_photo for r in rows])
        for key, emb in (("photo", emb_photo), ("aligned_crop", emb_crop)):
            scores = np.array(
                [ident.similarity(emb[r["file_x"]], emb[r["file_y"]]) if u else np.nan for r, u in zip(rows, usable)]
            )
            s, y = scores[usable], labels[usable]
            thr, acc_best = best_threshold(s, y)
            identity[key] = {
                "auc": roc_auc(s, y),
                "accuracy_at_threshold": float(((s > ident.threshold) == y).mean()),
                "best_threshold": thr,
                "best_accuracy": acc_best,
                "same_mean": float(s[y == 1].mean()),
                "different_mean": float(s[y == 0].mean()),
            }
        identity.update(
            {
                "model": ident.name,
                "metric": "similarity = 1 - euclidean distance of dlib 128-d descriptors",
                "threshold": ident.threshold,
                "pairs": len(rows),
                "pairs_scored": int(usable.sum()),
                "positives": int(labels[usable].sum()),
                "crop_embeddings_without_a_detected_face": fallbacks,
                "seconds": round(time.time() - t1, 1),
            }
        )
    else:
        identity["error"] = "pair list not found"

    # (c) round-trip paste-back
    t2 = time.time()
    lpips_fn, seam_metric = make_lpips(args.lpips_backbone, args.lpips_linear)
    names = sorted(aligned)
    if args.seam_photos > 0:
        names = names[: args.seam_photos]
    changed_outside, inside_err, seams, seams_l1 = 0, [], [], []
    for name in names:
        photo, al = photos[name], aligned[name]
        res = paste_back(photo, al, al.crop)
        outside = res.mask == 0
        changed_outside += int((res.image[outside] != photo.pixels[outside]).any(-1).sum())
        inside = res.mask > 0
        inside_err.append(float(np.abs(res.image[inside].astype(np.int16) - photo.pixels[inside]).mean()))
        seams_l1.append(seam_score(photo.pixels, res.image, res.mask))
        if lpips_fn is not None:
            seams.append(seam_score(photo.pixels, res.image, res.mask, lpips_fn))
    paste = {
        "photos": len(names),
        "changed_pixels_outside_mask": changed_outside,
        "mean_abs_error_inside_mask_uint8": float(np.mean(inside_err)) if inside_err else None,
        "seam_metric": seam_metric,
        "seam_score_mean": float(np.mean(seams)) if seams else None,
        "seam_score_max": float(np.max(seams)) if seams else None,
        "seam_l1_mean": float(np.mean(seams_l1)) if seams_l1 else None,
        "seconds": round(time.time() - t2, 1),
    }

    summary = {"alignment": alignment, "identity": identity, "paste_back": paste}
    text = json.dumps(summary, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
