"""Training of the bundled face model: StyleGAN2 generator + discriminator + W+ encoder, jointly.

Compute is scarce (2 CPU cores), so every image counts. Each step has
- a discriminator step: non-saturating logistic loss on DiffAugment-ed real and generated images,
  lazy R1 on the real images every ``r1_interval`` steps;
- a generator + encoder step: the adversarial loss on generated samples, plus an autoencoder loss
  (the encoder's W+ code of a real crop decoded by the generator: L2 + LPIPS-squeeze) that teaches
  the generator faces far sooner than the adversarial signal alone, plus an e4e-style latent
  regression on generated samples (where the true w is known) and a delta regulariser that keeps
  encoder codes near W.

Checkpoints (``ckpt.pt``: tensors and plain data only, loaded with ``weights_only=True``) are
written every ``ckpt_every`` steps and resume exactly; a checkpoint of another configuration is
refused. Sample grids go to ``samples/``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dhr.errors import ConfigError
from dhr.models.small_encoder import SmallEncoder, SmallEncoderConfig
from dhr.models.discriminator import Discriminator, DiscriminatorConfig
from dhr.models.stylegan2 import Generator, GeneratorConfig
from dhr.train.augment import diff_augment
from dhr.train.data import FaceDataset, prepare_dataset
from dhr.train.projected import ProjectedDiscriminator, hinge_d_loss, hinge_g_loss

__all__ = ["TrainConfig", "train"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint; resume requires equality)."""

    data: str = ""
    out: str = "runs/faces64"
    resolution: int = 64
    style_dim: int = 256
    n_mapping: int = 4
    channel_base: int = 4096
    channel_max: int = 256
    enc_channels: int = 32
    batch: int = 16
    lr: float = 0.002
    enc_lr: float = 0.001
    r1_gamma: float = 1.0
    r1_interval: int = 4
    rec_weight: float = 1.0
    lpips_weight: float = 1.0
    latent_weight: float = 1.0
    delta_weight: float = 1e-3
    ema_kimg: float = 2.0
    augment: str = "color,translation,cutout"
    seed: int = 0
    val_fraction: float = 0.04
    lpips_backbone: str = ""
    lpips_linear: str = ""
    discriminator: str = "residual"
    d_lr: float = 0.002
    proj_size: int = 128
    milestone_kimg: float = 0.0
    adv_weight: float = 1.0  # weight of the generator's adversarial term against the reconstruction terms
    # "joint": generator, encoder and discriminator train together. "encoder": the EMA generator (the
    # one that is exported) is frozen and only the encoder trains, against that generator; ``--kimg``
    # then counts the images of this stage (``encoder_images``), not the generator's.
    stage: str = "joint"

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(resolution=self.resolution, style_dim=self.style_dim, n_mapping=self.n_mapping,
                               channel_base=self.channel_base, channel_max=self.channel_max, channel_multiplier=1)

    def discriminator_config(self) -> DiscriminatorConfig:
        return DiscriminatorConfig(resolution=self.resolution, channel_base=self.channel_base,
                                   channel_max=self.channel_max)

    def encoder_config(self) -> SmallEncoderConfig:
        return SmallEncoderConfig(resolution=self.resolution, num_ws=self.generator_config().num_ws,
                                  style_dim=self.style_dim, channels=self.enc_channels, channel_max=self.channel_max)

    def arch_dict(self) -> dict:
        """The fields that must match to resume."""
        d = dataclasses.asdict(self)
        for k in ("out", "data", "lpips_backbone", "lpips_linear", "milestone_kimg"):
            d.pop(k)
        return d


# TrainConfig fields introduced after checkpoints existed; a checkpoint without one was trained at its default.
_ADDED_FIELDS = ("adv_weight", "stage")


def _to_tensor(batch_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch_u8).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _grid(images: torch.Tensor, nrow: int) -> np.ndarray:
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    n, h, w, c = x.shape
    rows = math.ceil(n / nrow)
    out = np.zeros((rows * h, nrow * w, c), np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        out[r * h:(r + 1) * h, q * w:(q + 1) * w] = x[i]
    return out


class Trainer:
    def __init__(self, cfg: TrainConfig, device: str | torch.device = "cpu") -> None:
        from dhr.metrics.lpips import LPIPS

        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.G = Generator(cfg.generator_config())
        self.G_ema = Generator(cfg.generator_config())
        self.G_ema.load_state_dict(self.G.state_dict())
        self.G_ema.requires_grad_(False)
        self.E = SmallEncoder(cfg.encoder_config())
        if not cfg.lpips_backbone or not cfg.lpips_linear:
            raise ConfigError("training needs LPIPS-squeeze weights: pass --lpips-backbone and --lpips-linear")
        self.lpips = LPIPS("squeeze", backbone=cfg.lpips_backbone, linear=cfg.lpips_linear)
        self.lpips.requires_grad_(False)
        if cfg.discriminator == "residual":
            self.D = Discriminator(cfg.discriminator_config())
            c = cfg.r1_interval / (cfg.r1_interval + 1)
            self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr * c, betas=(0.0, 0.99 ** c))
        elif cfg.discriminator == "projected":
            # the frozen ImageNet backbone is the one LPIPS-squeeze already loaded (same weights)
            self.D = ProjectedDiscriminator(self.lpips.features, input_size=cfg.proj_size, seed=cfg.seed)
            self.opt_d = torch.optim.Adam(self.D.trainable_parameters(), lr=cfg.d_lr, betas=(0.0, 0.99))
        else:
            raise ConfigError(f"unknown discriminator {cfg.discriminator!r}: use 'residual' or 'projected'")
        if cfg.stage not in ("joint", "encoder"):
            raise ConfigError(f"unknown training stage {cfg.stage!r}: use 'joint' or 'encoder'")
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=(0.0, 0.99))
        self.opt_e = torch.optim.Adam(self.E.parameters(), lr=cfg.enc_lr, betas=(0.9, 0.99))
        self.step = 0
        self.images_seen = 0
        self.encoder_images = 0  # images seen by the encoder-only stage
        self.cpu_seconds = 0.0  # process CPU time spent training, summed over resumes
        self.history: list[dict] = []
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "samples").mkdir(exist_ok=True)
        # Training runs where the networks are; checkpoints load on the CPU and are copied in. Random
        # draws on an accelerator come from its own generator, so a resume there is not bit-exact.
        self.device = torch.device(device)
        for m in (self.G, self.G_ema, self.E, self.D, self.lpips):
            m.to(self.device)

    # ---------------------------------------------------------------- checkpointing
    def state(self) -> dict:
        return {
            "arch": json.dumps(self.cfg.arch_dict(), sort_keys=True),
            "G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(), "D": self.D.state_dict(),
            "E": self.E.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "opt_e": self.opt_e.state_dict(), "step": self.step, "images_seen": self.images_seen,
            "encoder_images": self.encoder_images,
            "cpu_seconds": self.cpu_seconds,
            "torch_rng": torch.get_rng_state(), "np_rng": json.dumps(self.rng.bit_generator.state),
            "history": json.dumps(self.history),
        }

    def save(self) -> None:
        path = self.out / "ckpt.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, path)

    def load(self, path: Path) -> None:
        st = torch.load(path, map_location="cpu", weights_only=True)
        ours = self.cfg.arch_dict()
        # Fields added after a checkpoint was written read as their defaults (the value it was trained with).
        defaults = TrainConfig().arch_dict()
        theirs = {**{k: defaults[k] for k in _ADDED_FIELDS}, **json.loads(st["arch"])}
        if theirs != ours:
            diff = {k: (theirs.get(k), ours.get(k)) for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k)}
            raise ConfigError(f"checkpoint {path} was trained with another configuration {diff} (checkpoint, now); "
                              f"use the same options or another --out folder")
        self.G.load_state_dict(st["G"]), self.G_ema.load_state_dict(st["G_ema"]), self.D.load_state_dict(st["D"])
        self.E.load_state_dict(st["E"])
        self.opt_g.load_state_dict(st["opt_g"]), self.opt_d.load_state_dict(st["opt_d"]), self.opt_e.load_state_dict(st["opt_e"])
        self.step, self.images_seen = int(st["step"]), int(st["images_seen"])
        self.encoder_images = int(st.get("encoder_images", 0))
        self.cpu_seconds = float(st.get("cpu_seconds", 0.0))
        torch.set_rng_state(st["torch_rng"])
        self.rng.bit_generator.state = json.loads(st["np_rng"])
        self.history = json.loads(st["history"])

    def warm_start(self, folder: Path) -> None:
        """Loads generator (as G and G_ema) and encoder from an exported model folder, or from
        another run's ``ckpt.pt`` (its EMA generator and encoder; e.g. to start ``--stage encoder``
        on a joint run without exporting it first)."""
        if Path(folder).is_file():
            st = torch.load(folder, map_location="cpu", weights_only=True)
            theirs, ours = json.loads(st["arch"]), self.cfg.arch_dict()
            keys = ("resolution", "style_dim", "n_mapping", "channel_base", "channel_max", "enc_channels")
            diff = {k: (theirs.get(k), ours.get(k)) for k in keys if theirs.get(k) != ours.get(k)}
            if diff:
                raise ConfigError(f"{folder} was trained with another architecture {diff} (checkpoint, now)")
            self.G.load_state_dict(st["G_ema"]), self.G_ema.load_state_dict(st["G_ema"])
            self.E.load_state_dict(st["E"])
            self.images_seen, self.step = int(st["images_seen"]), int(st["step"])
            return
        from dhr.models.checkpoint import load_pretrained
        from dhr.models.zoo import register_small_components

        register_small_components()
        manifest = json.loads((folder / "model.json").read_text())
        ours = self.cfg.arch_dict()
        theirs = manifest.get("training", {}).get("config", {})
        diff = {k: (theirs.get(k), ours.get(k)) for k in ours
                if k in ("resolution", "style_dim", "n_mapping", "channel_base", "channel_max", "enc_channels")
                and theirs.get(k) != ours.get(k)}
        if diff:
            raise ConfigError(f"{folder} was trained with another architecture {diff} (model, now)")
        G = load_pretrained(folder / manifest["components"]["generator"])
        E = load_pretrained(folder / manifest["components"]["encoder"])
        self.G.load_state_dict(G.state_dict()), self.G_ema.load_state_dict(G.state_dict())
        self.E.load_state_dict(E.state_dict())
        self.images_seen = int(manifest.get("training", {}).get("kimg", 0) * 1000)
        self.step = int(manifest.get("training", {}).get("steps", 0))

    def save_milestone(self) -> Path:
        """Stores the EMA generator with its image count and CPU time, for quality-vs-compute curves
        (``python -m dhr.train.curve``)."""
        folder = self.out / "milestones"
        folder.mkdir(exist_ok=True)
        path = folder / f"g_ema_{self.images_seen:09d}.pt"  # images seen
        tmp = path.with_suffix(".tmp")
        torch.save({"G_ema": self.G_ema.state_dict(), "generator_config": json.dumps(self.cfg.generator_config().to_dict()),
                    "kimg": self.images_seen / 1000, "step": self.step, "cpu_seconds": self.cpu_seconds,
                    "arch": json.dumps(self.cfg.arch_dict(), sort_keys=True)}, tmp)
        os.replace(tmp, path)
        return path

    # ---------------------------------------------------------------- training
    def _batch(self, data: FaceDataset) -> torch.Tensor:
        idx = self.rng.integers(0, len(data), self.cfg.batch)
        x = _to_tensor(data.images[idx]).to(self.device)
        flip = torch.from_numpy(self.rng.random(self.cfg.batch) < 0.5)
        x[flip] = x[flip].flip(-1)
        return x

    def _sample_ws(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(n, self.cfg.style_dim, device=self.device)
        w = self.G.mapping(z)
        return w, w[:, None].expand(-1, self.G.num_ws, -1)

    @property
    def progress_images(self) -> int:
        """Images seen by the current stage (what ``--kimg`` counts)."""
        return self.images_seen if self.cfg.stage == "joint" else self.encoder_images

    def encoder_step(self, data: FaceDataset) -> dict:
        """One encoder-only step against the frozen EMA generator: reconstruction (L2 + LPIPS) of real
        crops, latent regression on the generator's own samples and the W-delta regulariser, the same
        terms and weights as in the joint step."""
        cfg = self.cfg
        G = self.G_ema
        real = self._batch(data)
        with torch.no_grad():
            ws = G.sample_ws(torch.randn(cfg.batch, cfg.style_dim, device=self.device))
            fake = G(ws, noise_mode="random")
        rec_ws = self.E(real, G.w_avg)
        rec = G(rec_ws, noise_mode="const")
        loss_mse = F.mse_loss(rec, real)
        loss_lp = self.lpips(rec, real).mean()
        loss_lat = F.mse_loss(self.E(fake, G.w_avg), ws)
        loss_delta = (rec_ws[:, 1:] - rec_ws[:, :1]).square().mean()
        loss = (cfg.rec_weight * loss_mse + cfg.lpips_weight * loss_lp + cfg.latent_weight * loss_lat
                + cfg.delta_weight * loss_delta)
        self.opt_e.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_e.step()
        self.step += 1
        self.encoder_images += cfg.batch
        return {"loss_e": loss.item(), "mse": loss_mse.item(), "lpips": loss_lp.item(), "latent": loss_lat.item()}

    def train_step(self, data: FaceDataset) -> dict:
        cfg = self.cfg
        if cfg.stage == "encoder":
            return self.encoder_step(data)
        aug = lambda x: diff_augment(x, cfg.augment)  # noqa: E731
        logs: dict[str, float] = {}
        # --- discriminator
        real = self._batch(data)
        with torch.no_grad():
            _, ws = self._sample_ws(cfg.batch)
            fake = self.G(ws, noise_mode="random")
        if cfg.discriminator == "projected":
            self.D.heads.requires_grad_(True)
            loss_d = hinge_d_loss(self.D(aug(real), detach_features=True), self.D(aug(fake), detach_features=True))
        else:
            self.D.requires_grad_(True)
            loss_d = F.softplus(self.D(aug(fake))).mean() + F.softplus(-self.D(aug(real))).mean()
        if cfg.discriminator == "residual" and self.step % cfg.r1_interval == 0:
            real_r = real.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.D(aug(real_r)).sum(), real_r, create_graph=True)
            r1 = grad.square().sum(dim=[1, 2, 3]).mean()
            loss_d = loss_d + r1 * (cfg.r1_gamma / 2) * cfg.r1_interval
            logs["r1"] = r1.item()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        logs["loss_d"] = loss_d.item()
        # --- generator + encoder
        self.D.requires_grad_(False)
        w, ws = self._sample_ws(cfg.batch)
        fake = self.G(ws, noise_mode="random")
        if cfg.discriminator == "projected":
            loss_adv = hinge_g_loss(self.D(aug(fake)))
        else:
            loss_adv = F.softplus(-self.D(aug(fake))).mean()
        w_avg = self.G.w_avg
        rec_ws = self.E(real, w_avg)
        rec = self.G(rec_ws, noise_mode="const")
        loss_mse = F.mse_loss(rec, real)
        loss_lp = self.lpips(rec, real).mean()
        lat_ws = self.E(fake.detach(), w_avg)
        loss_lat = F.mse_loss(lat_ws, ws.detach())
        loss_delta = (rec_ws[:, 1:] - rec_ws[:, :1]).square().mean()
        loss_g = (cfg.adv_weight * loss_adv + cfg.rec_weight * loss_mse + cfg.lpips_weight * loss_lp
                  + cfg.latent_weight * loss_lat + cfg.delta_weight * loss_delta)
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_e.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.opt_e.step()
        # --- bookkeeping: w_avg and EMA
        with torch.no_grad():
            self.G.w_avg.lerp_(w.mean(0), 0.005)
            beta = 0.5 ** (cfg.batch / max(cfg.ema_kimg * 1000, 1e-8))
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.lerp_(p, 1 - beta)
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)
        logs.update(loss_g=loss_g.item(), adv=loss_adv.item(), mse=loss_mse.item(), lpips=loss_lp.item(),
                    latent=loss_lat.item())
        self.step += 1
        self.images_seen += cfg.batch
        return logs

    @torch.no_grad()
    def snapshot(self, val: FaceDataset) -> None:
        g = torch.Generator().manual_seed(123)
        z = torch.randn(32, self.cfg.style_dim, generator=g).to(self.device)
        imgs = self.G_ema(self.G_ema.sample_ws(z), noise_mode="const").cpu()
        from PIL import Image

        kimg = self.images_seen // 1000
        Image.fromarray(_grid(imgs, 8)).save(self.out / "samples" / f"fakes_{kimg:05d}.png")
        if len(val) == 0:  # no held-out crops (tiny data or val_fraction 0): no reconstruction grid
            return
        real = _to_tensor(val.images[:16]).to(self.device)
        rec = self.G_ema(self.E(real, self.G_ema.w_avg), noise_mode="const")
        real, rec = real.cpu(), rec.cpu()
        pairs = torch.stack([real, rec], 1).reshape(-1, *real.shape[1:])
        Image.fromarray(_grid(pairs, 8)).save(self.out / "samples" / f"recon_{kimg:05d}.png")


def train(cfg: TrainConfig, *, kimg: float, resume: bool = True, ckpt_every: int = 200, sample_every: int = 500,
          threads: int | None = None, max_minutes: float | None = None, init_from: str | None = None,
          device: str = "cpu") -> Path:
    """Trains until ``kimg`` thousand real images have been seen (or ``max_minutes`` pass).

    ``init_from`` warm-starts from an exported model folder (generator and encoder; the
    discriminator and optimiser states start fresh, the image count continues from the folder's
    ``training.kimg``) when the run folder holds no checkpoint yet. This is how training continues
    on a new machine from the committed model.

    Returns:
        The run folder holding ``ckpt.pt``, ``log.jsonl`` and ``samples/``.
    """
    if threads:
        torch.set_num_threads(threads)
    tr = Trainer(cfg, device=device)
    data_cache = Path(cfg.out) / f"data_{cfg.resolution}.npz"
    train_set, val_set, skipped = prepare_dataset(cfg.data, cfg.resolution, data_cache, val_fraction=cfg.val_fraction)
    log.info("data: %d train, %d held out, %d unreadable skipped", len(train_set), len(val_set), skipped)
    (Path(cfg.out) / "split.json").write_text(json.dumps(
        {"train": len(train_set), "val": len(val_set), "skipped": skipped, "val_names": list(val_set.names)}))
    ck = Path(cfg.out) / "ckpt.pt"
    if resume and ck.exists():
        tr.load(ck)
        log.info("resumed at step %d (%.1f kimg)", tr.step, tr.images_seen / 1000)
    elif init_from:
        tr.warm_start(Path(init_from))
        log.info("warm start from %s at %.1f kimg", init_from, tr.images_seen / 1000)
    t0 = time.time()
    logf = open(Path(cfg.out) / "log.jsonl", "a")
    previous = _stop_on_signals()
    cpu_mark = time.process_time()
    try:
        while tr.progress_images < kimg * 1000:
            before = tr.images_seen
            logs = tr.train_step(train_set)
            now = time.process_time()
            tr.cpu_seconds += now - cpu_mark
            cpu_mark = now
            if cfg.stage == "joint" and cfg.milestone_kimg > 0 and int(tr.images_seen // (cfg.milestone_kimg * 1000)) > int(
                    before // (cfg.milestone_kimg * 1000)):
                tr.save_milestone()
            if tr.step % 20 == 0:
                logs.update(step=tr.step, kimg=tr.images_seen / 1000, encoder_kimg=tr.encoder_images / 1000, sec=time.time() - t0, cpu_sec=tr.cpu_seconds)
                logf.write(json.dumps(logs) + "\n")
                logf.flush()
                tr.history.append({k: round(v, 5) for k, v in logs.items()})
            if tr.step % ckpt_every == 0:
                tr.save()
            if tr.step % sample_every == 0:
                tr.snapshot(val_set)
            if max_minutes is not None and time.time() - t0 > max_minutes * 60:
                break
    except KeyboardInterrupt as e:
        log.info("stopped (%s) at step %d (%.1f kimg); checkpoint saved", e or "interrupt", tr.step,
                 tr.images_seen / 1000)
    finally:
        tr.save()
        tr.snapshot(val_set)
        logf.close()
        _restore_signals(previous)
    return Path(cfg.out)


def _stop_on_signals() -> dict:
    """SIGTERM and SIGINT stop training cleanly (checkpoint saved). SIGINT is ignored by shells for
    background jobs (``cmd &``), so it is re-armed here; returns the previous handlers."""
    import signal

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread: leave the handlers alone
            pass
    return previous


def _restore_signals(previous: dict) -> None:
    import signal

    for sig, handler in previous.items():
        signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> None:
    """``python -m dhr.train.gan --data DIR --out DIR --kimg N [--lpips-backbone F --lpips-linear F]``."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    for f in dataclasses.fields(TrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    p.add_argument("--kimg", type=float, default=100.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="where to train: cpu, cuda, cuda:1, mps (checkpoints stay portable)")
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--init-from", default=None,
                   help="exported model folder, or another run's ckpt.pt, to warm-start from (no ckpt.pt here yet)")
    a = vars(p.parse_args(argv))
    kimg, threads, mm, nores = a.pop("kimg"), a.pop("threads"), a.pop("max_minutes"), a.pop("no_resume")
    init_from, device = a.pop("init_from"), a.pop("device")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(TrainConfig(**a), kimg=kimg, resume=not nores, threads=threads, max_minutes=mm, init_from=init_from,
          device=device)


if __name__ == "__main__":
    main()
