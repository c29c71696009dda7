"""Parity with the authors' code: the reference preset and the faithful loops.

- :mod:`dhr.reference.preset`: :func:`run_reference`, DHR in the reference preset on given
  aligned images and start code, recording what the reference computes along the way;
- :mod:`dhr.reference.faithful`: :func:`faithful_coarse` and :func:`faithful_refine`, the same
  algorithm written as the authors' code runs it (the parity oracle and speed baseline of the
  optimised path).
"""

from __future__ import annotations

from dhr.reference.faithful import FaithfulCoarse, FaithfulRefine, faithful_coarse, faithful_refine
from dhr.reference.preset import ReferenceRun, reference_config, reference_start, run_reference, save_reference_run

__all__ = ["ReferenceRun", "reference_config", "reference_start", "run_reference", "save_reference_run",
           "FaithfulCoarse", "FaithfulRefine", "faithful_coarse", "faithful_refine"]
