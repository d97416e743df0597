"""A training run from a validated config: data, model, network, the loop on accelerate, files, eval."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from data.toy.dataset import concept_dataset_dirs, write_concept_dataset
from train.bucket_batches import BucketBatchSampler
from train.config import TrainConfig
from train.dataset import DreamBoothDataset, collate
from train.eval import render_eval_grid, score_metrics, write_scores
from train.models.bundle import ModelBundle
from train.models.loading import load_base_model
from train.network.lora import LoRANetwork
from train.network.lora_file import SAVE_DTYPES, epoch_file_name, lora_metadata, save_lora
from train.optim import build_optimizer, build_scheduler, describe_optimizer, warmup_steps
from train.schedule import StepPlan, plan_steps
from train.step import diffusion_loss
from train.tracking import MetricsLog, start_trackers, tracker_name


@dataclass
class RunResult:
    """What a finished run wrote and how it went."""

    run_dir: Path
    lora_path: Path
    epoch_files: list[Path] = field(default_factory=list)
    grid_path: Path | None = None
    scores_path: Path | None = None
    scores: dict | None = None
    final_loss: float = float("nan")
    steps: int = 0
    seconds: float = 0.0
    is_main: bool = True  # False in the other processes of a multi-process launch: they print nothing


def prepare_dataset_dirs(cfg: TrainConfig, run_dir: Path, write: bool = True) -> TrainConfig:
    """For `dataset.source=toy`, write the toy concept dataset into the run folder and point at it.

    write=False only points at it: another process of the same launch writes it.
    """
    d = cfg.dataset
    if d.source != "toy":
        return cfg
    root = run_dir / "dataset"
    if write:
        write_concept_dataset(
            root, d.toy_concept, d.toy_images, d.toy_repeats, cfg.seed, d.resolution, d.toy_reg_images
        )
    train_dir, reg_dir = concept_dataset_dirs(root, d.toy_reg_images)
    dataset = dataclasses.replace(
        cfg.dataset, train_dir=str(train_dir), reg_dir=str(reg_dir) if reg_dir else None
    )
    return dataclasses.replace(cfg, dataset=dataset)


def config_for_record(cfg: TrainConfig) -> dict:
    """The config as the user gave it: without the run folder, nor the toy dataset's place inside it,
    so that equal configs record equal text (and give byte-identical LoRA files)."""
    record = OmegaConf.to_container(OmegaConf.structured(cfg))
    record.pop("output_dir", None)
    if cfg.dataset.source == "toy":
        record["dataset"]["train_dir"] = record["dataset"]["reg_dir"] = None
    return record


def build_loader(
    dataset: DreamBoothDataset, cfg: TrainConfig
) -> tuple[DataLoader, BucketBatchSampler | None]:
    """Shuffled batches; with enable_bucket, batches of one bucket each (len = kohya's per-bucket count)."""
    batch_size, workers = cfg.training.batch_size, cfg.dataset.num_workers
    if not cfg.dataset.enable_bucket:
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            collate_fn=collate,
            num_workers=workers,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        return loader, None
    sampler = BucketBatchSampler(dataset.sample_buckets(), batch_size, cfg.seed)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers), sampler


class Trainer:
    """Holds the pieces of one run; `fit()` runs the loop and writes the LoRA files."""

    def __init__(self, cfg: TrainConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        t = cfg.training
        self.accelerator = Accelerator(
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            mixed_precision=t.mixed_precision,
            log_with=tracker_name(cfg.logger),
            project_dir=str(run_dir),
        )
        with self.accelerator.main_process_first():  # one process writes the toy dataset, the others wait
            cfg = self.cfg = prepare_dataset_dirs(cfg, run_dir, write=self.accelerator.is_main_process)
        set_seed(cfg.seed)
        # The folders are read first: a layout mistake is reported before the slow model load.
        self.dataset = DreamBoothDataset(cfg.dataset, seed=cfg.seed)
        self.bundle: ModelBundle = load_base_model(cfg.model)
        self.bundle.freeze()
        self.dataset.bind_tokenizer(self.bundle.tokenizer)
        self.network = LoRANetwork(self.bundle, cfg.network)
        self._move_models()
        opt = cfg.optimizer
        unet_lr = opt.unet_lr if opt.unet_lr is not None else opt.lr
        te_lr = opt.text_encoder_lr if opt.text_encoder_lr is not None else opt.lr
        self.optimizer = build_optimizer(self.network.param_groups(unet_lr, te_lr), opt)
        loader, self.bucket_sampler = build_loader(self.dataset, cfg)
        self.plan: StepPlan = plan_steps(t, len(loader), self.accelerator.num_processes)
        self.lr_scheduler = build_scheduler(self.optimizer, cfg.scheduler, self.plan.max_train_steps)
        self.loader = self.accelerator.prepare_data_loader(loader)
        self.optimizer, self.lr_scheduler = self.accelerator.prepare(self.optimizer, self.lr_scheduler)
        self.metrics = MetricsLog(self.accelerator, run_dir / "metrics.jsonl")

    def _move_models(self) -> None:
        device, bundle, t = self.accelerator.device, self.bundle, self.cfg.training
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(t.mixed_precision, torch.float32)
        bundle.vae.to(device)
        if weight_dtype != torch.float32:  # the frozen VAE only encodes: half precision is enough
            bundle.vae.to(dtype=weight_dtype)
        for model in (bundle.unet, bundle.text_encoder):
            model.to(device)
        if t.gradient_checkpointing:
            bundle.unet.enable_gradient_checkpointing()
            if self.network.text_encoder_layers:
                bundle.text_encoder.gradient_checkpointing_enable()
        # Trained models run in train mode so LoRA dropout is active; their own dropout rates are 0 in SD.
        bundle.unet.train(bool(self.network.unet_layers))
        bundle.text_encoder.train(bool(self.network.text_encoder_layers))

    def _facts(self, step: int, epoch: int) -> dict:
        return {
            "steps": step,
            "epoch": epoch,
            "num_epochs": self.plan.num_epochs,
            "max_train_steps": self.plan.max_train_steps,
            "num_batches_per_epoch": self.plan.batches_per_epoch,
            "warmup_steps": warmup_steps(self.cfg.scheduler, self.plan.max_train_steps),
            "optimizer": describe_optimizer(self.optimizer, self.cfg.optimizer),
            "dataset": self.dataset.summary(),
            "base_model_version": self.bundle.base_model_version,
            "model_name": self.bundle.source,
            "num_processes": self.accelerator.num_processes,
            "config_yaml": OmegaConf.to_yaml(config_for_record(self.cfg)),
        }

    def save(self, path: Path, step: int, epoch: int) -> Path:
        """Write the LoRA as it is now (main process only)."""
        tensors = self.network.state_dict(SAVE_DTYPES[self.cfg.training.save_precision])
        return save_lora(path, tensors, lora_metadata(self.cfg, self._facts(step, epoch)))

    def _optimizer_step(self, batch: dict) -> float:
        cfg = self.cfg
        models = [
            m
            for m, on in (
                (self.bundle.unet, self.network.unet_layers),
                (self.bundle.text_encoder, self.network.text_encoder_layers),
            )
            if on
        ]
        with self.accelerator.accumulate(*models):
            with self.accelerator.autocast():
                loss = diffusion_loss(
                    self.bundle,
                    batch,
                    cfg.model.clip_skip,
                    cfg.training.noise_offset,
                    cfg.dataset.prior_loss_weight,
                    cfg.training.min_snr_gamma,
                    (cfg.training.multires_noise_iterations, cfg.training.multires_noise_discount),
                )
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients and cfg.training.max_grad_norm:
                params = [p for g in self.optimizer.param_groups for p in g["params"]]
                self.accelerator.clip_grad_norm_(params, cfg.training.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach().item()

    def _step_logs(self, loss: float, average: float) -> dict[str, float]:
        logs = {"loss/current": loss, "loss/average": average}
        for group, lr in zip(self.optimizer.param_groups, self.lr_scheduler.get_last_lr(), strict=True):
            logs["lr/unet" if group.get("name") == "unet" else "lr/textencoder"] = lr
        return logs

    def fit(self) -> RunResult:
        """Run all epochs; save every N epochs and the final file; return what was written."""
        cfg, plan, acc = self.cfg, self.plan, self.accelerator
        start, step, losses, epoch_files = time.time(), 0, [], []
        bar = tqdm(total=plan.max_train_steps, desc="training", disable=not acc.is_local_main_process)
        for epoch in range(1, plan.num_epochs + 1):
            self.dataset.set_epoch(epoch)
            if self.bucket_sampler is not None:
                self.bucket_sampler.set_epoch(epoch)
            epoch_losses = []
            for batch in self.loader:
                loss = self._optimizer_step(batch)
                epoch_losses.append(loss)
                if not acc.sync_gradients:
                    continue
                step += 1
                losses.append(loss)
                average = sum(losses[-50:]) / len(losses[-50:])
                self.metrics.log(self._step_logs(loss, average), step)
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{average:.4f}")
                if step >= plan.max_train_steps:
                    break
            self.metrics.log({"loss/epoch_average": sum(epoch_losses) / max(len(epoch_losses), 1)}, step)
            done = step >= plan.max_train_steps or epoch == plan.num_epochs
            every = cfg.training.save_every_n_epochs
            if not done and every and epoch % every == 0 and acc.is_main_process:
                epoch_files.append(self.save(self.run_dir / epoch_file_name(cfg.name, epoch), step, epoch))
            if done:
                break
        bar.close()
        acc.wait_for_everyone()
        final = self.run_dir / f"{cfg.name}.safetensors"
        if acc.is_main_process:
            self.save(final, step, epoch)
        final_loss = sum(losses[-50:]) / max(len(losses[-50:]), 1)
        return RunResult(
            self.run_dir, final, epoch_files, final_loss=final_loss, steps=step, seconds=time.time() - start,
            is_main=acc.is_main_process,
        )  # fmt: skip


def train(cfg: TrainConfig, run_dir: Path) -> RunResult:
    """Train the network that `cfg` describes, writing everything into `run_dir`.

    Under a multi-process launch the main process writes the shared files (toy dataset, config, LoRA files,
    grid); the others wait for the toy dataset, then train on their share of the batches.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run_dir)
    cfg = trainer.cfg  # with the toy dataset's folders filled in
    if trainer.accelerator.is_main_process:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)), encoding="utf-8")
    start_trackers(trainer.accelerator, cfg.logger, run_dir, cfg.name, config_for_record(cfg))
    try:
        result = trainer.fit()
        if cfg.eval.enabled and cfg.eval.prompts and trainer.accelerator.is_main_process:
            trainer.network.remove()
            outcome = render_eval_grid(trainer.bundle, cfg, result.lora_path, run_dir / "eval")
            result.grid_path, result.scores = outcome.grid_path, outcome.scores
            if outcome.scores is not None:
                result.scores_path = write_scores(outcome.scores, run_dir / "scores.json")
                trainer.metrics.log(score_metrics(outcome.scores), result.steps)
    finally:
        trainer.accelerator.end_training()
    return result
