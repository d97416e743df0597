"""Sample pictures while training (kohya's --sample_every_n_steps / _n_epochs / --sample_at_first).

The loop calls `after_step`, `at_epoch_end` and `at_start`; when one is due, the main process renders every
prompt with our engine from the model being trained (its live network at each prompt's weight), in eval mode
without gradients, and writes `<run folder>/samples/stepNNNNNN-epochNNN-II.png` with A1111's infotext.
Around it the random streams are saved and put back, each module's train/eval mode restored, parts parked
on the CPU after caching brought in and sent back, and memory released: training goes on bit for bit as
without samples. A picture already on disk is not rendered again, so a resumed run does not redo the
samples its killed predecessor wrote. A stop request (Ctrl-C, SIGTERM) drops the rest of a render at the
next UNet call, so the loop saves within a sampler step instead of after every picture.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from inference.infotext import format_infotext, save_png
from inference.prompt_file import SamplePrompt
from inference.txt2img import GenerationParams, generate_batch
from train.config import TrainConfig
from train.model_setup import release_memory
from train.network.base import tunes_base_model
from train.sample_network import live_network
from train.sample_prompts import resolved_prompts, sampling_enabled
from train.signals import StopRequest
from train.state import capture_rng, restore_rng

if TYPE_CHECKING:
    from train.run import Trainer
    from train.state import Progress

log = logging.getLogger(__name__)

SAMPLES_DIR = "samples"
MAX_SEED = 2**32  # A1111's seeds are unsigned 32-bit


def sample_file_name(step: int, epoch: int, index: int) -> str:
    """`step000100-epoch002-00.png`: sorts by step, then prompt."""
    return f"step{step:06d}-epoch{epoch:03d}-{index:02d}.png"


class RenderDropped(Exception):
    """A stop was requested while a sample rendered: the picture is dropped and the loop goes on to save."""


@contextlib.contextmanager
def dropped_on_stop(unet: torch.nn.Module, stop: StopRequest) -> Iterator[None]:
    """Raise `RenderDropped` at the first UNet call after `stop` is requested (the sampler's next step)."""

    def check(module, args) -> None:
        if stop.requested:
            raise RenderDropped

    handle = unet.register_forward_pre_hook(check)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def sampling_mode(trainer: Trainer) -> Iterator[None]:
    """Eval mode, no gradients, the run's autocast, every part on the device; all put back afterwards."""
    bundle, device = trainer.bundle, trainer.accelerator.device
    parts = [part for part in (bundle.unet, bundle.text_encoder, bundle.vae) if part is not None]
    modes = {module: module.training for part in parts for module in part.modules()}
    places = {part: next(part.parameters()).device for part in parts}
    streams = capture_rng()
    try:
        for part in parts:
            part.to(device)
            part.eval()
        with torch.no_grad(), trainer.accelerator.autocast():
            yield
    finally:
        for part, place in places.items():
            part.to(place)
        for module, training in modes.items():
            module.training = training
        restore_rng(streams)
        release_memory()


def render_prompt(trainer: Trainer, prompt: SamplePrompt, path: Path) -> Path:
    """One sample picture of the live network, saved with A1111's infotext (in sampling_mode)."""
    cfg, bundle = trainer.cfg, trainer.bundle
    live = live_network(trainer.network, bundle.tokenizer, cfg.name, prompt.weight)
    tuned = tunes_base_model(trainer.network)
    seed = prompt.seed if prompt.seed != -1 else secrets.randbelow(MAX_SEED)  # not from the run's streams
    params = GenerationParams(
        live.prompt_for(prompt.prompt), prompt.negative_prompt, seed, prompt.steps, prompt.cfg_scale,
        prompt.width, prompt.height, cfg.model.clip_skip, prompt.sampler,
        cfg.name if tuned else (Path(bundle.source).name or bundle.source),
    )  # fmt: skip
    with live.applied():
        [image] = generate_batch(bundle, [params], live.embeddings)
    # The text encoder reads the plain prompt; the infotext shows the network's tag as A1111 writes it.
    tagged = replace(params, prompt=f"{params.prompt} {live.tag}".rstrip())
    return save_png(image, path, format_infotext(tagged))


class TrainingSamples:
    """When and what to sample during one run (nothing, for `sample=none`)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path):
        self.cfg = cfg.sample
        self.prompts = resolved_prompts(cfg) if sampling_enabled(cfg.sample) else []
        self.folder = run_dir / SAMPLES_DIR
        self.last_step: int | None = None  # an epoch's end right after a step's samples renders once

    def at_start(self, trainer: Trainer, progress: Progress, stop: StopRequest) -> None:
        """Before the first step, with sample.at_start (a resumed run has passed it)."""
        if self.cfg.at_start and progress.step == 0 and progress.batch == 0:
            self.render(trainer, progress.step, progress.epoch, stop)

    def after_step(self, trainer: Trainer, progress: Progress, stop: StopRequest) -> None:
        """After optimizer step `progress.step`, every sample.every_n_steps steps."""
        n = self.cfg.every_n_steps
        if self.prompts and n and progress.step % n == 0:
            self.render(trainer, progress.step, progress.epoch, stop)

    def at_epoch_end(self, trainer: Trainer, progress: Progress, stop: StopRequest) -> None:
        """At the end of epoch `progress.epoch`, every sample.every_n_epochs epochs."""
        n = self.cfg.every_n_epochs
        if self.prompts and n and progress.epoch % n == 0:
            self.render(trainer, progress.step, progress.epoch, stop)

    def render(self, trainer: Trainer, step: int, epoch: int, stop: StopRequest) -> None:
        """Every prompt not yet on disk for this step (main process); the others wait for it. A stop request
        drops the rest: the loop then saves, and the pictures not written are left out."""
        if step == self.last_step:
            return
        self.last_step = step
        acc = trainer.accelerator
        if acc.is_main_process:
            todo = [
                (index, prompt, self.folder / sample_file_name(step, epoch, index))
                for index, prompt in enumerate(self.prompts)
            ]
            todo = [item for item in todo if not item[2].exists()]
            if todo and not stop.requested:
                written = []
                try:
                    with sampling_mode(trainer), dropped_on_stop(trainer.bundle.unet, stop):
                        for index, prompt, path in tqdm(todo, desc=f"samples at step {step}", leave=False):
                            render_prompt(trainer, prompt, path)
                            written.append((path, f"step {step}, epoch {epoch}, #{index}: {prompt.prompt}"))
                except RenderDropped:
                    print(
                        f"samples at step {step}: {len(todo) - len(written)} of {len(todo)} left out "
                        f"({stop.name})",
                        file=sys.stderr,
                        flush=True,
                    )
                if written:
                    trainer.metrics.log_images({"samples": written}, step)
        acc.wait_for_everyone()
