"""Optimizers by kohya's names (`--optimizer_type`), one small builder each, and any `module.Class` besides.

`configs/optimizer/<name>.yaml` picks one with `name` and gives its keyword arguments in `args` (kohya's
`--optimizer_args`). Names are case-insensitive, as in kohya. Every parameter group carries its own lr (the
UNet's and the text encoder's), so `args` never holds an lr.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from train.errors import ConfigError

log = logging.getLogger(__name__)

Builder = Callable[[list[dict], dict[str, Any]], torch.optim.Optimizer]

FUSED_DTYPES = {
    "cpu": (torch.float32, torch.bfloat16),
    "cuda": (torch.float32, torch.float16, torch.bfloat16),
}


def fused_option(groups: list[dict]) -> dict[str, bool]:
    """`fused=True` where every parameter allows it: one kernel updates them all. On a CPU torch's default
    is a Python loop over the tensors (a toy LoRA step: 11 ms of 133 ms, 1 ms fused)."""
    params = [p for group in groups for p in group["params"]]
    fits = all(p.dtype in FUSED_DTYPES.get(p.device.type, ()) for p in params)
    return {"fused": True} if params and fits else {}


def adamw(groups: list[dict], args: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, **{**fused_option(groups), **args})


def sgd_nesterov(groups: list[dict], args: dict[str, Any]) -> torch.optim.Optimizer:
    """kohya's SGDNesterov: momentum 0.9 unless given."""
    return torch.optim.SGD(groups, **{"momentum": 0.9, **args, "nesterov": True})


def bitsandbytes(class_name: str, **defaults: Any) -> Builder:
    """A bitsandbytes optimizer (8-bit states; the paged ones page their states to the CPU under CUDA)."""

    def build(groups: list[dict], args: dict[str, Any]) -> torch.optim.Optimizer:
        import bitsandbytes as bnb

        on_cpu = all(p.device.type == "cpu" for group in groups for p in group["params"])
        if class_name.startswith("Paged") and on_cpu:
            log.warning("%s pages its states only on a CUDA GPU: on the CPU it runs unpaged", class_name)
            warnings.filterwarnings(
                "ignore", message="Paged optimizers are not supported on CPU"
            )  # said above
        lr = groups[0]["lr"]  # some take lr as a required argument; every group's own lr still applies
        return getattr(bnb.optim, class_name)(groups, **{"lr": lr, **defaults, **args})

    build.__name__ = f"bitsandbytes_{class_name}"
    return build


def lion(groups: list[dict], args: dict[str, Any]) -> torch.optim.Optimizer:
    from lion_pytorch import Lion

    return Lion(groups, **args)


LAYER_SCALED = ("DAdaptAdam",)  # D-Adaptation classes that read a `layer_scale` from each parameter group


def per_group_scales(class_name: str, groups: list[dict]) -> list[dict]:
    """D-Adaptation and Prodigy refuse different lr values per group (they raise at the first step). Where
    the class takes a `layer_scale` per group (DAdaptAdam), groups keep the highest lr and scale by
    lr / highest, the same step sizes; elsewhere different rates are refused now, in one line, instead of
    at step one."""
    lrs = {group["lr"] for group in groups if group["lr"]}
    if len(lrs) <= 1:
        return groups
    if class_name not in LAYER_SCALED:
        raise ConfigError(
            f"optimizer.name={class_name} takes one learning rate for every parameter group, but this run has "
            f"{', '.join(f'{lr:g}' for lr in sorted(lrs))} (unet_lr / text_encoder_lr, LoRA+ or block lr "
            "weights): make them equal (rates tuned for AdamW: optimizer.lr=1 optimizer.unet_lr=null "
            "optimizer.text_encoder_lr=null), or use DAdaptAdam, which scales groups"
        )
    top = max(lrs)
    return [{**group, "lr": top, "layer_scale": group["lr"] / top} for group in groups]


def dadaptation(class_name: str, module: str = "dadaptation") -> Builder:
    """A D-Adaptation optimizer: it estimates the step size d itself, so lr is a multiplier (1.0)."""

    def build(groups: list[dict], args: dict[str, Any]) -> torch.optim.Optimizer:
        cls = getattr(importlib.import_module(module), class_name)
        return cls(per_group_scales(class_name, groups), **args)

    build.__name__ = f"dadaptation_{class_name}"
    return build


def prodigy(groups: list[dict], args: dict[str, Any]) -> torch.optim.Optimizer:
    """Prodigy: D-Adaptation's successor; lr is a multiplier of its estimate d (1.0)."""
    from prodigyopt import Prodigy

    return Prodigy(per_group_scales("Prodigy", groups), **args)


def adafactor(groups: list[dict], args: dict[str, Any]) -> torch.optim.Optimizer:
    """transformers' Adafactor. With `relative_step` it sets its own rates (the `adafactor` scheduler);
    otherwise the groups' rates apply (kohya's advice: constant_with_warmup, max_grad_norm 0)."""
    from transformers.optimization import Adafactor

    if args.get("relative_step", True):
        groups = [{k: v for k, v in group.items() if k != "lr"} for group in groups]
        return Adafactor(groups, lr=None, **args)
    return Adafactor(groups, **args)


def schedule_free(class_name: str) -> Builder:
    """A schedule-free optimizer: its own averaging replaces the schedule; weights are saved averaged."""

    def build(groups: list[dict], args: dict[str, Any]) -> torch.optim.Optimizer:
        import schedulefree

        optimizer = getattr(schedulefree, class_name)(groups, **args)
        optimizer.train()  # schedule-free optimizers start in eval mode
        return optimizer

    build.__name__ = f"schedule_free_{class_name}"
    return build


# kohya's --optimizer_type names; the lookup ignores case.
OPTIMIZERS: dict[str, Builder] = {
    "AdamW": adamw,
    "AdamW8bit": bitsandbytes("AdamW8bit"),
    "PagedAdamW": bitsandbytes("PagedAdamW"),
    "PagedAdamW8bit": bitsandbytes("PagedAdamW8bit"),
    "PagedAdamW32bit": bitsandbytes("PagedAdamW32bit"),
    "Lion": lion,
    "Lion8bit": bitsandbytes("Lion8bit"),
    "PagedLion8bit": bitsandbytes("PagedLion8bit"),
    "SGDNesterov": sgd_nesterov,
    "SGDNesterov8bit": bitsandbytes("SGD8bit", momentum=0.9, nesterov=True),
    "DAdaptation": dadaptation("DAdaptAdamPreprint", "dadaptation.experimental"),
    "DAdaptAdamPreprint": dadaptation("DAdaptAdamPreprint", "dadaptation.experimental"),
    "DAdaptAdaGrad": dadaptation("DAdaptAdaGrad"),
    "DAdaptAdam": dadaptation("DAdaptAdam"),
    "DAdaptAdan": dadaptation("DAdaptAdan"),
    "DAdaptAdanIP": dadaptation("DAdaptAdanIP", "dadaptation.experimental"),
    "DAdaptLion": dadaptation("DAdaptLion"),
    "DAdaptSGD": dadaptation("DAdaptSGD"),
    "Prodigy": prodigy,
    "AdaFactor": adafactor,
    "AdamWScheduleFree": schedule_free("AdamWScheduleFree"),
    "RAdamScheduleFree": schedule_free("RAdamScheduleFree"),
    "SGDScheduleFree": schedule_free("SGDScheduleFree"),
}

ADAPTIVE = ("dadapt", "prodigy")  # name prefixes whose lr multiplies an estimated step size d


def known_name(name: str) -> str | None:
    """The registry's spelling of `name` (any case), or None."""
    return next((known for known in OPTIMIZERS if known.lower() == name.lower()), None)


def is_class_path(name: str) -> bool:
    """`module.Class` (kohya's "any other class"), e.g. `torch.optim.RAdam` or `bitsandbytes.optim.AdEMAMix8bit`."""
    parts = name.split(".")
    return len(parts) >= 2 and all(part.isidentifier() for part in parts)


def is_adaptive(name: str) -> bool:
    return name.lower().startswith(ADAPTIVE)


def uses_relative_step(name: str, args: dict[str, Any]) -> bool:
    """Adafactor computing its own rates (its default, kohya's too)."""
    return name.lower() == "adafactor" and bool(args.get("relative_step", True))


def import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"optimizer.name={path}: cannot import it ({error})") from error


def build_optimizer(groups: list[dict], name: str, args: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer called `name` over the parameter groups (each with its own lr), with `args`."""
    known = known_name(name)
    args = dict(args)
    if known is not None:
        build: Builder = OPTIMIZERS[known]
    else:
        cls = import_class(name)

        def build(groups: list[dict], args: dict[str, Any]) -> torch.optim.Optimizer:
            takes_lr = "lr" in inspect.signature(cls).parameters  # e.g. a required lr
            return cls(groups, **({"lr": groups[0]["lr"]} if takes_lr else {}), **args)

    try:
        optimizer = build(groups, args)
    except (TypeError, ValueError) as error:  # an argument the class does not take, or a value it refuses
        texts = [f"{key}={value!r}" for key, value in args.items() if isinstance(value, str)]
        hint = f" (text where a number may belong: {', '.join(texts)})" if texts else ""
        raise ConfigError(f"optimizer.args for {known or name}: {error}{hint}") from error
    except IndexError as error:  # a list argument shorter than the class reads, e.g. betas=[0.9]
        raise ConfigError(
            f"optimizer.args for {known or name}: a list in {args} is too short ({error}); betas takes two "
            "numbers, e.g. optimizer.args.betas=[0.9,0.999]"
        ) from error
    check_arg_types(optimizer, args, known or name)
    check_betas(optimizer, args, known or name)
    if is_adaptive(name):  # after the build: a refused setting is one line, without warnings before it
        warn_adaptive_rates(name, [group["lr"] for group in groups])
    return optimizer


def check_arg_types(optimizer: torch.optim.Optimizer, args: dict[str, Any], label: str) -> None:
    """Each argument of the kind the class's own default is (a number, true/false, a list), where it has one:
    many classes read their arguments only at the first step, where `d_coef=abc` would be a traceback."""
    parameters = inspect.signature(type(optimizer).__init__).parameters
    for key, value in args.items():
        default = getattr(parameters.get(key), "default", inspect.Parameter.empty)
        if isinstance(default, bool):
            wrong, kind = not isinstance(value, bool), "true or false"
        elif isinstance(default, int | float):
            wrong, kind = isinstance(value, bool) or not isinstance(value, int | float), "a number"
        elif isinstance(default, tuple):
            wrong, kind = not isinstance(value, list | tuple), "a list like [0.9,0.999]"
        else:
            continue
        if wrong:
            raise ConfigError(
                f"optimizer.args.{key}={value!r}: {label} takes {kind} there (its default: {default})"
            )


def check_betas(optimizer: torch.optim.Optimizer, args: dict[str, Any], label: str) -> None:
    """`betas` as long as the class's own default: most take two, Adan three. The classes unpack them only
    at their first step, where a longer list would stop the run with a traceback."""
    given = args.get("betas")
    default = inspect.signature(type(optimizer).__init__).parameters.get("betas")
    expected = getattr(default, "default", None)
    if given is None or not isinstance(expected, tuple | list) or len(given) == len(expected):
        return
    raise ConfigError(
        f"optimizer.args.betas={list(given)}: {label} takes {len(expected)} numbers, e.g. "
        f"optimizer.args.betas=[{','.join(f'{b:g}' for b in expected)}] (its default)"
    )


def warn_adaptive_rates(name: str, lrs: list[float]) -> None:
    """kohya's warnings for D-Adaptation and Prodigy: lr is a multiplier of d, usually 1.0."""
    if max(lrs) <= 0.1:
        log.warning(
            "%s: learning rate %g is too low: this optimizer finds the step size itself and lr multiplies it; "
            "set optimizer.lr=1 (and optimizer.unet_lr / text_encoder_lr to null or 1)",
            name,
            max(lrs),
        )
    if len(set(lrs)) > 1:
        log.warning(
            "%s: the UNet and text encoder have different learning rates (%s); both share one estimate of the "
            "step size, so the rates act as multipliers of it (kohya: only the first takes effect)",
            name,
            ", ".join(f"{lr:g}" for lr in lrs),
        )


def adaptive_rate(optimizer: torch.optim.Optimizer) -> float | None:
    """d·lr of the first group for D-Adaptation / Prodigy (kohya's `lr/d*lr`), else None."""
    group = getattr(optimizer, "optimizer", optimizer).param_groups[0]
    return float(group["d"]) * float(group["lr"]) if "d" in group else None


def optimizer_class(optimizer: torch.optim.Optimizer) -> str:
    """`module.Class` of the optimizer itself, e.g. `torch.optim.adamw.AdamW`."""
    # accelerate's prepare() wraps the optimizer in AcceleratedOptimizer; this names the real one.
    cls = type(getattr(optimizer, "optimizer", optimizer))
    return f"{cls.__module__}.{cls.__name__}"


def describe_optimizer(optimizer: torch.optim.Optimizer, args: dict[str, Any]) -> str:
    """kohya's `ss_optimizer` form: `module.Class(key=value,...)`, e.g. `torch.optim.adamw.AdamW(...)`."""
    shown = ",".join(f"{key}={tuple(v) if isinstance(v, list) else v}" for key, v in args.items())
    return f"{optimizer_class(optimizer)}({shown})"


@contextmanager
def averaged_weights(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Inside: the weights a schedule-free optimizer evaluates with (its average); others are untouched.

    Afterwards the training weights are put back bit for bit (not recomputed), so a run that saved and one
    resumed from that save continue from the same numbers.
    """
    inner = getattr(optimizer, "optimizer", optimizer)
    if not (callable(getattr(inner, "eval", None)) and callable(getattr(inner, "train", None))):
        yield
        return
    params = [p for group in inner.param_groups for p in group["params"]]
    kept = [p.detach().clone() for p in params]
    inner.eval()
    try:
        yield
    finally:
        inner.train()
        with torch.no_grad():
            for param, value in zip(params, kept, strict=True):
                param.copy_(value)
