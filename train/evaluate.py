"""`python -m train.evaluate run=<run folder> [eval.weights=[0,1] ...]`: measure every saved file of a run.

For each epoch, step and final file: the grid of eval.prompts x eval.weights in `eval/<file stem>/`, and per
weight the toy scores, the image scores and the validation loss (train/file_eval.py); all into scores.json,
and each file's metrics appended to metrics.jsonl at the step it was saved. User mistakes print one `error:`
line and exit with status 2; HYDRA_FULL_ERROR=1 shows the traceback too.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from data.quiet_logs import quiet_third_party_logs

quiet_third_party_logs()

from data.errors import run_reporting_user_errors  # noqa: E402


def typed_eval_overrides(cfg: DictConfig, keys: set[str]) -> dict:
    """The `eval.*` values the user typed, as a nested dict (the recorded config keeps every other one)."""
    chosen = OmegaConf.create({})
    for key in sorted(k for k in keys if k.startswith("eval.")):
        OmegaConf.update(chosen, key.removeprefix("eval."), OmegaConf.select(cfg, key), force_add=True)
    return OmegaConf.to_container(chosen)


def run(cfg: DictConfig) -> None:
    """Evaluate the run folder, print where everything went."""
    from hydra.core.hydra_config import HydraConfig

    from data.typed_config import ConfigError
    from train.saved_files import check_run_folder

    # Both checks before the slow imports: a mistyped folder or key is told at once.
    check_run_folder(Path(cfg.run))
    typed = {item.split("=", 1)[0].lstrip("+") for item in HydraConfig.get().overrides.task if "=" in item}
    if other := sorted(k for k in typed if k != "run" and not k.startswith(("eval.", "hydra"))):
        raise ConfigError(
            f"{', '.join(other)}: python -m train.evaluate takes run= and eval.* keys (e.g. eval.weights=[0,1]); "
            "everything else comes from the run's config.yaml"
        )
    from train.run_eval import evaluate_run

    overrides = typed_eval_overrides(cfg, typed)
    evaluation = evaluate_run(Path(cfg.run), overrides)
    print(f"\nEvaluated {len(evaluation.files)} files in {evaluation.seconds:.1f} s")
    for result in evaluation.files:
        print(f"  {result.path.name} (step {result.step}): {result.grid_path}")
        for weight, values in result.weights.items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in values.items() if v is not None)
            print(f"    weight {weight}: {shown}")
    print(f"  scores:  {evaluation.scores_path}")
    print(f"  metrics: {evaluation.run_dir / 'metrics.jsonl'}")


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_reporting_user_errors(run, cfg)


if __name__ == "__main__":
    import sys

    from data.command_line import check_command_line

    check_command_line(sys.argv[1:])
    main()
