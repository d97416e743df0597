"""The checks `validate` runs once on a typed training config: each value that types alone cannot check.

Every failure is one ConfigError line that names the key, what is wrong, and the valid choices or the fix.
"""

from __future__ import annotations

from pathlib import Path

from train.caption_tokens import MAX_TOKEN_LENGTHS
from train.config import (
    DATASET_SOURCES,
    LOGGERS,
    MODEL_KINDS,
    SCHEDULERS,
    SCORERS,
    TOY_CONCEPTS,
    DatasetConfig,
    EvalConfig,
    ModelConfig,
    NetworkConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainConfig,
)
from train.config_numbers import check_finite
from train.errors import ConfigError
from train.network.embedding_checks import check_embedding
from train.network_checks import check_choice as _check_choice
from train.network_checks import check_network
from train.network_checks import check_positive as _check_positive
from train.objective_checks import check_objective
from train.optimizers import OPTIMIZERS, is_class_path, known_name, uses_relative_step
from train.sample_prompts import check_sample
from train.training_checks import check_training
from train.validation_split import check_validation_keys

MAX_SEED = 2**32 - 1  # numpy's seeds are unsigned 32-bit, as A1111's
MAX_RESOLUTION = 4096  # px: four times SDXL's 1024, far above what any base model was trained at


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


def _check_name(name: str) -> None:
    """The run name becomes `<name>.safetensors` inside the run folder, so it must be a plain file name."""
    if name in ("", ".", "..") or any(char in name for char in "/\\\0"):
        raise ConfigError(
            f"name={name!r} is not a file name: the LoRA is saved as <name>.safetensors inside the run folder; "
            "give a plain name without /, \\ or .. (e.g. name=my_lora)"
        )


def _check_seed_and_resume(cfg: TrainConfig) -> None:
    if not -1 <= cfg.seed <= MAX_SEED:
        raise ConfigError(
            f"seed={cfg.seed} must be between 0 and {MAX_SEED} (2**32 - 1), or -1 for a random seed"
        )
    if cfg.resume is not None and not cfg.resume.strip():
        raise ConfigError("resume='' is empty: give resume=auto, a state folder, or resume=null")


def _check_model(m: ModelConfig) -> None:
    _check_choice("model.kind", m.kind, MODEL_KINDS)
    if m.kind == "pretrained" and not m.path:
        raise ConfigError("model.kind=pretrained needs model.path=<diffusers folder or hub id>")
    given = [
        (f"model.{key}", value)
        for key, value in (("path", m.path), ("revision", m.revision), ("variant", m.variant))
        if value
    ]
    if m.kind != "pretrained" and given:  # a built-in model would silently train instead of the user's
        key, value = given[0]
        raise ConfigError(
            f"{key}={value} is not read by model={m.kind}, which is built in: add model=sd15 to train from it "
            f"(any SD 1.x / 2.x / SDXL path), or leave {key} out"
        )
    if m.clip_skip < 1:
        raise ConfigError(f"model.clip_skip={m.clip_skip} must be >= 1 (1 = last layer)")


def _same_folder(a: str, b: str) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _check_dataset(d: DatasetConfig) -> None:
    _check_choice("dataset.source", d.source, DATASET_SOURCES)
    _check_choice("dataset.toy_concept", d.toy_concept, TOY_CONCEPTS)
    if d.max_token_length not in MAX_TOKEN_LENGTHS:
        raise ConfigError(
            f"dataset.max_token_length={d.max_token_length} must be one of 75, 150, 225 (1, 2 or 3 chunks of 75 "
            "tokens, as kohya --max_token_length)"
        )
    _check_masks(d)
    if d.source == "folders" and not d.train_dir:
        raise ConfigError("dataset.train_dir is not set: give the folder that holds `N_token class` folders")
    if d.source == "folders" and d.reg_dir and _same_folder(d.reg_dir, d.train_dir):
        raise ConfigError(
            f"dataset.reg_dir={d.reg_dir} is dataset.train_dir: class pictures are other pictures of the class "
            "(`python -m data` can make them), not the subject's own; give another folder, or none"
        )
    _check_positive("dataset.resolution", d.resolution)
    if d.resolution % 8:
        raise ConfigError(f"dataset.resolution={d.resolution} must be a multiple of 8")
    # every picture is resized to about resolution² pixels: a mistyped 100000 ran out of memory
    if d.resolution > MAX_RESOLUTION:
        raise ConfigError(
            f"dataset.resolution={d.resolution} is more than {MAX_RESOLUTION} px: SD 1.5 trains at 512, SDXL at "
            "1024 (each picture is resized to about resolution x resolution pixels)"
        )
    _check_buckets(d)
    if d.vae_batch_size < 1:
        raise ConfigError(f"dataset.vae_batch_size={d.vae_batch_size} must be >= 1 (pictures per VAE pass)")
    if d.num_workers < 0:
        raise ConfigError(
            f"dataset.num_workers={d.num_workers} must be >= 0 (0 = load in the training process)"
        )
    if not d.max_aspect_ratio >= 1:
        raise ConfigError(
            f"dataset.max_aspect_ratio={d.max_aspect_ratio} must be >= 1 (longer side / shorter side)"
        )


def _check_latent_cache(d: DatasetConfig) -> None:
    """A cached latent is encoded once, so per-step augmentations of the picture cannot reach it.

    flip_aug is fine: both the picture and its mirror image are cached.
    """
    if not (d.cache_latents or d.cache_latents_to_disk):
        return
    key = "dataset.cache_latents" if d.cache_latents else "dataset.cache_latents_to_disk"
    for aug, on, why in (
        ("dataset.random_crop", d.random_crop, "a cached latent is one fixed crop"),
        ("dataset.color_aug", d.color_aug, "a cached latent has one fixed colouring"),
    ):
        if on:
            raise ConfigError(f"{key}=true cannot be combined with {aug}=true: {why}; turn one of them off")


def _check_text_encoder_cache(cfg: TrainConfig) -> None:
    """Cached text-encoder outputs are computed once from fixed captions by a text encoder that never changes."""
    d, net, opt = cfg.dataset, cfg.network, cfg.optimizer
    if not d.cache_text_encoder_outputs:
        return
    conflicts = []
    if d.shuffle_caption:
        conflicts.append(("dataset.shuffle_caption=true", "dataset.shuffle_caption=false"))
    if d.caption_dropout_rate > 0:
        conflicts.append(
            (f"dataset.caption_dropout_rate={d.caption_dropout_rate}", "dataset.caption_dropout_rate=0")
        )
    if d.caption_dropout_every_n_epochs > 0:
        conflicts.append(
            (
                f"dataset.caption_dropout_every_n_epochs={d.caption_dropout_every_n_epochs}",
                "dataset.caption_dropout_every_n_epochs=0",
            )
        )
    if d.caption_tag_dropout_rate > 0:
        conflicts.append(
            (
                f"dataset.caption_tag_dropout_rate={d.caption_tag_dropout_rate}",
                "dataset.caption_tag_dropout_rate=0",
            )
        )
    if d.enable_wildcard:
        conflicts.append(("dataset.enable_wildcard=true", "dataset.enable_wildcard=false"))
    if net.train_text_encoder and any(opt.text_encoder_lrs):
        conflicts.append(("network.train_text_encoder=true", "network.train_text_encoder=false"))
    if conflicts:
        raise ConfigError(
            f"dataset.cache_text_encoder_outputs=true cannot be combined with "
            f"{' and '.join(c for c, _ in conflicts)}: the outputs are encoded once from fixed captions by a "
            f"frozen text encoder; set {' '.join(f for _, f in conflicts)}, "
            "or dataset.cache_text_encoder_outputs=false"
        )


def _check_masks(d: DatasetConfig) -> None:
    """masked_loss needs one mask source; a mask source needs masked_loss (else it would do nothing)."""
    if d.alpha_mask and d.mask_dir:
        raise ConfigError("dataset.alpha_mask=true and dataset.mask_dir are two mask sources: keep one")
    if d.masked_loss and not (d.alpha_mask or d.mask_dir):
        raise ConfigError(
            "dataset.masked_loss=true needs masks: set dataset.alpha_mask=true (the pictures' alpha channel) "
            "or dataset.mask_dir=<folder of masks named like the pictures>"
        )
    if not d.masked_loss and (d.alpha_mask or d.mask_dir):
        source = "dataset.alpha_mask=true" if d.alpha_mask else f"dataset.mask_dir={d.mask_dir}"
        raise ConfigError(
            f"{source} has no effect without dataset.masked_loss=true: add it, or remove {source}"
        )
    if d.mask_dir and not Path(d.mask_dir).expanduser().is_dir():
        raise ConfigError(f"dataset.mask_dir={d.mask_dir} is not a folder")


# The networks that train SDXL's two text encoders each with its own adapters (and so at its own rate).
PER_ENCODER_MODULES = ("lora", "dora", "loha", "lokr")


def _check_text_encoder_lrs(value: object, module: str) -> None:
    """One number, or (SDXL) a list of two: each text encoder's rate, as kohya's --text_encoder_lr a b."""
    if value is None or isinstance(value, float):
        return
    if not (isinstance(value, list) and 1 <= len(value) <= 2 and all(isinstance(v, float) for v in value)):
        raise ConfigError(
            f"optimizer.text_encoder_lr={value!r} must be a number, or for SDXL a list of two numbers "
            "[first text encoder, second text encoder]"
        )
    if len(value) == 2 and module not in PER_ENCODER_MODULES:
        raise ConfigError(
            f"optimizer.text_encoder_lr={value}: network.module={module} trains at one text-encoder rate; "
            f"give one number (two work with {', '.join(PER_ENCODER_MODULES)} on SDXL)"
        )


# What only a LoRA has: kohya's train_db.py (network=full) takes none of these.
def _check_learning_rates(opt: OptimizerConfig, net: NetworkConfig) -> None:
    """lr > 0; a part's own lr may be 0 (kohya's way to freeze that part) while the other part still trains."""
    if not opt.lr > 0:
        raise ConfigError(
            f"optimizer.lr={opt.lr} must be > 0 (kohya --learning_rate; 1e-4 is usual for a LoRA)"
        )
    _check_text_encoder_lrs(opt.text_encoder_lr, net.module)
    if net.module == "embedding":  # one part, the text encoder's rate: embedding_checks.check_embedding
        return
    parts = {
        "unet": (opt.unet_lr, net.train_unet),
        "text_encoder": (opt.text_encoder_lr, net.train_text_encoder),
    }
    for part, (own, _) in parts.items():
        if own is not None and not min(own if isinstance(own, list) else [own]) >= 0:
            raise ConfigError(
                f"optimizer.{part}_lr={own} must be >= 0 (0 freezes that part as in kohya; null uses optimizer.lr)"
            )
    rates = (opt.part_lrs[0], max(opt.text_encoder_lrs))  # a text encoder trains if either of SDXL's does
    if any(on and lr > 0 for (_, on), lr in zip(parts.values(), rates, strict=True)):
        return
    frozen = " and ".join(
        f"optimizer.{part}_lr={own}" if on else f"network.train_{part}=false"
        for part, (own, on) in parts.items()
    )
    raise ConfigError(
        f"neither the UNet nor the text encoder would train ({frozen}): give one of them a learning rate > 0 "
        "(or null to use optimizer.lr)"
    )


def _check_optimizer(opt: OptimizerConfig, scheduler: SchedulerConfig) -> None:
    """A known name or an importable-looking module.Class; the pairings kohya enforces or warns about."""
    if known_name(opt.name) is None and not is_class_path(opt.name):
        raise ConfigError(
            f"optimizer.name={opt.name!r} is not an optimizer: choose one of {', '.join(OPTIMIZERS)}, "
            "or give a class as module.Class (e.g. torch.optim.RAdam)"
        )
    if "lr" in opt.args:
        raise ConfigError(
            "optimizer.args.lr: the learning rates are optimizer.lr, optimizer.unet_lr and "
            "optimizer.text_encoder_lr; remove optimizer.args.lr"
        )
    relative = uses_relative_step(opt.name, opt.args)
    if relative and (opt.unet_lr is not None or opt.text_encoder_lr is not None):
        raise ConfigError(
            "optimizer.unet_lr / optimizer.text_encoder_lr: Adafactor with relative_step computes its own rates; "
            "set both to null, or optimizer.args.relative_step=false to use them"
        )
    if relative != (scheduler.name == "adafactor"):
        raise ConfigError(
            "scheduler=adafactor goes with optimizer=adafactor and its relative_step (on by default), and "
            f"only with it (now scheduler.name={scheduler.name}, optimizer.name={opt.name}, "
            f"relative_step={opt.args.get('relative_step', True)}): pick both or neither"
        )
    if "schedulefree" in opt.name.lower() and scheduler.name not in ("constant", "constant_with_warmup"):
        raise ConfigError(
            f"optimizer.name={opt.name} replaces the lr schedule with its own averaging: use scheduler=constant "
            f"(not {scheduler.name}); it warms up with optimizer.args.warmup_steps"
        )


def _check_scheduler_knobs(scheduler: SchedulerConfig) -> None:
    """Each schedule's own knob only with that schedule: elsewhere it would be read and ignored."""
    if scheduler.power != 1.0 and scheduler.name != "polynomial":
        raise ConfigError(f"scheduler.power={scheduler.power} applies to scheduler=polynomial only")
    if scheduler.power <= 0:  # the decay raises the remaining fraction to it: 0 ** -1 stopped the run
        raise ConfigError(
            f"scheduler.power={scheduler.power} must be > 0 (1 = linear decay, as kohya's default)"
        )
    if scheduler.num_cycles != 1 and scheduler.name not in ("cosine_with_restarts", "cosine_with_min_lr"):
        raise ConfigError(
            f"scheduler.num_cycles={scheduler.num_cycles} applies to scheduler=cosine_with_restarts or "
            f"cosine_with_min_lr only (not {scheduler.name})"
        )
    if not scheduler.warmup_steps >= 0:
        raise ConfigError(
            f"scheduler.warmup_steps={scheduler.warmup_steps} must be >= 0 (steps, or a fraction of all steps "
            "when below 1)"
        )
    if scheduler.num_cycles < 1:
        raise ConfigError(
            f"scheduler.num_cycles={scheduler.num_cycles} must be >= 1 (cosine cycles over the run)"
        )
    if not 0 <= scheduler.min_lr_ratio < 1:
        raise ConfigError(f"scheduler.min_lr_ratio={scheduler.min_lr_ratio} must be in [0, 1)")
    if scheduler.min_lr_ratio and scheduler.name not in ("cosine_with_min_lr", "rex"):
        raise ConfigError(
            f"scheduler.min_lr_ratio={scheduler.min_lr_ratio} applies to scheduler=cosine_with_min_lr or rex, "
            f"not {scheduler.name}: pick one of those, or set it to 0"
        )


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check values that types alone cannot; raise ConfigError naming the key and the valid choices."""
    check_finite(cfg)
    _check_name(cfg.name)
    _check_seed_and_resume(cfg)
    _check_model(cfg.model)
    _check_dataset(cfg.dataset)
    check_network(cfg.network)
    check_embedding(cfg)
    _check_learning_rates(cfg.optimizer, cfg.network)
    _check_optimizer(cfg.optimizer, cfg.scheduler)
    _check_latent_cache(cfg.dataset)
    _check_text_encoder_cache(cfg)
    _check_choice("scheduler.name", cfg.scheduler.name, SCHEDULERS)
    _check_scheduler_knobs(cfg.scheduler)
    if cfg.scheduler.name in ("constant", "adafactor") and cfg.scheduler.warmup_steps:
        raise ConfigError(f"scheduler.name={cfg.scheduler.name} takes no warmup; use constant_with_warmup")
    check_training(cfg.training)
    check_validation_keys(cfg.dataset, cfg.training)
    _check_choice("logger.kind", cfg.logger.kind, LOGGERS)
    _check_eval_sampler(cfg.eval)
    _check_positive("eval.batch_size", cfg.eval.batch_size)
    _check_positive("eval.steps", cfg.eval.steps)
    if cfg.eval.scorer is not None:
        _check_choice("eval.scorer", cfg.eval.scorer, SCORERS)
    check_sample(cfg)
    check_objective(cfg)
    return cfg
