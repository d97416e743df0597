"""The objective.* checks (a config_checks part): a known kind, its own direction, and for `toy` an eval that
writes the scores it reads."""

from __future__ import annotations

from train.config import TrainConfig
from train.errors import ConfigError
from train.objective import DIRECTIONS, GRID_KINDS
from train.trial import in_multirun


def check_objective(cfg: TrainConfig) -> None:
    o, e = cfg.objective, cfg.eval
    if o.kind not in DIRECTIONS:
        raise ConfigError(f"objective.kind={o.kind!r} is not valid; choose one of: {', '.join(DIRECTIONS)}")
    if o.direction != DIRECTIONS[o.kind]:
        raise ConfigError(
            f"objective.direction={o.direction} does not fit objective.kind={o.kind}, which is better "
            f"{'higher' if DIRECTIONS[o.kind] == 'maximize' else 'lower'}: set objective.direction="
            f"{DIRECTIONS[o.kind]} (or choose objective={o.kind}, which sets both)"
        )
    if o.kind == "validation_loss" and not cfg.dataset.validation_split:
        raise ConfigError(
            "objective=validation_loss reads loss/validation, which needs held-out pictures: set "
            "dataset.validation_split (e.g. 0.2), or choose objective=train_loss"
        )
    if o.kind not in GRID_KINDS:
        return
    if not e.enabled:  # the run trains as asked; only a sweep, which needs the number, refuses it
        if in_multirun():
            raise ConfigError(
                f"objective={o.kind} reads the eval grid's scores, but eval.enabled=false: a sweep needs them "
                "(drop eval.enabled=false, or choose objective=train_loss)"
            )
        return
    if o.kind == "clip_score":
        if not e.clip_model or not e.prompts or 1.0 not in e.weights:
            raise ConfigError(
                "objective=clip_score reads the CLIP score of the eval grid at LoRA weight 1: it needs "
                f"eval.clip_model (a CLIP model folder or hub id), eval.prompts and 1.0 in eval.weights "
                f"(here {list(e.weights)})"
            )
        return
    if e.scorer != "toy" or not e.prompts:
        raise ConfigError(
            "objective=toy reads the toy scores of the eval grid: it needs eval.enabled=true, eval.prompts and "
            f"eval.scorer=toy (here {e.scorer}); use +experiment=char_lora, or choose objective=train_loss"
        )
    if missing := [w for w in (0.0, 1.0) if w not in e.weights]:
        raise ConfigError(
            f"objective=toy compares LoRA weights 0 and 1; eval.weights={list(e.weights)} lacks {missing}"
        )
