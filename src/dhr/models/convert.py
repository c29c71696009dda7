"""Import of foreign StyleGAN2 checkpoints into the native format, without executing the file.

Supported inputs (detected from the file's content, not its name):

* rosinality ``.pt``: ``{'g_ema': state_dict, 'latent_avg': (D,), optional 'g', 'd', 'g_optim', ...}``,
  or a bare rosinality generator state dict.
* e4e / pSp ``.pt``: ``{'state_dict': {'encoder.*', 'decoder.*'}, 'latent_avg': (n_styles, D) or (D,),
  'opts': dict or argparse.Namespace}``; the decoder is a rosinality generator.
* NVIDIA StyleGAN2 / StyleGAN2-ADA ``.pkl``: a plain pickle of ``{'G', 'D', 'G_ema', 'training_set_kwargs', ...}``
  whose networks are ``torch_utils.persistence`` objects (``G_ema`` is imported).

Safety. Nothing from a file is ever imported or run: files are read by
:func:`dhr.models.unpickle.read_checkpoint_tree` (a restricted unpickler; see there).

NVIDIA -> native mapping (``G_ema``), checked against ``training/networks.py`` of stylegan2-ada-pytorch:

* ``mapping.fc{i}.weight/bias`` -> ``mapping.layers.{i}.*`` unchanged: both store the weight as
  ``randn / lr_multiplier`` and apply ``weight * lr_multiplier / sqrt(in)`` and ``bias * lr_multiplier``
  at run time; ``lr_multiplier`` is read from the layer's ``bias_gain`` (else ``mapping_kwargs``, else 0.01).
* ``mapping.w_avg`` -> ``w_avg``; ``synthesis.b4.const (C,4,4)`` -> ``(1,C,4,4)``.
* ``b{r}.conv{0,1}.{weight, affine.*, noise_strength, bias}`` -> ``b{r}.conv{0,1}.{conv.weight, conv.affine.*,
  noise_strength, bias}``; ``noise_const (r,r)`` -> ``(1,1,r,r)``. NVIDIA applies no gain to the modulated
  weight while ours multiplies it by ``1/sqrt(Cin*9)``; demodulation cancels that scalar (up to the 1e-8
  epsilon). The upsampling ``conv0`` runs NVIDIA's ``conv2d_resample(up=2, flip_weight=False)``, i.e. a
  transposed conv with the unflipped weight followed by the [1,3,3,1] filter padded (1, 1) with gain 4,
  which is exactly our transposed conv + blur, so weights are copied without flipping.
* ``b{r}.torgb.{weight (3,C,1,1), bias, affine.*}`` -> ``b{r}.torgb.{conv.weight, bias, conv.affine.*}``.
  NVIDIA multiplies the *styles* by ``weight_gain = 1/sqrt(C)`` while ours multiplies the conv *weight*
  by the same scalar; since ``conv(x * (s*g), W) == conv(x * s, W*g)`` no folding into the affine is needed.

Differences that cannot be mapped and are reported in :attr:`ImportedCheckpoint.notes`:

* ``conv_clamp`` (256 in the official configs) clamps every synthesis layer output to +-256 in NVIDIA's
  code (fp32 layers included); ours does not clamp. Trained models stay far below 256 for sane inputs.
* ``num_fp16_res``: NVIDIA runs the highest-resolution blocks in float16 at inference; we run float32,
  so images differ by float16 rounding (about 1e-3), not systematically.
* Conditional models (``c_dim > 0``, a ``mapping.embed`` layer), ``z_dim != w_dim``, non-'skip'
  architectures and StyleGAN3 pickles are rejected with a clear error.

Size: about 550 lines, over the project's ~500: the rosinality and NVIDIA key mappings, the e4e /
pSp container handling and :func:`convert`'s model-folder writer are one data path that the notes
above describe line by line; the restricted unpickler already lives in :mod:`dhr.models.unpickle`.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from dhr.editing import DirectionSet, load_direction
from dhr.errors import CheckpointError, ConfigError, DHRError
from dhr.fileio import sha256_file, to_jsonable, write_json_atomic
from dhr.models.native import check_state_dict, save_pretrained
from dhr.models.stylegan2 import Generator, GeneratorConfig
from dhr.models.unpickle import OpaqueObject, PersistentObject, SafeUnpickler, read_checkpoint_tree, to_plain

__all__ = [
    "rosinality_to_native",
    "infer_channel_schedule",
    "nvidia_to_native",
    "OpaqueObject",
    "PersistentObject",
    "SafeUnpickler",
    "read_checkpoint_tree",
    "ImportedCheckpoint",
    "import_checkpoint",
    "convert",
]

logger = logging.getLogger(__name__)

def infer_channel_schedule(channels: dict[int, int], source: str = "checkpoint") -> dict[str, int]:
    """Finds ``channel_base / channel_max / channel_multiplier`` reproducing per-resolution widths."""
    top = max(channels)
    product = channels[top] * top
    channel_max = max(channels.values())
    if product % 16384 == 0:
        base, mult = 16384, product // 16384
    else:
        base, mult = product, 1
    cfg = {"channel_base": base, "channel_max": channel_max, "channel_multiplier": mult}
    for res, ch in channels.items():
        want = max(1, min(channel_max, base * mult // res))
        if want != ch:
            raise CheckpointError(
                f"{source}: channel widths {dict(sorted(channels.items()))} do not follow the StyleGAN2 schedule "
                f"min(channel_max, channel_base * multiplier / resolution); this architecture is not supported"
            )
    return cfg


def rosinality_to_native(
    state: dict[str, torch.Tensor], latent_avg: torch.Tensor | None = None, *, source: str = "checkpoint"
) -> tuple[GeneratorConfig, dict[str, torch.Tensor]]:
    """Converts a rosinality ``g_ema`` state dict (no prefix) to a native config and state dict.

    The architecture (resolution, style width, mapping depth, channels) is inferred from the tensors.

    Args:
        state: rosinality ``Generator.state_dict()``.
        latent_avg: Optional ``(D,)`` mean latent stored as ``w_avg``.
        source: Name used in error messages (usually the file path).

    Raises:
        CheckpointError: If keys are missing or shapes do not form a StyleGAN2 generator.
    """
    try:
        n_rgbs = len({int(m.group(1)) for k in state if (m := re.match(r"to_rgbs\.(\d+)\.", k))})
        n_mapping = len({int(m.group(1)) for k in state if (m := re.match(r"style\.(\d+)\.weight$", k))})
        if n_mapping == 0 or "input.input" not in state or "conv1.conv.weight" not in state:
            raise KeyError("style.N.weight / input.input / conv1.conv.weight")
        style_dim = state["style.1.weight"].shape[1]
        resolution = 2 ** (n_rgbs + 2)
        resolutions = [2**i for i in range(2, n_rgbs + 3)]
        channels = {4: state["input.input"].shape[1]}
        for k, res in enumerate(resolutions[1:]):
            channels[res] = state[f"convs.{2 * k}.conv.weight"].shape[1]
        sched = infer_channel_schedule(channels, source)
        config = GeneratorConfig(resolution=resolution, style_dim=style_dim, n_mapping=n_mapping, **sched)
    except KeyError as e:
        raise CheckpointError(f"{source}: not a rosinality StyleGAN2 generator state dict (missing {e})") from None
    except (IndexError, AttributeError, TypeError, ValueError) as e:  # a tensor of the wrong rank or a non-tensor
        raise CheckpointError(f"{source}: not a rosinality StyleGAN2 generator state dict (a tensor has the wrong "
                              f"shape or type: {type(e).__name__}: {e})") from None

    out: dict[str, torch.Tensor] = {}

    def put(dst: str, src: str, fn=lambda t: t) -> None:
        if src not in state:
            raise CheckpointError(f"{source}: missing key '{src}' (expected for a {resolution}px generator)")
        out[dst] = fn(state[src]).float()

    for i in range(n_mapping):
        put(f"mapping.layers.{i}.weight", f"style.{i + 1}.weight")
        put(f"mapping.layers.{i}.bias", f"style.{i + 1}.bias")

    def styled(dst: str, src: str) -> None:
        put(f"{dst}.conv.weight", f"{src}.conv.weight", lambda t: t.squeeze(0))
        put(f"{dst}.conv.affine.weight", f"{src}.conv.modulation.weight")
        put(f"{dst}.conv.affine.bias", f"{src}.conv.modulation.bias")
        put(f"{dst}.noise_strength", f"{src}.noise.weight", lambda t: t.reshape([]))
        put(f"{dst}.bias", f"{src}.activate.bias")

    def torgb(dst: str, src: str) -> None:
        put(f"{dst}.conv.weight", f"{src}.conv.weight", lambda t: t.squeeze(0))
        put(f"{dst}.conv.affine.weight", f"{src}.conv.modulation.weight")
        put(f"{dst}.conv.affine.bias", f"{src}.conv.modulation.bias")
        put(f"{dst}.bias", f"{src}.bias", lambda t: t.reshape(3))

    put("synthesis.b4.const", "input.input")
    styled("synthesis.b4.conv1", "conv1")
    torgb("synthesis.b4.torgb", "to_rgb1")
    put("synthesis.b4.conv1.noise_const", "noises.noise_0")
    for k, res in enumerate(resolutions[1:]):
        styled(f"synthesis.b{res}.conv0", f"convs.{2 * k}")
        styled(f"synthesis.b{res}.conv1", f"convs.{2 * k + 1}")
        torgb(f"synthesis.b{res}.torgb", f"to_rgbs.{k}")
        put(f"synthesis.b{res}.conv0.noise_const", f"noises.noise_{2 * k + 1}")
        put(f"synthesis.b{res}.conv1.noise_const", f"noises.noise_{2 * k + 2}")
    w_avg = latent_avg if latent_avg is not None else torch.zeros(style_dim)
    w_avg = w_avg.reshape(-1, style_dim)[0] if w_avg.numel() != style_dim else w_avg.reshape(style_dim)
    out["w_avg"] = w_avg.float()
    assert math.log2(resolution) == len(resolutions) + 1
    return config, out


# --------------------------------------------------------------------------------------------
# NVIDIA pickles


def _module_state(obj: Any) -> dict:
    if isinstance(obj, PersistentObject):
        return obj.state
    if isinstance(obj, OpaqueObject) and isinstance(obj.state, Mapping):
        return dict(obj.state)
    if isinstance(obj, Mapping):
        return dict(obj)
    raise CheckpointError(f"expected a network object, got {type(obj).__name__}")


def _flatten_module(obj: Any, prefix: str = "", out: dict | None = None) -> dict[str, torch.Tensor]:
    out = {} if out is None else out
    state = _module_state(obj)
    for group in ("_parameters", "_buffers"):
        for name, t in (state.get(group) or {}).items():
            if isinstance(t, torch.Tensor):
                out[prefix + name] = t
    for name, sub in (state.get("_modules") or {}).items():
        if sub is not None:
            _flatten_module(sub, f"{prefix}{name}.", out)
    return out


def _child(obj: Any, name: str) -> Any:
    return (_module_state(obj).get("_modules") or {}).get(name)


def nvidia_to_native(g_ema: Any, *, source: str = "checkpoint") -> tuple[GeneratorConfig, dict[str, torch.Tensor], list[str]]:
    """Maps an NVIDIA ``G_ema`` (read by :class:`SafeUnpickler`) to a native config and state dict.

    Args:
        g_ema: The :class:`PersistentObject` of the pickle's ``G_ema`` (or ``G``).
        source: Name used in error messages.

    Returns:
        ``(config, state_dict, notes)``; ``notes`` lists the behaviours that differ (conv clamp, fp16).

    Raises:
        CheckpointError: For conditional models, StyleGAN3 / non-skip architectures, or missing tensors.
    """
    if not isinstance(g_ema, (PersistentObject, OpaqueObject)):
        raise CheckpointError(f"{source}: 'G_ema' is a {type(g_ema).__name__}, not a network object")
    kw = g_ema.init_kwargs if isinstance(g_ema, PersistentObject) else {}
    state = _module_state(g_ema)
    mapping_kw = dict(kw.get("mapping_kwargs") or {})
    synth_kw = dict(kw.get("synthesis_kwargs") or {})
    t = _flatten_module(g_ema)
    c_dim = int(kw.get("c_dim", state.get("c_dim", 0)) or 0)
    if c_dim > 0 or any(k.startswith("mapping.embed.") for k in t):
        raise CheckpointError(f"{source}: this is a class-conditional generator (c_dim={c_dim}); only unconditional "
                              f"StyleGAN2 models are supported")
    if "synthesis.b4.const" not in t:
        hint = " (looks like StyleGAN3)" if any(k.startswith("synthesis.input.") for k in t) else ""
        raise CheckpointError(f"{source}: G_ema has no 'synthesis.b4.const'{hint}; only StyleGAN2 / StyleGAN2-ADA "
                              f"generators are supported")
    if any(re.match(r"synthesis\.b\d+\.skip\.", k) for k in t) or synth_kw.get("architecture", "skip") != "skip":
        raise CheckpointError(f"{source}: synthesis architecture {synth_kw.get('architecture', 'resnet')!r} is not "
                              f"supported; only 'skip' (the StyleGAN2 default) maps to the native generator")
    if int(kw.get("img_channels", 3)) != 3:
        raise CheckpointError(f"{source}: img_channels={kw.get('img_channels')} is not supported (RGB only)")
    n_mapping = len({int(m.group(1)) for k in t if (m := re.match(r"mapping\.fc(\d+)\.weight$", k))})
    if n_mapping == 0:
        raise CheckpointError(f"{source}: G_ema has no mapping.fc0.weight; not a StyleGAN2 generator")
    w_dim = t["mapping.fc0.weight"].shape[0]
    z_dim = t["mapping.fc0.weight"].shape[1]
    if z_dim != w_dim or any(t[f"mapping.fc{i}.weight"].shape != (w_dim, w_dim) for i in range(n_mapping)):
        raise CheckpointError(f"{source}: mapping layers are not all {w_dim}x{w_dim} (z_dim={z_dim}); the native "
                              f"generator needs z_dim == w_dim == layer_features")
    resolutions = sorted(int(m.group(1)) for k in t if (m := re.match(r"synthesis\.b(\d+)\.conv1\.weight$", k)))
    resolution = resolutions[-1]
    if resolutions != [2**i for i in range(2, int(math.log2(resolution)) + 1)]:
        raise CheckpointError(f"{source}: synthesis blocks {resolutions} are not a full 4..R pyramid")
    for res in resolutions:
        if f"synthesis.b{res}.torgb.weight" not in t:
            raise CheckpointError(f"{source}: block b{res} has no torgb; only the 'skip' architecture is supported")
    channels = {res: t[f"synthesis.b{res}.conv1.weight"].shape[0] for res in resolutions}
    sched = infer_channel_schedule(channels, source)
    fc0_state = _module_state(_child(_child(g_ema, "mapping"), "fc0"))
    lr = fc0_state.get("bias_gain", mapping_kw.get("lr_multiplier", 0.01))
    blur = tuple(int(v) for v in synth_kw.get("resample_filter", (1, 3, 3, 1)))
    config = GeneratorConfig(resolution=resolution, style_dim=w_dim, n_mapping=n_mapping, lr_mapping=float(lr),
                             blur_kernel=blur, **sched)

    out: dict[str, torch.Tensor] = {}

    def put(dst: str, src: str, shape: tuple | None = None) -> None:
        if src not in t:
            raise CheckpointError(f"{source}: missing tensor '{src}' in G_ema (expected for a {resolution}px generator)")
        v = t[src].detach().float()
        out[dst] = (v.reshape(shape) if shape is not None else v).contiguous()

    for i in range(n_mapping):
        put(f"mapping.layers.{i}.weight", f"mapping.fc{i}.weight")
        put(f"mapping.layers.{i}.bias", f"mapping.fc{i}.bias")
    if "mapping.w_avg" in t:
        put("w_avg", "mapping.w_avg")
    else:
        out["w_avg"] = torch.zeros(w_dim)
    put("synthesis.b4.const", "synthesis.b4.const", (1, channels[4], 4, 4))
    for res in resolutions:
        for conv in ("conv0", "conv1") if res > 4 else ("conv1",):
            s, d = f"synthesis.b{res}.{conv}", f"synthesis.b{res}.{conv}"
            put(f"{d}.conv.weight", f"{s}.weight")
            put(f"{d}.conv.affine.weight", f"{s}.affine.weight")
            put(f"{d}.conv.affine.bias", f"{s}.affine.bias")
            put(f"{d}.bias", f"{s}.bias")
            if f"{s}.noise_const" in t:
                put(f"{d}.noise_strength", f"{s}.noise_strength", ())
                put(f"{d}.noise_const", f"{s}.noise_const", (1, 1, res, res))
            else:  # use_noise=False
                out[f"{d}.noise_strength"] = torch.zeros([])
                out[f"{d}.noise_const"] = torch.zeros(1, 1, res, res)
        put(f"synthesis.b{res}.torgb.conv.weight", f"synthesis.b{res}.torgb.weight")
        put(f"synthesis.b{res}.torgb.conv.affine.weight", f"synthesis.b{res}.torgb.affine.weight")
        put(f"synthesis.b{res}.torgb.conv.affine.bias", f"synthesis.b{res}.torgb.affine.bias")
        put(f"synthesis.b{res}.torgb.bias", f"synthesis.b{res}.torgb.bias")

    notes = []
    clamp = synth_kw.get("conv_clamp")
    if clamp is not None:
        notes.append(f"conv_clamp={clamp}: NVIDIA clamps every synthesis layer output to +-{clamp}; the native "
                     f"generator does not clamp (identical unless activations exceed {clamp})")
    n16 = int(synth_kw.get("num_fp16_res", 0) or 0)
    if n16 > 0:
        notes.append(f"num_fp16_res={n16}: NVIDIA runs the top {n16} resolutions in float16; the native generator "
                     f"runs float32 (differences at float16 rounding level)")
    for n in notes:
        logger.info("%s: %s", source, n)
    return config, out, notes


# --------------------------------------------------------------------------------------------
# Import


Format = Literal["rosinality", "e4e", "psp", "nvidia"]
_E4E_ENCODERS = ("Encoder4Editing", "SingleStyleCodeEncoder", "ProgressiveBackboneEncoder")


@dataclass(frozen=True)
class ImportedCheckpoint:
    """A foreign checkpoint read into native pieces (plain data and tensors only).

    Attributes:
        generator_config: Architecture inferred from the tensors.
        generator_state: Native ``Generator`` state dict (float32, includes ``w_avg``).
        w_avg: The file's mean latent as stored: ``(D,)`` (rosinality, NVIDIA ``mapping.w_avg``) or
            ``(n_styles, D)`` (e4e / pSp); ``None`` when the file has none (then
            ``generator_state['w_avg']`` was computed from 4096 samples, see ``notes``).
        encoder_state: e4e / pSp encoder tensors with the ``encoder.`` prefix stripped (official names), or None.
        opts: Training options of e4e / pSp as a plain dict, or None.
        source: The file path.
        format: ``rosinality``, ``e4e``, ``psp`` or ``nvidia``.
        notes: Behaviour differences and choices made during import.
    """

    generator_config: GeneratorConfig
    generator_state: dict[str, torch.Tensor]
    w_avg: torch.Tensor | None
    encoder_state: dict[str, torch.Tensor] | None
    opts: dict | None
    source: str
    format: Format
    notes: tuple[str, ...] = ()

    def build_generator(self):
        """A float32 CPU :class:`~dhr.models.stylegan2.Generator` in eval mode holding these weights."""
        g = Generator(self.generator_config)
        check_state_dict(g, self.generator_state, self.source)
        g.load_state_dict(self.generator_state, strict=True)
        return g.eval()


def _tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _describe(tree: Any) -> str:
    if isinstance(tree, Mapping):
        keys = [str(k) for k in list(tree)[:8]]
        return f"a dict with keys {keys}{' ...' if len(tree) > 8 else ''}"
    return f"a {type(tree).__name__}"


def import_checkpoint(path: str | os.PathLike) -> ImportedCheckpoint:
    """Reads a rosinality / e4e / pSp ``.pt`` or NVIDIA ``.pkl`` file without executing it.

    The format is detected from the content; the architecture is inferred from tensor shapes.

    Args:
        path: The checkpoint file.

    Returns:
        An :class:`ImportedCheckpoint`; ``.build_generator()`` gives the native generator.

    Raises:
        CheckpointError: Missing, truncated or corrupt file; unsafe pickle; unknown layout; architecture
            that does not map to the native generator. The message names the file.
    """
    path = Path(path)
    source = str(path)
    tree, container = read_checkpoint_tree(path)
    notes: list[str] = [f"container: {container}"]
    if isinstance(tree, Mapping) and "G_ema" in tree:
        config, state, extra = nvidia_to_native(tree["G_ema"], source=source)
        w_avg = state["w_avg"].clone()
        return ImportedCheckpoint(config, state, w_avg, None, None, source, "nvidia", tuple(notes + extra))

    encoder_state = opts = None
    fmt: Format = "rosinality"
    if isinstance(tree, Mapping) and "g_ema" in tree:
        g_state = tree["g_ema"]
        latent = tree.get("latent_avg")
    elif isinstance(tree, Mapping) and isinstance(tree.get("state_dict"), Mapping):
        sd = tree["state_dict"]
        g_state = {k[len("decoder."):]: v for k, v in sd.items() if str(k).startswith("decoder.")}
        encoder_state = {k[len("encoder."):]: v for k, v in sd.items() if str(k).startswith("encoder.")}
        if not g_state:
            raise CheckpointError(f"{source}: 'state_dict' holds no 'decoder.*' tensors; not an e4e / pSp checkpoint")
        latent = tree.get("latent_avg")
        raw_opts = to_plain(tree.get("opts"))
        opts = dict(raw_opts) if isinstance(raw_opts, Mapping) else None
        enc_type = str((opts or {}).get("encoder_type", ""))
        fmt = "e4e" if enc_type in _E4E_ENCODERS or any("progressive_stage" in k for k in encoder_state) else "psp"
        encoder_state = {k: v.detach().float() if v.is_floating_point() else v
                         for k, v in encoder_state.items() if isinstance(v, torch.Tensor)} or None
    elif _tensor_dict(tree) and "style.1.weight" in tree:
        g_state, latent = tree, None
    else:
        raise CheckpointError(
            f"{source}: not a recognised StyleGAN2 checkpoint; found {_describe(tree)}. Expected a rosinality "
            f"checkpoint ('g_ema'), an e4e/pSp checkpoint ('state_dict' with 'decoder.*') or an NVIDIA pickle ('G_ema')"
        )
    if not _tensor_dict(g_state):
        raise CheckpointError(f"{source}: the generator entry is {_describe(g_state)}, not a state dict of tensors")
    if latent is not None and not isinstance(latent, torch.Tensor):
        raise CheckpointError(f"{source}: 'latent_avg' is a {type(latent).__name__}, expected a tensor")
    config, state = rosinality_to_native(dict(g_state), latent, source=source)
    if latent is None:
        g = Generator(config)
        g.load_state_dict(state, strict=False)
        state["w_avg"] = g.mean_latent(4096, generator=torch.Generator().manual_seed(0)).float()
        notes.append("no latent_avg in the file: w_avg = mean of 4096 mapped latents (seed 0)")
        logger.warning("%s: no latent_avg stored; computed w_avg from 4096 samples", source)
    elif latent.numel() != config.style_dim:
        rows = latent.reshape(-1, config.style_dim)
        if not torch.equal(rows, rows[:1].expand_as(rows)):
            notes.append("latent_avg rows differ; generator w_avg uses row 0")
    return ImportedCheckpoint(config, state, None if latent is None else latent.detach().float().clone(),
                              encoder_state, opts, source, fmt, tuple(notes))


def convert(path: str | os.PathLike, out_folder: str | os.PathLike, *,
            dtype: Literal["float32", "float16"] = "float32",
            directions: Sequence[str | os.PathLike] = (), name: str | None = None) -> Path:
    """Imports a foreign checkpoint and writes a model folder that :func:`dhr.load` and ``dhr run --model`` use.

    Layout written under ``out_folder``::

        model.json                    manifest: name, resolution, components, parser
        generator/config.json, generator/model.safetensors     (load with load_generator)
        encoder/model.safetensors     e4e / pSp encoder tensors, official key names (only if present)
        encoder/latent_avg.safetensors   {'latent_avg': (n_styles, D) or (D,)} (only if present)
        encoder/encoder_meta.json     format, source, sha256, opts (JSON-safe), tensor count
        directions/                   the edit directions given in ``directions`` (only if any)

    The model has no perceptual network and no alignment template of its own: the pipeline then uses
    LPIPS-Alex for the refinement and LPIPS-VGG for the coarse inversion (as the reference) and FFHQ framing,
    which is what the official FFHQ weights expect.

    Args:
        path: A rosinality / e4e / pSp ``.pt`` or NVIDIA ``.pkl`` file.
        out_folder: Destination folder (created).
        dtype: Storage dtype of the generator tensors (``float16`` halves the size).
        directions: Edit direction files (InterFaceGAN ``.pt``/``.npy``, plain vectors; see
            :func:`dhr.editing.load_direction`), each named after its file stem. They are checked against
            the generator's latent width and number of W+ entries.
        name: Model name in ``model.json`` (default: the output folder's name).

    Returns:
        ``out_folder`` as a Path.

    Raises:
        CheckpointError: See :func:`import_checkpoint`; or a direction file that cannot be read or does
            not fit the generator.
    """
    path, out = Path(path), Path(out_folder)
    if not str(out_folder) or (out.exists() and not out.is_dir()):
        raise ConfigError(f"output folder {str(out_folder)!r} is {'empty' if not str(out_folder) else 'a file'}; "
                          "give the folder to write the model into")
    imported = import_checkpoint(path)
    dir_set = _load_directions(directions, imported.generator_config)
    source_sha = sha256_file(path)
    g = imported.build_generator()
    broken = [k for k, v in g.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"{path}: {len(broken)} generator tensor(s) hold NaN or infinite values "
                              f"({', '.join(broken[:3])}{', ...' if len(broken) > 3 else ''}); the checkpoint is "
                              "broken (a diverged training run?): convert an earlier or the official checkpoint")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"output folder {out} cannot be created ({e.strerror or e}); choose another") from None
    meta = {"source": path.name, "source_sha256": source_sha, "source_format": imported.format,
            "notes": list(imported.notes)}
    save_pretrained(g, out / "generator", dtype=dtype, metadata=meta)
    if imported.encoder_state:
        enc = out / "encoder"
        enc.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in imported.encoder_state.items()}, str(enc / "model.safetensors"),
                  metadata={"format": "pt"})
        if imported.w_avg is not None:
            save_file({"latent_avg": imported.w_avg.contiguous()}, str(enc / "latent_avg.safetensors"))
        enc_meta = {
            "format": imported.format,
            "source": path.name,
            "source_sha256": source_sha,
            "weights_sha256": sha256_file(enc / "model.safetensors"),
            "n_tensors": len(imported.encoder_state),
            "latent_avg_shape": None if imported.w_avg is None else list(imported.w_avg.shape),
            "opts": to_jsonable(imported.opts or {}),
        }
        write_json_atomic(enc / "encoder_meta.json", enc_meta)
    components = {"generator": "generator"}
    if imported.encoder_state:
        components["encoder"] = "encoder"
    if dir_set is not None:
        dir_set.save(out / "directions")
        components["directions"] = "directions"
    manifest = {
        "name": name or out.resolve().name,
        "description": f"imported from {path.name} ({imported.format}) by dhr convert",
        "resolution": imported.generator_config.resolution,
        "components": components,
        "parser": "landmarks",
        "licence": "that of the source checkpoint (see its project)",
    }
    write_json_atomic(out / "model.json", manifest)
    logger.info("converted %s (%s) to %s", path, imported.format, out)
    return out


def _load_directions(paths: Sequence[str | os.PathLike], config: GeneratorConfig) -> Any:
    """Reads edit direction files and checks them against the generator (None when there are none)."""
    if not paths:
        return None
    found = []
    for p in paths:
        try:
            d = load_direction(p)
        except DHRError as e:
            raise CheckpointError(f"direction file {p}: {e}") from None
        if d.dim != config.style_dim:
            raise CheckpointError(
                f"direction file {p} has width {d.dim} but the generator's latent width is {config.style_dim}; "
                "it belongs to another model"
            )
        if d.num_layers is not None and d.num_layers != config.num_ws:
            raise CheckpointError(
                f"direction file {p} has {d.num_layers} W+ entries but the generator has {config.num_ws}; "
                "it belongs to a model of another resolution"
            )
        if d.layers is not None and d.layers[1] > config.num_ws:
            raise CheckpointError(
                f"direction file {p} edits W+ entries {list(d.layers)} but the generator has only {config.num_ws}"
            )
        found.append(d)
    names = [d.name for d in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CheckpointError(f"direction names {dupes} occur twice (names come from the file stems); rename the files")
    return DirectionSet(found)
