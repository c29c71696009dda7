"""Sample-quality figures of a generator against the held-out real crops.

Two independent views, because the projected discriminator of :mod:`dhr.train.projected` trains
on the same SqueezeNet features as the KID of :mod:`dhr.metrics.kid` (a generator can learn to
please one feature network without looking better):

- ``kid`` / ``fid``: the model card's protocol, on SqueezeNet-1.1 ImageNet features;
- ``face_rate``: the share of generated images in which dlib's HOG detector finds a face
  (images upsampled to 256 px), and ``kid_face``: KID on dlib's 128-d face-recognition
  descriptors (a ResNet trained on faces, not on ImageNet, so independent of the training signal).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dhr.metrics.kid import fid, kid, squeeze_features
from dhr.models.stylegan2 import Generator

__all__ = ["generate", "face_features", "sample_quality"]


@torch.no_grad()
def generate(G: Generator, n: int, *, seed: int = 0, batch: int = 200) -> list[torch.Tensor]:
    """``n`` random samples (truncation 1) in batches, seeded: the card's protocol."""
    gen = torch.Generator().manual_seed(seed)
    return [G(G.sample_ws(torch.randn(batch, G.style_dim, generator=gen))).clamp(-1, 1)
            for _ in range(max(1, n // batch))]


def face_features(images: torch.Tensor, *, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """dlib face descriptors and detection flags of ``images (N, 3, H, W)`` in [-1, 1].

    Returns:
        ``(descriptors (N, 128) float64, detected (N,) bool)``; where no face is detected the
        descriptor is computed with the whole image as the face box.
    """
    from dhr.faces.identity import DlibIdentity

    ident = DlibIdentity()
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    descs, found = [], []
    for p in pixels:
        descs.append(ident.embed(p).double().numpy())
        found.append(not ident.last_notes)
    return np.stack(descs), np.array(found)


def sample_quality(G: Generator, real: torch.Tensor, backbone: torch.nn.Module, *, n: int = 2000, seed: int = 0,
                   n_face: int = 0, real_features: np.ndarray | None = None,
                   real_face_features: np.ndarray | None = None) -> dict:
    """KID / FID (SqueezeNet features) and, with ``n_face > 0``, the dlib face figures.

    Args:
        G: Generator (eval mode).
        real: Held-out real crops ``(N, 3, R, R)`` in [-1, 1].
        backbone: ImageNet SqueezeNet-1.1 features.
        n: Generated images for KID / FID.
        n_face: Generated images for ``face_rate`` / ``kid_face`` (0 skips them: dlib is slow).
        real_features / real_face_features: Cached features of ``real`` (computed when None).
    """
    fakes = generate(G, n, seed=seed)
    ff = squeeze_features(backbone, fakes)
    fr = real_features if real_features is not None else squeeze_features(backbone, real.split(100))
    k_mean, k_std = kid(ff, fr, subset_size=min(300, len(fr)))
    out = {"generated": len(ff), "kid": k_mean, "kid_std": k_std, "fid": fid(ff, fr)}
    if n_face > 0:
        fake_faces, found = face_features(torch.cat(fakes)[:n_face])
        real_faces = real_face_features if real_face_features is not None else face_features(real)[0]
        kf, kf_std = kid(fake_faces, real_faces, subset_size=min(300, len(real_faces), len(fake_faces)))
        out.update(face_rate=float(found.mean()), face_images=int(len(found)), kid_face=kf, kid_face_std=kf_std)
    return out
