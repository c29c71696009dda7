"""Measures result-bundle sizes against a full generator copy, per delta storage format.

1. Builds a config-f 1024 generator (random weights; sizes do not depend on the values).
2. Applies a synthetic 50-step Adam update (lr 1.5e-3, DHR's weight lr) to every synthesis tensor,
   with gradients = a persistent per-element direction + noise, as a stand-in for a refinement.
3. Saves one bundle per format (fp32 / fp16 / int8 / int4; feature f* at 128x128x256 in fp16,
   without target/image) and prints the sizes and their ratio to the fp32 generator file.
4. At 256 px (a config-f 256 generator, same synthetic update, feature at the default r = 32),
   renders the bundle of each format and prints the max / mean abs difference to the fp32 render.

Usage: ``python scripts/bundle_size.py [--out DIR] [--skip-1024]``
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dhr.bundle import DELTA_FORMATS, load_bundle, roundtrip_tensor, save_bundle
from dhr.models.stylegan2 import Generator, GeneratorConfig
from dhr.refinement.hybrid import resolve_feature_resolution
from dhr.refinement.render import render
from dhr.types import DomainMask, Inversion, RenderSpec


def synthetic_delta(G: Generator, steps: int = 50, lr: float = 1.5e-3, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    base = {n: p.detach() for n, p in G.named_parameters() if n.startswith("synthesis.")}
    tuned = {n: p.clone().requires_grad_(True) for n, p in base.items()}
    direction = {n: torch.randn(p.shape, generator=gen) for n, p in base.items()}
    opt = torch.optim.Adam(list(tuned.values()), lr=lr)
    for _ in range(steps):
        for n, p in tuned.items():
            p.grad = direction[n] + 2.0 * torch.randn(p.shape, generator=gen)
        opt.step()
    return {n: (tuned[n].detach() - base[n]) for n in base}


def make_inversion(G: Generator, delta: dict, fmt: str, seed: int = 0) -> Inversion:
    gen = torch.Generator().manual_seed(seed)
    R = G.resolution
    r = resolve_feature_resolution(G, None)
    ws = G.sample_ws(torch.randn(1, G.style_dim, generator=gen)).detach()[0]
    with torch.no_grad():
        f = G.run_until(ws[None], r).features[0]
    f = f + 0.1 * torch.randn(f.shape, generator=gen)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, R), torch.linspace(-1, 1, R), indexing="ij")
    mask = ((xx.square() + (yy / 1.2).square()) < 0.5).float()[None]  # a face-like ellipse in-domain
    fmask = F.adaptive_avg_pool2d(mask[None], r)[0]
    d = {n: roundtrip_tensor(t, fmt) for n, t in delta.items()}
    d = {n: t for n, t in d.items() if bool((t != 0).any())}
    feat = roundtrip_tensor(f, "fp16")
    inv = Inversion(ws=ws, image=torch.zeros(3, R, R), target=torch.zeros(3, R, R), method="dhr", weight_delta=d,
                    feature=feat, feature_resolution=r, feature_mask=fmask, domain=DomainMask(mask=mask),
                    render_spec=RenderSpec(delta_format=fmt, feature_format="fp16", noise_mode="const"))
    return dataclasses.replace(inv, image=render(G, inv))


def sizes_1024(out: Path) -> None:
    t0 = time.perf_counter()
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=1024, channel_multiplier=2)).eval()
    n_params = sum(p.numel() for p in G.parameters())
    n_synth = sum(p.numel() for n, p in G.named_parameters() if n.startswith("synthesis."))
    n_buffers = sum(b.numel() for b in G.buffers())
    from safetensors.torch import save_file

    gpath = out / "generator_fp32.safetensors"
    save_file({k: v.contiguous() for k, v in G.state_dict().items()}, str(gpath))
    gsize = gpath.stat().st_size
    print(f"config-f 1024: {n_params / 1e6:.2f} M parameters ({n_synth / 1e6:.2f} M synthesis), "
          f"{n_buffers / 1e6:.2f} M buffer values; full fp32 state dict file {gsize / 1e6:.1f} MB")
    delta = synthetic_delta(G)
    print(f"synthetic 50-step Adam update: mean |delta| {torch.cat([d.flatten() for d in delta.values()]).abs().mean():.2e}"
          f" ({time.perf_counter() - t0:.0f} s)")
    gen = torch.Generator().manual_seed(1)
    ws = torch.randn(G.num_ws, G.style_dim, generator=gen)
    r = resolve_feature_resolution(G, None)
    feat = torch.randn(G.config.channels(r), r, r, generator=gen).relu()
    mask = torch.zeros(1, 1024, 1024)
    mask[:, 200:900, 250:800] = 1
    inv = Inversion(ws=ws, image=torch.zeros(3, 1024, 1024), target=torch.zeros(3, 1024, 1024), method="dhr",
                    weight_delta=delta, feature=feat, feature_resolution=r,
                    feature_mask=F.adaptive_avg_pool2d(mask[None], r)[0], domain=DomainMask(mask=mask),
                    render_spec=RenderSpec(feature_format="fp16"))
    print(f"{'format':>6} {'bundle MB':>10} {'ratio to G':>11}   (feature {tuple(feat.shape)} fp16, no target/image)")
    for fmt in DELTA_FORMATS:
        st, js = save_bundle(inv, out / f"b1024_{fmt}", delta_format=fmt, include_target=False)
        size = st.stat().st_size + js.stat().st_size
        print(f"{fmt:>6} {size / 1e6:>10.1f} {size / gsize:>11.3f}")


def render_256(out: Path) -> None:
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=256, channel_multiplier=2)).eval()
    delta = synthetic_delta(G, seed=2)
    ref = None
    print(f"256 px render vs fp32 delta (feature r={resolve_feature_resolution(G, None)}):")
    for fmt in DELTA_FORMATS:
        inv = make_inversion(G, delta, fmt)
        save_bundle(inv, out / f"b256_{fmt}")
        back = load_bundle(out / f"b256_{fmt}", model=G)
        img = render(G, back)
        assert torch.allclose(img, inv.image, atol=1e-5), "bundle render differs from the stored image"
        if ref is None:
            ref = img
            print(f"  image std {ref.std():.3f}, range [{ref.min():.2f}, {ref.max():.2f}]")
        diff = (img - ref).abs()
        print(f"  {fmt:>5}: max |diff| {diff.max():.2e}, mean |diff| {diff.mean():.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="folder for the bundles (default: a temp folder)")
    ap.add_argument("--skip-1024", action="store_true", help="only the 256 px render comparison")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        if not args.skip_1024:
            sizes_1024(out)
        render_256(out)


if __name__ == "__main__":
    main()
