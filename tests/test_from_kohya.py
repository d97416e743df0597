"""scripts/from_kohya.py on three real-looking kohya configs: a LoRA TOML in sd-scripts' tables, a LoCon
from the kohya_ss GUI's JSON (network_args), and a DreamBooth run with reg folders from a dataset TOML.
The overrides compose into a valid config; what we lack is listed, never dropped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from train.kohya_config import convert
from train.kohya_files import dataset_settings, read_settings, read_toml

from .test_cli import REPO

LORA_TOML = """
[model_arguments]
pretrained_model_name_or_path = "/models/v1-5-pruned-emaonly.safetensors"
[additional_network_arguments]
network_module = "networks.lora"
network_dim = 32
network_alpha = 16
unet_lr = 1e-4
text_encoder_lr = 5e-5
network_train_unet_only = false
[optimizer_arguments]
optimizer_type = "AdamW8bit"
optimizer_args = ["weight_decay=0.1", "betas=0.9,0.99"]
learning_rate = 1e-4
lr_scheduler = "cosine_with_restarts"
lr_scheduler_num_cycles = 3
lr_warmup_steps = 100
[dataset_arguments]
train_data_dir = "/data/train"
resolution = "512,512"
shuffle_caption = true
keep_tokens = 1
caption_extension = ".txt"
cache_latents = true
[training_arguments]
output_name = "sls_girl"
max_train_epochs = 10
train_batch_size = 2
mixed_precision = "fp16"
save_every_n_epochs = 2
seed = 42
clip_skip = 2
xformers = true
noise_offset = 0.05
min_snr_gamma = 5
save_model_as = "safetensors"
sample_prompts = "/data/prompts.txt"
"""

LOCON_GUI = {
    "pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5",
    "train_data_dir": "/data/train",
    "LoRA_type": "LyCORIS/LoCon",
    "network_module": "lycoris.kohya",
    "network_args": "conv_dim=8 conv_alpha=4 algo=locon",
    "network_dim": 16,
    "network_alpha": 8,
    "optimizer_type": "prodigy",
    "learning_rate": 1.0,
    "lr_scheduler": "constant",
    "max_train_steps": 1600,
    "network_dropout": 0.1,
    "log_with": "tensorboard",
}

DATASET_TOML = """
[general]
shuffle_caption = true
caption_extension = ".txt"
keep_tokens = 1
[[datasets]]
resolution = 512
batch_size = 1
[[datasets.subsets]]
image_dir = "/data/train/10_sls 1girl"
num_repeats = 10
[[datasets.subsets]]
image_dir = "/data/reg/1_1girl"
is_reg = true
num_repeats = 1
"""

DREAMBOOTH_TOML = """
pretrained_model_name_or_path = "/models/sd15"
network_module = "networks.lora"
network_dim = 8
learning_rate = 1e-4
prior_loss_weight = 1.0
max_train_epochs = 4
"""


def test_a_lora_toml_in_tables_converts_and_composes(tmp_path, compose_config):
    path = tmp_path / "lora.toml"
    path.write_text(LORA_TOML)
    conversion = convert(read_settings(path))
    cfg = compose_config(*conversion.overrides)
    assert (cfg.model.path, cfg.model.clip_skip) == ("/models/v1-5-pruned-emaonly.safetensors", 2)
    assert (cfg.network.dim, cfg.network.alpha) == (32, 16)
    assert (cfg.optimizer.name, cfg.optimizer.args) == (
        "AdamW8bit",
        {"weight_decay": 0.1, "betas": [0.9, 0.99]},
    )
    assert (cfg.scheduler.name, cfg.scheduler.num_cycles, cfg.scheduler.warmup_steps) == (
        "cosine_with_restarts",
        3,
        100,
    )
    assert (cfg.dataset.resolution, cfg.dataset.caption_extensions, cfg.dataset.cache_latents) == (
        512,
        [".txt"],
        True,
    )
    assert (cfg.training.mixed_precision, cfg.training.noise_offset, cfg.training.min_snr_gamma) == (
        "fp16",
        0.05,
        5.0,
    )
    assert (cfg.name, cfg.seed, cfg.training.save_every_n_epochs) == ("sls_girl", 42, 2)
    assert [item.split("=")[0] for item in conversion.lacking] == ["sample_prompts"]


def test_a_locon_from_the_gui_json_converts_its_network_args(tmp_path, compose_config):
    path = tmp_path / "locon.json"
    path.write_text(json.dumps(LOCON_GUI))
    conversion = convert(read_settings(path))
    cfg = compose_config(*conversion.overrides)
    assert (cfg.network.conv_dim, cfg.network.conv_alpha, cfg.optimizer.name, cfg.logger.kind) == (
        8,
        4,
        "Prodigy",
        "tensorboard",
    )
    assert cfg.training.max_train_steps == 1600 and cfg.training.max_train_epochs is None
    lacking = [item.split("=")[0] for item in conversion.lacking]
    assert lacking == ["LoRA_type"]  # listed with the reason, not dropped
    assert cfg.network.dropout == 0.1


def test_a_dreambooth_run_with_reg_folders_from_a_dataset_toml(tmp_path, compose_config):
    path = tmp_path / "db.toml"
    path.write_text(DREAMBOOTH_TOML)
    (tmp_path / "dataset.toml").write_text(DATASET_TOML)
    settings = read_settings(path)
    extra, lacking = dataset_settings(read_toml(tmp_path / "dataset.toml"))
    conversion = convert({**settings, **extra})
    cfg = compose_config(*conversion.overrides)
    assert (Path(cfg.dataset.train_dir), Path(cfg.dataset.reg_dir)) == (
        Path("/data/train"),
        Path("/data/reg"),
    )
    assert (cfg.dataset.shuffle_caption, cfg.dataset.keep_tokens, cfg.training.batch_size) == (True, 1, 1)
    assert lacking == [] and conversion.lacking == []


def test_the_script_prints_the_command_and_writes_an_experiment(tmp_path):
    (tmp_path / "lora.toml").write_text(LORA_TOML)
    script = [sys.executable, str(REPO / "scripts" / "from_kohya.py"), str(tmp_path / "lora.toml")]
    printed = subprocess.run(script, capture_output=True, text=True, cwd=REPO)
    assert printed.returncode == 0, printed.stderr
    assert (
        printed.stdout.startswith("python -m train model=sd15 ")
        and "+optimizer.args.weight_decay=0.1" in printed.stdout
    )
    assert "not converted: sample_prompts" in printed.stderr
    out = tmp_path / "sls_girl.yaml"
    wrote = subprocess.run([*script, "--write", str(out)], capture_output=True, text=True, cwd=REPO)
    assert wrote.returncode == 0, wrote.stderr
    text = out.read_text()
    assert text.startswith("# @package _global_") and "# Not converted: sample_prompts" in text
    data = yaml.safe_load(text)
    assert {"override /model": "sd15"} in data["defaults"] and {"override /optimizer": "adamw8bit"} in data[
        "defaults"
    ]
    assert data["network"]["dim"] == 32 and data["optimizer"]["args"]["betas"] == [0.9, 0.99]
    assert wrote.stdout.startswith(f"wrote {out}: copy it into {REPO / 'configs' / 'experiment'}, then:")
    again = subprocess.run([*script, "--write", str(out)], capture_output=True, text=True, cwd=REPO)
    assert (
        again.returncode == 2
        and again.stdout == f"error: {out} exists: add --force to replace it, or choose another file\n"
    )
    assert out.read_text() == text
    forced = subprocess.run(
        [*script, "--write", str(out), "--force"], capture_output=True, text=True, cwd=REPO
    )
    assert forced.returncode == 0 and out.read_text() == text


def test_a_file_that_does_not_parse_is_one_line_naming_it(tmp_path):
    (tmp_path / "bad.toml").write_text("network_dim = [\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "from_kohya.py"), str(tmp_path / "bad.toml")],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stdout.startswith(f"error: cannot read {tmp_path / 'bad.toml'}:")


def test_a_textual_inversion_config_trains_an_embedding_named_by_its_token():
    from train.kohya_config import convert

    result = convert(
        {
            "token_string": "sls",
            "init_word": "star",
            "num_vectors_per_token": 4,
            "use_object_template": True,
            "output_name": "my_embedding",
            "learning_rate": 5e-3,
        }  # fmt: skip
    )
    settings = dict(result.settings)
    assert settings["network"] == "embedding" and settings["network.token_string"] == "sls"
    assert settings["name"] == "sls" and settings["network.template"] == "object"
    assert settings["network.init_word"] == "star" and settings["network.num_vectors_per_token"] == 4
    assert [line for line in result.lacking if line.startswith("output_name=my_embedding")]


def test_a_train_db_setting_makes_a_full_fine_tune():
    from train.kohya_config import convert

    settings = dict(convert({"stop_text_encoder_training": 400, "learning_rate": 2e-6}).settings)
    assert settings["network"] == "full" and settings["network.stop_text_encoder_training"] == 400
    never = dict(convert({"stop_text_encoder_training": -1}).settings)
    assert never["network"] == "full" and never["network.train_text_encoder"] is False


def test_kohya_sample_settings_become_the_sample_group(tmp_path, compose_config):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("sls star --d 1\n")
    settings = {"sample_prompts": str(prompts), "sample_every_n_epochs": 2, "sample_every_n_steps": 50}
    settings |= {"sample_at_first": True, "sample_sampler": "k_euler_a"}
    conversion = convert(settings)
    s = compose_config("+experiment=char_lora", *conversion.overrides).sample
    assert (s.prompt_file, s.every_n_epochs, s.every_n_steps, s.at_start) == (str(prompts), 2, None, True)
    assert (s.sampler, s.width, s.height) == ("k_euler_a", 512, 512)  # kohya renders 512x512 by default
    assert conversion.lacking == [
        "sample_every_n_steps=50: kohya ignores it when sample_every_n_epochs is set"
    ]
    alone = convert({"sample_prompts": str(prompts), "sample_sampler": "ddim"})
    assert alone.settings == [] and alone.lacking[0].startswith(f"sample_prompts={prompts}: kohya renders it")
