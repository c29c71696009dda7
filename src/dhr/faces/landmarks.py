"""The 68-point landmark layout (iBUG 300-W) and the geometry built on it.

Layout (0-based): jaw 0-16, right brow 17-21, left brow 22-26, nose bridge 27-30, lower nose 31-35,
right eye 36-41, left eye 42-47, outer lips 48-59, inner lips 60-67 ("right"/"left" are the
subject's). Coordinates: pixel centres at integer positions, x = column, y = row. Finding the
landmarks (dlib) is :mod:`dhr.faces.detect`; these functions only need the points.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "INNER_LIPS",
    "JAW",
    "LEFT_BROW",
    "LEFT_EYE",
    "NOSE",
    "NOSE_TIP",
    "OUTER_LIPS",
    "RIGHT_BROW",
    "RIGHT_EYE",
    "convex_hull",
    "face_outline",
    "five_points",
]

JAW = tuple(range(0, 17))
RIGHT_BROW = tuple(range(17, 22))
LEFT_BROW = tuple(range(22, 27))
NOSE = tuple(range(27, 36))
RIGHT_EYE = tuple(range(36, 42))
LEFT_EYE = tuple(range(42, 48))
OUTER_LIPS = tuple(range(48, 60))
INNER_LIPS = tuple(range(60, 68))
NOSE_TIP = 30


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """Reduces 68 landmarks to 5 points: eye centres (right, left), nose tip, mouth corners.

    Args:
        landmarks: ``(68, 2)``.

    Returns:
        ``(5, 2)`` float64 in the order right eye, left eye, nose tip, right mouth corner (48),
        left mouth corner (54) -- i.e. image-left first for a frontal face.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must have shape (68, 2), got {lm.shape}")
    return np.stack(
        [
            lm[list(RIGHT_EYE)].mean(0),
            lm[list(LEFT_EYE)].mean(0),
            lm[NOSE_TIP],
            lm[48],
            lm[54],
        ]
    )


def face_outline(landmarks: np.ndarray, *, forehead: float = 0.7) -> np.ndarray:
    """Polygon of the whole face: jaw line plus the brows raised to the forehead.

    The brows (17-26) are moved "up" (from the mouth centre towards the eye centre) by
    ``forehead`` times the eye-to-mouth distance; with the jaw (0-16) this gives a closed outline
    that includes the forehead, which 68 landmarks do not cover.

    Args:
        landmarks: ``(68, 2)`` positions.
        forehead: How far to raise the brows, in units of the eye-to-mouth distance.

    Returns:
        ``(27, 2)`` float64 polygon vertices in order (jaw left to right, then brows right to left).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must have shape (68, 2), got {lm.shape}")
    eyes = lm[36:48].mean(0)
    mouth = lm[48:60].mean(0)
    up = eyes - mouth
    brows = lm[17:27][::-1] + up * forehead
    return np.concatenate([lm[0:17], brows], axis=0)


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Monotone-chain convex hull of ``(N, 2)`` points (counter-clockwise, no repeats)."""
    pts = sorted(map(tuple, np.asarray(points, dtype=np.float64).tolist()))
    if len(pts) <= 2:
        return np.array(pts)

    def cross(o: tuple, a: tuple, b: tuple) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])
