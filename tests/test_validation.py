"""The validation split (which pictures are held out, and that training never sees them) and the validation
loss (the same number every time, without touching the training's random streams or modes)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from data.errors import DatasetError
from data.toy.dataset import write_concept_dataset
from inference.models.loading import load_base_model
from train.config import DatasetConfig, ModelConfig, TrainConfig, TrainingConfig
from train.dataset import DreamBoothDataset
from train.errors import ConfigError
from train.validation import (
    HeldOutCaptions,
    build_held_out,
    is_validation_epoch,
    is_validation_step,
    validation_loss,
    validation_timesteps,
)
from train.validation_split import check_validation_keys


@pytest.fixture(scope="module")
def toy_folders(tmp_path_factory) -> tuple[Path, Path]:
    train, reg = write_concept_dataset(tmp_path_factory.mktemp("toy"), n_images=10, repeats=2, reg_images=6)
    return train, reg


def dataset(
    folders, split: float = 0.3, seed: int = 0, validation_seed: int | None = None
) -> DreamBoothDataset:
    train, reg = folders
    config = DatasetConfig(
        train_dir=str(train),
        reg_dir=str(reg),
        resolution=64,
        validation_split=split,
        validation_seed=validation_seed,
    )
    return DreamBoothDataset(config, seed=seed)


def held_out_names(ds: DreamBoothDataset) -> set[str]:
    return {path.name for subset in ds.validation_subsets for path in subset.images}


def test_held_out_pictures_never_reach_a_training_sample(toy_folders):
    ds = dataset(toy_folders)
    held = {path for subset in ds.validation_subsets for path in subset.images}
    assert len(held) == 3  # round(10 x 0.3) of the one training folder
    sampled = {ds.records[index].path for index in ds._index}  # every sample of an epoch, repeats included
    assert not held & sampled
    # 7 pictures x 2 repeats, and as many reg samples (the balance counts only the trained pictures)
    assert len(ds) == 2 * 7 * 2
    assert ds.summary()["num_train_images"] == 7
    # regularization pictures stay out of the split
    assert all(not subset.is_reg for subset in ds.validation_subsets)
    assert len([r for r in ds.records if r.is_reg]) == 6


def test_the_split_is_stable_for_a_seed_and_moves_with_it(toy_folders):
    first = held_out_names(dataset(toy_folders, seed=5))
    assert held_out_names(dataset(toy_folders, seed=5)) == first
    assert held_out_names(dataset(toy_folders, seed=0, validation_seed=5)) == first  # validation_seed wins
    others = {frozenset(held_out_names(dataset(toy_folders, seed=s))) for s in range(6)}
    assert len(others) > 1


def test_a_split_that_leaves_no_training_or_no_validation_picture_is_refused(toy_folders):
    with pytest.raises(DatasetError, match="holds out no picture"):
        dataset(toy_folders, split=0.01)
    with pytest.raises(DatasetError, match="leaving none to train on"):
        dataset(toy_folders, split=0.99)
    with pytest.raises(ConfigError, match="dataset.validation_split=1.0"):
        check_validation_keys(DatasetConfig(validation_split=1.0), TrainingConfig())
    with pytest.raises(ConfigError, match="training.validate_every_n_steps=0"):
        check_validation_keys(DatasetConfig(), TrainingConfig(validate_every_n_steps=0))


def test_kohya_timesteps_and_cadence():
    assert validation_timesteps(1000) == [200, 400, 600, 800]
    every_3 = TrainingConfig(validate_every_n_steps=3)
    assert [s for s in range(1, 10) if is_validation_step(every_3, s)] == [3, 6, 9]
    assert not is_validation_step(TrainingConfig(), 3)  # null: no step validation
    assert all(is_validation_epoch(TrainingConfig(), e) for e in (1, 2, 3))  # null: every epoch (kohya)
    assert [e for e in range(1, 7) if is_validation_epoch(TrainingConfig(validate_every_n_epochs=2), e)] == [
        2,
        4,
        6,
    ]


@pytest.fixture(scope="module")
def measured(toy_folders):
    bundle = load_base_model(ModelConfig(kind="toy"))
    bundle.freeze()
    ds = dataset(toy_folders)
    ds.bind_tokenizer(bundle.tokenizer)
    pictures = build_held_out(ds, bundle, ds.config, seed=42)
    return bundle, ds, pictures


def _loss(bundle, ds, pictures) -> float:
    return validation_loss(pictures, bundle, bundle.noise_scheduler, HeldOutCaptions.of(ds))


def test_validation_loss_is_deterministic_and_leaves_the_random_streams_and_modes_alone(measured):
    bundle, ds, pictures = measured
    assert len(pictures) == 3 and all(p.latent_mean.shape == (4, 8, 8) for p in pictures)
    bundle.unet.train()
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    streams = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    first = _loss(bundle, ds, pictures)
    assert torch.equal(torch.get_rng_state(), streams[0]) and random.getstate() == streams[1]
    assert np.array_equal(np.random.get_state()[1], streams[2])
    assert bundle.unet.training and not bundle.text_encoder.training  # each module's mode put back
    torch.randn(1000)  # the training's stream moves on: the measurement does not
    assert _loss(bundle, ds, pictures) == first
    # built again from the files, with the same seed: the same number
    assert _loss(bundle, ds, build_held_out(ds, bundle, ds.config, seed=42)) == first
    assert _loss(bundle, ds, build_held_out(ds, bundle, ds.config, seed=43)) != first


def test_validation_loss_moves_with_the_weights(measured):
    bundle, ds, pictures = measured
    before = _loss(bundle, ds, pictures)
    weight = bundle.unet.conv_out.weight
    kept = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(0.5)
    try:
        assert _loss(bundle, ds, pictures) > before  # a damaged model denoises worse
    finally:
        with torch.no_grad():
            weight.copy_(kept)
    assert _loss(bundle, ds, pictures) == before


def test_a_train_config_holds_kohyas_keys():
    cfg = TrainConfig()
    assert cfg.dataset.validation_split == 0.0 and cfg.dataset.validation_seed is None
    assert cfg.training.validate_every_n_steps is None and cfg.training.validate_every_n_epochs is None
