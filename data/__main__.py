"""`python -m data source=~/pics/smith trigger=Smith class_word=man repeats=10 captioner=wd14`: prepare a
training folder from raw pictures (configs/prepare.yaml). The source is only read.

User mistakes print one `error:` line and exit with status 2; HYDRA_FULL_ERROR=1 shows the traceback too.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from data.quiet_logs import quiet_third_party_logs

quiet_third_party_logs()

from data.errors import run_reporting_user_errors  # noqa: E402


def run(cfg: DictConfig) -> None:
    """Validate, prepare, print the summary."""
    from data.prepare import prepare
    from data.prepare_config import load_prepare_config

    result = prepare(load_prepare_config(cfg))
    report = result.report
    print(
        f"\nPrepared {result.written} pictures in {result.seconds:.1f} s "
        f"({report['newly_written']} this run at {report['images_per_second']} images/s, {result.resumed} resumed)"
    )
    print(f"  training folder: {result.train_dir}")
    if report["regularization"]["count"]:
        print(
            f"  regularization:  {report['regularization']['folder']} ({report['regularization']['count']})"
        )
    print(f"  skipped: {len(report['skipped'])}, duplicates: {len(report['duplicates'])}")
    for skipped in report["skipped"][:10]:
        print(f"    {skipped['path']}: {skipped['reason']}")
    if len(report["skipped"]) > 10:
        print(f"    ... {len(report['skipped']) - 10} more in report.md")
    print(f"  report:   {result.out / 'report.md'}")
    print(f"  manifest: {result.out / 'manifest.jsonl'}")


@hydra.main(version_base="1.3", config_path="../configs", config_name="prepare")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_reporting_user_errors(run, cfg)


if __name__ == "__main__":
    import sys

    from data.command_line import check_command_line

    check_command_line(sys.argv[1:], ("out", "hydra.run.dir"))  # prepare.yaml: hydra.run.dir is ${out}
    main()
