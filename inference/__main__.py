"""`python -m inference prompt="a red circle <lora:style:0.8>" lora_dir=DIR [key=value ...]`: txt2img.

Renders batch_count x batch_size PNGs with A1111 infotext (configs/inference/txt2img.yaml). User mistakes print one
`error:` line and exit with status 2; HYDRA_FULL_ERROR=1 shows the traceback too.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from data.quiet_logs import quiet_third_party_logs

quiet_third_party_logs()

from data.errors import run_reporting_user_errors  # noqa: E402


def run(cfg: DictConfig) -> None:
    """Validate, render, print where the images went."""
    from inference.cli import load_render_config, render

    config = load_render_config(cfg)
    result = render(config)
    count, seeds = len(result.paths), result.seeds
    shown = str(seeds[0]) if count == 1 else f"{seeds[0]}-{seeds[-1]}"
    print(f"\nRendered {count} image{'s' * (count != 1)} in {result.seconds:.1f} s (seed {shown})")
    for lora in result.loras:
        print(f"  LoRA {lora.name}: text encoder {lora.te_multiplier}, UNet {lora.unet_multiplier}")
    names = result.paths[0].name if count == 1 else f"{result.paths[0].name} … {result.paths[-1].name}"
    print(f"  images: {result.paths[0].parent}/ ({names})")


@hydra.main(version_base="1.3", config_path="../configs/inference", config_name="txt2img")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_reporting_user_errors(run, cfg)


if __name__ == "__main__":
    from data.command_line import check_command_line
    from inference.cli import quote_prompt_overrides

    sys.argv = quote_prompt_overrides(sys.argv)
    check_command_line(sys.argv[1:])
    main()
