"""The checks of a training config's `training` section: run length, precision, noise and loss options.

Every failure is one ConfigError line that names the key, what is wrong, and the valid choices or the fix.
"""

from __future__ import annotations

from train.config import MIXED_PRECISION, SAVE_PRECISION, TrainingConfig
from train.errors import ConfigError
from train.network_checks import check_choice, check_positive


def _check_run_length(t: TrainingConfig) -> None:
    if t.max_train_epochs is None and t.max_train_steps is None:
        raise ConfigError("set training.max_train_epochs or training.max_train_steps")
    check_positive("training.max_train_epochs", t.max_train_epochs, allow_none=True)
    check_positive("training.max_train_steps", t.max_train_steps, allow_none=True)
    for key in ("save_every_n_epochs", "save_every_n_steps", "save_last_n_epochs", "save_last_n_steps"):
        value = getattr(t, key)
        if value is not None and value < 1:
            raise ConfigError(f"training.{key}={value} must be null (off) or >= 1")


def _check_precision(t: TrainingConfig) -> None:
    """full_fp16 / full_bf16 keep the LoRA itself in the half type that mixed precision computes in."""
    check_choice("training.mixed_precision", t.mixed_precision, MIXED_PRECISION)
    check_choice("training.save_precision", t.save_precision, SAVE_PRECISION)
    if t.full_fp16 and t.full_bf16:
        raise ConfigError(
            "training.full_fp16=true and training.full_bf16=true exclude each other: set one of them to false"
        )
    for key, on, needed in (("full_fp16", t.full_fp16, "fp16"), ("full_bf16", t.full_bf16, "bf16")):
        if on and t.mixed_precision != needed:
            raise ConfigError(
                f"training.{key}=true needs training.mixed_precision={needed} (not {t.mixed_precision!r}): "
                f"set training.mixed_precision={needed}, or training.{key}=false"
            )


def check_training(t: TrainingConfig) -> None:
    _check_run_length(t)
    check_positive("training.batch_size", t.batch_size)
    check_positive("training.gradient_accumulation_steps", t.gradient_accumulation_steps)
    if t.min_snr_gamma < 0:
        raise ConfigError(f"training.min_snr_gamma={t.min_snr_gamma} must be >= 0 (0 = off, 5 is usual)")
    if not t.max_grad_norm >= 0:  # a negative norm would flip every gradient: training uphill
        raise ConfigError(
            f"training.max_grad_norm={t.max_grad_norm} must be >= 0 (0 = no clipping, 1 is usual)"
        )
    if t.multires_noise_iterations < 0 or not 0 < t.multires_noise_discount < 1:
        raise ConfigError(
            f"training.multires_noise_iterations={t.multires_noise_iterations} must be >= 0 and "
            f"multires_noise_discount={t.multires_noise_discount} between 0 and 1 (kohya's usual: 6-10, 0.3)"
        )
    _check_precision(t)
    _check_noise_and_loss(t)


def _check_noise_and_loss(t: TrainingConfig) -> None:
    """kohya's loss and noise options; the Huber knobs only with the losses that use them."""
    from train.loss import HUBER_SCHEDULES, LOSS_TYPES

    check_choice("training.loss_type", t.loss_type, LOSS_TYPES)
    check_choice("training.huber_schedule", t.huber_schedule, HUBER_SCHEDULES)
    if not (t.huber_c > 0 and t.huber_scale > 0):
        raise ConfigError(f"training.huber_c={t.huber_c} and huber_scale={t.huber_scale} must be > 0")
    huber_given = (t.huber_schedule, t.huber_c, t.huber_scale) != ("snr", 0.1, 1.0)
    if huber_given and t.loss_type not in ("huber", "smooth_l1"):
        raise ConfigError(
            f"training.huber_schedule / huber_c / huber_scale apply to training.loss_type=huber or smooth_l1, "
            f"not {t.loss_type}: set the loss type, or leave them at snr / 0.1 / 1.0"
        )
    if t.ip_noise_gamma < 0:
        raise ConfigError(f"training.ip_noise_gamma={t.ip_noise_gamma} must be >= 0 (0.1 is usual, 0 = off)")
    if t.ip_noise_gamma_random_strength and not t.ip_noise_gamma:
        raise ConfigError(
            "training.ip_noise_gamma_random_strength=true needs training.ip_noise_gamma > 0 (its upper bound)"
        )
