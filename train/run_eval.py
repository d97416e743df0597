"""Evaluate a finished (or stopped) run folder: every saved file measured, scores.json and metrics.jsonl.

The run's own `config.yaml` says how: the base model, the dataset (and so the same held-out pictures), the
eval settings; `eval.*` keys given on the command line replace the recorded ones. Each file's grid goes to
`eval/<file stem>/`, so the end-of-training grid in `eval/` stays as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from data.errors import LoraSmithError
from data.typed_config import to_typed
from train.config import TrainConfig
from train.config_checks import validate
from train.dataset import DreamBoothDataset
from train.errors import ConfigError
from train.eval import load_eval_base
from train.file_eval import (
    EvalContext,
    FileEval,
    evaluate_file,
    file_metrics,
    identity_references,
    write_scores_json,
)
from train.image_scores import load_scorers
from train.network.ti_captions import caption_templates
from train.noise import with_zero_terminal_snr
from train.saved_files import check_run_folder, saved_files
from train.saving import final_file_name
from train.tracking import append_metrics
from train.validation import HeldOutCaptions, held_out_for

LORA_MODULES_ONLY = ("embedding", "full")  # their files are measured at the end of training instead


@dataclass
class RunEvaluation:
    """What `evaluate_run` wrote."""

    run_dir: Path
    files: list[FileEval] = field(default_factory=list)
    scores_path: Path | None = None
    seconds: float = 0.0


def read_run_config(run_dir: Path, eval_overrides: dict | None = None) -> TrainConfig:
    """The run's recorded config with `eval_overrides` (e.g. {"weights": [0, 1]}) merged into `eval`."""
    path = check_run_folder(run_dir)
    try:
        raw = OmegaConf.load(path)
        if eval_overrides:
            # What a sweep measured binds the training's eval, not this one: e.g. eval.scorer=null on a
            # char_lora run (objective=toy) is a fair question to ask of its files.
            unbound = {"kind": "train_loss", "direction": "minimize"}
            raw = OmegaConf.merge(raw, {"eval": eval_overrides, "objective": unbound})
    except (OmegaConfBaseException, ValueError) as error:
        raise ConfigError(f"{path} cannot be read ({str(error).splitlines()[0]})") from error
    return validate(to_typed(TrainConfig, raw))


def _context(cfg: TrainConfig, base, device: torch.device) -> EvalContext:
    """The held-out pictures, the scorers and the training pictures' identity embeddings, built once."""
    e = cfg.eval
    scorers = load_scorers(e.clip_model, e.identity_model, device)
    schedule = with_zero_terminal_snr(base.noise_scheduler) if cfg.training.zero_terminal_snr else None
    ctx = EvalContext(cfg, schedule=schedule, scorers=scorers)
    if not (cfg.dataset.validation_split or "identity" in scorers):
        return ctx
    dataset = DreamBoothDataset(cfg.dataset, seed=cfg.seed, templates=caption_templates(cfg))
    dataset.bind_tokenizer(base.tokenizer)
    if base.is_sdxl:
        dataset.bind_sdxl(base.tokenizer_2)
    ctx.held_out, ctx.captions = held_out_for(dataset, base, cfg), HeldOutCaptions.of(dataset)
    ctx.references = identity_references(scorers, dataset)
    return ctx


def evaluate_run(run_dir: Path, eval_overrides: dict | None = None) -> RunEvaluation:
    """Measure every saved file of `run_dir`; write scores.json and append each file's metrics at its step."""
    began = time.time()
    cfg = read_run_config(run_dir, eval_overrides)
    if cfg.network.module in LORA_MODULES_ONLY:
        raise LoraSmithError(
            f"network.module={cfg.network.module}: python -m train.evaluate measures LoRA files; this run's "
            "final file was measured at the end of training (scores.json)"
        )
    if not cfg.eval.prompts:
        raise ConfigError(
            "eval.prompts is empty: give prompts, e.g. eval.prompts='[\"sls star, blue background\"]'"
        )
    files = saved_files(run_dir, cfg.name)
    if not files:
        raise LoraSmithError(f"run={run_dir} holds no {cfg.name}*.safetensors file yet: nothing to evaluate")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = load_eval_base(cfg, device)
    ctx = _context(cfg, base, device)
    evaluation = RunEvaluation(run_dir)
    for saved in files:
        out_dir = run_dir / "eval" / saved.path.stem
        result = evaluate_file(base, ctx, saved.path, out_dir, "lora", saved.step, saved.epoch)
        evaluation.files.append(result)
        append_metrics(run_dir / "metrics.jsonl", file_metrics(result), saved.step or 0, file=saved.path.name)
    evaluation.scores_path = write_scores_json(
        evaluation.files, run_dir / "scores.json", final_file_name(cfg.name)
    )
    evaluation.seconds = time.time() - began
    return evaluation
