"""CPU threading: a passive OpenMP wait policy and a thread count chosen by dhr, overridable.

Why: with OpenMP's default wait policy, torch's idle worker threads spin on the CPU between
parallel regions. On a machine whose cores are busy (another job, other dhr workers) they steal
time from each other and a one-minute job takes many minutes. A passive policy makes them sleep.

Two settings, with these precedences (first wins):

* wait policy (``OMP_WAIT_POLICY``): the user's environment, else ``PASSIVE``. OpenMP reads it once,
  when torch loads it, so :func:`apply_wait_policy` runs on ``import dhr`` (before dhr imports torch)
  and does nothing when torch was imported earlier (``WaitPolicy.source == "too-late"``; set the
  variable in the environment yourself in that case).
* intra-op threads: an explicit value (``dhr --threads N``), else ``DHR_THREADS``, else
  ``OMP_NUM_THREADS``, else :func:`default_threads` (the CPUs this process may use, at most
  :data:`MAX_DEFAULT_THREADS`); the commands that load a model then lower dhr's default to one
  thread for a small model (:func:`fit_threads_to_model`).

Results can differ in the last bits with the thread count (reduction order); ``run.json`` and the
benchmark record the count used.

Example:
    >>> from dhr.threads import configure_threads
    >>> settings = configure_threads(2)      # imports torch, sets torch.set_num_threads(2)
    >>> settings.threads, settings.source
    (2, '--threads')
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "MAX_DEFAULT_THREADS",
    "ThreadSettings",
    "WaitPolicy",
    "applied_settings",
    "apply_wait_policy",
    "configure_threads",
    "default_threads",
    "fit_threads_to_model",
    "resolve_threads",
    "usable_cpus",
    "worker_env",
]

MAX_DEFAULT_THREADS = 8
"""Cap of the default thread count: dhr's networks gain little from more threads on a CPU."""

_WAIT_POLICY: WaitPolicy | None = None
_APPLIED: ThreadSettings | None = None


@dataclass(frozen=True)
class WaitPolicy:
    """The OpenMP wait policy of this process and who chose it.

    Attributes:
        value: ``OMP_WAIT_POLICY`` as set in the environment (``None`` when unset).
        source: ``"dhr"`` (set by dhr before torch was loaded), ``"user"`` (the environment had it) or
            ``"too-late"`` (unset, and torch was imported before dhr, so setting it would have no effect).
    """

    value: str | None
    source: str


@dataclass(frozen=True)
class ThreadSettings:
    """What :func:`configure_threads` applied.

    Attributes:
        threads: torch's intra-op thread count.
        source: ``"--threads"``, ``"DHR_THREADS"``, ``"OMP_NUM_THREADS"``, ``"default"`` or
            ``"default, small model"`` (:func:`fit_threads_to_model`).
        wait_policy: The process's :class:`WaitPolicy`.
    """

    threads: int
    source: str
    wait_policy: WaitPolicy

    def describe(self) -> str:
        """One line for logs and ``dhr info``, e.g. ``"4 threads (default), OMP_WAIT_POLICY=PASSIVE (dhr)"``."""
        wp = self.wait_policy
        return f"{self.threads} threads ({self.source}), OMP_WAIT_POLICY={wp.value or 'unset'} ({wp.source})"


def apply_wait_policy(environ: os._Environ | dict[str, str] | None = None) -> WaitPolicy:
    """Sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it or torch is already loaded.

    Called on ``import dhr``; idempotent (the first answer is kept for the process's environment).

    Args:
        environ: The environment to change (default ``os.environ``; a dict in tests).

    Returns:
        The resulting :class:`WaitPolicy`.
    """
    global _WAIT_POLICY
    own = environ is None
    env = os.environ if environ is None else environ
    if own and _WAIT_POLICY is not None:
        return _WAIT_POLICY
    if env.get("OMP_WAIT_POLICY"):
        result = WaitPolicy(env["OMP_WAIT_POLICY"], "user")
    elif "torch" in sys.modules and own:
        result = WaitPolicy(None, "too-late")
    else:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        result = WaitPolicy("PASSIVE", "dhr")
    if own:
        _WAIT_POLICY = result
    return result


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, reduced by a cgroup v2 CPU quota if any."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max", encoding="ascii").read().split()[:2]
        if quota != "max" and int(period) > 0:
            n = min(n, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


def default_threads() -> int:
    """dhr's own choice: :func:`usable_cpus`, at most :data:`MAX_DEFAULT_THREADS`."""
    return max(1, min(usable_cpus(), MAX_DEFAULT_THREADS))


def _parse(value: str | int, name: str) -> int:
    from dhr.errors import ConfigError

    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1 or n > 4096:
        raise ConfigError(f"{name}={value!r} must be a whole number of threads between 1 and 4096 "
                          f"(unset it to let dhr choose; it would choose {default_threads()} here)")
    return n


def resolve_threads(explicit: int | None = None, environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """The thread count and where it came from (see the module docstring for the precedence).

    Raises:
        ConfigError: A value that is not a whole number between 1 and 4096 (naming where it came from).
    """
    env = os.environ if environ is None else environ
    if explicit is not None:
        return _parse(explicit, "--threads"), "--threads"
    for name in ("DHR_THREADS", "OMP_NUM_THREADS"):
        if env.get(name, "").strip():
            return _parse(env[name], name), name
    return default_threads(), "default"


def configure_threads(explicit: int | None = None) -> ThreadSettings:
    """Applies :func:`resolve_threads` to torch (imports it) and returns what was set.

    Raises:
        ConfigError: See :func:`resolve_threads`.
    """
    n, source = resolve_threads(explicit)
    policy = apply_wait_policy()
    import torch

    global _APPLIED
    torch.set_num_threads(n)
    _APPLIED = ThreadSettings(threads=n, source=source, wait_policy=policy)
    return _APPLIED


SMALL_MODEL_MACS = 2e9
"""Synthesis multiply-adds per image below which one thread is dhr's default choice (see
:func:`fit_threads_to_model`)."""


def fit_threads_to_model(macs: float) -> ThreadSettings | None:
    """Drops to one intra-op thread for a small model, when the thread count is dhr's own choice.

    Under the passive wait policy dhr sets (needed when cores are shared: spinning threads made a
    job five times slower), every parallel region wakes sleeping threads. A small generator runs
    ~1,000 small ops per refinement iteration, and those wake-ups cost more than the second core
    buys: ``faces-64`` (0.18 G multiply-adds per forward) refined in 8.8 s with one thread against
    13.3 s with two on 2 cores; a 20 M-parameter 64 px generator (7.6 G) ran an iteration 1.8x
    faster with two (docs/performance.md "Threads"). A count from ``--threads``, ``DHR_THREADS``
    or ``OMP_NUM_THREADS`` is left alone, and so is any count under another wait policy (with
    ``OMP_WAIT_POLICY=ACTIVE`` two threads were 1.3x faster on ``faces-64``).

    Args:
        macs: Multiply-adds of one synthesis forward
            (:attr:`dhr.models.stylegan2.GeneratorConfig.synthesis_macs`).

    Returns:
        The new settings (source ``"default, small model"``), or None when nothing changed (also
        when :func:`configure_threads` was never called: a library caller's threads are theirs).
    """
    global _APPLIED
    applied = _APPLIED
    if applied is None or applied.source != "default" or applied.threads <= 1 or macs >= SMALL_MODEL_MACS:
        return None
    if (applied.wait_policy.value or "").upper() != "PASSIVE":  # spinning threads wake fast: keep them
        return None
    import torch

    torch.set_num_threads(1)
    _APPLIED = ThreadSettings(threads=1, source="default, small model", wait_policy=applied.wait_policy)
    return _APPLIED


def applied_settings() -> ThreadSettings | None:
    """What the last :func:`configure_threads` of this process set (None: never called)."""
    return _APPLIED


def worker_env() -> dict[str, str]:
    """Environment for worker processes (dask): the wait policy this process uses, so it is set before
    the worker loads torch."""
    policy = os.environ.get("OMP_WAIT_POLICY")
    return {"OMP_WAIT_POLICY": policy} if policy else {}
