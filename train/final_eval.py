"""The end of training: the final file measured as `python -m train.evaluate` measures any saved file.

The grid of eval.prompts x eval.weights goes to `eval/`; scores.json holds the final file's scores per weight
(toy scores, image scores, the validation loss at each weight); their metrics go to metrics.jsonl at the last
step. A full fine-tune renders the base (weight 0) and the fine-tuned model (weight 1) instead.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from train.cpu_speed import unroute_convs
from train.eval import render_tuned_grid
from train.file_eval import (
    EvalContext,
    FileEval,
    evaluate_file,
    file_metrics,
    identity_references,
    write_scores_json,
)
from train.image_scores import load_scorers
from train.model_setup import uncompile
from train.network.base import tunes_base_model
from train.result import RunResult
from train.run_eval import LORA_MODULES_ONLY
from train.saved_files import read_saved_file
from train.signals import EXIT_CODES, TrainingInterrupted, signals_raise
from train.tracking_results import log_eval
from train.validation import HeldOutCaptions

if TYPE_CHECKING:
    from train.run import Trainer


def evaluate(trainer: Trainer, result: RunResult) -> None:
    """Render the eval grid with the final file as its network's format loads it (or the fine-tuned model
    itself) and score it (main process)."""
    cfg, run_dir = trainer.cfg, trainer.run_dir
    trainer.network.remove()
    uncompile(trainer.bundle.unet)
    unroute_convs(trainer.bundle.unet)
    for part in (trainer.bundle.vae, trainer.bundle.text_encoder):  # parked on the CPU after caching
        if part is not None:
            part.to(trainer.accelerator.device)
    if tunes_base_model(trainer.network):
        outcome = render_tuned_grid(trainer.bundle, cfg, run_dir / "eval", trainer.accelerator.device)
        measured = FileEval(result.lora_path, outcome.grid_path, outcome.scores or {})
    else:
        saved = read_saved_file(result.lora_path, final=True)
        measured = evaluate_file(
            trainer.bundle, final_eval_context(trainer), result.lora_path, run_dir / "eval",
            trainer.network.file_format, saved.step, saved.epoch,
        )  # fmt: skip
    result.grid_path = measured.grid_path
    if any(measured.weights.values()):
        result.scores = measured.weights
        result.scores_path = write_scores_json([measured], run_dir / "scores.json", result.lora_path.name)
        # loss/validation of the final weights is already logged by the loop
        trainer.metrics.log(file_metrics(measured, with_validation=False), trainer.plan.max_train_steps)
    log_eval(trainer.metrics, measured.grid_path, result.scores, trainer.plan.max_train_steps)


def evaluate_or_say_what_is_saved(trainer: Trainer, result: RunResult) -> None:
    """`evaluate`; a Ctrl-C or SIGTERM during it (training is over, its graceful stop gone) becomes one line
    that says the file is saved and how to measure it later, exit status 130 / 143."""
    try:
        with signals_raise():
            evaluate(trainer, result)
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        later = (
            f"python -m train.evaluate run={trainer.run_dir} measures it"
            if trainer.cfg.network.module not in LORA_MODULES_ONLY
            else f"network.module={trainer.cfg.network.module} files are measured only at the end of training"
        )
        raise TrainingInterrupted(
            f"{signal.Signals(signum).name}: interrupted during the evaluation: {result.lora_path} is saved, "
            f"its grid and scores are not; {later}",
            EXIT_CODES[signum],
        ) from None


def final_eval_context(trainer: Trainer) -> EvalContext:
    """The end-of-training measurement: the run's held-out pictures (a LoRA-format file), schedule and
    precision, and the configured image scorers."""
    cfg, device = trainer.cfg, trainer.accelerator.device
    scorers = load_scorers(cfg.eval.clip_model, cfg.eval.identity_model, device)
    held_out = trainer.held_out if trainer.network.file_format == "lora" else []
    return EvalContext(
        cfg, held_out, HeldOutCaptions.of(trainer.dataset), trainer.noise_scheduler, scorers,
        identity_references(scorers, trainer.dataset), trainer.accelerator.autocast,
    )  # fmt: skip
