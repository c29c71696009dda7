"""Rendering an :class:`~dhr.types.Inversion` (possibly under an edited W+ code) without optimising.

Editing rule of the reference (section 1.9), with θ' = θ + ``weight_delta``:

1. ``state = run_until(ws_edit, r)`` under θ';
2. ``features = state.features * m + f* * (1 - m)`` with m = ``feature_mask`` (soft, r x r);
3. ``image = run_from(ws_edit, state with blended features)`` under θ'.

Per-image weights are substituted with :func:`torch.func.functional_call`; the generator is never
mutated. Batches with per-image weights go through :func:`torch.func.vmap` over stacked copies.

Notation: θ = synthesis parameters, θ* - θ = ``weight_delta``, f* = ``feature``, m = ``feature_mask``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from dhr.checks import check_shape
from dhr.errors import ConfigError, EditError, ShapeError
from dhr.models.stylegan2 import Generator, SynthesisState
from dhr.types import Inversion

__all__ = ["render", "render_many", "hybrid_forward", "hybrid_prefix", "hybrid_suffix", "stack_params",
           "tuned_generator"]


def stack_params(G: Generator, deltas: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str] | None = None
                 ) -> dict[str, torch.Tensor]:
    """Per-image parameter copies ``θ + delta_i`` stacked on a new leading dim.

    Args:
        G: The base generator.
        deltas: One mapping name -> delta per image (missing names mean no change).
        names: Parameters to include; default the union of the deltas' names.

    Returns:
        ``{name: (B, *shape)}`` detached tensors.
    """
    params = dict(G.named_parameters())
    if names is None:
        names = sorted(set().union(*[set(d) for d in deltas])) if deltas else []
    out = {}
    for n in names:
        if n not in params:
            raise ConfigError(f"weight delta '{n}' is not a parameter of this generator (another model?)")
        base = params[n].detach()
        rows = []
        for d in deltas:
            if n in d:
                if tuple(d[n].shape) != tuple(base.shape):
                    raise ShapeError(f"weight delta '{n}' has shape {list(d[n].shape)}, the generator {list(base.shape)}")
                rows.append(base + d[n].to(base))
            else:
                rows.append(base)
        out[n] = torch.stack(rows)
    return out


_TUNED: OrderedDict = OrderedDict()
_TUNED_SIZE = 2


def tuned_generator(G: Generator, delta: Mapping[str, torch.Tensor]) -> Generator:
    """A frozen copy of ``G`` with θ + ``delta`` written in, remembered for the last two deltas.

    Re-rendering one inversion under many edited codes (the editing loop) then runs plain forwards
    instead of rebuilding the per-image weights and substituting them on every call. The entry is
    keyed by the identity and in-place version counter of every tensor of ``G`` and of ``delta``
    (held by the entry, so identities are not reused), so changing either in place, moving ``G``
    or passing another inversion builds a fresh copy. The values equal :func:`stack_params`'s.

    Args:
        G: The base generator (not modified).
        delta: name -> ``θ* - θ`` (shapes of ``G``'s parameters).

    Returns:
        The tuned copy (do not modify it).

    Raises:
        ConfigError: A name that is not a parameter of ``G``.
        ShapeError: A delta of the wrong shape.
    """
    params = dict(G.named_parameters())
    key = (id(G), tuple((id(t), t._version) for t in params.values()),
           tuple((n, id(t), t._version) for n, t in sorted(delta.items())))
    hit = _TUNED.get(key)
    if hit is not None:
        _TUNED.move_to_end(key)
        return hit[0]
    theta = stack_params(G, [delta])
    copy_ = copy.deepcopy(G).requires_grad_(False).eval()
    with torch.no_grad():
        for n, p in copy_.named_parameters():
            if n in theta:
                p.copy_(theta[n][0])
    _TUNED[key] = (copy_, G, dict(delta), list(params.values()))
    while len(_TUNED) > _TUNED_SIZE:
        _TUNED.popitem(last=False)
    return copy_


def _one(G: Generator, theta: dict[str, torch.Tensor], ws: torch.Tensor, feature: torch.Tensor | None,
         mask: torch.Tensor | None, skip_ws: torch.Tensor | None, resolution: int | None,
         noise_mode: str) -> torch.Tensor:
    """Renders one image (batch of 1 inside) under substituted weights; returns ``(1, 3, R, R)``."""
    ws = ws[None]
    if feature is None:
        return functional_call(G, theta, (ws,), {"noise_mode": noise_mode})
    state = functional_call(G, theta, (ws,), {"stop": resolution, "noise_mode": noise_mode})
    feats, rgb = state.features, state.rgb
    if mask is None:
        feats = feature[None].expand_as(feats)
    else:
        m = mask[None]
        feats = feats * m + feature[None] * (1 - m)
        if skip_ws is not None:
            ref = functional_call(G, theta, (skip_ws[None],), {"stop": resolution, "noise_mode": noise_mode})
            rgb = rgb * m + ref.rgb * (1 - m)
    return functional_call(G, theta, (ws,), {"start": SynthesisState(feats, rgb, resolution),
                                             "noise_mode": noise_mode})


def hybrid_forward(G: Generator, theta: Mapping[str, torch.Tensor], ws: torch.Tensor, *,
                   feature: torch.Tensor | None = None, feature_mask: torch.Tensor | None = None,
                   resolution: int | None = None, skip_ws: torch.Tensor | None = None,
                   noise_mode: str = "const") -> torch.Tensor:
    """The blended forward ``G(w, f, m; θ)`` (paper eq. 4) for a batch with per-image weights.

    Args:
        G: Base generator (its own tensors are used for every parameter not in ``theta``).
        theta: ``{name: (B, *shape)}`` per-image parameters (see :func:`stack_params`); may be empty.
        ws: ``(B, num_ws, D)`` W+ codes.
        feature: ``(B, C, r, r)`` f, or None for a plain forward.
        feature_mask: ``(B, 1, r, r)`` m in [0, 1]; None with a feature means f replaces the
            generator's feature everywhere.
        resolution: r, required with ``feature``.
        skip_ws: ``(B, num_ws, D)``: if given (with a mask), the RGB skip at r is also blended,
            taking ``run_until(skip_ws, r).rgb`` where m = 0 (freezes out-of-domain regions).
        noise_mode: ``const`` or ``none``.

    Returns:
        ``(B, 3, R, R)`` raw images. Differentiable w.r.t. ``theta`` and ``feature``.
    """
    b = ws.shape[0]
    if feature is not None and resolution is None:
        raise ConfigError("hybrid_forward: resolution is required with a feature")
    if b == 1 or not theta:
        if not theta:  # shared weights: one ordinary batched call
            return _batched_shared(G, ws, feature, feature_mask, skip_ws, resolution, noise_mode)
        th = {k: v[0] for k, v in theta.items()}
        return _one(G, th, ws[0], None if feature is None else feature[0],
                    None if feature_mask is None else feature_mask[0],
                    None if skip_ws is None else skip_ws[0], resolution, noise_mode)
    extra = [t for t in (feature, feature_mask, skip_ws)]
    in_dims = (0, 0) + tuple(None if t is None else 0 for t in extra)

    def fn(th, w, f, m, s):
        return _one(G, th, w, f, m, s, resolution, noise_mode)[0]

    return vmap(fn, in_dims=in_dims)(dict(theta), ws, *extra)


def hybrid_prefix(G: Generator, theta: Mapping[str, torch.Tensor], ws: torch.Tensor, resolution: int, *,
                  noise_mode: str = "const") -> SynthesisState:
    """``run_until(ws, r)`` under per-image weights, without gradients: the part of
    :func:`hybrid_forward` before the blend, constant while θ and ``ws`` are.

    Args:
        G: Base generator.
        theta: ``{name: (B, *shape)}`` per-image parameters (may be empty: G's own).
        ws: ``(B, num_ws, D)`` W+ codes.
        resolution: r, the blend block.
        noise_mode: ``const`` or ``none``.

    Returns:
        The detached state after block r: features ``(B, C, r, r)``, RGB skip ``(B, 3, r, r)``.
    """
    with torch.no_grad():
        if not theta:
            state = G.run_until(ws, resolution, noise_mode=noise_mode)
        elif ws.shape[0] == 1:
            state = functional_call(G, {k: v[0] for k, v in theta.items()}, (ws,),
                                    {"stop": resolution, "noise_mode": noise_mode})
        else:
            def fn(th, w):
                st = functional_call(G, th, (w[None],), {"stop": resolution, "noise_mode": noise_mode})
                return st.features[0], st.rgb[0]

            feats, rgb = vmap(fn)(dict(theta), ws)
            state = SynthesisState(feats, rgb, resolution)
    return SynthesisState(state.features.detach(), state.rgb.detach(), resolution)


def hybrid_suffix(G: Generator, theta: Mapping[str, torch.Tensor], ws: torch.Tensor, prefix: SynthesisState, *,
                  feature: torch.Tensor, feature_mask: torch.Tensor | None, noise_mode: str = "const") -> torch.Tensor:
    """The rest of :func:`hybrid_forward` from a precomputed :func:`hybrid_prefix`: blend, then ``run_from``.

    Equals ``hybrid_forward(G, theta, ws, feature=feature, feature_mask=feature_mask,
    resolution=prefix.resolution)`` as long as ``prefix`` was computed under the same θ and ``ws``;
    differentiable w.r.t. ``feature`` (and the suffix's θ).

    Args:
        G: Base generator.
        theta: ``{name: (B, *shape)}`` per-image parameters (may be empty).
        ws: ``(B, num_ws, D)`` W+ codes.
        prefix: The state after block r (features ``(B, C, r, r)``, RGB ``(B, 3, r, r)``).
        feature: ``(B, C, r, r)`` f.
        feature_mask: ``(B, 1, r, r)`` m, or None (f replaces the feature everywhere).
        noise_mode: ``const`` or ``none``.

    Returns:
        ``(B, 3, R, R)`` raw images.
    """
    r = prefix.resolution
    check_shape(feature, [ws.shape[0], prefix.features.shape[1], r, r], "feature")
    if feature_mask is None:
        feats = feature
    else:
        feats = prefix.features * feature_mask + feature * (1 - feature_mask)
    if not theta:
        return G.run_from(ws, SynthesisState(feats, prefix.rgb, r), noise_mode=noise_mode)
    if ws.shape[0] == 1:
        return functional_call(G, {k: v[0] for k, v in theta.items()}, (ws,),
                               {"start": SynthesisState(feats, prefix.rgb, r), "noise_mode": noise_mode})

    def fn(th, w, f, rgb):
        return functional_call(G, th, (w[None],), {"start": SynthesisState(f[None], rgb[None], r),
                                                   "noise_mode": noise_mode})[0]

    return vmap(fn)(dict(theta), ws, feats, prefix.rgb)


def _batched_shared(G: Generator, ws: torch.Tensor, feature, mask, skip_ws, resolution, noise_mode) -> torch.Tensor:
    if feature is None:
        return G(ws, noise_mode=noise_mode)
    with torch.no_grad():  # nothing upstream of the blend is optimised when the weights are shared
        state = G.run_until(ws, resolution, noise_mode=noise_mode)
    feats, rgb = state.features, state.rgb
    if mask is None:
        feats = feature.expand_as(feats)
    else:
        feats = feats * mask + feature * (1 - mask)
        if skip_ws is not None:
            with torch.no_grad():
                ref_rgb = G.run_until(skip_ws, resolution, noise_mode=noise_mode).rgb
            rgb = rgb * mask + ref_rgb * (1 - mask)
    return G.run_from(ws, SynthesisState(feats, rgb, resolution), noise_mode=noise_mode)


def _prepare(G: Generator, inversions: Sequence[Inversion], ws: torch.Tensor | Sequence[torch.Tensor] | None
             ) -> torch.Tensor:
    if ws is None:
        return torch.stack([inv.ws for inv in inversions])
    if isinstance(ws, torch.Tensor) and ws.ndim == 2:
        ws = ws[None]
    ws = torch.stack(list(ws)) if not isinstance(ws, torch.Tensor) else ws
    check_shape(ws, [len(inversions), G.num_ws, G.style_dim], "ws")
    return ws


@torch.no_grad()
def render_many(G: Generator, inversions: Sequence[Inversion], ws: torch.Tensor | Sequence[torch.Tensor] | None = None,
                *, freeze_ood_skip: bool | None = None, composite_ood: bool = False,
                noise_mode: str | None = None) -> torch.Tensor:
    """Renders several inversions (each with its own weights) in one batched call.

    Args:
        G: The base generator the inversions were made with.
        inversions: The results to render.
        ws: ``(B, num_ws, D)`` (edited) codes; default each inversion's own ``ws``.
        freeze_ood_skip: Also blend the RGB skip at the feature resolution with the inversion's
            own skip (out-of-domain regions stay fixed under edits). None uses the inversion's
            ``render_spec.freeze_ood_skip``.
        composite_ood: Paste the inversion's pixels into the out-of-domain region (binary
            full-resolution mask) of the rendered image; needs ``domain``.
        noise_mode: Default the inversion's ``render_spec.noise_mode``.

    Returns:
        ``(B, 3, R, R)`` raw images.

    Raises:
        ConfigError: Unknown delta names. (Inversions of different kinds, by feature resolution or
            render spec, are rendered one by one.)
        EditError: ``composite_ood`` without a domain mask.
    """
    if not inversions:
        raise ConfigError("render_many needs at least one inversion")
    ws = _prepare(G, inversions, ws)
    ref = inversions[0]
    kinds = {(inv.feature is None, inv.feature_resolution, inv.feature_mask is None, inv.render_spec.noise_mode,
              inv.render_spec.freeze_ood_skip) for inv in inversions}
    if len(kinds) > 1:
        return torch.cat([render_many(G, [inv], ws[i:i + 1], freeze_ood_skip=freeze_ood_skip,
                                      composite_ood=composite_ood, noise_mode=noise_mode)
                          for i, inv in enumerate(inversions)])
    nm = noise_mode or ref.render_spec.noise_mode
    freeze = ref.render_spec.freeze_ood_skip if freeze_ood_skip is None else freeze_ood_skip
    p = next(G.parameters())
    ws = ws.to(p)
    single = len(inversions) == 1 and bool(ref.weight_delta)
    theta = {} if single else stack_params(G, [inv.weight_delta for inv in inversions])
    feature = mask = skip_ws = None
    r = ref.feature_resolution
    if ref.feature is not None:
        if r not in G.synthesis.resolutions:
            raise ConfigError(f"inversion feature resolution {r} is not a block of this generator {G.synthesis.resolutions}")
        feature = torch.stack([inv.feature for inv in inversions]).to(p)
        if ref.feature_mask is not None:
            mask = torch.stack([inv.feature_mask for inv in inversions]).to(p)
            if freeze:
                skip_ws = torch.stack([inv.ws for inv in inversions]).to(p)
    if single:  # one tuned generator, built once per inversion: plain forwards, no per-call substitution
        out = hybrid_forward(tuned_generator(G, ref.weight_delta), {}, ws, feature=feature, feature_mask=mask,
                             resolution=r, skip_ws=skip_ws, noise_mode=nm)
    else:
        out = hybrid_forward(G, theta, ws, feature=feature, feature_mask=mask, resolution=r, skip_ws=skip_ws,
                             noise_mode=nm)
    if composite_ood:
        if any(inv.domain is None for inv in inversions):
            raise EditError("composite_ood needs a domain mask; only method 'dhr' (or a user mask) provides one")
        full = torch.stack([inv.domain.mask for inv in inversions]).to(out)
        if full.shape[-1] != out.shape[-1]:
            full = F.interpolate(full, size=out.shape[-2:], mode="nearest")
        base = torch.stack([inv.image for inv in inversions]).to(out)
        out = out * full + base * (1 - full)
    return out


def render(G: Generator, inversion: Inversion, ws: torch.Tensor | None = None, *,
           freeze_ood_skip: bool | None = None, composite_ood: bool = False,
           noise_mode: str | None = None) -> torch.Tensor:
    """Renders one inversion, optionally under an edited code ``ws (num_ws, D)``; returns ``(3, R, R)``.

    See :func:`render_many` for the options. With ``ws=None`` and the defaults this reproduces
    ``inversion.image``.
    """
    if ws is not None:
        check_shape(ws, [G.num_ws, G.style_dim], "ws")
        ws = ws[None]
    return render_many(G, [inversion], ws, freeze_ood_skip=freeze_ood_skip, composite_ood=composite_ood,
                       noise_mode=noise_mode)[0]
