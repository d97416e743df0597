"""The objective.* checks (a config_checks part): a known kind, its own direction, and for `toy` an eval that
writes the scores it reads."""

from __future__ import annotations

from train.config import TrainConfig
from train.errors import ConfigError
from train.objective import DIRECTIONS


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
    if o.kind != "toy":
        return
    if e.scorer != "toy" or not e.enabled or not e.prompts:
        raise ConfigError(
            "objective=toy reads the toy scores of the eval grid: it needs eval.enabled=true, eval.prompts and "
            f"eval.scorer=toy (here {e.scorer}); use +experiment=char_lora, or choose objective=train_loss"
        )
    if missing := [w for w in (0.0, 1.0) if w not in e.weights]:
        raise ConfigError(
            f"objective=toy compares LoRA weights 0 and 1; eval.weights={list(e.weights)} lacks {missing}"
        )
