"""`python -m train +experiment=char_lora [key=value ...]`: train a LoRA as the Hydra config says.

User mistakes (bad folders, bad values) print one `error:` line and exit with status 2; set
HYDRA_FULL_ERROR=1 to see the traceback as well. `python -m train -m …` is a sweep: each run returns its
`objective`, and a failed trial returns `objective.failed_value` so the sweep goes on (train/trial.py).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from data.quiet_logs import quiet_third_party_logs

quiet_third_party_logs()

from data.errors import run_reporting_user_errors  # noqa: E402


def run(cfg: DictConfig) -> float:
    """Validate, train, print the summary; return the run's objective (`objective.kind`, what a sweep optimizes)."""
    from hydra.core.hydra_config import HydraConfig

    from train.config import load_config
    from train.objective import is_measured, measure
    from train.run import train

    # The user's own overrides decide between max_train_steps and max_train_epochs (see load_config).
    typed = load_config(cfg, list(HydraConfig.get().overrides.task))
    result = train(typed, Path(typed.output_dir))
    if not result.is_main:
        return result.final_loss
    if result.already_finished:
        measured = is_measured(typed.objective, typed.eval.enabled)
        return measure(typed.objective, result.run_dir) if measured else result.final_loss
    print(
        f"\nTrained {result.steps} steps in {result.seconds:.1f} s (final average loss {result.final_loss:.4f})"
    )
    embedding = typed.network.module == "embedding"  # A1111 triggers it by the file name
    kind = "embedding:" if embedding else "LoRA:     "
    print(f"  {kind}  {result.lora_path}" + (f" (trigger: {result.lora_path.stem})" if embedding else ""))
    for path in result.epoch_files:
        label = "step file:" if "-step" in path.name else "epoch file:"
        print(f"  {label:<11} {path}")
    if (state := result.lora_path.with_name(f"{result.lora_path.stem}-state")).is_dir():
        print(f"  state:      {state} (resume=auto continues from it)")
    if result.grid_path:
        print(f"  grid:       {result.grid_path}")
    if result.scores_path:
        print(f"  scores:     {result.scores_path}")
        for weight, values in (result.scores or {}).items():
            shown = ", ".join(f"{k} {v:.3f}" for k, v in values.items() if v is not None)
            print(f"    {'embedding' if embedding else 'LoRA'} weight {weight}: {shown}")
    if (report := result.run_dir / "report.html").is_file():
        print(f"  report:     {report} (opens in a browser, offline)")
    if result.objective is None:
        print(f"  objective:  {typed.objective.kind} not measured (eval.enabled=false)")
    else:
        print(f"  objective:  {typed.objective.kind} {result.objective:.4f} ({typed.objective.direction})")
    print(f"  run folder: {result.run_dir}")
    return result.final_loss if result.objective is None else result.objective


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point."""
    from train.trial import in_multirun, run_trial

    return run_trial(run, cfg) if in_multirun() else run_reporting_user_errors(run, cfg)


if __name__ == "__main__":
    import sys

    from data.command_line import check_command_line

    check_command_line(sys.argv[1:])
    main()
