"""An X/Y/Z plot of a toy character run's epoch files × LoRA weights shows the character grow (slow).

The run (char_lora, saving every 4 epochs) keeps the files of epochs 4, 8, ..., 20 and the final 24; the plot
renders those of epochs 4, 12 and 20 at weights 0, 0.8 and 1 for five trigger prompts (Prompt S/R on Z),
through `python -m inference.xyz`, and the toy scorer reads the cells back from their PNGs.

Measured (concept score, epoch 4 / 8 / 12 / 16 / 20 / 24): weight 0: 0 everywhere; weight 0.6: 0 / 0 / 0.042
/ 0.184 / 0.127 / 0.150; weight 0.8: 0.367 / 0.298 / 0.679 / 0.799 / 0.883 / 0.740; weight 1: 0.546 / 0.627
/ 0.868 / 0.971 / 1.0 / 0.884. Five pictures per cell make the score coarse (each is a fifth of it), and from
epoch 16 on the character is learned, so the files compared are epochs 4, 12 and 20, and the weight in
between is 0.8: at 0.6 the character barely shows at any epoch (0.184 at most). Training and rendering are
deterministic on the CPU: a rerun gives the same numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from inference.extra_networks import parse_prompt
from inference.infotext import parse_infotext, read_infotext
from tests.test_cli import run_train

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = ["0", "0.8", "1"]
SCENES = (
    '"blue background, large","green background, large","white background, large","black background, large",'
    '"red background, large"'
)


def _scores(out: Path) -> dict[tuple[int, int], float]:
    """Mean concept score per (epoch file index, weight index) over the Z prompts."""
    from data.toy.score import score_images

    groups: dict[tuple[int, int], tuple[list, list]] = {}
    for index, path in enumerate(sorted((out / "cells").glob("*.png"))):
        weight, epoch = index % 3, index // 3 % 3  # X = weight, Y = epoch file
        prompt = parse_prompt(parse_infotext(read_infotext(path))["Prompt"])[0]
        images, prompts = groups.setdefault((epoch, weight), ([], []))
        images.append(Image.open(path).convert("RGB"))
        prompts.append(prompt)
    return {key: score_images(*value)["concept_score"] for key, value in groups.items()}


def test_epoch_files_by_lora_weight_show_the_character_grow(tmp_path):
    run = tmp_path / "run"
    trained = run_train(
        run, "+experiment=char_lora", "logger=none", "eval.enabled=false", "training.save_every_n_epochs=4"
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    files = [run / f"char_lora-{epoch:06d}.safetensors" for epoch in (4, 12, 20)]
    out = tmp_path / "xyz"
    command = [
        sys.executable, "-m", "inference.xyz", "model=toy", "prompt=sls star, blue background, large",
        "cfg_scale=3", "sampler=Euler", "steps=20", "seed=1", "batch_size=5",
        "x_type=lora_weight", f"x_values={','.join(WEIGHTS)}",
        "y_type=checkpoint", f"y_values={','.join(map(str, files))}",
        "z_type=prompt_sr", f"z_values={SCENES}", f"out_dir={out}",
    ]  # fmt: skip
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    plot = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=900)
    assert plot.returncode == 0, plot.stderr[-3000:]
    assert len(list((out / "cells").glob("*.png"))) == 45 and len(list(out.glob("grid-z*.png"))) == 5
    scores = _scores(out)
    (tmp_path / "scores.json").write_text(json.dumps({str(k): v for k, v in scores.items()}))
    print("concept score [epoch file][weight]:", {str(k): round(v, 3) for k, v in scores.items()})
    first, middle, last = 0, 1, 2  # epoch files
    partial, full = 1, 2  # weights
    rise = 0.1  # each step up must gain at least this much
    # Weight grows the character on the middle file, where it is not saturated at full weight; the epoch
    # grows it at a weight where it is not saturated either.
    assert (
        scores[middle, 0] + rise <= scores[middle, partial]
        and scores[middle, partial] + rise <= scores[middle, full]
    )
    assert (
        scores[first, partial] + rise <= scores[middle, partial]
        and scores[middle, partial] + rise <= scores[last, partial]
    )
    assert scores[first, full] + rise <= scores[last, full]
    assert scores[last, full] >= 0.8 and max(scores[epoch, 0] for epoch in range(3)) <= 0.2
