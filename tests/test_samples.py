"""Samples during training through `python -m train`: the prompt file's options in the pictures and their
infotext, the right steps, no change to the LoRA's bytes or to an exact resume, and one-line errors."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from inference.infotext import parse_infotext, read_infotext

from .test_cli import REPO, run_train

PROMPTS = """# kohya's prompt-file syntax
sls star, blue background --w 64 --h 32 --d 5 --s 3
red circle --n sls star, ugly --d 7 --s 2 --l 4 --ss euler_a
sls star, blue background --w 64 --h 32 --d 5 --s 3 --am 0.5

sls star, blue background --w 64 --h 32 --d 5 --s 3
"""
# 4 steps of one epoch: two pictures a batch, no class pictures
SHORT = [
    "+experiment=char_lora", "logger=none", "eval.enabled=false", "objective=train_loss", "dataset.toy_images=4",
    "dataset.toy_repeats=2", "dataset.toy_reg_images=0", "training.batch_size=2", "training.max_train_steps=4",
]  # fmt: skip
SAMPLED = ["sample.every_n_steps=2", "sample.at_start=true", "sample.steps=2"]


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Started side by side: the run with samples every 2 steps (and at the start), the same run without,
    and one whose prompt file has a bad line. Returns their run folders and the bad run's result."""
    root = tmp_path_factory.mktemp("samples")
    (root / "prompts.txt").write_text(PROMPTS)
    (root / "bad.txt").write_text("sls star --d 1\nred circle --q 3\n")
    command = [sys.executable, "-m", "train", *SHORT]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    runs = {
        "on": [*SAMPLED, f"sample.prompt_file={root / 'prompts.txt'}"],
        "off": [],
        "bad": [f"sample.prompt_file={root / 'bad.txt'}", "sample.every_n_steps=2"],
    }
    processes = {
        name: subprocess.Popen(
            [*command, *extra, f"hydra.run.dir={root / name}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for name, extra in runs.items()
    }
    results = {name: (process, *process.communicate(timeout=600)) for name, process in processes.items()}
    for name in ("on", "off"):
        process, _, stderr = results[name]
        assert process.returncode == 0, stderr[-3000:]
    bad, _, bad_stderr = results["bad"]
    return root, bad.returncode, bad_stderr


def test_samples_at_the_right_steps_with_the_files_options(runs):
    on = runs[0] / "on"
    names = sorted(path.name for path in (on / "samples").iterdir())
    assert names == [f"step{step:06d}-epoch001-{index:02d}.png" for step in (0, 2, 4) for index in range(4)]
    info = parse_infotext(read_infotext(on / "samples" / "step000002-epoch001-00.png"))
    assert info["Prompt"] == "sls star, blue background <lora:char_lora:1>" and info["Negative prompt"] == ""
    assert [info[k] for k in ("Steps", "Sampler", "CFG scale", "Seed", "Size")] == [
        "3",
        "DDIM",
        "7.5",
        "5",
        "64x32",
    ]
    assert Image.open(on / "samples" / "step000002-epoch001-00.png").size == (64, 32)
    info = parse_infotext(read_infotext(on / "samples" / "step000002-epoch001-01.png"))
    assert info["Negative prompt"] == "sls star, ugly" and info["Model"] == "toy"
    assert [info[k] for k in ("Steps", "Sampler", "CFG scale", "Seed", "Size")] == [
        "2",
        "Euler a",
        "4",
        "7",
        "64x64",
    ]
    assert Image.open(on / "samples" / "step000002-epoch001-01.png").size == (64, 64)  # dataset.resolution
    assert "<lora:char_lora:0.5>" in read_infotext(on / "samples" / "step000004-epoch001-02.png")


def test_same_seed_same_picture_and_the_live_network_at_its_weight(runs):
    on = runs[0] / "on"
    at = {
        step: [pixels(on / "samples" / f"step{step:06d}-epoch001-{i:02d}.png") for i in range(4)]
        for step in (0, 4)
    }
    for step in (0, 4):
        assert np.array_equal(at[step][0], at[step][3])  # the same line twice: the same picture
    assert np.array_equal(at[0][0], at[0][2])  # before training the LoRA's ups are 0: weight changes nothing
    assert np.abs(at[4][0] - at[0][0]).mean() > 1  # four steps later the trained LoRA shows
    assert np.abs(at[4][0] - at[4][2]).mean() > 0.3  # and weight 0.5 is not weight 1


def test_sampling_leaves_the_lora_bytes_and_none_writes_nothing(runs):
    on, off = runs[0] / "on", runs[0] / "off"
    assert (on / "char_lora.safetensors").read_bytes() == (off / "char_lora.safetensors").read_bytes()
    assert not (off / "samples").exists()  # sample=none, the default


def interrupt_on(command: list[str], marker: str, env: dict) -> tuple[int, str, float]:
    """Run `command`, press Ctrl-C half a second after `marker` shows on its stderr; returns the exit status,
    the whole stderr and the seconds from Ctrl-C to the exit."""
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = bytearray()
    reader = threading.Thread(
        target=lambda: [stderr.extend(b) for b in iter(lambda: process.stderr.read(1), b"")]
    )
    reader.start()
    while marker.encode() not in stderr and process.poll() is None:
        time.sleep(0.01)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    process.wait(timeout=300)  # the reader has stderr
    waited = time.monotonic() - sent
    reader.join()
    return process.returncode, stderr.decode(), waited


@pytest.mark.slow  # 20 s; the fast suite keeps the plain Ctrl-C test (tests/test_resume.py)
def test_ctrl_c_during_a_sample_or_the_final_evaluation_saves_and_says_so(runs, tmp_path):
    """A 400-step render takes over a minute here; Ctrl-C stops it at the sampler's next step, saves step 2's
    state, and resume=auto (without samples) gives the weights of the run that never sampled. A Ctrl-C in that
    run's final evaluation says the LoRA is saved and how to measure it."""
    root = runs[0]
    (tmp_path / "long.txt").write_text("sls star, blue background --w 256 --h 256 --s 400\n")
    run_dir = tmp_path / "stopped"
    command = [sys.executable, "-m", "train", *SHORT, f"hydra.run.dir={run_dir}"]
    sampled = ["sample.every_n_steps=2", f"sample.prompt_file={tmp_path / 'long.txt'}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    returncode, stderr, waited = interrupt_on([*command, *sampled], "samples at step 2", env)
    assert returncode == 130, stderr[-3000:]
    assert waited < 30, f"{waited:.0f} s from Ctrl-C to the exit: the render was not dropped"
    assert "samples at step 2: 1 of 1 left out (SIGINT)" in stderr and "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "stopped after step 2 of 4" in errors[0]
    assert (run_dir / "char_lora-step00000002-state").is_dir() and not list(run_dir.glob("samples/*.png"))

    evaluated = [*command, "resume=auto", "eval.enabled=true", "objective=toy"]
    returncode, stderr, _ = interrupt_on(evaluated, "eval:", env)
    assert returncode == 130, stderr[-3000:]
    resumed, plain = (load_file(folder / "char_lora.safetensors") for folder in (run_dir, root / "off"))
    assert resumed.keys() == plain.keys()  # the header records eval's settings; the weights are the same
    assert all(torch.equal(resumed[key], plain[key]) for key in plain)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: SIGINT: interrupted during the evaluation: {run_dir / 'char_lora.safetensors'} is saved, its grid and "
        f"scores are not; python -m train.evaluate run={run_dir} measures it"
    ]
    assert "Traceback" not in stderr


def test_a_bad_prompt_file_is_one_line_and_a_failed_run(runs):
    root, returncode, stderr = runs
    assert returncode == 2
    assert stderr.strip().splitlines()[-1] == (
        f"error: {root / 'bad.txt'}:2: unknown option --q; the options are --n --w --h --d --l --s --ss --sampler --am"
    )
    assert "Traceback" not in stderr and not (root / "bad" / "samples").exists()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"every_n_steps": 10}, "set sample.prompt_file (kohya's --sample_prompts) or sample.prompts"),
        ({"prompts": ["cat"]}, "sample prompts are set but never rendered"),
        ({"prompts": ["cat"], "prompt_file": "p.txt", "at_start": True}, "not both"),
        ({"prompts": ["cat"], "every_n_epochs": 0}, "sample.every_n_epochs=0 must be at least 1"),
        ({"prompts": ["cat"], "at_start": True, "sampler": "dpmsingle"}, "sample.sampler: kohya's dpmsingle"),
        ({"prompts": ["cat"], "at_start": True, "width": 100}, "sample.width=100 must be"),
        (
            {"prompts": ["cat --w 8000 --h 8000"], "at_start": True},
            "sample prompt 1 of sample.prompts ('cat') asks for 8000x8000 px: at most 4096 px a side",
        ),
        ({"prompts": ["cat --q 1"], "at_start": True}, "sample.prompts:1: unknown option --q"),
        (
            {"prompts": ["cat --am 0.5"], "at_start": True},
            "sample prompt 1 of sample.prompts ('cat') asks for weight 0.5",
        ),
    ],
)
def test_sample_settings_are_checked_before_training(settings, message):
    from data.errors import LoraSmithError
    from train.config import NetworkConfig, SampleConfig, TrainConfig
    from train.sample_prompts import check_sample

    cfg = TrainConfig(network=NetworkConfig(module="full"), sample=SampleConfig(**settings))
    with pytest.raises(LoraSmithError, match=re.escape(message)):
        check_sample(cfg)  # what load_config runs, before any model loads


def test_inline_prompts_take_the_groups_defaults(compose_config):
    from train.sample_prompts import resolved_prompts

    cfg = compose_config("+experiment=char_lora", "sample=toy")
    first, second, third = resolved_prompts(cfg)
    assert (first.width, first.height, first.sampler, first.steps, first.cfg_scale) == (
        64,
        64,
        "Euler a",
        20,
        3.0,
    )
    assert (first.seed, second.weight, third.negative_prompt) == (1, 0.5, "sls star")


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_bytes_without_redoing_samples(tmp_path):
    from .test_resume import kill_after_step, start_train

    (tmp_path / "prompts.txt").write_text(PROMPTS)
    longer = [
        *SHORT[:-1],
        "training.max_train_steps=8",
        "training.save_every_n_steps=3",
        "training.save_state=true",
    ]
    sampled = [*longer, *SAMPLED, f"sample.prompt_file={tmp_path / 'prompts.txt'}"]
    plain = run_train(tmp_path / "plain", *longer)
    assert plain.returncode == 0, plain.stderr[-3000:]
    run_dir = tmp_path / "killed"
    kill_after_step(start_train(run_dir, *sampled), run_dir, 5)  # state at step 3, samples of step 4 written
    before = {path.name: path.stat().st_mtime_ns for path in (run_dir / "samples").iterdir()}
    assert "step000004-epoch001-00.png" in before and "step000006-epoch002-00.png" not in before
    resumed = run_train(run_dir, *sampled, "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run_dir / "char_lora.safetensors").read_bytes() == (
        tmp_path / "plain" / "char_lora.safetensors"
    ).read_bytes()
    after = {path.name: path.stat().st_mtime_ns for path in (run_dir / "samples").iterdir()}
    assert {name: after[name] for name in before} == before  # the killed run's samples were not redone
    assert len(after) == 5 * 4  # steps 0, 2, 4, 6, 8
