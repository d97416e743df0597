"""`python -m inference.xyz`'s work: the typed config (configs/inference/xyz.yaml), its checks, the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from data.typed_config import ConfigError, to_typed
from inference.cli import (
    HiresConfig,
    _embeddings,
    hires_params,
    load_model,
    model_name,
    quote_prompt_overrides,
)
from inference.controlnet_render import check_units as check_controlnet_units
from inference.controlnet_units import ControlNetUnit
from inference.input_checks import check_image_file, check_output_folder
from inference.txt2img import GenerationParams
from inference.xyz.cell import Cell, XYZError
from inference.xyz.plan import AxisValues, check_grid_size, read_axis
from inference.xyz.render import XYZResult, render_xyz

VALUE_KEYS = ("x_values=", "y_values=", "z_values=")  # A1111 value lists: commas and brackets stay text


def quote_overrides(argv: list[str]) -> list[str]:
    """Quote the prompts and the value lists for Hydra, so commas, brackets and CSV quotes stay text.

    A value list may start with a CSV quote (`"a, b",c`): only a single quote is the user's own quoting.
    """
    return quote_prompt_overrides(quote_prompt_overrides(argv), VALUE_KEYS, user_quotes=("'",))


@dataclass
class XYZConfig:
    """configs/inference/xyz.yaml, typed."""

    prompt: str
    x_type: str = "seed"
    x_values: str = "-1"
    y_type: str = "nothing"
    y_values: str = ""
    z_type: str = "nothing"
    z_values: str = ""
    draw_legend: bool = True
    keep_random_seeds: bool = False
    max_grid_megapixels: int = 200  # A1111's img_max_size_mp: a larger plot is refused before it renders
    out_dir: str = "outputs/xyz"
    negative_prompt: str = ""
    loras: list[str] = field(default_factory=list)
    lora_weight: float = 1.0
    sampler: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int = -1
    var_seed: int = -1
    var_strength: float = 0.0
    width: int = 64
    height: int = 64
    clip_skip: int = 1
    rng: str = "CPU"
    emphasis: str = "Original"
    batch_size: int = 1
    model: str = "toy"
    vae: str | None = None
    tokenizer: str | None = None
    lora_dir: str | None = None
    embeddings_dir: str | None = None
    upscaler_dir: str = "models/ESRGAN"
    upscaler_tile: int = 192
    upscaler_tile_overlap: int = 8
    device: str = "auto"
    init_image: str | None = None
    denoising_strength: float = 0.75
    hires: HiresConfig = field(default_factory=HiresConfig)
    controlnet: list[ControlNetUnit] = field(default_factory=list)  # as in txt2img.yaml; controlnet_* axes


def load_xyz_config(cfg: DictConfig) -> XYZConfig:
    """The typed config; values no plot can be drawn with are refused as ConfigError."""
    config = to_typed(XYZConfig, cfg)
    if config.batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {config.batch_size}")
    if config.seed < -1 or config.var_seed < -1:
        raise ConfigError("seed and var_seed must be -1 (random) or a non-negative number")
    check_image_file("init_image", config.init_image)
    check_output_folder("out_dir", config.out_dir)
    for lora in config.loras:
        if not Path(lora).is_file():
            raise ConfigError(f"loras: {lora} is not a file")
    check_controlnet_units(config.controlnet)
    if config.init_image is not None and config.hires.enabled:
        raise ConfigError("the hires fix is for txt2img: set hires.enabled=false or init_image=null")
    try:
        settings_cell(config, None).params.validate()
        if config.hires.enabled:
            hires_params(config).validate()
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return config


def read_axes(config: XYZConfig) -> tuple[AxisValues, AxisValues, AxisValues]:
    """The X, Y and Z axes with their values; XYZError names a bad type or value."""
    x = read_axis(config.x_type, config.x_values, "X")
    y = read_axis(config.y_type, config.y_values, "Y")
    z = read_axis(config.z_type, config.z_values, "Z")
    return x, y, z


def settings_cell(config: XYZConfig, name: str | None) -> Cell:
    """Every cell before its axes apply."""
    params = GenerationParams(
        config.prompt, config.negative_prompt, config.seed, config.steps, config.cfg_scale, config.width,
        config.height, config.clip_skip, config.sampler, name, config.rng, config.scheduler, config.emphasis,
        subseed=config.var_seed, subseed_strength=config.var_strength,
    )  # fmt: skip
    init = Path(config.init_image) if config.init_image else None
    hires = hires_params(config) if config.hires.enabled else None
    networks = [Path(lora) for lora in config.loras]
    return Cell(
        params, None, networks, config.lora_weight, init, config.denoising_strength, hires, config.controlnet
    )


def run_xyz(config: XYZConfig) -> XYZResult:
    """Read the axes, load the model, render the plot into `config.out_dir`."""
    axes = read_axes(config)  # fail before the model loads
    check_grid_size(axes, config.width, config.height, config.max_grid_megapixels)
    model = load_model(config.model, config.device, config.vae, config.tokenizer)
    embeddings = _embeddings(model, config.embeddings_dir)

    def load_checkpoint(name: str):
        try:
            return load_model(name, config.device, config.vae, config.tokenizer)
        except (OSError, ValueError) as error:
            raise XYZError(f"Checkpoint name: cannot load {name} as a model ({error})") from error

    return render_xyz(
        model, settings_cell(config, model_name(config, model.source)), axes, config.out_dir,
        draw_legend=config.draw_legend, keep_random_seeds=config.keep_random_seeds,
        batch_size=config.batch_size, lora_dir=config.lora_dir, embeddings=embeddings,
        load_checkpoint=load_checkpoint,
    )  # fmt: skip
