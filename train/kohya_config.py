"""kohya's settings (a `--config_file` TOML, a dataset TOML, or the kohya_ss GUI's saved JSON) as our overrides.

`convert(settings)` maps each key kohya knows to our Hydra override and lists the ones we lack, with the
reason, so nothing is dropped silently. `experiment_yaml` writes the overrides as an experiment file.
Reading kohya's files into flat settings is train/kohya_files.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train.kohya_network_args import Override, network_args, network_module, optimizer_args
from train.kohya_sample import KEYS as SAMPLE_KEYS
from train.kohya_sample import sample_settings
from train.optimizers import known_name


@dataclass
class Conversion:
    settings: Override = field(default_factory=list)
    lacking: list[str] = field(default_factory=list)  # "key=value: why"

    @property
    def overrides(self) -> list[str]:
        """As `python -m train` arguments (keys under optimizer.args get Hydra's ++: add or replace)."""
        return [f"{'++' if '.args.' in key else ''}{key}={value_text(value)}" for key, value in self.settings]


def value_text(value: Any) -> str:
    """A value as Hydra's override grammar reads it."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(value_text(v) for v in value) + "]"
    text = str(value)
    return (
        text
        if text and all(c.isalnum() or c in "._-/" for c in text)
        else "'" + text.replace("'", r"\'") + "'"
    )


def resolution(value: Any) -> Override:
    """kohya's "512" or "512,768" (width,height): we train squares or buckets of area resolution²."""
    sides = [int(v) for v in str(value).replace(" ", "").split(",") if v]
    side = int((sides[0] * sides[-1]) ** 0.5)
    return [("dataset.resolution", side)]


def model_path(value: Any) -> Override:
    return [("model", "sd15"), ("model.path", str(value))]


def optimizer_files() -> dict[str, str]:
    """Optimizer name (lower case) → its file in configs/optimizer."""
    folder = Path(__file__).resolve().parents[1] / "configs" / "optimizer"
    names = {}
    for path in sorted(folder.glob("*.yaml")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("name:"):
                names[line.split(":", 1)[1].split("#")[0].strip().lower()] = path.stem
    return names


def optimizer_type(value: Any) -> Override:
    """Our file for that optimizer (its usual args), or the name with no args (AdamW's would not fit)."""
    name = known_name(str(value)) or str(value)
    file = optimizer_files().get(name.lower())
    return [("optimizer", file)] if file else [("optimizer.name", name), ("optimizer.args", {})]


def lr_scheduler(value: Any) -> Override:
    """The schedule's config file (our files warm up 5 % by default; kohya's default is none, which
    `convert` restores when lr_warmup_steps is not given)."""
    return [("scheduler", str(value))]


def caption_extension(value: Any) -> Override:
    return [("dataset.caption_extensions", [str(value)])]


def unet_only(value: Any) -> Override:
    return [("network.train_text_encoder", False)] if value else []


def text_encoder_only(value: Any) -> Override:
    return [("network.train_unet", False)] if value else []


def logger(value: Any) -> Override:
    return [("logger", value if value in ("wandb", "tensorboard") else "none")]


def output_dir(value: Any) -> Override:
    return [("hydra.run.dir", str(value))]


SAME = {  # kohya key -> ours, value unchanged
    "init_word": "network.init_word",
    "num_vectors_per_token": "network.num_vectors_per_token",
    "train_data_dir": "dataset.train_dir",
    "reg_data_dir": "dataset.reg_dir",
    "network_dim": "network.dim",
    "network_dropout": "network.dropout",
    "network_alpha": "network.alpha",
    "learning_rate": "optimizer.lr",
    "unet_lr": "optimizer.unet_lr",
    "text_encoder_lr": "optimizer.text_encoder_lr",
    "lr_warmup_steps": "scheduler.warmup_steps",
    "lr_scheduler_num_cycles": "scheduler.num_cycles",
    "lr_scheduler_power": "scheduler.power",
    "lr_scheduler_min_lr_ratio": "scheduler.min_lr_ratio",
    "max_train_epochs": "training.max_train_epochs",
    "max_train_steps": "training.max_train_steps",
    "train_batch_size": "training.batch_size",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "mixed_precision": "training.mixed_precision",
    "full_fp16": "training.full_fp16",
    "full_bf16": "training.full_bf16",
    "gradient_checkpointing": "training.gradient_checkpointing",
    "max_grad_norm": "training.max_grad_norm",
    "save_every_n_epochs": "training.save_every_n_epochs",
    "save_every_n_steps": "training.save_every_n_steps",
    "save_last_n_epochs": "training.save_last_n_epochs",
    "save_last_n_steps": "training.save_last_n_steps",
    "save_state": "training.save_state",
    "save_precision": "training.save_precision",
    "resume": "resume",
    "output_name": "name",
    "seed": "seed",
    "clip_skip": "model.clip_skip",
    "noise_offset": "training.noise_offset",
    "min_snr_gamma": "training.min_snr_gamma",
    "multires_noise_iterations": "training.multires_noise_iterations",
    "multires_noise_discount": "training.multires_noise_discount",
    "ip_noise_gamma": "training.ip_noise_gamma",
    "ip_noise_gamma_random_strength": "training.ip_noise_gamma_random_strength",
    "zero_terminal_snr": "training.zero_terminal_snr",
    "loss_type": "training.loss_type",
    "huber_schedule": "training.huber_schedule",
    "huber_c": "training.huber_c",
    "huber_scale": "training.huber_scale",
    "debiased_estimation_loss": "training.debiased_estimation_loss",
    "v_parameterization": "model.v_parameterization",
    "scale_v_pred_loss_like_noise_pred": "training.scale_v_pred_loss_like_noise_pred",
    "prior_loss_weight": "dataset.prior_loss_weight",
    "cache_latents": "dataset.cache_latents",
    "cache_latents_to_disk": "dataset.cache_latents_to_disk",
    "vae_batch_size": "dataset.vae_batch_size",
    "cache_text_encoder_outputs": "dataset.cache_text_encoder_outputs",
    "random_crop": "dataset.random_crop",
    "color_aug": "dataset.color_aug",
    "flip_aug": "dataset.flip_aug",
    "shuffle_caption": "dataset.shuffle_caption",
    "keep_tokens": "dataset.keep_tokens",
    "keep_tokens_separator": "dataset.keep_tokens_separator",
    "secondary_separator": "dataset.secondary_separator",
    "caption_prefix": "dataset.caption_prefix",
    "max_token_length": "dataset.max_token_length",
    "weighted_captions": "dataset.weighted_captions",
    "masked_loss": "dataset.masked_loss",
    "alpha_mask": "dataset.alpha_mask",
    "caption_suffix": "dataset.caption_suffix",
    "enable_wildcard": "dataset.enable_wildcard",
    "caption_dropout_rate": "dataset.caption_dropout_rate",
    "caption_dropout_every_n_epochs": "dataset.caption_dropout_every_n_epochs",
    "caption_tag_dropout_rate": "dataset.caption_tag_dropout_rate",
    "enable_bucket": "dataset.enable_bucket",
    "min_bucket_reso": "dataset.min_bucket_reso",
    "max_bucket_reso": "dataset.max_bucket_reso",
    "bucket_reso_steps": "dataset.bucket_reso_steps",
    "bucket_no_upscale": "dataset.bucket_no_upscale",
    "max_data_loader_n_workers": "dataset.num_workers",
}


def token_string(value: Any) -> Override:
    """kohya's train_textual_inversion.py: the run trains an embedding triggered by this string, saved as
    `<name>.safetensors` (A1111 triggers it by the file name, so our name follows it)."""
    return [("network", "embedding"), ("network.token_string", str(value)), ("name", str(value))]


def stop_text_encoder_training(value: Any) -> Override:
    """kohya's train_db.py (a full fine-tune): the text encoder trains for this many steps; -1: never."""
    steps = int(value)
    if steps < 0:
        return [("network", "full"), ("network.train_text_encoder", False)]
    return [("network", "full")] + ([("network.stop_text_encoder_training", steps)] if steps else [])


def template(kind: str) -> Callable[[Any], Override]:
    return lambda value: [("network.template", kind)] if value else []


CONVERTED: dict[str, Callable[[Any], Override]] = {
    "token_string": token_string,
    "stop_text_encoder_training": stop_text_encoder_training,
    "use_object_template": template("object"),
    "use_style_template": template("style"),
    "pretrained_model_name_or_path": model_path,
    "resolution": resolution,
    "optimizer_type": optimizer_type,
    "optimizer_args": optimizer_args,
    "network_module": network_module,
    "caption_extension": caption_extension,
    "lr_scheduler": lr_scheduler,
    "network_train_unet_only": unet_only,
    "network_train_text_encoder_only": text_encoder_only,
    "log_with": logger,
    "output_dir": output_dir,
}

# Keys that change nothing in a run's result, or that our design makes unnecessary.
IGNORED = {
    "logging_dir": "logs go into the run folder",
    "save_model_as": "LoRA files are always .safetensors",
    "xformers": "attention is torch's SDPA",
    "sdpa": "attention is torch's SDPA",
    "mem_eff_attn": "attention is torch's SDPA",
    "persistent_data_loader_workers": "workers persist whenever num_workers > 0",
    "lowram": "models load to the CPU first",
    "highvram": "no effect here",
    "dataset_config": "pass the dataset TOML as the second argument",
    "config_file": "this file itself",
    "v2": "SD 2.x is told by the model's own OpenCLIP text encoder",
}


def convert(settings: dict[str, Any]) -> Conversion:
    """Our overrides for kohya's flat settings; what has no counterpart goes into `lacking` with why."""
    result = Conversion()
    result.settings, result.lacking = sample_settings(settings)
    for key, value in settings.items():
        if value is None or value == "" or key in IGNORED or key in SAMPLE_KEYS:
            continue
        if key in SAME:
            result.settings.append((SAME[key], value))
        elif key == "network_args":
            overrides, lacking = network_args(value)
            result.settings += overrides
            result.lacking += lacking
        elif key in CONVERTED:
            try:
                result.settings += CONVERTED[key](value)
            except (KeyError, ValueError):
                result.lacking.append(f"{key}={value}: not supported yet")
        else:
            result.lacking.append(f"{key}={value}: no counterpart yet")
    if settings.get("token_string") and settings.get("output_name") not in (
        None,
        "",
        settings["token_string"],
    ):
        result.settings.remove(("name", settings["output_name"]))
        result.lacking.append(
            f"output_name={settings['output_name']}: an embedding is saved as <token_string>.safetensors, the "
            "name A1111 triggers it by"
        )
    if settings.get("max_train_steps") and not settings.get("max_train_epochs"):
        result.settings.append(("training.max_train_epochs", None))  # kohya: steps govern without epochs
    if "lr_scheduler" in settings and "lr_warmup_steps" not in settings:
        result.settings.append(("scheduler.warmup_steps", 0))  # kohya's default
    return result


def experiment_yaml(conversion: Conversion) -> str:
    """The settings as an experiment file (`python -m train +experiment=<its name>`)."""
    from omegaconf import OmegaConf

    groups = [(key, value) for key, value in conversion.settings if key in GROUPS]
    values = OmegaConf.create({})
    for key, value in conversion.settings:
        if key not in GROUPS:
            OmegaConf.update(values, key, value, force_add=True)
    lines = ["# @package _global_", "# Converted from a kohya config by scripts/from_kohya.py."]
    lines += [f"# Not converted: {item}" for item in conversion.lacking]
    if groups:
        lines += ["defaults:"] + [f"  - override /{key}: {value}" for key, value in groups]
    return "\n".join(lines) + "\n" + OmegaConf.to_yaml(values)


GROUPS = ("model", "dataset", "network", "optimizer", "scheduler", "logger")  # config groups: pick a file
