"""The real config tree composes, validates once, and rejects bad values with the valid choices."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from train.config import DatasetConfig, TrainConfig, command_line_keys, resolve_seed, validate
from train.errors import ConfigError
from train.optim import build_scheduler
from train.optimizers import build_optimizer
from train.schedule import plan_steps

REPO = Path(__file__).resolve().parents[1]
SCHEDULERS = [
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
    "cosine_with_min_lr", "rex",
]  # fmt: skip


def test_char_lora_experiment_overrides_only_what_it_changes(compose_config):
    cfg = compose_config("+experiment=char_lora")
    assert cfg.name == "char_lora" and cfg.model.kind == "toy" and cfg.dataset.source == "toy"
    assert cfg.network.dim == 8 and cfg.network.alpha == 8.0
    assert cfg.optimizer.unet_lr == 1.4e-3 and cfg.optimizer.text_encoder_lr == 7e-4
    assert cfg.training.batch_size == 16
    assert cfg.optimizer.args["weight_decay"] == 0.01  # untouched group default
    assert cfg.eval.prompts and cfg.eval.weights == [0.0, 0.5, 1.0]


def lr_curve(optimizer: torch.optim.Optimizer, schedule, steps: int) -> list[float]:
    """The rate of each of `steps` optimizer steps under `schedule`."""
    scheduler = build_scheduler(optimizer, schedule, total_steps=steps)
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_config_builds(compose_config, name):
    cfg = compose_config(f"scheduler={name}", "dataset.train_dir=x")
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([{"params": [param], "lr": 1.0}], cfg.optimizer.name, cfg.optimizer.args)
    lrs = lr_curve(optimizer, cfg.scheduler, 100)
    if name == "constant":
        assert lrs == [1.0] * 100
    else:
        assert lrs[0] == 0.0 and lrs[5] == pytest.approx(1.0)  # 5 % warmup, then the full rate
    if name in ("linear", "cosine", "polynomial", "rex"):
        assert lrs[-1] < 0.1


BASE_LR = 2.0


def expected_factor(name: str, step: int, total: int, warmup: int, cycles: int, power: float, floor: float):
    """Each schedule's formula, written out independently of the code under test."""
    if name == "constant":
        return 1.0
    if step < warmup:
        return step / warmup
    if name == "constant_with_warmup":
        return 1.0
    p = (step - warmup) / (total - warmup)
    if name == "linear":
        return max(0.0, 1 - p)
    if name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if name == "cosine_with_restarts":
        return 0.0 if p >= 1 else 0.5 * (1 + math.cos(math.pi * ((cycles * p) % 1.0)))
    if name == "polynomial":
        end = 1e-7 / BASE_LR  # diffusers' lr_end is an absolute rate
        return (1 - end) * (1 - p) ** power + end
    if name == "cosine_with_min_lr":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * cycles * p))
    if name == "rex":
        return floor + (1 - floor) * ((1 - p) / (0.1 + 0.9 * (1 - p)) if p < 1 else 0.0)
    raise AssertionError(name)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_each_schedule_follows_its_formula_at_10_points(compose_config, name):
    knobs = {"cosine_with_restarts": ["scheduler.num_cycles=3"], "polynomial": ["scheduler.power=2"]}
    knobs |= {"cosine_with_min_lr": ["scheduler.num_cycles=2", "scheduler.min_lr_ratio=0.1"]}
    knobs |= {"rex": ["scheduler.min_lr_ratio=0.05"]}
    warmup_override = [] if name == "constant" else ["scheduler.warmup_steps=10"]
    cfg = compose_config(f"scheduler={name}", "dataset.train_dir=x", *warmup_override, *knobs.get(name, []))
    lrs = lr_curve(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR), cfg.scheduler, 100)
    s = cfg.scheduler
    points = [0, 5, 10, 23, 37, 50, 61, 75, 88, 99]
    warmup = 0 if name == "constant" else 10
    expected = [
        BASE_LR * expected_factor(name, k, 100, warmup, s.num_cycles, s.power, s.min_lr_ratio) for k in points
    ]
    assert [lrs[k] for k in points] == pytest.approx(expected, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["scheduler=cosine", "scheduler.min_lr_ratio=0.1"],
            "applies to scheduler=cosine_with_min_lr or rex",
        ),
        (["scheduler=linear", "scheduler.power=2"], "applies to scheduler=polynomial only"),
        (["scheduler=cosine", "scheduler.num_cycles=2"], "applies to scheduler=cosine_with_restarts or"),
        (["scheduler=rex", "scheduler.min_lr_ratio=1.5"], r"must be in \[0, 1\)"),
    ],
)
def test_a_schedule_knob_that_the_schedule_does_not_use_is_refused(compose_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_config("dataset.train_dir=x", *overrides)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.kind=big", "tiny, tiny_sdxl, sd15_arch, sdxl_arch, pretrained"),
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
        ("eval.steps=0", "eval.steps=0 must be a positive number"),
        ("training.max_grad_norm=-1", "max_grad_norm=-1.0 must be >= 0 \\(0 = no clipping"),
        ("scheduler.warmup_steps=-5", "scheduler.warmup_steps=-5.0 must be >= 0"),
        ("dataset.num_workers=-1", "dataset.num_workers=-1 must be >= 0"),
        ("network.alpha=0", "network.alpha=0.0 must be > 0 for network.module=lora"),
        ("network.alpha=-8", "network.alpha=-8.0 must be > 0"),
    ],
)
def test_bad_values_name_the_key_and_the_choices(compose_config, override, message):
    with pytest.raises(ConfigError, match=message):
        compose_config("dataset.train_dir=x", override)


def test_restarts_need_one_cycle_at_least(compose_config):
    with pytest.raises(ConfigError, match="scheduler.num_cycles=0 must be >= 1"):
        compose_config("dataset.train_dir=x", "scheduler=cosine_with_restarts", "scheduler.num_cycles=0")


def test_a_short_betas_list_is_one_config_error():
    weights = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ConfigError, match=r"a list in \{'betas': \[0.9\]\} is too short"):
        build_optimizer([{"params": weights, "lr": 1e-3}], "AdamW", {"betas": [0.9]})


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


def test_processes_share_the_epoch_batches(compose_config):
    """Each of N processes draws ceil(batches / N) of an epoch's batches (kohya divides the same way)."""
    cfg = compose_config("dataset.train_dir=x", "training.max_train_epochs=2")
    plan = plan_steps(cfg.training, batches_per_epoch=11, num_processes=2)
    assert (plan.batches_per_epoch, plan.steps_per_epoch, plan.max_train_steps) == (6, 6, 12)


def _typed(tmp_path, *overrides: str, typed: tuple[str, ...] | None = None):
    """Compose like `python -m train`; `typed` are the overrides the user typed (all of them by default)."""
    from hydra import compose, initialize_config_dir

    from train.config import load_config

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["dataset.train_dir=x", *overrides])
    cfg.output_dir = str(tmp_path / "run")
    return load_config(cfg, list(overrides if typed is None else typed))


def test_the_run_length_typed_on_the_command_line_wins(tmp_path):
    steps = _typed(tmp_path, "training.max_train_steps=2").training
    assert (steps.max_train_epochs, steps.max_train_steps) == (None, 2)  # the default 10 epochs no longer win
    plan = plan_steps(steps, batches_per_epoch=10)
    assert (plan.num_epochs, plan.max_train_steps) == (1, 2)
    experiment = _typed(tmp_path, "+experiment=char_lora", "++training.max_train_steps=7").training
    assert (experiment.max_train_epochs, experiment.max_train_steps) == (None, 7)
    epochs = _typed(tmp_path, "training.max_train_epochs=3", "training.max_train_steps=5", typed=("x=1",))
    assert (epochs.training.max_train_epochs, epochs.training.max_train_steps) == (3, 5)  # from files: kohya
    typed_epochs = _typed(tmp_path, "training.max_train_epochs=3", "training.max_train_steps=5", typed=())
    assert plan_steps(typed_epochs.training, 10).max_train_steps == 30
    nulled = _typed(tmp_path, "training.max_train_epochs=null", "training.max_train_steps=3").training
    assert (nulled.max_train_epochs, nulled.max_train_steps) == (None, 3)


def test_steps_and_epochs_both_typed_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="max_train_epochs=3 and training.max_train_steps=5 are both given"):
        _typed(tmp_path, "training.max_train_epochs=3", "training.max_train_steps=5")


def test_command_line_keys_drop_prefixes_and_deletions():
    keys = command_line_keys(["+a.b=1", "++c=x=y", "~d", "~e=1", "group=opt", "flag"])
    assert keys == {"a.b", "c", "group"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.lr=0"], r"optimizer.lr=0.0 must be > 0"),
        (["optimizer.lr=-1e-4"], r"optimizer.lr=-0.0001 must be > 0"),
        (["optimizer.unet_lr=-1e-4"], r"optimizer.unet_lr=-0.0001 must be >= 0"),
        (["optimizer.text_encoder_lr=-1"], r"optimizer.text_encoder_lr=-1.0 must be >= 0"),
        (
            ["optimizer.unet_lr=0", "optimizer.text_encoder_lr=0"],
            r"neither the UNet nor the text encoder would train \(optimizer.unet_lr=0.0 and "
            r"optimizer.text_encoder_lr=0.0\)",
        ),
        (
            ["optimizer.unet_lr=0", "network.train_text_encoder=false"],
            r"neither .* \(optimizer.unet_lr=0.0 and network.train_text_encoder=false\)",
        ),
    ],
)
def test_bad_learning_rates_name_the_key(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _typed(tmp_path, *overrides)


def test_a_zero_part_lr_freezes_that_part_while_the_other_trains(tmp_path):
    cfg = _typed(tmp_path, "optimizer.text_encoder_lr=0")
    assert (cfg.optimizer.unet_lr, cfg.optimizer.text_encoder_lr) == (None, 0.0)
    assert _typed(tmp_path, "optimizer.unet_lr=0", "optimizer.text_encoder_lr=1e-5").optimizer.unet_lr == 0.0


def test_default_adamw_leaves_the_part_lrs_to_optimizer_lr(tmp_path):
    opt = _typed(tmp_path, "optimizer.lr=3e-4").optimizer
    assert (opt.lr, opt.unet_lr, opt.text_encoder_lr) == (3e-4, None, None)  # kohya: both parts use 3e-4


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "a\0b", "", ".", ".."])
def test_run_name_must_be_a_file_name(name):
    with pytest.raises(ConfigError, match="is not a file name: the LoRA is saved as <name>.safetensors"):
        validate(TrainConfig(name=name, dataset=DatasetConfig(train_dir="x")))


def test_names_with_dots_and_spaces_are_fine():
    for name in ("my lora v1.5", "char_lora", "..x"):
        assert validate(TrainConfig(name=name, dataset=DatasetConfig(train_dir="x"))).name == name


def test_seed_minus_one_is_random_and_other_negatives_are_refused():
    base = TrainConfig(dataset=DatasetConfig(train_dir="x"))
    assert validate(replace(base, seed=-1)).seed == -1  # validate leaves -1 for resolve_seed
    with pytest.raises(ConfigError, match="seed=-2 must be between 0 and 4294967295 .*, or -1 for a random"):
        validate(replace(base, seed=-2))
    assert validate(replace(base, seed=2**32 - 1)).seed == 2**32 - 1  # numpy's largest
    with pytest.raises(ConfigError, match="seed=4294967296 must be between 0 and 4294967295"):
        validate(replace(base, seed=2**32))
    assert resolve_seed(replace(base, seed=7)).seed == 7 and resolve_seed(replace(base, seed=0)).seed == 0
    seeds = {resolve_seed(replace(base, seed=-1)).seed for _ in range(20)}
    assert all(0 <= seed < 2**31 for seed in seeds) and len(seeds) > 1
    assert base.seed == 42  # resolve_seed returns a new config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.save_every_n_epochs=0"], r"training.save_every_n_epochs=0 must be null \(off\) or >= 1"),
        (["training.save_every_n_steps=-1"], r"training.save_every_n_steps=-1 must be null"),
        (["training.save_last_n_epochs=0"], r"training.save_last_n_epochs=0 must be null"),
        (["training.save_last_n_steps=0"], r"training.save_last_n_steps=0 must be null"),
        (["training.full_fp16=true"], r"training.full_fp16=true needs training.mixed_precision=fp16"),
        (
            ["training.full_bf16=true", "training.mixed_precision=fp16"],
            r"training.full_bf16=true needs training.mixed_precision=bf16 \(not 'fp16'\)",
        ),
        (
            ["training.full_fp16=true", "training.full_bf16=true", "training.mixed_precision=fp16"],
            r"full_fp16=true and training.full_bf16=true exclude each other",
        ),
        (
            ["dataset.cache_latents=true", "dataset.random_crop=true"],
            r"dataset.cache_latents=true cannot be combined with dataset.random_crop=true: .* fixed crop",
        ),
        (
            ["dataset.cache_latents_to_disk=true", "dataset.color_aug=true"],
            r"dataset.cache_latents_to_disk=true cannot be combined with dataset.color_aug=true",
        ),
        (
            ["dataset.cache_text_encoder_outputs=true"],
            r"cache_text_encoder_outputs=true cannot be combined with network.train_text_encoder=true: "
            r".* set network.train_text_encoder=false",
        ),
        (
            [
                "dataset.cache_text_encoder_outputs=true",
                "dataset.shuffle_caption=true",
                "dataset.caption_dropout_rate=0.1",
                "network.train_text_encoder=false",
            ],
            r"with dataset.shuffle_caption=true and dataset.caption_dropout_rate=0.1: .* set "
            r"dataset.shuffle_caption=false dataset.caption_dropout_rate=0,",
        ),
        (["dataset.vae_batch_size=0"], r"dataset.vae_batch_size=0 must be >= 1"),
        (["dataset.max_aspect_ratio=0.5"], r"dataset.max_aspect_ratio=0.5 must be >= 1"),
        (["resume=''"], r"resume='' is empty: give resume=auto"),
        (
            ["dataset=folders", "dataset.reg_dir=./x/"],
            r"dataset.reg_dir=./x/ is dataset.train_dir: class pictures",
        ),
    ],
)
def test_bad_new_training_values_name_the_keys(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _typed(tmp_path, *overrides)


def test_good_new_training_values_pass(tmp_path):
    cfg = _typed(
        tmp_path,
        "training.save_every_n_steps=100",
        "training.save_last_n_steps=2",
        "training.full_bf16=true",
        "training.mixed_precision=bf16",
        "dataset.cache_latents_to_disk=true",
        "dataset.flip_aug=true",  # both sides get cached
        "dataset.cache_text_encoder_outputs=true",
        "optimizer.text_encoder_lr=0",  # a frozen text encoder may stay switched on
        "resume=auto",
    )
    assert cfg.dataset.cache_latents  # implied by cache_latents_to_disk, as in kohya
    assert (
        cfg.resume == "auto" and _typed(tmp_path, "resume=/runs/a/lora-state").resume == "/runs/a/lora-state"
    )


def test_a_nan_or_infinity_anywhere_in_the_config_is_refused_by_its_key():
    """NaN passes every range check (`nan < 0` and `nan > 0` are both False): min_snr_gamma=nan trained
    without it, and eval.weights=[nan] rendered its grid at a NaN weight, each with exit 0."""
    base = TrainConfig(dataset=DatasetConfig(train_dir="x"))
    with pytest.raises(ConfigError, match=r"^training.min_snr_gamma is nan: give a finite number$"):
        validate(replace(base, training=replace(base.training, min_snr_gamma=float("nan"))))
    with pytest.raises(ConfigError, match=r"^eval.weights\[1\] is inf"):
        validate(replace(base, eval=replace(base.eval, weights=[0.0, float("inf")])))
    with pytest.raises(ConfigError, match=r"^optimizer.args.betas\[0\] is nan"):
        validate(replace(base, optimizer=replace(base.optimizer, args={"betas": [float("nan"), 0.99]})))
    unbounded = {"growth_rate": float("inf")}  # Prodigy's and D-Adaptation's own default: no limit
    assert (
        validate(replace(base, optimizer=replace(base.optimizer, args=unbounded))).optimizer.args == unbounded
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [  # each ran on before: the tiny model instead of the user's, out of memory, or a ZeroDivisionError
        (
            {"model": {"path": "/models/v1-5.safetensors"}},
            "model.path=/models/v1-5.safetensors is not read by model=tiny",
        ),
        ({"model": {"kind": "toy", "variant": "fp16"}}, "model.variant=fp16 is not read by model=toy"),
        ({"dataset": {"resolution": 100000}}, "dataset.resolution=100000 is more than 4096 px"),
        ({"scheduler": {"name": "polynomial", "power": -1.0}}, "scheduler.power=-1.0 must be > 0"),
    ],
)
def test_values_that_ran_wrong_before_are_one_error(changes, message):
    base = TrainConfig(dataset=DatasetConfig(train_dir="x"))
    parts = {key: replace(getattr(base, key), **values) for key, values in changes.items()}
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        validate(replace(base, **parts))


def test_a_batch_larger_than_an_epoch_is_said_once(caplog):
    """kohya trains such a run on the whole epoch per step without a word; the user meant more pictures."""
    from train.schedule import warn_batch_above_epoch

    assert not warn_batch_above_epoch(8, 8) and not caplog.text
    assert warn_batch_above_epoch(16, 8)
    assert "training.batch_size=16 is larger than an epoch's 8 samples" in caplog.text
