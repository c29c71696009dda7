"""Per-photo and per-face work shared by the batch commands, the web UI and the distributed engine.

One photo goes through :func:`process_photo`: load -> detect/align -> invert -> save the outputs of
each face (:func:`save_face`) into an :class:`dhr.records.OutputTree`, recording what happened in
an :class:`dhr.records.InputRecord`. The same function runs in ``dhr run`` (in process) and on dask
workers (:mod:`dhr.distributed`), so both write identical files.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from PIL import Image

from dhr.editing.media import (
    ANIMATION_FPS,
    contact_sheet,
    mask_overlay,
    save_gif,
    save_mp4,
    save_png,
    sweep_animation_frames,
)
from dhr.errors import ConfigError
from dhr.io.image import load_image, save_image
from dhr.pipeline import Pipeline
from dhr.progress import Reporter
from dhr.records import InputRecord, OutputTree
from dhr.results import EditResult, PhotoInversion
from dhr.segmentation.domain import save_domain_pngs

__all__ = ["FaceEntry", "PhotoBatches", "PhotoJob", "Sweep", "display", "face_entry", "process_photo", "save_face",
           "save_inversions", "save_sheet", "save_sweeps"]

Sweep = tuple[str, tuple[float, ...]]
"""A strength sweep: ``(direction, strengths)``."""


class FaceEntry(TypedDict, total=False):
    """One face of an input in ``run.json`` (``InputRecord.faces``), as written by :func:`face_entry`
    and :func:`save_face`.

    Keys: ``stem`` (output file stem), ``face_index`` (size rank, -1 whole image; None for a bare
    crop), ``box`` (detector box left, top, right, bottom in photo pixels, or None),
    ``faces_found``, ``whole_image``, ``method``, ``notes``, ``timings`` (seconds per stage,
    ``save_s`` included), ``final_losses``, ``outputs`` (kind -> path, or nested dicts for masks,
    edits and sweeps) and ``paste_mode`` (``delta``/``crop``, when something was pasted).
    """

    stem: str
    face_index: int | None
    box: list[float] | None
    faces_found: int | None
    whole_image: bool
    method: str
    notes: list[str]
    timings: dict[str, float]
    final_losses: dict[str, float]
    outputs: dict[str, Any]
    paste_mode: str | None

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhotoJob:
    """What to do with each photo (plain data: it travels to distributed workers).

    Attributes:
        face_index: Which face (0 = largest); None with ``all_faces``.
        all_faces: Process every detected face.
        whole_image: Process the whole image resized when no face is found.
        masks, inversion, bundle: Which outputs to write (domain-mask PNGs, inversion PNG and pasted
            inversion, reusable bundle).
        edits: Edit combinations, each a tuple of ``(direction, strength)`` pairs; one output each.
        sweeps: ``(direction, strengths)`` sweeps (grid PNG, GIF, MP4).
        sheet: Write the side-by-side sheet (input, mask, inversion, edits).
        align_only: Only detect and align (``dhr align``).
        ood_mask: Path of a user out-of-domain mask for the photo (white = out of domain; see
            :meth:`dhr.pipeline.Pipeline.invert`), replacing DHR's segmentation. For one photo.
    """

    face_index: int | None = 0
    all_faces: bool = False
    whole_image: bool = False
    masks: bool = True
    inversion: bool = True
    bundle: bool = True
    edits: tuple[tuple[tuple[str, float], ...], ...] = ()
    sweeps: tuple[Sweep, ...] = ()
    sheet: bool = True
    align_only: bool = False
    ood_mask: str | None = None

    @staticmethod
    def from_lists(edits: Sequence[dict[str, float]] = (), sweeps: Sequence[Sweep] = (),
                   **kwargs: Any) -> PhotoJob:
        """Builds a job from the CLI's edit dicts and sweep tuples."""
        return PhotoJob(edits=tuple(tuple(combo.items()) for combo in edits),
                        sweeps=tuple((n, tuple(float(s) for s in st)) for n, st in sweeps), **kwargs)

    def edit_dicts(self) -> list[dict[str, float]]:
        return [dict(combo) for combo in self.edits]


def display(img: np.ndarray | Image.Image, min_size: int = 128) -> np.ndarray:
    """``uint8 (H, W, 3)`` (or a PIL image) enlarged by an integer nearest-neighbour factor to at
    least ``min_size`` wide, so that sheet titles fit over tiny crops."""
    arr = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img, dtype=np.uint8)
    factor = -(-min_size // arr.shape[1])
    if factor > 1:
        arr = np.repeat(np.repeat(arr, factor, axis=0), factor, axis=1)
    return np.ascontiguousarray(arr)


def save_sweeps(pipe: Pipeline, pi: PhotoInversion, root: Path, sweeps: Sequence[Sweep]) -> dict[str, Any]:
    """Grid PNG, ping-pong GIF and MP4 per sweep in ``root/sweeps``; MP4 skipped with a warning when
    imageio-ffmpeg is missing.

    Returns:
        Direction -> ``{"strengths", "grid", "gif", "mp4"}`` (paths as strings, ``mp4`` None when skipped).
    """
    folder = root / "sweeps"
    written: dict[str, Any] = {}
    for name, strengths in sweeps:
        res = pipe.sweep(pi, name, strengths)
        base = folder / f"{pi.stem}_{name}"
        # The grid shows the crops at the asked strengths; the animations the pasted photo, in finer steps.
        frames = sweep_animation_frames(pipe, pi, name, res.strengths)
        entry: dict[str, Any] = {"strengths": list(res.strengths),
                                 "grid": str(save_png(res.grid, base.with_suffix(".png"))),
                                 "gif": str(save_gif(frames, base.with_suffix(".gif"), fps=ANIMATION_FPS,
                                                     pingpong=True)), "mp4": None}
        try:  # lazy: an optional dependency (extra "video"), checked here to skip the MP4 cleanly
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            log.warning("%s: MP4 of the %s sweep skipped: imageio-ffmpeg is not installed "
                        "(pip install imageio-ffmpeg)", pi.stem, name)
        else:
            try:
                entry["mp4"] = str(save_mp4(frames, base.with_suffix(".mp4"), fps=ANIMATION_FPS, pingpong=True))
            except (ConfigError, OSError, RuntimeError) as e:
                log.warning("%s: MP4 of the %s sweep skipped: %s", pi.stem, name, e)
        written[name] = entry
    return written


def save_sheet(pi: PhotoInversion, root: Path, edit_results: Sequence[EditResult]) -> str:
    """``root/sheets/<stem>.png``: aligned input, out-of-domain overlay, inversion and each edit side by side."""
    columns = {"input": display(pi.aligned_image)}
    mask = pi.mask_image
    if mask is not None:  # tinted over the face: a bare all-white mask looks like an empty panel
        columns["kept out (red)"] = display(mask_overlay(np.asarray(pi.aligned_image.convert("RGB")),
                                                         np.asarray(mask)))
    columns["inversion"] = display(pi.to_numpy())
    for res in edit_results:
        columns[res.name] = display(res.crop)
    return str(save_png(contact_sheet(columns), root / "sheets" / f"{pi.stem}.png"))


def save_face(pipe: Pipeline, pi: PhotoInversion, tree: OutputTree, face: FaceEntry, *, masks: bool,
              inversion: bool, bundle: bool, edits: Sequence[dict[str, float]], paste: bool, aligned: bool = True,
              sweeps: Sequence[Sweep] | None = None, sheet: bool = False) -> None:
    """Writes the outputs of one processed face and lists them in ``face['outputs']``."""
    outputs: dict[str, Any] = face.setdefault("outputs", {})
    t0 = time.perf_counter()
    if aligned and pi.aligned is not None:
        outputs["aligned"] = str(save_image(tree.aligned / f"{pi.stem}.png", pi.aligned.crop))
    if masks and pi.inversion.domain is not None:
        written = save_domain_pngs(pi.inversion.domain, tree.masks, pi.stem, target=pi.inversion.target.cpu())
        outputs["masks"] = {k: str(v) for k, v in written.items()}
    if inversion:
        outputs["inversion"] = str(save_image(tree.inversion / f"{pi.stem}.png", pi.to_numpy()))
    if bundle:
        st, _ = pipe.save_bundle(pi, tree.bundles / pi.stem)
        outputs["bundle"] = str(st.with_suffix(""))
    can_paste = paste and pi.photo is not None and pi.aligned is not None
    if inversion and can_paste:
        recon = pipe.edit(pi)
        outputs["pasted_inversion"] = str(save_image(tree.pasted / f"{pi.stem}_inversion.png", recon.pasted_pixels,
                                                     like=pi.photo))
        face["paste_mode"] = recon.paste_mode
    results = []
    for combo in edits:
        res = pipe.edit(pi, combo, paste=can_paste)
        results.append(res)
        name = res.name
        entry = {"strengths": res.strengths,
                 "crop": str(save_image(tree.edits(name) / f"{pi.stem}.png", res.tensor))}
        if res.pasted_pixels is not None:
            entry["pasted"] = str(save_image(tree.pasted / f"{pi.stem}_{name}.png", res.pasted_pixels, like=pi.photo))
            face["paste_mode"] = res.paste_mode
        outputs.setdefault("edits", {})[name] = entry
    if sweeps:
        outputs["sweeps"] = save_sweeps(pipe, pi, tree.root, sweeps)
    if sheet:
        outputs["sheet"] = save_sheet(pi, tree.root, results)
    face.setdefault("timings", {})["save_s"] = time.perf_counter() - t0


def face_entry(pi: PhotoInversion) -> FaceEntry:
    """The ``run.json`` entry of one inverted face (outputs are added by :func:`save_face`)."""
    box = None if pi.aligned is None or pi.aligned.source_box is None else pi.aligned.source_box
    return {
        "stem": pi.stem,
        "face_index": None if pi.aligned is None else int(pi.aligned.face_index),
        "box": None if box is None else [round(float(v), 1) for v in box],  # left, top, right, bottom (photo px)
        "faces_found": None if pi.aligned is None else pi.aligned.faces_found,
        "whole_image": pi.whole_image,
        "method": pi.inversion.method,
        "notes": list(pi.notes),
        "timings": {k: round(float(v), 4) for k, v in pi.timings.items()},
        "final_losses": pi.final_losses(),
    }


def _renamed(stem: str, name: str | None) -> str:
    """``photo_face0`` -> ``<name>_face0`` (the suffix after the last ``_`` names the face)."""
    return stem if name is None else f"{name}_{stem.rsplit('_', 1)[-1]}"


def process_photo(pipe: Pipeline, item: str, tree: OutputTree, job: PhotoJob, rec: InputRecord,
                  reporter: Reporter | None = None, *, name: str | None = None) -> None:
    """Processes one photo: every output of ``job`` is written under ``tree`` and listed in ``rec.faces``.

    Args:
        pipe: A :class:`dhr.pipeline.Pipeline`.
        item: The photo's path.
        tree: The :class:`dhr.records.OutputTree` to write into.
        job: What to do (see :class:`PhotoJob`).
        rec: The :class:`dhr.records.InputRecord` of the photo (notes and faces are appended).
        reporter: Optional progress callback (a :class:`dhr.progress.Reporter`).
        name: The photo's output name, unique in the output folder (see
            :func:`dhr.outputs.assign_names`); default its file stem. Faces add ``_face<i>``/``_whole``.

    Raises:
        DHRError: Unreadable photo, no face (without ``whole_image``), bad edit, ...
    """
    photo = load_image(item)
    rec.notes.extend(photo.notes)
    index = None if job.all_faces else (job.face_index if job.face_index is not None else 0)
    if job.align_only:
        faces = pipe.align(photo, face_index=index, whole_image=job.whole_image)
        for a in faces:
            base = name if name is not None else Path(item).stem
            stem = f"{base}_whole" if a.whole_image else f"{base}_face{a.face_index}"
            rec.faces.append({"stem": stem, "face_index": int(a.face_index), "whole_image": a.whole_image,
                              "notes": list(a.notes),
                              "outputs": {"aligned": str(save_image(tree.aligned / f"{stem}.png", a.crop))}})
        return
    invs = pipe.invert(photo, face_index=index, whole_image=job.whole_image, progress=reporter,
                       ood_mask=job.ood_mask)
    save_inversions(pipe, invs, tree, job, rec, name=name)


def save_inversions(pipe: Pipeline, invs: Sequence[PhotoInversion], tree: OutputTree, job: PhotoJob,
                    rec: InputRecord, *, name: str | None = None) -> None:
    """Writes every output of ``job`` for one photo's inversions and lists them in ``rec.faces``."""
    for pi in invs:
        if name is not None:
            pi = dataclasses.replace(pi, stem=_renamed(pi.stem, name))
        face = face_entry(pi)
        rec.faces.append(face)
        save_face(pipe, pi, tree, face, masks=job.masks, inversion=job.inversion, bundle=job.bundle,
                  edits=job.edit_dicts(), paste=True, sweeps=list(job.sweeps), sheet=job.sheet)


class PhotoBatches:
    """Inverts the photos of a batch command ``size`` at a time (:meth:`Pipeline.invert_many`).

    The batch command tells it which inputs will run (:meth:`plan`, in order) and asks for each
    input's results in that order (:meth:`take`); the first request of a group loads, aligns and
    inverts the whole group. Each photo's load and alignment warnings and notes stay with it, its
    failure is its own (raised when its results are taken), and warnings of the group's shared
    optimisation are given to every photo of the group.

    Args:
        pipe: The pipeline.
        job: What to do per photo (face selection; ``ood_mask`` and ``align_only`` are not batched).
        size: Photos per group (>= 1).
    """

    def __init__(self, pipe: Pipeline, job: PhotoJob, size: int) -> None:
        if size < 1:
            raise ConfigError(f"batch size {size} must be >= 1")
        if job.ood_mask is not None or job.align_only:
            raise ConfigError("an ood_mask or align-only job runs one photo at a time")
        self.pipe, self.job, self.size = pipe, job, size
        self._order: list[str] = []
        self._ready: dict[str, tuple[list[str], list[str], Any]] = {}

    def plan(self, items: Sequence[str]) -> None:
        """The inputs that will be taken, in order (those a resumed run keeps are left out)."""
        self._order = list(items)

    def take(self, item: str, reporter: Reporter | None = None) -> tuple[list[str], list[str], Any]:
        """``(notes, warnings, result)`` of ``item``: its inversions, or the exception that stopped it."""
        from dhr.errors import PROGRAMMING_ERRORS
        from dhr.records import WarningCollector

        if item not in self._ready:
            start = self._order.index(item) if item in self._order else len(self._order)
            group = [item] + [x for x in self._order[start + 1:start + self.size] if x not in self._ready]
            job = self.job
            index = None if job.all_faces else (job.face_index if job.face_index is not None else 0)
            loaded: dict[str, tuple[Any, list]] = {}
            align_s: dict[str, float] = {}
            for x in group:
                with WarningCollector(capture=True) as warn:
                    try:
                        t0 = time.perf_counter()
                        photo = load_image(x)
                        loaded[x] = (photo, self.pipe.align(photo, face_index=index, whole_image=job.whole_image))
                        align_s[x] = time.perf_counter() - t0
                        entry: tuple[list[str], list[str], Any] = (list(photo.notes), warn.messages, None)
                    except PROGRAMMING_ERRORS:
                        raise
                    except Exception as e:  # noqa: BLE001 - this photo's own failure
                        entry = ([], warn.messages, e)
                self._ready[x] = entry
            if loaded:
                names = list(loaded)
                with WarningCollector(capture=True) as warn:
                    results = self.pipe.invert_many([loaded[x][0] for x in names], progress=reporter,
                                                    aligned=[loaded[x][1] for x in names])
                for x, r in zip(names, results):
                    notes, messages, _ = self._ready[x]
                    if isinstance(r, list):  # the alignment ran here, not in invert_many: its time
                        r = [dataclasses.replace(pi, timings={**pi.timings, "align_s": align_s[x] / len(r)})
                             for pi in r]
                    self._ready[x] = (notes, messages + warn.messages, r)
        return self._ready.pop(item)
