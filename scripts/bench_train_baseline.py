"""The textbook LoRA training step of `scripts/bench_train.py`, run in a child process of its own.

What diffusers' train_text_to_image_lora example does, written out: the base model frozen (cast to the
weight dtype under mixed precision), peft LoRA adapters on kohya's target modules (so the count matches
ours: 192 UNet + 72 text-encoder modules on SD 1.5), AdamW over the LoRA parameters, and every step
VAE encode → noise → text encoder (with grad: its LoRA trains) → UNet → MSE → backward → clip → step.
SDXL (`--model tiny_sdxl|sdxl_arch`) follows train_text_to_image_lora_sdxl: both text encoders and the
size/crop `time_ids` every step (scripts/bench_train_baseline_sdxl.py), the VAE kept in fp32.
Each step reads its batch of PNGs and captions from disk first (the example's default: no loader workers);
fp16 uses a GradScaler, as accelerate does.

    python scripts/bench_train_baseline.py --model tiny --train-dir DIR --resolution 64 --steps 3 --warmup 1

Prints stage lines to stderr and one `RESULT {json}` line to stdout: the seconds of every step (warm-up
steps first), the peak VRAM in GiB on CUDA, and the FLOPs of one step's UNet + text encoder forward and
backward when `--count-flops` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# bitsandbytes (imported by peft) warns about an optional CPU kernel package on every start.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
logging.getLogger("kernels").setLevel(logging.ERROR)  # and the kernels package about offline trust checks

from bench_train_baseline_sdxl import sdxl_prediction  # noqa: E402  (next to this file: sys.path[0])
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from peft import LoraConfig, inject_adapter_in_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from inference.models.bundle import ModelBundle  # noqa: E402
from inference.models.loading import load_base_model  # noqa: E402
from inference.models.sdxl_arch import build_sdxl_arch  # noqa: E402
from inference.models.tiny import build_sd15_arch, build_tiny  # noqa: E402
from inference.models.tiny_sdxl import build_tiny_sdxl  # noqa: E402
from train.config import ModelConfig  # noqa: E402
from train.network.targets import Target, text_encoder_targets, unet_targets  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BUILDERS = {
    "sd15_arch": build_sd15_arch,
    "tiny": build_tiny,
    "tiny_sdxl": build_tiny_sdxl,
    "sdxl_arch": build_sdxl_arch,
}
LR, MAX_GRAD_NORM = 1e-4, 1.0  # the diffusers example's defaults


def stage(message: str) -> None:
    """One progress line on stderr, so the parent's log shows where the child is."""
    print(f"  [baseline] {message}", file=sys.stderr, flush=True)


def load_model(name: str) -> ModelBundle:
    """The same base model our run loads for `model=<name>`, with the same init seed (0)."""
    if name in BUILDERS:
        return BUILDERS[name](0)
    return load_base_model(ModelConfig(kind="toy"))


def lora_config(targets: list[Target], rank: tuple[int, float], conv_rank: tuple[int, float]) -> LoraConfig:
    """peft's config for exactly these module paths; kxk convs at conv_dim / conv_alpha as kohya does."""
    spatial = [re.escape(t.path) for t in targets if t.spatial]
    return LoraConfig(
        r=rank[0],
        lora_alpha=rank[1],
        init_lora_weights="gaussian",  # as the diffusers example
        target_modules=[t.path for t in targets],
        rank_pattern={p: conv_rank[0] for p in spatial},
        alpha_pattern={p: conv_rank[1] for p in spatial},
    )


def add_adapters(model: nn.Module, targets: list[Target], rank, conv_rank) -> int:
    """Inject peft LoRA layers on `targets`; the number of adapted modules (checked against the targets)."""
    inject_adapter_in_model(lora_config(targets, rank, conv_rank), model)
    adapted = sum(1 for m in model.modules() if isinstance(m, LoraLayer))
    if adapted != len(targets):
        raise RuntimeError(f"peft adapted {adapted} modules, kohya's targets are {len(targets)}")
    return adapted


def prepare(bundle: ModelBundle, args: argparse.Namespace) -> list[nn.Parameter]:
    """Freeze and place the model, cast the frozen weights to the precision, add adapters; the LoRA params."""
    dtype = DTYPES[args.precision]
    bundle.freeze()
    encoders = text_encoders(bundle)
    for model in (bundle.unet, *encoders):
        model.to(args.device, dtype=dtype)  # the diffusers example's weight_dtype
    # the SDXL example keeps its VAE in fp32 (SDXL's VAE overflows in fp16) unless given another VAE
    bundle.vae.to(args.device, dtype=torch.float32 if bundle.is_sdxl else dtype)
    rank, conv_rank = (args.dim, args.alpha), (args.conv_dim, args.conv_alpha)
    n_unet = add_adapters(bundle.unet, unet_targets(bundle.unet, conv=args.conv_dim > 0), rank, conv_rank)
    n_te = sum(add_adapters(te, text_encoder_targets(te), rank, conv_rank) for te in encoders)
    params = [p for m in (bundle.unet, *encoders) for p in m.parameters() if p.requires_grad]
    for p in params:  # diffusers' cast_training_params: the trained weights stay fp32
        p.data = p.data.float()
    for model in (bundle.unet, *encoders):
        model.train()
    stage(
        f"peft adapters on {n_unet} UNet + {n_te} text-encoder modules, {sum(p.numel() for p in params):,} params"
    )
    return params


def text_encoders(bundle: ModelBundle) -> list[nn.Module]:
    """The text encoders a step runs: SD 1/2's one, SDXL's two."""
    return [bundle.text_encoder] + ([bundle.text_encoder_2] if bundle.is_sdxl else [])


@dataclass
class Batches:
    """Pictures and captions of a kohya folder, read from disk batch by batch as a DataLoader would."""

    paths: list[Path]
    tokenizers: list  # one per text encoder
    resolution: int
    batch: int

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[torch.Tensor], list[tuple[int, int]]]]:
        """Endless batches: pixels (B, 3, H, W) in [-1, 1], token ids (B, 77) per tokenizer and each
        picture's original (h, w) (SDXL's size conditioning)."""
        index = 0
        while True:
            chosen = [self.paths[(index + i) % len(self.paths)] for i in range(self.batch)]
            index += self.batch
            pictures = [Image.open(p).convert("RGB") for p in chosen]
            sizes = [(picture.height, picture.width) for picture in pictures]
            yield self.pixels(pictures), self.token_ids(chosen), sizes

    def pixels(self, pictures: list[Image.Image]) -> torch.Tensor:
        size = (self.resolution, self.resolution)
        arrays = [np.asarray(picture.resize(size, Image.BICUBIC)) for picture in pictures]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def token_ids(self, paths: list[Path]) -> list[torch.Tensor]:
        captions = [p.with_suffix(".txt").read_text(encoding="utf-8").strip() for p in paths]
        return [
            tokenizer(
                captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
            ).input_ids
            for tokenizer in self.tokenizers
        ]


def precision_context(device: str, precision: str) -> AbstractContextManager:
    """torch.autocast at the precision (off for fp32): what accelerate's mixed_precision does."""
    return torch.autocast(device_type=device, dtype=DTYPES[precision], enabled=precision != "fp32")


def encode_latents(bundle: ModelBundle, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels (B, 3, H, W) → scaled latents (B, 4, H/8, W/8), sampled from the VAE posterior, no grad."""
    with torch.no_grad():
        return bundle.vae.encode(pixels.to(bundle.vae.device, bundle.vae.dtype)).latent_dist.sample() * float(
            bundle.vae.config.scaling_factor
        )


def denoise_loss(bundle: ModelBundle, latents: torch.Tensor, ids: list[torch.Tensor], sizes) -> torch.Tensor:
    """Noise, random timesteps, text encoder(s) and UNet forward; the epsilon MSE (a scalar)."""
    scheduler = bundle.noise_scheduler
    noise = torch.randn_like(latents)
    steps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
    noisy = scheduler.add_noise(latents, noise, steps)
    if bundle.is_sdxl:
        prediction = sdxl_prediction(bundle, noisy, steps, ids, sizes)
    else:
        states = bundle.text_encoder(ids[0].to(latents.device))[0]
        prediction = bundle.unet(noisy, steps, states).sample
    return F.mse_loss(prediction.float(), noise.float())


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_step(
    bundle: ModelBundle,
    batches: Iterator,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    params: list[nn.Parameter],
    args: argparse.Namespace,
) -> float:
    """One optimizer step on the next batch; its wall time in seconds, data loading included (as ours)."""
    sync(args.device)
    start = time.perf_counter()
    pixels, ids, sizes = next(batches)
    # outside autocast, which accelerate puts on the prepared (trained) models only: the VAE in its own dtype
    latents = encode_latents(bundle, pixels).to(DTYPES[args.precision])  # the example's weight_dtype
    with precision_context(args.device, args.precision):
        loss = denoise_loss(bundle, latents, ids, sizes)
    scaler.scale(loss).backward()  # the scaler is a no-op but for fp16, where accelerate uses one too
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    sync(args.device)
    return time.perf_counter() - start


def count_flops(bundle: ModelBundle, batch: tuple, args: argparse.Namespace) -> float:
    """FLOPs of one step's UNet + text-encoder forward and backward (VAE encode and optimizer left out)."""
    pixels, ids, sizes = batch
    latents = encode_latents(bundle, pixels).to(DTYPES[args.precision])
    with precision_context(args.device, args.precision):
        with FlopCounterMode(display=False) as counter:
            loss = denoise_loss(bundle, latents, ids, sizes)
            loss.backward()
    for model in (bundle.unet, *text_encoders(bundle)):
        model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def run(args: argparse.Namespace) -> dict:
    """Load, adapt, train warmup + steps steps (timing each); the result record."""
    stage(f"loading {args.model} on {args.device}")
    bundle = load_model(args.model)
    params = prepare(bundle, args)
    optimizer = torch.optim.AdamW(params, lr=LR)
    scaler = torch.amp.GradScaler(args.device, enabled=args.precision == "fp16")
    paths = sorted(Path(args.train_dir).rglob("*.png"))
    tokenizers = [bundle.tokenizer] + ([bundle.tokenizer_2] if bundle.is_sdxl else [])
    batches = iter(Batches(paths, tokenizers, args.resolution, args.batch))
    times = []
    for i in range(args.warmup + args.steps):
        times.append(train_step(bundle, batches, optimizer, scaler, params, args))
        stage(f"step {i + 1}/{args.warmup + args.steps}: {times[-1]:.3f} s")
    flops = count_flops(bundle, next(batches), args) if args.count_flops else None
    vram = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None
    return {"step_seconds": times, "peak_vram_gib": vram, "flops": flops}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=(*BUILDERS, "toy"), default="tiny")
    parser.add_argument("--train-dir", required=True, help="kohya folder of PNG + .txt pictures")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precision", choices=tuple(DTYPES), default="fp32")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=8.0)
    parser.add_argument("--conv-dim", type=int, default=0, help="> 0: also resnet/resampler convs (LoCon)")
    parser.add_argument("--conv-alpha", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--count-flops", action="store_true")
    return parser.parse_args(argv)


def main() -> None:
    diffusers_logging.set_verbosity_error()  # its fp32-modules note on every .to(dtype) cast
    print("RESULT " + json.dumps(run(parse_args())), flush=True)


if __name__ == "__main__":
    main()
