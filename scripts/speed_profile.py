"""Profiles one refinement iteration (θ tuned, and after θ froze) and one coarse step of DHR per case.

For each case of ``dhr bench-speed`` (``--cases``, default ``faces-64,fixture-64,random-256``) it
times, in CPU-seconds of this process (with ``--device cuda``: wall seconds between CUDA
synchronisations), the parts of one step of the *fast* path, each measured on
its own after ``--warmup`` untimed steps:

- refinement, θ tuned: generator forward (``hybrid_forward``), perceptual + masked losses,
  backward of ``loss_out`` to f (suffix only), backward of ``loss_in`` to θ (whole generator),
  the perceptual part of a backward (to the image only), the two Adam steps;
- refinement, θ frozen: the suffix forward from the cached prefix, losses, backward to f, Adam on f
  (and, for comparison, the full forward the faithful loop runs);
- coarse: generator forward with the noise maps, LPIPS at the loss resolution, backward, Adam.

It also prints the top operators of one θ-tuned iteration (``torch.profiler``, self CPU time; on a
GPU self device time).
Prints a JSON object (``--json PATH`` also writes it); docs/performance.md quotes its output.

Usage: ``python scripts/speed_profile.py [--cases faces-64,random-256] [--threads 1] [--device cuda]
[--precision bf16] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F


_DEVICE = torch.device("cpu")


def _cpu(fn, n: int = 1) -> float:
    """CPU-seconds of ``fn`` on the CPU; on a GPU, wall seconds between two synchronisations."""
    if _DEVICE.type == "cuda":
        torch.cuda.synchronize(_DEVICE)
        t = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize(_DEVICE)
        return (time.perf_counter() - t) / n
    t = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t) / n


def profile_case(case: str, *, warmup: int = 1, repeats: int = 2, top: int = 12, device: str = "cpu",
                 precision: str = "fp32") -> dict:
    """Profiles one case; ``precision`` ``bf16`` runs every step under bfloat16 autocast."""
    from dhr.devices import autocast

    with autocast(device, precision):
        out = _profile_case(case, warmup=warmup, repeats=repeats, top=top, device=device)
    out["precision"] = precision
    return out


def _profile_case(case: str, *, warmup: int, repeats: int, top: int, device: str) -> dict:
    from dhr.embed.optimize import noise_regularizer
    from dhr.refinement.hybrid import resolve_feature_resolution, tuned_parameter_names
    from dhr.refinement.losses import hybrid_loss_terms, target_maps_fn
    from dhr.refinement.render import hybrid_forward, hybrid_prefix, hybrid_suffix
    from dhr.speed import SpeedSettings, _build_case

    global _DEVICE
    _DEVICE = torch.device(device)
    G, lp, lpc, x, occ, notes = _build_case(case, SpeedSettings(device=device))
    R = G.resolution
    r = resolve_feature_resolution(G, None)
    with torch.no_grad():
        ws = G.sample_ws(torch.randn(1, G.style_dim, generator=torch.Generator().manual_seed(7)).to(_DEVICE))
    params = dict(G.named_parameters())
    names = tuned_parameter_names(G)
    theta = {n: params[n].detach()[None].clone().requires_grad_(True) for n in names}
    frozen = {n: t.detach() for n, t in theta.items()}
    soft = F.adaptive_avg_pool2d(occ, r)
    with torch.no_grad():
        f = G.run_until(ws, r).features.clone().requires_grad_(True)
    maps_of = target_maps_fn(lp, x)
    opt_f = torch.optim.Adam([f], lr=0.09)
    opt_t = torch.optim.Adam(list(theta.values()), lr=1.5e-3)

    def losses(image):
        t = hybrid_loss_terms(image, x, lp, mask=occ, soft_mask=soft, l2_channel_sum=True, maps=maps_of(image))
        return t["l2_in"] + t["lpips_in"], t["l2_out"] + t["lpips_out"]

    def fwd():
        return hybrid_forward(G, theta, ws, feature=f, feature_mask=soft, resolution=r)

    parts: dict[str, dict[str, float]] = {"refine_theta": {}, "refine_frozen": {}, "coarse": {}}
    # θ-tuned iteration, part by part (each part re-runs what it needs and subtracts it)
    for _ in range(warmup):
        image = fwd()
        li, lo = losses(image)
        torch.autograd.grad(lo.sum(), [f], retain_graph=True)
        torch.autograd.grad(li.sum(), list(theta.values()))
    t_fwd = min(_cpu(lambda: fwd()) for _ in range(repeats))

    def fwd_loss():
        return losses(fwd())

    t_fwd_loss = min(_cpu(fwd_loss) for _ in range(repeats))

    def back_f():
        li, lo = losses(fwd())
        torch.autograd.grad(lo.sum(), [f])

    def back_theta():
        li, lo = losses(fwd())
        torch.autograd.grad(li.sum(), list(theta.values()))

    def back_image():
        image = fwd().detach().requires_grad_(True)
        li, lo = losses(image)
        torch.autograd.grad((li + lo).sum(), [image])

    t_back_f = min(_cpu(back_f) for _ in range(repeats)) - t_fwd_loss
    t_back_t = min(_cpu(back_theta) for _ in range(repeats)) - t_fwd_loss
    t_loss_only = min(_cpu(lambda: losses(fwd().detach())) for _ in range(repeats)) - t_fwd
    t_back_img = min(_cpu(back_image) for _ in range(repeats)) - t_fwd - t_loss_only
    for t in theta.values():
        t.grad = torch.zeros_like(t)
    f.grad = torch.zeros_like(f)
    t_adam_t = min(_cpu(opt_t.step) for _ in range(repeats))
    t_adam_f = min(_cpu(opt_f.step) for _ in range(repeats))
    parts["refine_theta"] = {"generator_forward": t_fwd, "perceptual_and_losses_forward": t_loss_only,
                             "backward_loss_out_to_f": t_back_f, "backward_loss_in_to_theta": t_back_t,
                             "of_which_perceptual_backward": t_back_img, "adam_theta": t_adam_t, "adam_f": t_adam_f}
    # θ frozen: suffix from the cached prefix
    prefix = hybrid_prefix(G, frozen, ws, r)
    t_prefix = min(_cpu(lambda: hybrid_prefix(G, frozen, ws, r)) for _ in range(repeats))
    t_sfx = min(_cpu(lambda: hybrid_suffix(G, frozen, ws, prefix, feature=f, feature_mask=soft))
                for _ in range(repeats))
    t_full = min(_cpu(lambda: hybrid_forward(G, frozen, ws, feature=f, feature_mask=soft, resolution=r))
                 for _ in range(repeats))

    def frozen_back():
        li, lo = losses(hybrid_suffix(G, frozen, ws, prefix, feature=f, feature_mask=soft))
        torch.autograd.grad(lo.sum(), [f])

    t_fb = min(_cpu(frozen_back) for _ in range(repeats)) - t_sfx - t_loss_only
    parts["refine_frozen"] = {"prefix_once": t_prefix, "suffix_forward": t_sfx, "full_forward_faithful": t_full,
                              "perceptual_and_losses_forward": t_loss_only, "backward_loss_out_to_f": t_fb,
                              "adam_f": t_adam_f}
    # coarse step: latent + noise maps, LPIPS at min(256, R)
    latent = ws[:, 0].clone().requires_grad_(True)
    noises = [torch.randn(l.noise_const.shape, device=_DEVICE).requires_grad_(True)
              for l in G.synthesis.noise_layers()]
    low = min(256, R)
    xl = x if low == R else F.interpolate(x, size=(low, low), mode="bilinear", antialias=True)
    opt = torch.optim.Adam([latent] + noises, lr=0.1)

    def cfwd():
        return G(latent, noise=noises)

    def closs(img):
        il = img.clamp(-1, 1)
        if low != R:
            il = F.interpolate(il, size=(low, low), mode="bilinear", align_corners=False)
        return lpc(il, xl).sum() + 1e5 * noise_regularizer(noises).sum()

    flags = [(q, q.requires_grad) for q in G.parameters()]
    G.requires_grad_(False)
    try:
        cfwd()
        t_cf = min(_cpu(cfwd) for _ in range(repeats))
        t_cl = min(_cpu(lambda: closs(cfwd().detach())) for _ in range(repeats)) - t_cf
        t_cb = min(_cpu(lambda: closs(cfwd()).backward()) for _ in range(repeats)) - t_cf - t_cl
        t_ca = min(_cpu(opt.step) for _ in range(repeats))
    finally:
        for q, flag in flags:
            q.requires_grad_(flag)
    parts["coarse"] = {"generator_forward": t_cf, "lpips_and_noise_reg_forward": t_cl, "backward": t_cb,
                       "adam": t_ca}
    # top operators of one θ-tuned iteration
    from torch.profiler import ProfilerActivity, profile

    cuda = _DEVICE.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        image = fwd()
        li, lo = losses(image)
        torch.autograd.grad(lo.sum(), [f], retain_graph=True)
        torch.autograd.grad(li.sum(), list(theta.values()))
        opt_f.step()
        opt_t.step()
        if cuda:
            torch.cuda.synchronize(_DEVICE)

    def own(e) -> float:  # self time on the device that does the work (µs)
        if not cuda:
            return e.self_cpu_time_total
        own_device = getattr(e, "self_device_time_total", None)
        return own_device if own_device is not None else e.self_cuda_time_total

    events = sorted(prof.key_averages(), key=own, reverse=True)
    total = sum(own(e) for e in events) or 1.0
    unit = "self_cuda_ms" if cuda else "self_cpu_ms"
    tops = [{"op": e.key, unit: round(own(e) / 1000, 2), "share": round(own(e) / total, 3), "calls": e.count}
            for e in events[:top]]
    return {"case": case, "resolution": R, "feature_resolution": r,
            "tuned_parameters": sum(params[n].numel() for n in names),
            ("gpu_wall_seconds" if _DEVICE.type == "cuda" else "cpu_seconds"):
                {k: {n: round(v, 5) for n, v in d.items()} for k, d in parts.items()},
            "top_ops_theta_iteration": tops, "notes": notes,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(_DEVICE),
            **({"device_name": torch.cuda.get_device_name(_DEVICE)} if _DEVICE.type == "cuda" else {})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="faces-64,fixture-64,random-256")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="timings per part (the minimum is kept)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", default="cpu", help="cpu (CPU-seconds) or cuda (wall seconds, synchronised)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: under bfloat16 autocast")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = [profile_case(c.strip(), repeats=args.repeats, device=args.device, precision=args.precision)
           for c in args.cases.split(",") if c.strip()]
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
