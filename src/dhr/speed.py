"""Speed benchmark of DHR: the optimised path against the faithful loop, in one run (``dhr bench-speed``).

Each measurement runs in a fresh child process (so its peak memory is its own) and does, per image,
the three stages of DHR on one *case* (a generator, its perceptual networks and aligned targets):

1. ``coarse``: the coarse inversion (``optimize_latent`` / :func:`dhr.reference.faithful_coarse`);
2. ``mask``: the domain segmentation (:func:`dhr.segmentation.segment`, the same code on both paths;
   superpixels only, no face parser);
3. ``refine``: Hybrid Modulation Refinement (``refine_dhr`` / :func:`dhr.reference.faithful_refine`).

Paths: ``faithful`` (the batch-1 loop written as the authors' code runs it) and ``fast`` (the
project's path), plus ablations of the fast path (``fast-no-prefix-cache``: the whole generator
every iteration after the weights freeze; ``fast-no-target-cache``: the target's perceptual features
recomputed every step) and a variant with Adam's fused kernel instead of its per-tensor loop
(``fast-fused-adam``; faster, not bit-identical, off by default) and the fast path under bfloat16
autocast (``fast-bf16``: ``InvertConfig.precision="bf16"``; not bit-identical). Repeats alternate the order of the paths so that load on a shared machine
hits both alike. Reported per case and path: wall and CPU seconds per image per stage (median over
repeats), the peak resident memory of the child (Linux ``VmHWM``; on CUDA also the peak allocated
device memory), the final losses, and the faithful / fast ratios with the relative difference of
the final losses (the fast path must stay within 1 %). When ``fast-fused-adam`` is measured too,
its differences are the case's *rounding sensitivity* (the faithful arithmetic with only Adam's
steps rounded differently: how far rounding alone moves the final losses), and every other path is
marked as within it or beyond it.

Cases (speed does not depend on trained weights, so random ones are fine where no trained model is
bundled): ``faces-64`` (the bundled model and its distilled perceptual network), ``fixture-64``
(the shared 64 px rosinality fixture, LPIPS-Alex/VGG), ``random-256`` and ``random-1024`` (random
config-f generators, LPIPS-Alex/VGG; 1024 only with a GPU). The LPIPS backbones are randomly
initialised (seeded) when their ImageNet weights are not present offline; the JSON says which.
Targets are generator samples with a flat grey occluder pasted in (an out-of-domain region); where
the segmentation leaves one region empty the occluder's mask is used and the JSON says so.

Example:
    >>> from dhr.speed import SpeedSettings, run_benchmark
    >>> report = run_benchmark(["faces-64"], SpeedSettings(coarse_steps=20, refine_steps=30, weight_steps=15))
    >>> report["cases"]["faces-64"]["paths"]["fast"]["ratio_wall"]
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dhr.errors import ConfigError, DHRError

__all__ = ["CASES", "PATHS", "SpeedSettings", "measure", "run_benchmark", "format_report"]

CASES = ("faces-64", "fixture-64", "random-256", "random-1024")
PATHS = ("faithful", "fast", "fast-no-prefix-cache", "fast-no-target-cache", "fast-fused-adam", "fast-bf16")
FIXTURE_64 = ("fixtures", "stylegan2_rosinality_64_cm1", "g_ema.pt")
STAGES = ("coarse", "mask", "refine")
ROUNDING_PATH = "fast-fused-adam"
"""The path whose loss differences measure a case's rounding sensitivity (see the module docstring)."""


@dataclass(frozen=True)
class SpeedSettings:
    """What one measurement runs (recorded in the JSON).

    Attributes:
        coarse_steps: Coarse-inversion steps (the reference: 40).
        refine_steps: Refinement iterations (the reference: 100).
        weight_steps: Iterations that tune θ (the reference: 50).
        n_mean_samples: Mapped samples of the mean latent (the reference: 10,000).
        batch: Images per measurement B (the faithful loop runs them one after the other).
        vectorize: The fast path refines and inverts the batch together (``vmap``) instead of one
            image after the other.
        threads: Torch intra-op threads of the child (also its OMP_NUM_THREADS).
        device: ``cpu`` or ``cuda``.
        autocast: ``fp32`` or ``bf16`` (the fast path's stages under ``torch.autocast``; the faithful
            loop always runs in fp32).
        seed: Seed of the random generators, targets and LPIPS initialisation.
        warmup: Run every stage once, untimed, at a tiny budget (2 coarse steps, 2 iterations) before
            the timed run, so that one-off costs (CUDA context and kernel loading, cuDNN algorithm
            choice, allocator growth) are not charged to the first stage. ``dhr bench-speed`` turns it
            on for ``cuda`` (where those costs are seconds) and off for ``cpu`` (where the reported
            numbers have always included them).
        deterministic: Deterministic kernels (``torch.use_deterministic_algorithms``, no TF32, no
            cuDNN autotuning). On a CPU the paths are deterministic anyway; on CUDA the default
            kernels (atomic-add backward convolutions, TF32) make two runs of the *same* path differ
            (measured on an H200 at 1024 px: final ``loss_out`` 0.0188 vs 0.0248 for the faithful
            loop), so a loss-parity check there needs this switch.
    """

    coarse_steps: int = 20
    refine_steps: int = 30
    weight_steps: int = 15
    n_mean_samples: int = 10000
    batch: int = 1
    vectorize: bool = False
    threads: int = 1
    device: str = "cpu"
    autocast: str = "fp32"
    seed: int = 0
    warmup: bool = False
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.coarse_steps < 1 or self.refine_steps < 1 or not 0 <= self.weight_steps <= self.refine_steps:
            raise ConfigError(f"coarse_steps={self.coarse_steps} and refine_steps={self.refine_steps} must be >= 1 "
                              f"and 0 <= weight_steps={self.weight_steps} <= refine_steps")
        if self.batch < 1 or self.threads < 1 or self.n_mean_samples < 2:
            raise ConfigError(f"batch={self.batch} and threads={self.threads} must be >= 1, n_mean_samples >= 2")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"device={self.device!r}: use cpu or cuda")
        if self.autocast not in ("fp32", "bf16"):
            raise ConfigError(f"autocast={self.autocast!r}: use fp32 or bf16")


# --------------------------------------------------------------------------------------------
# One measurement (runs in the child process)


class _NoTargetCache:
    """A perceptual network seen without ``layer_maps_from``: the target is re-encoded every step."""

    def __init__(self, net) -> None:
        self.net = net

    def __call__(self, x, y):
        return self.net(x, y)

    def layer_maps(self, x, y):
        return self.net.layer_maps(x, y)


def _lpips(net: str, seed: int):
    import torch

    from dhr.metrics.lpips import LPIPS

    try:
        return LPIPS.from_registry(net, download=False), "imagenet"
    except DHRError:  # the weights are not here offline; speed does not depend on them
        torch.manual_seed(seed)
        return LPIPS(net), "random init (ImageNet weights not present offline; speed does not depend on them)"


def _build_case(case: str, settings: SpeedSettings):
    """(G, refine perceptual, coarse perceptual, targets (B, 3, R, R), occluder masks (B, 1, R, R), notes)."""
    import torch

    from dhr.models.stylegan2 import Generator, GeneratorConfig

    device = torch.device(settings.device)
    notes: dict[str, str] = {}
    if case == "faces-64":
        from dhr.models.zoo import load_model

        model = load_model("faces-64")
        G = model.generator
        lp = lpc = model.perceptual
        notes["perceptual"] = "the model's distilled perceptual network (refinement and coarse)"
    elif case == "fixture-64":
        from dhr.models.checkpoint import load_generator

        shared = Path(os.environ.get("DHR_SHARED", Path(__file__).resolve().parents[3] / "shared"))
        path = shared.joinpath(*FIXTURE_64)
        if not path.is_file():
            raise ConfigError(f"case fixture-64 needs {path} (set DHR_SHARED to the shared folder)")
        G = load_generator(path)
        lp, notes["lpips_alex"] = _lpips("alex", settings.seed)
        lpc, notes["lpips_vgg"] = _lpips("vgg", settings.seed)
    elif case in ("random-256", "random-1024"):
        torch.manual_seed(settings.seed)
        G = Generator(GeneratorConfig(resolution=int(case.split("-")[1])))
        lp, notes["lpips_alex"] = _lpips("alex", settings.seed)
        lpc, notes["lpips_vgg"] = _lpips("vgg", settings.seed)
    else:
        raise ConfigError(f"unknown case {case!r}; known: {', '.join(CASES)}")
    G = G.eval().to(device)
    lp, lpc = lp.eval().to(device), lpc.eval().to(device)
    R = G.resolution
    gen = torch.Generator().manual_seed(settings.seed + 1)
    with torch.no_grad():
        z = torch.randn(settings.batch, G.style_dim, generator=gen).to(device)
        targets = G(G.sample_ws(z, truncation=0.7)).clamp(-1, 1)
    occluders = torch.ones(settings.batch, 1, R, R, device=device)
    for i in range(settings.batch):  # a flat grey box in a different corner per image
        y0, x0 = (0 if i % 2 == 0 else R // 2), (0 if (i // 2) % 2 == 0 else R // 2)
        occluders[i, :, y0:y0 + R // 2, x0:x0 + R // 3] = 0
    targets = targets * occluders + 0.2 * (1 - occluders)
    notes["targets"] = "generator samples (truncation 0.7) with a flat grey occluder (out-of-domain region)"
    return G, lp, lpc, targets, occluders, notes


def _rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def measure(case: str, path: str, settings: SpeedSettings) -> dict:
    """Runs one measurement in this process (use :func:`run_benchmark` for isolated, alternating runs).

    Returns:
        A dict: ``seconds`` / ``cpu_seconds`` per image per stage, ``peak_rss_mb`` (and
        ``peak_cuda_mb``), ``final`` losses per image (``coarse_lpips``, ``loss_in``, ``loss_out``),
        ``in_domain`` fractions, ``mask_source`` and notes.
    """
    import contextlib

    import torch

    from dhr.devices import use_deterministic_kernels
    from dhr.embed.optimize import OptimConfig, optimize_latent
    from dhr.engine import for_each_image
    from dhr.reference import faithful_coarse, faithful_refine
    from dhr.refinement import loop
    from dhr.refinement.hybrid import RefineConfig, refine_dhr
    from dhr.segmentation.domain import SegmentConfig, segment
    from dhr.seeding import image_keys

    if path not in PATHS:
        raise ConfigError(f"unknown path {path!r}; known: {', '.join(PATHS)}")
    torch.set_num_threads(settings.threads)
    if settings.deterministic:
        use_deterministic_kernels()
    G, lp, lpc, targets, occluders, notes = _build_case(case, settings)
    if path == "fast-no-target-cache":
        lp, lpc = _NoTargetCache(lp), _NoTargetCache(lpc)
    loop._CACHE_PREFIX = path != "fast-no-prefix-cache"
    loop._FUSED_ADAM = path == "fast-fused-adam"
    device = targets.device
    b = targets.shape[0]
    ocfg = OptimConfig.coarse(steps=settings.coarse_steps, n_mean_samples=settings.n_mean_samples, seed=settings.seed)
    rcfg = RefineConfig(steps=settings.refine_steps, weight_steps=settings.weight_steps)
    keys = image_keys(targets)
    fast = path != "faithful"
    bf16 = fast and (settings.autocast == "bf16" or path == "fast-bf16")
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    timed = True

    @contextlib.contextmanager
    def stage(name: str):
        sync()
        t, c = time.perf_counter(), time.process_time()
        yield
        sync()
        if timed:
            seconds[name] = (time.perf_counter() - t) / b
            cpu[name] = (time.process_time() - c) / b

    def run(ocfg, rcfg):
        with stage("coarse"), amp:
            if fast:
                embs, maps = optimize_latent(G, targets, lpc, ocfg, keys=keys, vectorize=settings.vectorize)
                ws = torch.stack([e.ws for e in embs])
                coarse_images = [e.image for e in embs]
                coarse_lpips = [e.losses["lpips"][-1] for e in embs]
            else:
                runs = [faithful_coarse(G, targets[i:i + 1], lpc, ocfg, key=keys[i]) for i in range(b)]
                ws = torch.stack([r.ws for r in runs])
                coarse_images = [r.image for r in runs]
                maps = [r.error_maps for r in runs]
                coarse_lpips = [r.losses["lpips"][-1] for r in runs]
        with stage("mask"):
            masks, sources = [], []

            def segment_one(i: int):
                return segment(targets[i].float(), coarse_images[i].float(), [t.float() for t in maps[i]],
                               config=SegmentConfig()).mask.to(device)

            # the fast path segments a batch's images in up to --bench-threads Python threads (as dhr.engine)
            found = for_each_image(segment_one, b) if fast else [segment_one(i) for i in range(b)]
            for i, m in enumerate(found):
                frac = float(m.mean())
                if 0 < frac < 1:
                    masks.append(m)
                    sources.append("segmentation")
                else:
                    masks.append(occluders[i])
                    sources.append(f"occluder (segmentation gave in-domain fraction {frac:.2f})")
            mask = torch.stack(masks).float()
        with stage("refine"), amp:
            if fast:
                invs = refine_dhr(G, targets, ws.float(), mask, lp, rcfg, vectorize=settings.vectorize)
                finals = [inv.losses for inv in invs]
            else:
                finals = [faithful_refine(G, targets[i:i + 1], ws[i:i + 1], mask[i:i + 1], lp, rcfg).losses
                          for i in range(b)]
        return coarse_lpips, mask, sources, finals

    if settings.warmup:  # one-off costs (CUDA context, kernels, cuDNN choices) outside the timed run
        timed = False
        run(dataclasses.replace(ocfg, steps=2), dataclasses.replace(rcfg, steps=2, weight_steps=1))
        timed = True
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_reset = _rss_reset()
    rss_start = _status_kb("VmRSS")
    coarse_lpips, mask, sources, finals = run(ocfg, rcfg)
    peak = _status_kb("VmHWM")
    out = {
        "case": case, "path": path, "settings": dataclasses.asdict(settings),
        "resolution": G.resolution,
        "seconds": seconds, "cpu_seconds": cpu,
        "total_seconds": sum(seconds.values()), "total_cpu_seconds": sum(cpu.values()),
        "peak_rss_mb": None if peak is None else round(peak / 1024, 1),
        "rss_start_mb": None if rss_start is None else round(rss_start / 1024, 1),
        "peak_rss_reset": rss_reset,
        "final": {"coarse_lpips": coarse_lpips,
                  "loss_in": [f["loss_in"][-1] for f in finals],
                  "loss_out": [f["loss_out"][-1] for f in finals]},
        "in_domain": [round(float(m.mean()), 4) for m in mask],
        "mask_source": sources,
        "notes": notes,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["device_name"] = torch.cuda.get_device_name(device)
    return out


# --------------------------------------------------------------------------------------------
# The benchmark (parent process)


def _child(case: str, path: str, settings: SpeedSettings, timeout: float | None) -> dict:
    src = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = str(settings.threads)
    job = json.dumps({"case": case, "path": path, "settings": dataclasses.asdict(settings)})
    try:
        proc = subprocess.run([sys.executable, "-m", "dhr.speed"], input=job, capture_output=True, text=True,
                              env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise DHRError(f"bench-speed: {case}/{path} ran past {timeout} s; use fewer steps") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        dhr_error = next((ln for ln in reversed(lines) if ln.startswith("dhr.errors.")), None)
        if dhr_error is not None:  # the child refused the settings: its message, not its traceback
            raise DHRError(f"bench-speed: {case}/{path}: {dhr_error.split(': ', 1)[-1]}")
        if proc.returncode < 0:
            import signal

            name = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else "a signal"
            raise DHRError(f"bench-speed: the {case}/{path} measurement was killed by {name} (out of memory? use a "
                           "smaller --batch or fewer --bench-threads)")
        tail = "\n".join(lines[-8:])
        raise DHRError(f"bench-speed: the {case}/{path} measurement failed (exit {proc.returncode}):\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def _summarise(runs: list[dict], paths: Sequence[str], tolerance: float) -> dict:
    by_path = {p: [r for r in runs if r["path"] == p] for p in paths}
    out: dict = {"paths": {}}
    for p, rs in by_path.items():
        out["paths"][p] = {
            "seconds": {s: statistics.median(r["seconds"][s] for r in rs) for s in STAGES},
            "cpu_seconds": {s: statistics.median(r["cpu_seconds"][s] for r in rs) for s in STAGES},
            "total_seconds": statistics.median(r["total_seconds"] for r in rs),
            "total_cpu_seconds": statistics.median(r["total_cpu_seconds"] for r in rs),
            "peak_rss_mb": max((r["peak_rss_mb"] or 0) for r in rs),
            "final": rs[-1]["final"],
            "in_domain": rs[-1]["in_domain"],
            "mask_source": rs[-1]["mask_source"],
            **({"peak_cuda_mb": max(r["peak_cuda_mb"] for r in rs)} if "peak_cuda_mb" in rs[0] else {}),
        }
    base = by_path.get("faithful")
    if base:
        for p, rs in by_path.items():
            if p == "faithful":
                continue
            pairs = list(zip(base, rs))
            summary = out["paths"][p]
            summary["ratio_wall"] = statistics.median(a["total_seconds"] / b["total_seconds"] for a, b in pairs)
            summary["ratio_cpu"] = statistics.median(a["total_cpu_seconds"] / b["total_cpu_seconds"] for a, b in pairs)
            summary["ratio_stage_wall"] = {s: statistics.median(a["seconds"][s] / max(b["seconds"][s], 1e-9)
                                                                for a, b in pairs) for s in STAGES}
            diffs = {}
            for name in ("coarse_lpips", "loss_in", "loss_out"):
                diffs[name] = max(_rel(x, y) for a, b in pairs for x, y in zip(b["final"][name], a["final"][name]))
            summary["final_rel_diff"] = diffs
            summary["losses_equal"] = all(v <= tolerance for v in diffs.values())
            summary["peak_rss_ratio"] = summary["peak_rss_mb"] / max(out["paths"]["faithful"]["peak_rss_mb"], 1e-9)
        floor = out["paths"].get(ROUNDING_PATH, {}).get("final_rel_diff")
        if floor:
            out["rounding_sensitivity"] = dict(floor)
            for p, summary in out["paths"].items():
                if p not in ("faithful", ROUNDING_PATH):
                    summary["within_rounding_sensitivity"] = all(
                        v <= max(tolerance, floor[k]) for k, v in summary["final_rel_diff"].items())
    return out


def run_benchmark(cases: Sequence[str], settings: SpeedSettings, *, repeats: int = 2,
                  paths: Sequence[str] = ("faithful", "fast"), tolerance: float = 0.01,
                  timeout: float | None = None, log=None) -> dict:
    """Runs every (case, path) ``repeats`` times, each in a fresh child process, alternating the order.

    Args:
        cases: Names from :data:`CASES`.
        settings: What each measurement runs.
        repeats: Repeats per (case, path); the order of the paths flips every repeat.
        paths: Names from :data:`PATHS`; ratios are taken against ``faithful`` when it is included.
        tolerance: Largest relative difference of a final loss still called equal (1 %).
        timeout: Seconds allowed per measurement (None: no limit).
        log: Optional ``log(str)`` called after every measurement.

    Returns:
        ``{"settings", "repeats", "runs": [per measurement], "cases": {case: summary}}``.

    Raises:
        ConfigError: Unknown case or path, ``random-1024`` without a GPU, repeats < 1.
        DHRError: A measurement failed.
    """
    unknown = [c for c in cases if c not in CASES] + [p for p in paths if p not in PATHS]
    if unknown:
        raise ConfigError(f"unknown case/path {unknown}; cases: {', '.join(CASES)}; paths: {', '.join(PATHS)}")
    if repeats < 1:
        raise ConfigError(f"repeats={repeats} must be >= 1")
    if "random-1024" in cases and settings.device != "cuda":
        raise ConfigError("case random-1024 runs only on a GPU (--device cuda); on a CPU it takes hours")
    runs: list[dict] = []
    for k in range(repeats):
        for case in cases:
            order = list(paths) if k % 2 == 0 else list(reversed(paths))
            for p in order:
                r = _child(case, p, settings, timeout)
                r["repeat"] = k
                runs.append(r)
                if log is not None:
                    log(f"repeat {k + 1}/{repeats} {case:<11} {p:<21} {r['total_seconds']:8.2f} s/img "
                        f"({r['total_cpu_seconds']:.2f} CPU-s), peak {r['peak_rss_mb']} MB")
    return {
        "settings": dataclasses.asdict(settings),
        "repeats": repeats,
        "tolerance": tolerance,
        "cases": {c: _summarise([r for r in runs if r["case"] == c], paths, tolerance) for c in cases},
        "runs": runs,
    }


def format_report(report: dict) -> str:
    """The human-readable table of a :func:`run_benchmark` report."""
    s = report["settings"]
    lines = [f"dhr bench-speed: B={s['batch']}{' vectorized' if s['vectorize'] else ''}, coarse {s['coarse_steps']} "
             f"steps, refine {s['refine_steps']} iterations ({s['weight_steps']} tuning θ), {s['threads']} thread(s), "
             f"{s['device']} {s['autocast']}, {report['repeats']} alternating repeats (medians)"
             + (", after an untimed warm-up run" if s.get('warmup') else "")
             + (", deterministic kernels" if s.get('deterministic') else "")]
    for case, summ in report["cases"].items():
        lines.append(f"\n{case}")
        lines.append(f"  {'path':<21} {'coarse s':>9} {'mask s':>7} {'refine s':>9} {'total s':>8} {'CPU-s':>8} "
                     f"{'peak MB':>8} {'x wall':>7} {'x CPU':>6}  final losses vs faithful")
        for p, v in summ["paths"].items():
            st = v["seconds"]
            ratio = f"{v['ratio_wall']:7.2f} {v['ratio_cpu']:6.2f}" if "ratio_wall" in v else f"{'':7} {'':6}"
            if "final_rel_diff" in v:
                d = v["final_rel_diff"]
                worst = max(d.values())
                parity = ("equal (max rel diff {:.2e})".format(worst) if v["losses_equal"]
                          else "DIFFER: " + ", ".join(f"{k} {x:.2%}" for k, x in d.items()))
            else:
                f = v["final"]
                parity = f"loss_in {f['loss_in'][0]:.4f}, loss_out {f['loss_out'][0]:.4f}"
            lines.append(f"  {p:<21} {st['coarse']:9.3f} {st['mask']:7.3f} {st['refine']:9.3f} "
                         f"{v['total_seconds']:8.3f} {v['total_cpu_seconds']:8.3f} {v['peak_rss_mb']:8.0f} "
                         f"{ratio}  {parity}")
        floor = summ.get("rounding_sensitivity")
        if floor:
            lines.append(f"  rounding sensitivity ({ROUNDING_PATH}: the faithful arithmetic with Adam's steps rounded "
                         "differently): " + ", ".join(f"{k} {x:.2%}" for k, x in floor.items()))
            for p, v in summ["paths"].items():
                if "within_rounding_sensitivity" in v and not v["losses_equal"]:
                    verdict = ("within it: the difference is of the size rounding alone makes"
                               if v["within_rounding_sensitivity"] else "beyond it")
                    lines.append(f"  {p}: {verdict}")
        src = next(iter(summ["paths"].values()))["mask_source"]
        if any(m != "segmentation" for m in src):
            lines.append(f"  mask: {'; '.join(src)}")
    lines.append("\n(seconds and CPU-seconds per image; x = faithful / path, the median of per-repeat ratios; "
                 "peak MB = peak resident memory of the measuring process)")
    return "\n".join(lines)


def _child_main() -> None:
    job = json.loads(sys.stdin.read())
    result = measure(job["case"], job["path"], SpeedSettings(**job["settings"]))
    sys.stdout.write("\n" + json.dumps(result) + "\n")


if __name__ == "__main__":
    _child_main()
