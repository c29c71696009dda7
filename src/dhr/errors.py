"""Exception tree of ``dhr``.

Every problem a user can cause (a bad file, a bad option, a photo without a face) raises a
subclass of :class:`DHRError` whose message says what was wrong, which value, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "DHRError",
    "ConfigError",
    "ShapeError",
    "CheckpointError",
    "WeightsError",
    "FaceNotFoundError",
    "ImageError",
    "EditError",
    "DivergedError",
    "PROGRAMMING_ERRORS",
]


class DHRError(Exception):
    """Base class of every error raised on purpose by ``dhr``."""


class ConfigError(DHRError, ValueError):
    """An option, configuration file or argument value is invalid."""


class ShapeError(DHRError, ValueError):
    """A tensor argument has the wrong shape, dtype or value range."""


class CheckpointError(DHRError):
    """A checkpoint file is corrupt, of another architecture, or unsafe to load."""


class WeightsError(DHRError):
    """A named weights file cannot be found, downloaded or verified."""


class FaceNotFoundError(DHRError):
    """No usable face was found in a photo."""


class ImageError(DHRError):
    """An image file cannot be read or is unsuitable (size, mode, corruption)."""


class EditError(DHRError, ValueError):
    """An edit direction or strength cannot be applied to the model."""


class DivergedError(DHRError):
    """An optimisation or a render gave NaN or infinite values (learning rates too high, broken inputs)."""


PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (TypeError, NameError)
"""Errors that mean a bug in dhr (a wrong call, a missing name), never a bad input.

A batch (``dhr run``, ``dhr dist``, ``dhr bench``) records a failed input and goes on for a
:class:`DHRError`, an unreadable file or an out-of-memory error, but stops on these and lets them
surface (``dhr`` exits 4 with the traceback) instead of recording the same failure for every input.
"""
