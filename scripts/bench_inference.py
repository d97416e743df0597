"""Inference engine timings on the bundled toy model (64x64): prompt handling against a whole image, and the
sampling loop's time per UNet call against diffusers' StableDiffusionPipeline on the same model parts.

    python scripts/bench_inference.py                 # 20 steps, 5 interleaved repeats, torch's threads
    python scripts/bench_inference.py --threads 1 --repeats 9

Bounds (printed as PASS/FAIL, never asserted): prompt handling ≤ 2 % of a 20-step Euler image at CFG 7;
our time per UNet call within 5 % of diffusers'. The repeats interleave ours and theirs after a warm-up
and the medians are compared, so load on a shared machine falls on both alike.
"""

from __future__ import annotations

import argparse
import operator
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline  # noqa: E402

from inference.components import BaseModel  # noqa: E402
from inference.extra_networks import parse_prompt  # noqa: E402
from inference.models.loading import load_base_model  # noqa: E402
from inference.scheduled_conds import PromptTimeline  # noqa: E402
from inference.text_encoding import TextOptions, encode_scheduled_conds  # noqa: E402
from inference.txt2img import GenerationParams, generate  # noqa: E402
from train.config import ModelConfig  # noqa: E402

# What a user pastes from A1111: emphasis, prompt editing, BREAK and a LoRA tag.
A1111_PROMPT = (
    "masterpiece, best quality, (sls star:1.2), a ((red circle)) on a [blue:green:0.4] background, "
    "soft light, [[film grain]] BREAK detailed shading, (simple background:0.8), <lora:my_style:0.8> highres"
)
A1111_NEGATIVE = "lowres, (blurry:1.3), bad anatomy, watermark, [jpeg artifacts]"
# Part 2 compares the loops, so the prompt is one both engines read the same way (no A1111 syntax).
PLAIN_PROMPT, PLAIN_NEGATIVE = "a red circle on a blue background", "blurry"
SIZE, CFG = 64, 7.0
PROMPT_BOUND, CALL_BOUND = 0.02, 1.05


@dataclass
class UnetTimer:
    """Counts UNet calls, the time inside them, and the wall time from the first call's start to the last
    call's end (the sampling loop)."""

    calls: int = 0
    first: float = 0.0
    last: float = 0.0
    inside: float = 0.0

    @property
    def ms_per_call(self) -> float:
        """The sampling loop's time (UNet calls and the work between them) per UNet call, in ms."""
        return 1000 * (self.last - self.first) / max(self.calls, 1)

    @property
    def overhead_ms(self) -> float:
        """The loop's time outside the UNet per call, in ms: guidance, sampler step, conversions."""
        return self.ms_per_call - 1000 * self.inside / max(self.calls, 1)


@contextmanager
def timed_unet(unet: torch.nn.Module) -> Iterator[UnetTimer]:
    """Wrap `unet.forward` for the block, so both engines' calls are seen the same way."""
    timer = UnetTimer()
    forward = unet.forward

    def counted(*args, **kwargs):
        start = time.perf_counter()
        if timer.calls == 0:
            timer.first = start
        timer.calls += 1
        output = forward(*args, **kwargs)
        timer.last = time.perf_counter()
        timer.inside += timer.last - start
        return output

    unet.forward = counted
    try:
        yield timer
    finally:
        del unet.forward  # back to the class's method


def handle_prompt(model: BaseModel, steps: int) -> None:
    """What txt2img does with a prompt before sampling: strip extra networks, schedule edits, encode."""
    text, _networks = parse_prompt(A1111_PROMPT)
    negative, _ = parse_prompt(A1111_NEGATIVE)
    with torch.no_grad():
        encode_scheduled_conds(
            model.text_encoder, model.tokenizer, [text], [negative], PromptTimeline(steps), TextOptions()
        )


def seconds(work: Callable[[], object]) -> float:
    """Wall time of one call of `work`."""
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def build_pipeline(model: BaseModel) -> StableDiffusionPipeline:
    """diffusers' pipeline over the very same modules, with its Euler scheduler."""
    return StableDiffusionPipeline(
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        unet=model.unet,
        scheduler=EulerDiscreteScheduler.from_config(model.noise_scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def ours(model: BaseModel, steps: int, seed: int) -> UnetTimer:
    """One 20-step Euler image through our txt2img; the UNet timer of its sampling loop."""
    params = GenerationParams(PLAIN_PROMPT, PLAIN_NEGATIVE, seed, steps, CFG, SIZE, SIZE, sampler="Euler")
    with timed_unet(model.unet) as timer, torch.no_grad():
        generate(model, params)
    return timer


def theirs(pipe: StableDiffusionPipeline, steps: int, seed: int) -> UnetTimer:
    """The same image settings through diffusers' pipeline."""
    generator = torch.Generator().manual_seed(seed)
    with timed_unet(pipe.unet) as timer, torch.no_grad():
        pipe(PLAIN_PROMPT, negative_prompt=PLAIN_NEGATIVE, num_inference_steps=steps, guidance_scale=CFG,
             height=SIZE, width=SIZE, generator=generator, output_type="pil")  # fmt: skip
    return timer


def part_prompt(model: BaseModel, steps: int, repeats: int) -> tuple[float, float]:
    """Median seconds of prompt handling and of one whole image of that prompt, interleaved."""
    text, _ = parse_prompt(A1111_PROMPT)
    negative, _ = parse_prompt(A1111_NEGATIVE)
    params = GenerationParams(text, negative, 0, steps, CFG, SIZE, SIZE, sampler="Euler")
    handle_prompt(model, steps), generate(model, params)  # warm-up
    prompt_times, image_times = [], []
    for _ in range(repeats):
        prompt_times.append(seconds(lambda: handle_prompt(model, steps)))
        image_times.append(seconds(lambda: generate(model, params)))
    return statistics.median(prompt_times), statistics.median(image_times)


def part_loop(model: BaseModel, steps: int, repeats: int) -> tuple[list[UnetTimer], list[UnetTimer]]:
    """The UNet timers of our runs and of diffusers' runs, interleaved after a warm-up of each."""
    pipe = build_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    ours(model, steps, 0), theirs(pipe, steps, 0)  # warm-up
    mine, other = [], []
    for seed in range(repeats):
        mine.append(ours(model, steps, seed))
        other.append(theirs(pipe, steps, seed))
    return mine, other


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each kind, after a warm-up")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_base_model(ModelConfig(kind="toy"))
    print(f"toy model, {SIZE}x{SIZE}, Euler, {args.steps} steps, CFG {CFG:g}, "
          f"{torch.get_num_threads()} torch threads, median of {args.repeats}")  # fmt: skip

    prompt_s, image_s = part_prompt(model, args.steps, args.repeats)
    share = prompt_s / image_s
    print("\n1. prompt handling (parse + lora tag + edit schedule + encode) against a whole image")
    print(f"  {'prompt handling':34s} {1000 * prompt_s:9.2f} ms")
    print(f"  {'one image (txt2img.generate)':34s} {1000 * image_s:9.2f} ms")
    print(
        f"  {'share':34s} {100 * share:9.2f} %   bound {100 * PROMPT_BOUND:g} %  {verdict(share <= PROMPT_BOUND)}"
    )

    mine, other = part_loop(model, args.steps, args.repeats)
    print("\n2. sampling loop time per UNet call (medians; overhead = loop time outside the UNet)")
    print(f"  {'engine':34s} {'UNet calls':>10s} {'ms / call':>10s} {'overhead':>10s}")
    medians = {}
    for name, timers in (
        ("ours (txt2img, CFG in one call)", mine),
        ("diffusers StableDiffusionPipeline", other),
    ):
        medians[name] = statistics.median(t.ms_per_call for t in timers)
        overhead = statistics.median(t.overhead_ms for t in timers)
        print(f"  {name:34s} {timers[0].calls:10d} {medians[name]:10.3f} {overhead:10.3f}")
    ratio = operator.truediv(*medians.values())
    print(f"  ratio ours / diffusers: {ratio:.3f}   bound {CALL_BOUND:.2f}  {verdict(ratio <= CALL_BOUND)}")


if __name__ == "__main__":
    main()
