"""What a run is built from before its Trainer: the launch and its shared seed, the toy dataset's folders, the
batch loader, the config as the LoRA header records it, and the metrics names of the learning rates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object, parse_flag_from_env
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from data.toy.dataset import concept_dataset_dirs, write_concept_dataset
from train.batch_order import EpochBatchSampler, ShuffledBatchSampler
from train.bucket_batches import BucketBatchSampler
from train.config import TrainConfig, resolve_seed
from train.dataset import DreamBoothDataset, collate
from train.state import capture_rng


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
    """The config as the user gave it: without the run folder, the toy dataset's place inside it, `resume`
    (how the run was started, not what it trains) nor `sample`, so equal configs give byte-identical LoRAs."""
    record = OmegaConf.to_container(OmegaConf.structured(cfg))
    record.pop("output_dir", None)
    record.pop("resume", None)
    record.pop("sample", None)  # what the run shows along the way, not what it trains
    record.pop("objective", None)  # what a sweep measures, not what the run trains
    if cfg.dataset.source == "toy":
        record["dataset"]["train_dir"] = record["dataset"]["reg_dir"] = None
    return record


def build_loader(dataset: DreamBoothDataset, cfg: TrainConfig) -> tuple[DataLoader, EpochBatchSampler]:
    """Batches in an order fixed by (seed, epoch); with enable_bucket, each batch holds one bucket."""
    batch_size = cfg.training.batch_size
    if cfg.dataset.enable_bucket:
        sampler: EpochBatchSampler = BucketBatchSampler(dataset.sample_buckets(), batch_size, cfg.seed)
    else:
        sampler = ShuffledBatchSampler(len(dataset), batch_size, cfg.seed)
    # A generator of its own: creating an iterator then never draws from the global stream the step uses.
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.dataset.num_workers,
        generator=torch.Generator().manual_seed(cfg.seed),
        persistent_workers=cfg.dataset.num_workers > 0,
    )
    return loader, sampler


def launch_state() -> PartialState:
    """accelerate's view of this launch (process index, device) as the Accelerator will have it.

    A bare PartialState() ignores ACCELERATE_USE_CPU, and the first one made is shared by all later ones: a
    CPU launch of two processes would then see two lone main processes.
    """
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def shared_seed(cfg: TrainConfig) -> TrainConfig:
    """seed=-1 picks a random seed; every process of a launch gets the main process's pick."""
    cfg = resolve_seed(cfg)
    if launch_state().num_processes > 1:
        box = [cfg.seed]
        broadcast_object_list(box)
        cfg = dataclasses.replace(cfg, seed=box[0])
    return cfg


# kohya's log keys per parameter group (`_plus`: LoRA+ up-weights)
# kohya's names; SDXL's encoders at their own rates are kohya's "textencoder 1" / "textencoder 2"
LR_LOG_KEYS = {
    "te": "lr/textencoder", "te_plus": "lr/textencoder_plus",
    "te1": "lr/textencoder1", "te1_plus": "lr/textencoder1_plus",
    "te2": "lr/textencoder2", "te2_plus": "lr/textencoder2_plus",
}  # fmt: skip


def lr_log_key(group_name: str) -> str:
    """The metrics key of an optimizer group's lr: lr/unet, lr/textencoder, lr/unet_block05, …"""
    return LR_LOG_KEYS.get(group_name, f"lr/{group_name}")


def every_process_rng() -> list[dict]:
    """Each process's random streams, in process order (called by every process; one entry when alone)."""
    return gather_object([capture_rng()])
