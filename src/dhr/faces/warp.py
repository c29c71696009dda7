"""Pixel geometry of alignment: similarity fits, 3x3 matrices on points, and resampling through them.

Convention: a 3x3 matrix maps pixel positions with pixel centres at integer coordinates
(``(x, y, 1)`` column vectors). :func:`warp_to_crop` follows FFHQ's resampling recipe (integer
box-shrink of big photos, blurred reflection padding where the square leaves the photo, bilinear
sampling with supersampling when downscaling); :func:`sample_affine` is the one sampler that
alignment, paste-back and user masks share.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["apply_matrix", "sample_affine", "similarity_from_points", "warp_to_crop"]


def similarity_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst.

    Umeyama's closed form without reflection.

    Args:
        src: ``(N, 2)`` points.
        dst: ``(N, 2)`` target points.

    Returns:
        ``(3, 3)`` float64 matrix.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1.0
    rot = u @ d @ vt
    var = (a**2).sum() / len(src)
    scale = (sig * np.diag(d)).sum() / var
    m = np.eye(3)
    m[:2, :2] = scale * rot
    m[:2, 2] = mu_d - scale * rot @ mu_s
    return m


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Applies a 3x3 projective matrix to ``(N, 2)`` points."""
    pts = np.asarray(points, dtype=np.float64)
    h = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ np.asarray(matrix, dtype=np.float64).T
    return h[:, :2] / h[:, 2:3]


def sample_affine(
    src: torch.Tensor,
    out_to_src: np.ndarray,
    out_hw: tuple[int, int],
    *,
    supersample: int = 1,
    padding_mode: str = "border",
) -> torch.Tensor:
    """Bilinear resampling through a 3x3 matrix, with box-averaged supersampling.

    Args:
        src: ``(C, H, W)`` float tensor.
        out_to_src: ``(3, 3)`` matrix from output pixel coordinates to ``src`` pixel coordinates
            (pixel centres at integers).
        out_hw: Output ``(height, width)``.
        supersample: k: render k x k samples per output pixel and average them (antialiasing
            when the output is smaller than the source).
        padding_mode: ``grid_sample`` padding for samples outside ``src``.

    Returns:
        ``(C, out_h, out_w)`` float tensor on ``src``'s device and dtype.
    """
    k = max(1, int(supersample))
    oh, ow = out_hw
    _, h, w = src.shape
    m = torch.as_tensor(np.asarray(out_to_src, dtype=np.float64))
    ys = (torch.arange(oh * k, dtype=torch.float64) + 0.5) / k - 0.5
    xs = (torch.arange(ow * k, dtype=torch.float64) + 0.5) / k - 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    den = m[2, 0] * gx + m[2, 1] * gy + m[2, 2]
    sx = (m[0, 0] * gx + m[0, 1] * gy + m[0, 2]) / den
    sy = (m[1, 0] * gx + m[1, 1] * gy + m[1, 2]) / den
    grid = torch.stack([(2.0 * sx + 1.0) / w - 1.0, (2.0 * sy + 1.0) / h - 1.0], dim=-1)
    grid = grid.to(device=src.device, dtype=src.dtype)[None]
    out = F.grid_sample(src[None], grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    if k > 1:
        out = F.avg_pool2d(out, k)
    return out[0]


def _gaussian_blur(arr: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``(H, W, C)`` float32; large sigmas run on a box-downsampled copy."""
    # Lazy: scipy comes with scikit-image, not as a dependency of ours, and costs about 1 s to import
    # (python -X importtime), paid only when a square leaves the photo.
    from scipy.ndimage import gaussian_filter

    step = int(sigma // 4)
    if step < 2:
        return gaussian_filter(arr, [sigma, sigma, 0])
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None]
    small = F.avg_pool2d(t, step, ceil_mode=True)[0].permute(1, 2, 0).numpy()
    small = gaussian_filter(small, [sigma / step, sigma / step, 0])
    up = torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1)[None]
    h, w = arr.shape[:2]
    hs, ws = small.shape[:2]
    # Upsample so that small pixel i covers big pixels [i*step, (i+1)*step).
    up = F.interpolate(up, size=(hs * step, ws * step), mode="bilinear", align_corners=False)
    return np.ascontiguousarray(up[0, :, :h, :w].permute(1, 2, 0).numpy())


def warp_to_crop(pixels: np.ndarray, matrix: np.ndarray, size: int, *, pad: bool = True) -> np.ndarray:
    """Resamples a photo into the square crop ``matrix`` defines (FFHQ-style resampling).

    Args:
        pixels: ``(H, W, 3)`` uint8 photo.
        matrix: ``(3, 3)`` similarity, photo pixel -> crop pixel.
        size: Crop side S.
        pad: Apply FFHQ's reflection padding + blur where the crop leaves the photo (else the
            edge pixels are repeated).

    Returns:
        ``(S, S, 3)`` uint8 crop.
    """
    h, w = pixels.shape[:2]
    inv = np.linalg.inv(matrix)
    scale = math.sqrt(abs(np.linalg.det(matrix[:2, :2])))  # crop px per photo px
    qsize = size / scale  # crop side in photo px
    corners = apply_matrix(inv, np.array([[-0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5], [size - 0.5, -0.5]]))
    shrink = max(1, int(math.floor(qsize / size))) if qsize >= 2 * size else 1
    border = max(int(round(qsize * 0.1)), 3)
    lo = np.floor(corners.min(0)).astype(int) - border
    hi = np.ceil(corners.max(0)).astype(int) + border + 1
    cx0, cy0 = max(lo[0], 0), max(lo[1], 0)
    cx1, cy1 = min(hi[0], w), min(hi[1], h)
    if cx1 <= cx0 or cy1 <= cy0:
        # The square does not overlap the photo at all: sample the nearest edge.
        cx0, cy0 = min(max(cx0, 0), w - 1), min(max(cy0, 0), h - 1)
        cx1, cy1 = cx0 + 1, cy0 + 1
    tile = pixels[cy0:cy1, cx0:cx1]
    ex, ey = max(0, shrink - tile.shape[1]), max(0, shrink - tile.shape[0])
    if ex or ey:
        # Thinner than one shrunk pixel (a 1 x 12000 photo): its edge is repeated up to one, so
        # the shrink (and the padding, whose size follows the shrunk crop) stays what the scale
        # asks for instead of padding a full-resolution square (gigabytes). Pooling the long side
        # first and repeating the thin side after is the same average, without materialising it.
        left, top = ex // 2, ey // 2
        img = torch.from_numpy(np.array(tile)).permute(2, 0, 1).to(torch.float32)
        if not ex:
            img = F.avg_pool2d(img[None, :, :, : tile.shape[1] // shrink * shrink], (1, shrink))[0]
        if not ey:
            img = F.avg_pool2d(img[None, :, : tile.shape[0] // shrink * shrink], (shrink, 1))[0]
        img = F.pad(img[None], (left if ex else 0, ex - left if ex else 0, top if ey else 0, ey - top if ey else 0),
                    mode="replicate")[0]
        img = F.avg_pool2d(img[None], (shrink if ey else 1, shrink if ex else 1))[0]
        cx0, cy0 = cx0 - left, cy0 - top
        nh, nw = img.shape[1:]
    else:
        nw, nh = tile.shape[1] // shrink, tile.shape[0] // shrink
        region = torch.from_numpy(np.array(tile[: nh * shrink, : nw * shrink]))
        img = region.permute(2, 0, 1).to(torch.float32)
        if shrink > 1:
            img = F.avg_pool2d(img[None], shrink)[0]

    # photo coords -> region-shrunk coords
    to_small = np.array(
        [[1.0 / shrink, 0.0, (0.5 - cx0) / shrink - 0.5], [0.0, 1.0 / shrink, (0.5 - cy0) / shrink - 0.5], [0, 0, 1.0]]
    )
    qs = qsize / shrink
    bs = border / shrink
    small_corners = apply_matrix(to_small, corners)
    need = np.array(
        [
            -(small_corners[:, 0].min() - bs),
            -(small_corners[:, 1].min() - bs),
            small_corners[:, 0].max() + bs - (nw - 1),
            small_corners[:, 1].max() + bs - (nh - 1),
        ]
    )
    need = np.maximum(np.ceil(need), 0).astype(int)
    offset = np.eye(3)
    if pad and need.max() > bs - 4:
        padw = np.maximum(need, int(round(qs * 0.3)))
        left, top, right, bottom = (int(v) for v in padw)
        arr = img.permute(1, 2, 0).numpy().astype(np.float32)
        arr = np.pad(arr, ((top, bottom), (left, right), (0, 0)), mode="reflect")
        ph, pw = arr.shape[:2]
        yy, xx = np.ogrid[:ph, :pw]
        with np.errstate(divide="ignore", invalid="ignore"):
            fx = np.minimum(xx / max(left, 1e-6), (pw - 1 - xx) / max(right, 1e-6)).astype(np.float32)
            fy = np.minimum(yy / max(top, 1e-6), (ph - 1 - yy) / max(bottom, 1e-6)).astype(np.float32)
        mask = np.maximum(1.0 - fx, 1.0 - fy)[:, :, None]
        blur = qs * 0.02
        blurred = _gaussian_blur(arr, blur)
        arr += (blurred - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
        img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
        offset[0, 2], offset[1, 2] = left, top
    out_to_src = offset @ to_small @ inv
    ratio = qs / size
    k = 1 if ratio <= 1.0 else min(4, int(math.ceil(ratio)))
    out = sample_affine(img, out_to_src, (size, size), supersample=k, padding_mode="border")
    return out.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
