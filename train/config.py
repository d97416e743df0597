"""Typed training configuration: Hydra composes YAML, `load_config` validates it once into these dataclasses.

Every field has the meaning kohya sd-scripts users know; the comment names the kohya flag where one exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from data.typed_config import to_typed
from train.errors import ConfigError

MODEL_KINDS = ("toy", "tiny", "sd15_arch", "pretrained")
NETWORK_MODULES = ("lora",)
OPTIMIZERS = ("AdamW",)
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
LOGGERS = ("wandb", "tensorboard", "none")
MIXED_PRECISION = ("no", "fp16", "bf16")
SAVE_PRECISION = ("float", "fp16", "bf16")
DATASET_SOURCES = ("folders", "toy")
TOY_CONCEPTS = ("character", "style")
SCORERS = ("toy",)


@dataclass
class ModelConfig:
    kind: str = "tiny"  # toy (models/toy) | tiny | sd15_arch | pretrained
    # diffusers folder, hub id, or single-file .safetensors/.ckpt in the original LDM layout (a sidecar
    # <file>.yaml gives its architecture, as in A1111); kohya --pretrained_model_name_or_path
    path: str | None = None
    revision: str | None = None
    variant: str | None = None  # e.g. fp16
    init_seed: int = 0  # weights of the models built in code (tiny, sd15_arch)
    clip_skip: int = 1  # kohya --clip_skip; 2 for NovelAI-family anime models
    vae: str | None = None  # VAE override: .safetensors/.pt/.ckpt file or diffusers folder (kohya --vae)
    tokenizer: str | None = None  # folder or hub id; single files ship none (default CLIP ViT-L/14's)


@dataclass
class DatasetConfig:
    source: str = (
        "folders"  # folders: train_dir/reg_dir as given; toy: generate a toy set into the run folder
    )
    train_dir: str | None = None  # parent of `N_token class` folders (kohya --train_data_dir)
    reg_dir: str | None = None  # parent of `N_class` folders (kohya --reg_data_dir)
    resolution: int = 512  # square side in pixels (kohya --resolution)
    caption_extensions: list[str] = field(default_factory=lambda: [".txt", ".caption"])  # first found wins
    shuffle_caption: bool = False  # kohya --shuffle_caption
    keep_tokens: int = 0  # kohya --keep_tokens: first N comma-separated tags stay in place
    caption_dropout_rate: float = (
        0.0  # kohya --caption_dropout_rate: whole caption → "" with this probability
    )
    flip_aug: bool = False  # kohya --flip_aug: random horizontal flip
    enable_bucket: bool = False  # kohya --enable_bucket: aspect-ratio buckets of area ≤ resolution²
    min_bucket_reso: int = 256  # kohya --min_bucket_reso: shortest bucket side in pixels
    max_bucket_reso: int = 1024  # kohya --max_bucket_reso: longest bucket side in pixels
    bucket_reso_steps: int = 64  # kohya --bucket_reso_steps: bucket sides are multiples of this
    bucket_no_upscale: bool = False  # kohya --bucket_no_upscale: small pictures get a smaller bucket
    prior_loss_weight: float = 1.0  # kohya --prior_loss_weight: loss weight of regularization images
    num_workers: int = 0  # DataLoader workers
    toy_concept: str = "character"  # source=toy: character (`sls star`) | style (`chk style`)
    toy_images: int = 20  # source=toy: pictures of the concept to generate
    toy_repeats: int = 10  # source=toy: repeats of the generated concept folder
    toy_reg_images: int = 0  # source=toy: class pictures for the regularization folder


@dataclass
class NetworkConfig:
    module: str = "lora"
    dim: int = 8  # kohya --network_dim (rank)
    alpha: float = 4.0  # kohya --network_alpha; scale = alpha / dim
    dropout: float = 0.0  # kohya --network_dropout
    train_unet: bool = True  # False = kohya --network_train_text_encoder_only
    train_text_encoder: bool = True  # False = kohya --network_train_unet_only
    conv_dim: int = 0  # kohya --network_args conv_dim: rank of the UNet's 3x3 convs (LoCon); 0 = off
    conv_alpha: float | None = None  # kohya --network_args conv_alpha; null = 1.0 when conv_dim is set

    @property
    def resolved_conv_alpha(self) -> float:
        """conv_alpha, or kohya's default of 1.0 when only conv_dim was given."""
        return 1.0 if self.conv_alpha is None else self.conv_alpha


@dataclass
class OptimizerConfig:
    name: str = "AdamW"
    lr: float = 1e-4  # kohya --learning_rate: used where unet_lr / text_encoder_lr are null
    unet_lr: float | None = None  # kohya --unet_lr
    text_encoder_lr: float | None = None  # kohya --text_encoder_lr
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class SchedulerConfig:
    name: str = "constant_with_warmup"
    warmup_steps: float = 0  # steps, or a fraction of all steps when < 1 (kohya --lr_warmup_steps)
    num_cycles: int = 1  # cosine_with_restarts
    power: float = 1.0  # polynomial


@dataclass
class TrainingConfig:
    max_train_epochs: int | None = 10  # kohya --max_train_epochs (wins over max_train_steps)
    max_train_steps: int | None = None  # kohya --max_train_steps
    batch_size: int = 1  # kohya --train_batch_size
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | fp16 | bf16
    max_grad_norm: float = 1.0  # 0 disables clipping
    gradient_checkpointing: bool = False
    noise_offset: float = 0.0  # kohya --noise_offset (~0.1 for darker darks / brighter brights)
    min_snr_gamma: float = 0.0  # kohya --min_snr_gamma (5 is the paper's value; 0 = off)
    multires_noise_iterations: int = (
        0  # kohya --multires_noise_iterations (pyramid noise; 6-10 common; 0 = off)
    )
    multires_noise_discount: float = (
        0.3  # kohya --multires_noise_discount: weight ratio of each coarser level
    )
    save_every_n_epochs: int | None = 1  # kohya --save_every_n_epochs; the last epoch is the final file
    save_precision: str = "float"  # float | fp16 | bf16 (kohya --save_precision)


@dataclass
class LoggerConfig:
    kind: str = "wandb"  # wandb | tensorboard | none
    project: str = "lorasmith"
    wandb_mode: str = "offline"  # offline by default; `online` needs an account


@dataclass
class EvalConfig:
    enabled: bool = True
    prompts: list[str] = field(default_factory=list)
    negative_prompt: str = ""
    weights: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    seeds: list[int] = field(default_factory=lambda: [1])
    steps: int = 20
    cfg_scale: float = 7.0
    sampler: str = "euler"  # any A1111 sampler name or alias: "Euler", "euler", "DPM++ 2M", "k_euler_a", ...
    scheduler: str = "Automatic"  # A1111's schedule type: Automatic (the sampler's default), Karras, ...
    width: int | None = None  # null: dataset.resolution
    height: int | None = None
    scorer: str | None = None  # toy: score concept presence and base fidelity of the rendered images
    batch_size: int = 8  # images per sampling pass; each keeps its own seed's noise


@dataclass
class TrainConfig:
    name: str = "lora"  # run name; also the LoRA file name (kohya --output_name)
    seed: int = 42
    output_dir: str = "."  # set by Hydra to the run folder
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")


def _check_positive(key: str, value: float | int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(f"{key}={value!r} must be a positive number")


def _check_conv(net: NetworkConfig) -> None:
    """conv_alpha only means something with conv_dim; kohya ignores it silently, we say so."""
    if net.conv_dim < 0:
        raise ConfigError(f"network.conv_dim={net.conv_dim} must be >= 0 (0 = no LoRA on 3x3 convs)")
    if net.conv_alpha is None:
        return
    if not net.conv_dim:
        raise ConfigError(
            f"network.conv_alpha={net.conv_alpha} has no effect while network.conv_dim=0: set "
            "network.conv_dim > 0 to train the 3x3 convs, or network=lora / network.conv_alpha=null"
        )
    _check_positive("network.conv_alpha", net.conv_alpha)


def _check_eval_sampler(e: EvalConfig) -> None:
    """eval.sampler and eval.scheduler must name one of A1111's samplers and schedule types."""
    # Imported here: the sampler tables pull in torch, which reading a config does not otherwise need.
    from inference.sampler_names import SAMPLER_SPECS, find_sampler
    from inference.schedules import SCHEDULES, find_schedule

    if find_sampler(e.sampler) is None:
        raise ConfigError(
            f"eval.sampler={e.sampler!r} is not a known sampler; choose one of: "
            f"{', '.join(spec.name for spec in SAMPLER_SPECS)} (the schedule goes in eval.scheduler, e.g. "
            "eval.sampler='DPM++ 2M' eval.scheduler=Karras)"
        )
    if find_schedule(e.scheduler) is None:
        raise ConfigError(
            f"eval.scheduler={e.scheduler!r} is not a known schedule type; choose one of: "
            f"{', '.join(schedule.label for schedule in SCHEDULES)}"
        )


def _check_buckets(d: DatasetConfig) -> None:
    """Bucket settings must give kohya's bucket list; they only count with enable_bucket."""
    if not d.enable_bucket:
        if d.bucket_no_upscale:
            raise ConfigError(
                "dataset.bucket_no_upscale=true has no effect while dataset.enable_bucket=false: "
                "set dataset.enable_bucket=true, or drop bucket_no_upscale"
            )
        return
    step = d.bucket_reso_steps
    if step < 8 or step % 8:
        raise ConfigError(
            f"dataset.bucket_reso_steps={step} must be a positive multiple of 8 (the VAE's factor); 64 is usual"
        )
    for key, value in (("min_bucket_reso", d.min_bucket_reso), ("max_bucket_reso", d.max_bucket_reso)):
        if value < step or value % step:
            raise ConfigError(
                f"dataset.{key}={value} must be a positive multiple of dataset.bucket_reso_steps={step}"
            )
    if not d.min_bucket_reso <= d.resolution <= d.max_bucket_reso:
        raise ConfigError(
            f"dataset.resolution={d.resolution} must lie between dataset.min_bucket_reso={d.min_bucket_reso} "
            f"and dataset.max_bucket_reso={d.max_bucket_reso}: change the resolution or the bucket range"
        )


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check values that types alone cannot; raise ConfigError naming the key and the valid choices."""
    _check_choice("model.kind", cfg.model.kind, MODEL_KINDS)
    if cfg.model.kind == "pretrained" and not cfg.model.path:
        raise ConfigError("model.kind=pretrained needs model.path=<diffusers folder or hub id>")
    if cfg.model.clip_skip < 1:
        raise ConfigError(f"model.clip_skip={cfg.model.clip_skip} must be >= 1 (1 = last layer)")
    _check_choice("dataset.source", cfg.dataset.source, DATASET_SOURCES)
    _check_choice("dataset.toy_concept", cfg.dataset.toy_concept, TOY_CONCEPTS)
    if cfg.dataset.source == "folders" and not cfg.dataset.train_dir:
        raise ConfigError("dataset.train_dir is not set: give the folder that holds `N_token class` folders")
    _check_positive("dataset.resolution", cfg.dataset.resolution)
    if cfg.dataset.resolution % 8:
        raise ConfigError(f"dataset.resolution={cfg.dataset.resolution} must be a multiple of 8")
    _check_buckets(cfg.dataset)
    _check_choice("network.module", cfg.network.module, NETWORK_MODULES)
    _check_positive("network.dim", cfg.network.dim)
    _check_conv(cfg.network)
    if not (cfg.network.train_unet or cfg.network.train_text_encoder):
        raise ConfigError(
            "network.train_unet and network.train_text_encoder are both false: nothing to train"
        )
    _check_choice("optimizer.name", cfg.optimizer.name, OPTIMIZERS)
    _check_choice("scheduler.name", cfg.scheduler.name, SCHEDULERS)
    if cfg.scheduler.name == "constant" and cfg.scheduler.warmup_steps:
        raise ConfigError("scheduler.name=constant takes no warmup; use constant_with_warmup")
    t = cfg.training
    if t.max_train_epochs is None and t.max_train_steps is None:
        raise ConfigError("set training.max_train_epochs or training.max_train_steps")
    _check_positive("training.max_train_epochs", t.max_train_epochs, allow_none=True)
    _check_positive("training.max_train_steps", t.max_train_steps, allow_none=True)
    _check_positive("training.batch_size", t.batch_size)
    _check_positive("training.gradient_accumulation_steps", t.gradient_accumulation_steps)
    if t.min_snr_gamma < 0:
        raise ConfigError(f"training.min_snr_gamma={t.min_snr_gamma} must be >= 0 (0 = off, 5 is usual)")
    if t.multires_noise_iterations < 0 or not 0 < t.multires_noise_discount < 1:
        raise ConfigError(
            f"training.multires_noise_iterations={t.multires_noise_iterations} must be >= 0 and "
            f"multires_noise_discount={t.multires_noise_discount} between 0 and 1 (kohya's usual: 6-10, 0.3)"
        )
    _check_choice("training.mixed_precision", t.mixed_precision, MIXED_PRECISION)
    _check_choice("training.save_precision", t.save_precision, SAVE_PRECISION)
    _check_choice("logger.kind", cfg.logger.kind, LOGGERS)
    _check_eval_sampler(cfg.eval)
    _check_positive("eval.batch_size", cfg.eval.batch_size)
    if cfg.eval.scorer is not None:
        _check_choice("eval.scorer", cfg.eval.scorer, SCORERS)
    return cfg


def load_config(cfg: DictConfig) -> TrainConfig:
    """Merge Hydra's composed config into the typed schema: unknown keys and wrong types become ConfigError."""
    return validate(to_typed(TrainConfig, cfg))
