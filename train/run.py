"""A training run from a validated config: data, model, network and optimizer on accelerate, then the loop.

`train()` is the whole run: it takes the run folder's lock, decides whether to resume, builds the `Trainer`
(data first, so a finished run or a folder mistake is reported before the slow model load), runs the loop
(train/loop.py) and the final evaluation. The step is train/step.py; caching, precision, states and saving
each have their own module.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import OmegaConf

from data.atomic import atomic_directory, write_text_atomic
from inference.models.bundle import ModelBundle
from inference.models.loading import load_base_model
from train.config import TrainConfig
from train.cpu_speed import speed_up_cpu_training
from train.dataset import DreamBoothDataset
from train.errors import ConfigError
from train.final_eval import evaluate_or_say_what_is_saved
from train.loop import run_loop
from train.model_setup import (
    cache_latents,
    cache_text_outputs,
    park_unused,
    place_trained_models,
    warn_clip_skip_on_sd2,
)
from train.network.base import write_final
from train.network.fused_lora import fuse_lora_layers
from train.network.lora_file import SAVE_DTYPES, lora_metadata, model_facts
from train.network.registry import build_network, keeps_whole_model, optimizer_groups
from train.network.ti_captions import caption_templates, check_trigger_in_captions
from train.noise import predicting_v, with_zero_terminal_snr
from train.objective import is_measured, log_objective
from train.optim import build_scheduler, warmup_steps
from train.optimizers import adaptive_rate, averaged_weights, build_optimizer, describe_optimizer
from train.precision import allow_fp16_gradients, announce, choose_precision
from train.report import write_report_after_run
from train.result import RunResult
from train.resume import finished_result, fits_record, model_fingerprint, open_run, restore_progress
from train.run_folder import check_outside_pictures, lock_run_folder
from train.run_setup import (
    build_loader,
    config_for_record,
    every_process_rng,
    launch_state,
    lr_log_key,
    prepare_dataset_dirs,
    shared_seed,
)
from train.sample_prompts import sampling_enabled
from train.sampling import TrainingSamples
from train.saving import check_finite, final_file_name, prune, write_lora_and_state
from train.schedule import StepPlan, plan_steps, warn_batch_above_epoch
from train.sdxl_step import check_sdxl_training
from train.signals import graceful_stop
from train.state import Progress, load_state, write_state_files
from train.step import diffusion_loss
from train.tracking import MetricsLog, close_trackers, start_trackers, tracker_name
from train.tracking_results import log_lora
from train.validation import HeldOutCaptions, held_out_for, validation_loss

log = logging.getLogger(__name__)


def predicts_v(bundle: ModelBundle) -> bool:
    return bundle.noise_scheduler.config.prediction_type == "v_prediction"


class Trainer:
    """Holds the pieces of one run. `__init__` reads the data; `load_model()` builds everything else."""

    def __init__(self, cfg: TrainConfig, run_dir: Path):
        self.run_dir = run_dir
        t = cfg.training
        self.precision = choose_precision(t, launch_state().device)
        self.accelerator = Accelerator(
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            mixed_precision=self.precision.mixed_precision,
            log_with=tracker_name(cfg.logger),
            project_dir=str(run_dir),
        )
        if self.accelerator.is_main_process:
            announce(self.precision)
        with self.accelerator.main_process_first():  # one process writes the toy dataset, the others wait
            cfg = self.cfg = prepare_dataset_dirs(cfg, run_dir, write=self.accelerator.is_main_process)
        self.dataset = DreamBoothDataset(cfg.dataset, seed=cfg.seed, templates=caption_templates(cfg))
        check_trigger_in_captions(cfg, self.dataset.base_captions())
        loader, self.sampler = build_loader(self.dataset, cfg)
        self.sampler.processes = self.accelerator.num_processes
        self.plan: StepPlan = plan_steps(t, len(loader), self.accelerator.num_processes)
        if self.accelerator.is_main_process:
            warn_batch_above_epoch(t.batch_size, len(self.dataset))
        self._raw_loader = loader
        self.metrics = MetricsLog(self.accelerator, run_dir / "metrics.jsonl")
        self.samples = TrainingSamples(cfg, run_dir)

    def load_model(self) -> None:
        """Check the pictures, load the base model, cache what can be cached, add the LoRA, the optimizer."""
        cfg, device = self.cfg, self.accelerator.device
        self.dataset.check_pictures()
        self.bundle: ModelBundle = load_base_model(cfg.model)
        self.bundle.freeze()
        if cfg.model.v_parameterization:  # training and the evaluation render both treat it as v
            self.bundle.noise_scheduler = predicting_v(self.bundle.noise_scheduler)
        if cfg.training.scale_v_pred_loss_like_noise_pred and not predicts_v(self.bundle):
            raise ConfigError(
                "training.scale_v_pred_loss_like_noise_pred=true is for bases that predict v: this one predicts "
                "noise (set model.v_parameterization=true if it is a v model)"
            )
        self.model_facts = model_facts(self.bundle)  # before caching may free the text encoder
        warn_clip_skip_on_sd2(self.model_facts, cfg.model.clip_skip)
        # Training may use a rescaled schedule; the evaluation render keeps the model's own.
        schedule = self.bundle.noise_scheduler
        self.noise_scheduler = (
            with_zero_terminal_snr(schedule) if cfg.training.zero_terminal_snr else schedule
        )
        self.model_fingerprint = model_fingerprint(self.bundle)
        check_sdxl_training(cfg, self.bundle)
        self.dataset.bind_tokenizer(self.bundle.tokenizer)
        if self.bundle.is_sdxl:
            self.dataset.bind_sdxl(self.bundle.tokenizer_2)
        d = cfg.dataset
        needed_later = (  # something renders or saves the whole model: the VAE and encoders stay
            (cfg.eval.enabled and bool(cfg.eval.prompts))
            or keeps_whole_model(cfg.network)
            or sampling_enabled(cfg.sample)
        )
        latents_cached = d.cache_latents or d.cache_latents_to_disk
        if latents_cached:
            cache_latents(self.dataset, self.bundle, cfg, self.precision, device, decoder_needed=needed_later)
        text_cached = d.cache_text_encoder_outputs
        if text_cached:
            cache_text_outputs(self.dataset, self.bundle, cfg, self.precision, device)
        self.held_out = held_out_for(self.dataset, self.bundle, cfg, text_cached)  # before the VAE leaves
        if latents_cached or text_cached:
            park_unused(self.bundle, needed_later, latents_cached, text_cached)
        set_seed(cfg.seed)  # the LoRA's initial weights depend on the seed alone, not on what loaded before
        self.network = build_network(self.bundle, cfg.network)
        self.dataset.bind_tokenizer(self.bundle.tokenizer, self.network.caption_ids)
        place_trained_models(self.bundle, self.network, cfg, self.precision, device, text_cached)
        if device.type == "cpu" and self.precision.weight_dtype == torch.float32 and not cfg.training.compile:
            speed_up_cpu_training(self.bundle.unet)  # a compiled UNet gets its convolutions from inductor
            for model in (self.bundle.unet, self.bundle.text_encoder, self.bundle.text_encoder_2):
                if model is not None:
                    fuse_lora_layers(model)
        self.lrs = cfg.optimizer.part_lrs
        self.optimizer = build_optimizer(
            optimizer_groups(self.network, self.bundle, cfg.optimizer), cfg.optimizer.name, cfg.optimizer.args
        )
        self.lr_scheduler = build_scheduler(
            self.optimizer, cfg.scheduler, self.plan.max_train_steps, self.accelerator.num_processes
        )
        self.loader = self.accelerator.prepare_data_loader(self._raw_loader)
        self.optimizer, self.lr_scheduler = self.accelerator.prepare(self.optimizer, self.lr_scheduler)
        if self.precision.trained_dtype == torch.float16 and self.accelerator.scaler is not None:
            allow_fp16_gradients(self.accelerator.scaler)

    def describe_lrs(self) -> str:
        unet, te = self.lrs
        second = self.cfg.optimizer.text_encoder_2_lr
        if second is not None:
            return f"UNet {unet:g}, text encoders {te:g} / {second:g}"
        return f"UNet {unet:g}, text encoder {te:g}"

    def _facts(self, progress: Progress) -> dict:
        return {
            "steps": progress.step,
            "epoch": progress.epoch,
            "num_epochs": self.plan.num_epochs,
            "max_train_steps": self.plan.max_train_steps,
            "num_batches_per_epoch": self.plan.batches_per_epoch,
            "warmup_steps": warmup_steps(self.cfg.scheduler, self.plan.max_train_steps),
            "optimizer": describe_optimizer(self.optimizer, self.cfg.optimizer.args),
            "dataset": self.dataset.summary(),
            "network": self.network.header(),
            **self.model_facts,
            "mixed_precision": self.precision.mixed_precision,
            "num_processes": self.accelerator.num_processes,
            "config_yaml": OmegaConf.to_yaml(config_for_record(self.cfg)),
        }

    def start_epoch(self, epoch: int, start_batch: int) -> None:
        """Point the data at `epoch` (augmentations and order), starting after `start_batch` batches."""
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        self.sampler.skip(start_batch)
        if hasattr(
            self.loader, "set_epoch"
        ):  # accelerate's pass counter, which it hands to both at each pass
            self.loader.set_epoch(epoch)

    def optimizer_step(self, batch: dict) -> float:
        """One (micro-)batch: loss, backward, and on accumulation boundaries the optimizer and lr steps."""
        cfg, acc = self.cfg, self.accelerator
        encoders = [m for m in (self.bundle.text_encoder, self.bundle.text_encoder_2) if m is not None]
        trained = [self.bundle.unet] if self.network.trains_unet else []
        trained += encoders if self.network.trains_text_encoder else []
        with acc.accumulate(*trained):
            with acc.autocast():
                loss = diffusion_loss(
                    self.bundle,
                    batch,
                    cfg.model.clip_skip,
                    cfg.dataset.prior_loss_weight,
                    cfg.training,
                    train_text_encoder=self.network.trains_text_encoder,
                    noise_scheduler=self.noise_scheduler,
                )
            acc.backward(loss)
            if acc.sync_gradients and cfg.training.max_grad_norm:
                acc.clip_grad_norm_(self.network.parameters(), cfg.training.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach().item()

    def validate(self, step: int) -> None:
        """Log `loss/validation` of the held-out pictures at `step`, with the weights a schedule-free
        optimizer evaluates with (train/validation.py: no random stream or weight is changed)."""
        with averaged_weights(self.optimizer):
            loss = validation_loss(
                self.held_out, self.bundle, self.noise_scheduler, HeldOutCaptions.of(self.dataset),
                self.cfg.model.clip_skip, self.accelerator.autocast,
            )  # fmt: skip
        self.metrics.log({"loss/validation": loss}, step)

    def log_step(self, loss: float, average: float, step: int, seconds: float) -> None:
        logs = {"loss/current": loss, "loss/average": average, "time/step": seconds}
        for group, lr in zip(self.optimizer.param_groups, self.lr_scheduler.get_last_lr(), strict=True):
            logs[lr_log_key(group["name"])] = lr * group.get(
                "layer_scale", 1.0
            )  # D-Adaptation's per-group scale
        adapted = adaptive_rate(self.optimizer)
        if adapted is not None:  # D-Adaptation / Prodigy: the step size they use (kohya's lr/d*lr)
            logs["lr/d*lr"] = adapted
        if torch.cuda.is_available():
            logs["memory/peak_vram_gib"] = torch.cuda.max_memory_allocated() / 2**30
        self.metrics.log(logs, step)

    def _write_lora(self, path: Path, progress: Progress, final: bool = False) -> Path:
        """The network's file at `path`; for the final one, first what else the network saves (e.g. a
        diffusers folder), so that the final file, written last, marks a complete save."""
        dtype = SAVE_DTYPES[self.cfg.training.save_precision]
        with averaged_weights(self.optimizer):  # schedule-free: the averaged weights are the result
            tensors = self.network.state_dict(dtype)
            check_finite(tensors, str(path))
            if final:
                write_final(self.network, path, dtype)
            return self.network.write_file(path, tensors, lora_metadata(self.cfg, self._facts(progress)))

    def _write_state(self, folder: Path, progress: Progress, rngs: list[dict]) -> None:
        tensors = self.network.trainable_tensors()
        check_finite(tensors, str(folder))
        scaler = self.accelerator.scaler.state_dict() if self.accelerator.scaler is not None else None
        progress.lr_step = getattr(self.lr_scheduler, "scheduler", self.lr_scheduler).last_epoch
        with atomic_directory(folder) as tmp:
            write_state_files(
                tmp, progress, fits_record(self), tensors, self.optimizer.state_dict(), scaler, rngs
            )

    def save_checkpoint(self, name: str, progress: Progress, state: bool | None = None) -> Path:
        """Write LoRA file `name` (and its state with save_state, or when `state`), then apply keep-newest."""
        path = self.run_dir / name
        with_state = self.cfg.training.save_state if state is None else state
        rngs = every_process_rng() if with_state else []
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            if name not in progress.saved:
                progress.saved.append(name)
            write_lora_and_state(
                path,
                lambda p: self._write_lora(p, progress),
                (lambda f: self._write_state(f, progress, rngs)) if with_state else None,
            )
            progress.saved = prune(
                self.run_dir, self.cfg.training, self.cfg.name, progress.saved, progress.epoch, progress.step
            )
        return path

    def save_final(self, progress: Progress) -> Path:
        """The final `NAME.safetensors` (and `NAME-state/` with save_state, so the run can be extended)."""
        path = self.run_dir / final_file_name(self.cfg.name)
        state = self.cfg.training.save_state
        rngs = every_process_rng() if state else []
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            write_lora_and_state(
                path,
                lambda p: self._write_lora(p, progress, final=True),
                (lambda f: self._write_state(f, progress, rngs)) if state else None,
            )
        return path


def fit(trainer: Trainer, start: Path | None) -> RunResult:
    """Load the model, restore the state if resuming, run the loop; the LoRA files are written."""
    trainer.load_model()
    progress = (
        restore_progress(trainer, load_state(start, trainer.accelerator.process_index))
        if start
        else Progress()
    )
    began, first_step = time.time(), progress.step
    with graceful_stop(enabled=trainer.accelerator.is_local_main_process) as stop:
        final = run_loop(trainer, progress, stop)
    epoch_files = [trainer.run_dir / f for f in progress.saved]
    return RunResult(
        trainer.run_dir, final, epoch_files, final_loss=progress.average, steps=progress.step - first_step,
        seconds=time.time() - began, is_main=trainer.accelerator.is_main_process,
    )  # fmt: skip


def train(cfg: TrainConfig, run_dir: Path) -> RunResult:
    """Train the network that `cfg` describes, writing everything into `run_dir`.

    Under a multi-process launch the main process writes the shared files (toy dataset, config, LoRA files,
    grid); the others wait for the toy dataset, then train on their share of the batches.
    """
    if cfg.dataset.source != "toy":
        check_outside_pictures(run_dir, cfg.dataset.train_dir, cfg.dataset.reg_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = shared_seed(cfg)
    is_main = launch_state().is_main_process
    with lock_run_folder(run_dir) if is_main else nullcontext():
        start = open_run(cfg, run_dir, is_main)
        trainer = Trainer(cfg, run_dir)
        if (done := finished_result(trainer, start)) is not None:
            return done
        cfg = trainer.cfg  # with the toy dataset's folders filled in
        if is_main:
            write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        start_trackers(trainer.accelerator, cfg.logger, run_dir, cfg.name, config_for_record(cfg))
        error: BaseException | None = None
        try:
            result = fit(trainer, start)
            if cfg.eval.enabled and cfg.eval.prompts and is_main:
                evaluate_or_say_what_is_saved(trainer, result)
            # before the trackers close: a wandb sweep agent reads it from the run
            if is_main and is_measured(cfg.objective, cfg.eval.enabled):
                result.objective = log_objective(
                    cfg.objective, run_dir, trainer.metrics, trainer.plan.max_train_steps
                )
            if is_main:
                log_lora(trainer.metrics, result, cfg, trainer.plan.max_train_steps)
        except BaseException as caught:  # Ctrl-C and SIGTERM too: the tracker records how the run ended
            error = caught
            raise
        finally:
            close_trackers(trainer.accelerator, error)
            if is_main:
                write_report_after_run(run_dir, error)
    return result
