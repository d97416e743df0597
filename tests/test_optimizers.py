"""Every optimizer kohya users name: each lowers a toy loss, each config file builds, wrong pairings are
refused in one line, D-Adaptation / Prodigy log d*lr, and a schedule-free run saves its averaged weights
and resumes to the same bytes."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from train.config import SchedulerConfig
from train.errors import ConfigError
from train.optim import build_scheduler
from train.optimizers import (
    OPTIMIZERS,
    adaptive_rate,
    averaged_weights,
    build_optimizer,
    describe_optimizer,
    known_name,
)

from .test_cli import QUICK, REPO, run_train

CONFIGS = sorted(p.stem for p in (REPO / "configs" / "optimizer").glob("*.yaml"))


def toy_settings(name: str) -> tuple[float, dict]:
    """An lr (and args) that suit each family on the toy problem. D-Adaptation starts its step-size estimate
    d at d0=1e-6 and needs more than 20 steps to grow it: d0=0.1, its own knob for that, shortens the climb."""
    lowered = name.lower()
    if lowered == "prodigy":
        return 1.0, {}
    if lowered.startswith("dadapt"):
        return 1.0, {"d0": 0.1}
    if lowered == "adafactor":
        return 1e-2, {"relative_step": False, "scale_parameter": False, "warmup_init": False}
    if lowered.startswith("sgd"):
        return 1.0, {}
    if "schedulefree" in lowered:
        return 0.1, {}
    return 1e-2, {}


def regression(seed: int = 0):
    """Fit y = x W*: a 64x64 weight (4096 elements, so the 8-bit optimizers quantize its states) and a bias."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 64, generator=gen)
    y = x @ (torch.randn(64, 64, generator=gen) / 8)
    return x, y, torch.nn.Parameter(torch.zeros(64, 64)), torch.nn.Parameter(torch.zeros(64))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_lowers_a_toy_loss_in_20_steps(name):
    x, y, weight, bias = regression()
    lr, args = toy_settings(name)
    optimizer = build_optimizer([{"params": [weight], "lr": lr}, {"params": [bias], "lr": lr}], name, args)
    first = None
    for _ in range(20):
        loss = torch.nn.functional.mse_loss(x @ weight + bias, y)
        first = first or loss.item()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    with averaged_weights(optimizer):
        final = torch.nn.functional.mse_loss(x @ weight + bias, y).item()
    assert final < 0.6 * first, (name, first, final)


def test_adafactor_with_relative_step_sets_its_own_rates():
    x, y, weight, _ = regression()
    with torch.no_grad():
        weight.normal_(
            0, 1, generator=torch.Generator().manual_seed(1)
        )  # its step is relative to the weights
    optimizer = build_optimizer([{"params": [weight], "lr": 1e-4}], "AdaFactor", {"relative_step": True})
    schedule = build_scheduler(optimizer, SchedulerConfig(name="adafactor"), total_steps=20)
    first, rates = None, []
    for _ in range(20):
        loss = torch.nn.functional.mse_loss(x @ weight, y)
        first = first or loss.item()
        loss.backward()
        optimizer.step()
        schedule.step()
        rates.append(float(schedule.get_last_lr()[0]))
        optimizer.zero_grad()
    assert torch.nn.functional.mse_loss(x @ weight, y).item() < 0.9 * first
    # its own rate, 1e-2 times the weights' RMS (falling as they shrink), not the group's 1e-4
    assert rates[0] == pytest.approx(1e-2, rel=0.05) and rates[-1] < rates[0]


def low_rank_problem(seed: int = 0):
    """A LoRA-shaped product down @ up fitting a rank-2 map."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 128, generator=gen) / 128**0.5
    y = x @ (torch.randn(128, 2, generator=gen) @ torch.randn(2, 128, generator=gen))
    down = torch.nn.Parameter(torch.randn(128, 32, generator=gen) / 128**0.5)
    up = torch.nn.Parameter(torch.randn(32, 128, generator=gen) * 0.01)
    return x, y, down, up


def test_names_ignore_case_and_any_module_class_works():
    x, y, down, up = low_rank_problem()
    assert type(build_optimizer([{"params": [down], "lr": 1e-3}], "adamw8BIT", {})).__name__ == "AdamW8bit"
    radam = build_optimizer([{"params": [up], "lr": 1e-3}], "torch.optim.RAdam", {"weight_decay": 0.1})
    assert describe_optimizer(radam, {"weight_decay": 0.1}) == "torch.optim.radam.RAdam(weight_decay=0.1)"
    with pytest.raises(ConfigError, match="optimizer.args for AdamW: .*'momentum'"):
        build_optimizer([{"params": [down], "lr": 1e-3}], "AdamW", {"momentum": 0.9})
    with pytest.raises(ConfigError, match="optimizer.args for AdamW: Invalid weight_decay value: -1"):
        build_optimizer([{"params": [down], "lr": 1e-3}], "AdamW", {"weight_decay": -1})
    with pytest.raises(ConfigError, match="optimizer.name=nowhere.Adam: cannot import it"):
        build_optimizer([{"params": [down], "lr": 1e-3}], "nowhere.Adam", {})


@pytest.mark.parametrize("config", CONFIGS)
def test_every_optimizer_config_file_builds(compose_config, config):
    overrides = [f"optimizer={config}", "dataset.train_dir=x"]
    if config == "adamw_schedulefree":
        overrides.append("scheduler=constant")
    cfg = compose_config(*overrides)
    param = torch.nn.Parameter(torch.zeros(8))
    optimizer = build_optimizer(
        [{"params": [param], "lr": cfg.optimizer.lr}], cfg.optimizer.name, cfg.optimizer.args
    )
    described = describe_optimizer(optimizer, cfg.optimizer.args)
    assert described.startswith(f"{type(optimizer).__module__}.{type(optimizer).__name__}(")
    assert known_name(cfg.optimizer.name) == cfg.optimizer.name  # each file spells kohya's name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optimizer.name=Adamm"],
            "optimizer.name='Adamm' is not an optimizer: choose one of AdamW, AdamW8bit",
        ),
        (["+optimizer.args.lr=0.1"], "optimizer.args.lr: the learning rates are optimizer.lr"),
        (["optimizer=adafactor", "optimizer.args.relative_step=true"], "scheduler=adafactor goes with"),
        (["scheduler=adafactor"], "scheduler=adafactor goes with"),
        (
            [
                "optimizer=adafactor",
                "optimizer.args.relative_step=true",
                "scheduler=adafactor",
                "optimizer.unet_lr=1e-4",
            ],
            "Adafactor with relative_step computes its own rates",
        ),
        (["optimizer=adamw_schedulefree", "scheduler=cosine"], "use scheduler=constant"),
    ],
)
def test_wrong_optimizer_settings_are_refused_in_one_line(compose_config, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compose_config("dataset.train_dir=x", *overrides)


@pytest.mark.parametrize(
    ("name", "betas", "count"), [("Lion", [0.9, 0.99, 0.5], 2), ("DAdaptAdan", [0.98, 0.92, 0.99, 0.9], 3)]
)
def test_betas_of_another_length_than_the_class_takes_are_one_line(name, betas, count):
    _, _, down, _ = low_rank_problem()
    with pytest.raises(ConfigError, match=rf"optimizer.args.betas=.*: {name} takes {count} numbers, e.g."):
        build_optimizer([{"params": [down], "lr": 1e-4}], name, {"betas": betas})
    build_optimizer(
        [{"params": [down], "lr": 1e-4}], name, {"betas": betas[:count]}
    )  # the right length builds


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        (
            "Prodigy",
            {"d_coef": "abc"},
            "optimizer.args.d_coef='abc': Prodigy takes a number there (its default: 1.0)",
        ),
        ("AdamW", {"amsgrad": "yes"}, "optimizer.args.amsgrad='yes': AdamW takes true or false there"),
        ("AdamW", {"weight_decay": "abc"}, "(text where a number may belong: weight_decay='abc')"),
    ],
)
def test_an_argument_of_the_wrong_kind_is_one_line_naming_it(name, args, message):
    """Prodigy reads d_coef only at its first step: without this check, a traceback mid-run."""
    _, _, down, _ = low_rank_problem()
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_optimizer([{"params": [down], "lr": 1.0}], name, args)


def test_adaptive_optimizers_warn_about_small_or_split_rates(caplog):
    _, _, down, up = low_rank_problem()
    with caplog.at_level(logging.WARNING, logger="train.optimizers"):
        build_optimizer([{"params": [down], "lr": 1e-4}, {"params": [up], "lr": 5e-5}], "DAdaptAdam", {})
    text = caplog.text
    assert "learning rate 0.0001 is too low" in text and "set optimizer.lr=1" in text
    assert "different learning rates (0.0001, 5e-05)" in text


def test_d_adaptation_with_two_rates_scales_its_groups_or_refuses_in_one_line():
    """DAdaptAdam raises at the first step when groups have different lrs; we hand it layer_scale instead,
    which takes the same steps (0.5 x the top group's), and refuse the variants that have no scale."""
    x, y, down, up = low_rank_problem()
    groups = [{"params": [down], "lr": 1.0}, {"params": [up], "lr": 0.5}]
    optimizer = build_optimizer(groups, "DAdaptAdam", {"d0": 0.1})
    torch.nn.functional.mse_loss(x @ down @ up, y).backward()
    optimizer.step()  # the library's own check passes
    assert [(g["lr"], g["layer_scale"]) for g in optimizer.param_groups] == [(1.0, 1.0), (1.0, 0.5)]
    for name in ("DAdaptLion", "Prodigy"):  # Prodigy raises at the first step too (prodigyopt 1.1.2)
        with pytest.raises(ConfigError, match=f"optimizer.name={name} takes one learning rate .* 0.5, 1"):
            build_optimizer([{"params": [down], "lr": 1.0}, {"params": [up], "lr": 0.5}], name, {})


def test_d_times_lr_is_what_adaptive_optimizers_report():
    x, y, down, up = low_rank_problem()
    optimizer = build_optimizer([{"params": [down, up], "lr": 0.5}], "DAdaptAdam", {})
    torch.nn.functional.mse_loss(x @ down @ up, y).backward()
    optimizer.step()
    group = optimizer.param_groups[0]
    assert group["d"] > 0 and adaptive_rate(optimizer) == pytest.approx(group["d"] * 0.5)
    assert adaptive_rate(build_optimizer([{"params": [down], "lr": 1e-3}], "AdamW", {})) is None


def test_schedule_free_saves_averaged_weights_and_restores_the_training_ones_exactly():
    x, y, down, up = low_rank_problem()
    optimizer = build_optimizer([{"params": [down, up], "lr": 1e-2}], "AdamWScheduleFree", {})
    for _ in range(5):
        torch.nn.functional.mse_loss(x @ down @ up, y).backward()
        optimizer.step()
        optimizer.zero_grad()
    training = [down.detach().clone(), up.detach().clone()]
    with averaged_weights(optimizer):
        averaged = [down.detach().clone(), up.detach().clone()]
    assert not torch.equal(averaged[0], training[0])  # the average differs from the training point
    assert torch.equal(down, training[0]) and torch.equal(up, training[1])  # bit for bit, not recomputed
    torch.nn.functional.mse_loss(x @ down @ up, y).backward()
    optimizer.step()  # still in train mode


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_prodigy_through_python_m_train_logs_d_lr_and_names_itself(tmp_path):
    overrides = [*QUICK, "eval.enabled=false", "optimizer=prodigy"]
    overrides += ["optimizer.lr=1", "optimizer.unet_lr=null", "optimizer.text_encoder_lr=null"]
    result = run_train(tmp_path / "run", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    rates = [r["lr/d*lr"] for r in read_metrics(tmp_path / "run") if "lr/d*lr" in r]
    assert rates and all(rate > 0 for rate in rates)
    with safe_open(str(tmp_path / "run" / "char_lora.safetensors"), framework="pt") as f:
        assert f.metadata()["ss_optimizer"].startswith(
            "prodigyopt.prodigy.Prodigy(weight_decay=0.01,decouple=True"
        )


def test_prodigy_with_an_experiments_two_rates_is_one_line_without_warnings_before_it(caplog):
    """char_lora sets unet_lr 1.4e-3 and text_encoder_lr 7e-4 for AdamW: Prodigy would raise at step one; we
    say it at setup, with the overrides that fix it, and without the low-rate warnings first."""
    _, _, down, up = low_rank_problem()
    with caplog.at_level(logging.WARNING, logger="train.optimizers"), pytest.raises(ConfigError) as caught:
        build_optimizer([{"params": [down], "lr": 1.4e-3}, {"params": [up], "lr": 7e-4}], "Prodigy", {})
    message = str(caught.value)
    assert message.startswith("optimizer.name=Prodigy takes one learning rate for every parameter group")
    assert "0.0007, 0.0014" in message and "optimizer.unet_lr=null optimizer.text_encoder_lr=null" in message
    assert caplog.text == ""


def test_an_argument_the_class_does_not_take_is_one_line(tmp_path):
    result = run_train(tmp_path / "run", *QUICK, "+optimizer.args.momentum=0.9")
    assert result.returncode == 2
    assert "optimizer.args for AdamW" in result.stderr and "momentum" in result.stderr
    assert "Traceback" not in result.stderr
