"""The real config tree composes, validates once, and rejects bad values with the valid choices."""

from __future__ import annotations

import pytest
import torch

from train.errors import ConfigError
from train.optim import build_optimizer, build_scheduler
from train.schedule import plan_steps

SCHEDULERS = ["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"]


def test_char_lora_experiment_overrides_only_what_it_changes(compose_config):
    cfg = compose_config("+experiment=char_lora")
    assert cfg.name == "char_lora" and cfg.model.kind == "toy" and cfg.dataset.source == "toy"
    assert cfg.network.dim == 8 and cfg.network.alpha == 8.0
    assert cfg.optimizer.unet_lr == 1e-3 and cfg.optimizer.text_encoder_lr == 5e-4
    assert cfg.optimizer.weight_decay == 0.01  # untouched group default
    assert cfg.eval.prompts and cfg.eval.weights == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_config_builds(compose_config, name):
    cfg = compose_config(f"scheduler={name}", "dataset.train_dir=x")
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([{"params": [param], "lr": 1.0}], cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.scheduler, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    if name == "constant":
        assert lrs == [1.0] * 100
    else:
        assert lrs[0] == 0.0 and lrs[5] == pytest.approx(1.0)  # 5 % warmup, then the full rate
    if name in ("linear", "cosine", "polynomial"):
        assert lrs[-1] < 0.1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.kind=big", "tiny, sd15_arch, pretrained"),
        ("training.mixed_precision=fp8", "no, fp16, bf16"),
        ("logger.kind=mlflow", "wandb, tensorboard, none"),
        ("network.dim=0", "network.dim=0 must be a positive number"),
        ("+network.rank=4", "valid keys: module, dim, alpha"),
        ("dataset.resolution=500", "multiple of 8"),
        ("training.min_snr_gamma=-1", "min_snr_gamma=-1.0 must be >= 0"),
        ("eval.batch_size=0", "eval.batch_size=0 must be a positive number"),
        ("eval.sampler=euler_z", "not a known sampler; choose one of: DPM\\+\\+ 2M, DPM\\+\\+ SDE"),
        ("eval.sampler='DPM++ 2M Karras'", "the schedule goes in eval.scheduler"),
        ("eval.scheduler=wobbly", "not a known schedule type; choose one of: Automatic, Uniform, Karras"),
    ],
)
def test_bad_values_name_the_key_and_the_choices(compose_config, override, message):
    with pytest.raises(ConfigError, match=message):
        compose_config("dataset.train_dir=x", override)


def test_eval_sampler_takes_any_a1111_name(compose_config):
    cfg = compose_config("dataset.train_dir=x")
    assert (cfg.eval.sampler, cfg.eval.scheduler) == ("euler", "Automatic")
    for name in ("Euler a", "k_dpmpp_2m", "dpmpp_2m_sde", "DDIM", "lcm"):
        assert compose_config("dataset.train_dir=x", f"eval.sampler='{name}'").eval.sampler == name
    cfg = compose_config("dataset.train_dir=x", "eval.sampler='DPM++ 2M'", "eval.scheduler=karras")
    assert cfg.eval.scheduler == "karras"


def test_epochs_win_over_steps_and_steps_alone_work(compose_config):
    cfg = compose_config("dataset.train_dir=x", "training.max_train_epochs=3", "training.max_train_steps=5")
    plan = plan_steps(cfg.training, batches_per_epoch=10)
    assert (plan.num_epochs, plan.max_train_steps) == (3, 30)
    cfg = compose_config(
        "dataset.train_dir=x", "training.max_train_epochs=null", "training.max_train_steps=25"
    )
    plan = plan_steps(cfg.training, batches_per_epoch=10)
    assert (plan.num_epochs, plan.max_train_steps) == (3, 25)
    cfg = compose_config(
        "dataset.train_dir=x", "training.max_train_epochs=2", "training.gradient_accumulation_steps=4"
    )
    assert plan_steps(cfg.training, batches_per_epoch=10).steps_per_epoch == 3
