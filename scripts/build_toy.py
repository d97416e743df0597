"""Build the bundled toy base model `models/toy` from scratch, deterministically from a seed.

    python scripts/build_toy.py                 # the committed model (about 40 min on 2 CPU cores)
    python scripts/build_toy.py --out /tmp/toy  # elsewhere
    python scripts/build_toy.py --controlnet    # models/toy_controlnet, on models/toy (about 20 min)
    python scripts/build_toy.py --sdxl          # models/toy_xl, on models/toy's VAE (about 20 min)

Stage 1 trains the VAE on anything-goes pictures, stage 2 the text encoder and UNet together on base-world
pictures (cached latents, 10 % empty captions for guidance); then the model renders the fixed fidelity
prompts, the scorer judges them, and the folder is written with a README and a checksum list.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.quiet_logs import quiet_third_party_logs  # noqa: E402

quiet_third_party_logs()

from train.toy_base.build import BuildSettings, build_toy_model  # noqa: E402


def build_controlnet(argv: list[str]) -> None:
    """`--controlnet [--out DIR] [--steps N]`: the toy ControlNet on the committed toy model."""
    from inference.cli import load_model
    from train.toy_base.controlnet_build import ControlNetSettings, build_toy_controlnet

    defaults = ControlNetSettings()
    parser = argparse.ArgumentParser(description="Build the toy ControlNet (models/toy_controlnet)")
    parser.add_argument("--controlnet", action="store_true", required=True)
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    args = parser.parse_args(argv)
    settings = ControlNetSettings(out=args.out, seed=args.seed, steps=args.steps)
    start = time.time()
    command = " ".join(["python", "scripts/build_toy.py", *argv])
    report = build_toy_controlnet(settings, lambda path: load_model(str(path), "cpu"), command)
    print(f"\nBuilt {settings.out} in {(time.time() - start) / 60:.1f} min")
    for key, value in report.items():
        print(f"  {key}: {value}")


def build_sdxl(argv: list[str]) -> None:
    """`--sdxl [--out DIR] [--seed N] [--unet-steps N]`: the toy SDXL on models/toy's VAE and tokenizer."""
    from train.toy_base.sdxl_build import SdxlBuildSettings, build_toy_xl

    defaults = SdxlBuildSettings()
    parser = argparse.ArgumentParser(description="Build the toy SDXL (models/toy_xl)")
    parser.add_argument("--sdxl", action="store_true", required=True)
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--unet-steps", type=int, default=defaults.unet_steps)
    parser.add_argument("--fidelity-seeds", type=int, default=defaults.fidelity_seeds)
    args = parser.parse_args(argv)
    settings = SdxlBuildSettings(
        out=args.out, seed=args.seed, unet_steps=args.unet_steps, fidelity_seeds=args.fidelity_seeds
    )
    start = time.time()
    report = build_toy_xl(settings, " ".join(["python", "scripts/build_toy.py", *argv]))
    print(f"\nBuilt {settings.out} in {(time.time() - start) / 60:.1f} min")
    for key, value in report.items():
        print(f"  {key}: {value}")


def main() -> None:
    if "--controlnet" in sys.argv[1:]:
        build_controlnet(sys.argv[1:])
        return
    if "--sdxl" in sys.argv[1:]:
        build_sdxl(sys.argv[1:])
        return
    defaults = BuildSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--vae-steps", type=int, default=defaults.vae_steps)
    parser.add_argument("--unet-steps", type=int, default=defaults.unet_steps)
    parser.add_argument("--fidelity-seeds", type=int, default=defaults.fidelity_seeds)
    args = parser.parse_args()
    settings = BuildSettings(
        out=args.out,
        seed=args.seed,
        vae_steps=args.vae_steps,
        unet_steps=args.unet_steps,
        fidelity_seeds=args.fidelity_seeds,
    )
    start = time.time()
    report = build_toy_model(settings, command=" ".join(["python", "scripts/build_toy.py", *sys.argv[1:]]))
    print(f"\nBuilt {settings.out} in {(time.time() - start) / 60:.1f} min")
    for key, value in report.items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
