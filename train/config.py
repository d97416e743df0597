"""Typed training configuration: Hydra composes YAML, `load_config` validates it once into these dataclasses.

Every field has the meaning kohya sd-scripts users know; the comment names the kohya flag where one exists.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from omegaconf import DictConfig

from data.typed_config import to_typed
from inference.models.spec import BUILT_IN_MODELS, ModelConfig
from train.errors import ConfigError
from train.objective import ObjectiveConfig

MODEL_KINDS = (*BUILT_IN_MODELS, "pretrained")
NETWORK_MODULES = ("lora", "dora", "loha", "lokr", "embedding", "full")
SCHEDULERS = (
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
    "cosine_with_min_lr", "rex", "adafactor",
)  # fmt: skip
LOGGERS = ("wandb", "tensorboard", "none")
MIXED_PRECISION = ("no", "fp16", "bf16")
SAVE_PRECISION = ("float", "fp16", "bf16")
DATASET_SOURCES = ("folders", "toy")
TOY_CONCEPTS = ("character", "style")
SCORERS = ("toy",)
RUN_LENGTH_KEYS = ("max_train_epochs", "max_train_steps")


@dataclass
class DatasetConfig:
    source: str = (
        "folders"  # folders: train_dir/reg_dir as given; toy: generate a toy set into the run folder
    )
    train_dir: str | None = None  # parent of `N_token class` folders (kohya --train_data_dir)
    reg_dir: str | None = None  # parent of `N_class` folders (kohya --reg_data_dir)
    resolution: int = 512  # square side in pixels (kohya --resolution)
    caption_extensions: list[str] = field(default_factory=lambda: [".txt", ".caption"])  # first found wins
    shuffle_caption: bool = False  # kohya --shuffle_caption
    keep_tokens: int = 0  # kohya --keep_tokens: first N comma-separated tags stay in place
    caption_dropout_rate: float = (
        0.0  # kohya --caption_dropout_rate: whole caption → "" with this probability
    )
    caption_dropout_every_n_epochs: int = 0  # kohya: "" in every N-th epoch (0 = off)
    caption_tag_dropout_rate: float = 0.0  # kohya: each free tag left out with this probability
    keep_tokens_separator: str = ""  # kohya: text before it stays in place (e.g. "|||")
    secondary_separator: str = ""  # kohya: replaced by ", " after shuffling (e.g. ";;;" keeps tags together)
    caption_prefix: str = ""  # kohya --caption_prefix
    caption_suffix: str = ""  # kohya --caption_suffix
    enable_wildcard: bool = False  # kohya --enable_wildcard: {a|b|c} and one random line per sample
    max_token_length: int = 75  # kohya --max_token_length: 75 / 150 / 225 tokens = 1 / 2 / 3 chunks of 77
    weighted_captions: bool = False  # kohya --weighted_captions: (tag:1.2) / [tag] / BREAK in captions act
    masked_loss: bool = False  # kohya --masked_loss: a mask per picture weighs its loss (train/loss_mask.py)
    alpha_mask: bool = False  # kohya dataset alpha_mask: the mask is the picture's alpha channel
    mask_dir: str | None = None  # or a folder of masks named like the pictures (kohya: conditioning_data_dir)
    flip_aug: bool = False  # kohya --flip_aug: random horizontal flip
    enable_bucket: bool = False  # kohya --enable_bucket: aspect-ratio buckets of area ≤ resolution²
    min_bucket_reso: int = 256  # kohya --min_bucket_reso: shortest bucket side in pixels
    max_bucket_reso: int = 1024  # kohya --max_bucket_reso: longest bucket side in pixels
    bucket_reso_steps: int = 64  # kohya --bucket_reso_steps: bucket sides are multiples of this
    bucket_no_upscale: bool = False  # kohya --bucket_no_upscale: small pictures get a smaller bucket
    prior_loss_weight: float = 1.0  # kohya --prior_loss_weight: loss weight of regularization images
    num_workers: int = 0  # DataLoader workers (kohya --max_data_loader_n_workers)
    random_crop: bool = False  # kohya --random_crop: a random window instead of the centre one
    color_aug: bool = False  # kohya --color_aug: random hue shift or gamma per sample
    max_aspect_ratio: float = 8.0  # longer side / shorter side above this: the picture is refused by name
    cache_latents: bool = False  # kohya --cache_latents: encode every picture once, keep latents in memory
    cache_latents_to_disk: bool = False  # kohya --cache_latents_to_disk: also keep them in latent_cache_dir
    latent_cache_dir: str | None = None  # null: $XDG_CACHE_HOME/lorasmith/latents (~/.cache/...)
    vae_batch_size: int = 4  # kohya --vae_batch_size: pictures per VAE pass while caching
    cache_text_encoder_outputs: bool = False  # kohya --cache_text_encoder_outputs (TE not trained)
    toy_concept: str = "character"  # source=toy: character (`sls star`) | style (`chk style`)
    toy_images: int = 20  # source=toy: pictures of the concept to generate
    toy_repeats: int = 10  # source=toy: repeats of the generated concept folder
    toy_reg_images: int = 0  # source=toy: class pictures for the regularization folder
    # kohya --validation_split: this fraction of each training folder's pictures is held out, never trained
    # on, and measured by the validation loss (train/validation_split.py); regularization pictures stay out
    validation_split: float = 0.0
    validation_seed: int | None = None  # kohya --validation_seed: which pictures are held out; null = seed


@dataclass
class NetworkConfig:
    module: str = "lora"  # kohya --network_module: lora = networks.lora, dora = lycoris.kohya dora_wd
    dim: int = 8  # kohya --network_dim (rank)
    alpha: float = 4.0  # kohya --network_alpha; scale = alpha / dim
    dropout: float = 0.0  # kohya --network_dropout: dropout on the down projection's output
    rank_dropout: float = 0.0  # kohya --network_args rank_dropout: whole rank channels per sample
    module_dropout: float = 0.0  # kohya --network_args module_dropout: a layer's whole LoRA per step
    loraplus_lr_ratio: float | None = (
        None  # kohya network_args: up-weights train at lr x this (LoRA+; 16 is usual)
    )
    loraplus_unet_lr_ratio: float | None = (
        None  # kohya network_args: the UNet's own ratio (else the one above)
    )
    loraplus_text_encoder_lr_ratio: float | None = None  # kohya network_args: the text encoder's own ratio

    @property
    def loraplus_ratios(self) -> tuple[float | None, float | None]:
        """(UNet, text encoder) LoRA+ ratios: each part's own, else loraplus_lr_ratio, else None (off)."""
        unet = self.loraplus_unet_lr_ratio or self.loraplus_lr_ratio
        return unet, self.loraplus_text_encoder_lr_ratio or self.loraplus_lr_ratio

    train_unet: bool = True  # False = kohya --network_train_text_encoder_only
    train_text_encoder: bool = True  # False = kohya --network_train_unet_only
    conv_dim: int = 0  # kohya --network_args conv_dim: rank of the UNet's 3x3 convs (LoCon); 0 = off
    conv_alpha: float | None = None  # kohya --network_args conv_alpha; null = 1.0 when conv_dim is set
    factor: int = -1  # LyCORIS --network_args factor (LoKr): size of the small factor; -1 = automatic
    decompose_both: bool = False  # LyCORIS --network_args decompose_both (LoKr): small factor low-rank too
    full_matrix: bool = False  # LyCORIS --network_args full_matrix (LoKr): both factors full, scale 1
    use_tucker: bool = False  # LyCORIS --network_args use_tucker (LoHa, LoKr): 3x3 convs as a Tucker core

    # Block-wise LoRA (train/network/blocks.py): a list, kohya's text `1,0.5,…`, or a preset for the lr weights
    down_lr_weight: Any = None  # kohya network_args: 12 lr weights IN00–IN11, or sine / cosine / linear …[+x]
    mid_lr_weight: float | None = None  # kohya network_args: lr weight of the MID block
    up_lr_weight: Any = None  # kohya network_args: 12 lr weights OUT00–OUT11, or a preset
    block_lr_zero_threshold: float = (
        0.0  # kohya network_args: block lr weights <= this become 0 (not trained)
    )
    block_dims: Any = None  # kohya network_args: 25 ranks (IN00–IN11, MID, OUT00–OUT11); 0 = no adapter
    block_alphas: Any = None  # kohya network_args: 25 alphas (else network.alpha)
    conv_block_dims: Any = None  # kohya network_args: 25 ranks of the 3x3 convs (else conv_dim)
    conv_block_alphas: Any = None  # kohya network_args: 25 conv alphas (else conv_alpha)
    # module=embedding (textual inversion, kohya train_textual_inversion.py); other networks ignore these:
    token_string: str | None = None  # kohya --token_string; null = the run's name, the file's trigger word
    init_word: str | None = None  # kohya --init_word: start from its token embeddings; null = random
    num_vectors_per_token: int = 1  # kohya --num_vectors_per_token: vectors (prompt tokens) the trigger takes
    template: str = "none"  # none | object | style (kohya --use_object_template / --use_style_template)
    # module=full only: the text encoder trains for this many optimizer steps, then is frozen (kohya train_db
    # --stop_text_encoder_training); null = the whole run. kohya's -1 is network.train_text_encoder=false.
    stop_text_encoder_training: int | None = None

    @property
    def resolved_conv_alpha(self) -> float:
        """conv_alpha, or kohya's default of 1.0 when only conv_dim was given."""
        return 1.0 if self.conv_alpha is None else self.conv_alpha


def _as_rate(value: Any) -> Any:
    """A learning rate as a float where it is a number (or a number's text); anything else as it is."""
    if isinstance(value, bool):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


@dataclass
class OptimizerConfig:
    name: str = "AdamW"  # kohya --optimizer_type: a name in train/optimizers.py (any case) or module.Class
    lr: float = 1e-4  # kohya --learning_rate: used where unet_lr / text_encoder_lr are null
    unet_lr: float | None = None  # kohya --unet_lr
    # kohya --text_encoder_lr: one number, or for SDXL [first encoder, second encoder] (a number or a list;
    # config_checks validates it, as OmegaConf has no number-or-list type)
    text_encoder_lr: Any = None
    args: dict[str, Any] = field(
        default_factory=dict
    )  # kohya --optimizer_args: the class's keyword arguments

    def __post_init__(self) -> None:
        # A typed float field would convert 0 or "1e-4" (kohya TOML text) itself; Any keeps them as given.
        value = self.text_encoder_lr
        if isinstance(value, (list, tuple)):
            self.text_encoder_lr = [_as_rate(v) for v in value]
        elif value is not None:
            self.text_encoder_lr = _as_rate(value)

    @property
    def text_encoder_lrs(self) -> tuple[float, ...]:
        """Each text encoder's learning rate as given: one value (null: `lr`), or SDXL's two."""
        value = self.text_encoder_lr
        if value is None:
            return (self.lr,)
        return tuple(value) if isinstance(value, list) else (value,)

    @property
    def part_lrs(self) -> tuple[float, float]:
        """(UNet, text encoder) learning rates: kohya's rule, a part without its own uses `lr`. With SDXL's two
        text-encoder rates this is the first encoder's (text_encoder_2_lr is the second's)."""
        unet = self.lr if self.unet_lr is None else self.unet_lr
        return unet, self.text_encoder_lrs[0]

    @property
    def text_encoder_2_lr(self) -> float | None:
        """SDXL's second text encoder's own rate, when text_encoder_lr gives two; else None (the same)."""
        lrs = self.text_encoder_lrs
        return lrs[1] if len(lrs) == 2 else None


@dataclass
class SchedulerConfig:
    name: str = "constant_with_warmup"
    warmup_steps: float = 0  # steps, or a fraction of all steps when < 1 (kohya --lr_warmup_steps)
    num_cycles: int = 1  # cosine_with_restarts
    power: float = 1.0  # polynomial
    min_lr_ratio: float = 0.0  # cosine_with_min_lr, rex: the last rate as a share of the first (kohya --lr_scheduler_min_lr_ratio)


@dataclass
class TrainingConfig:
    max_train_epochs: int | None = 10  # kohya --max_train_epochs; wins unless steps alone are typed
    max_train_steps: int | None = None  # kohya --max_train_steps
    batch_size: int = 1  # kohya --train_batch_size
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | fp16 | bf16
    max_grad_norm: float = 1.0  # 0 disables clipping
    gradient_checkpointing: bool = False
    noise_offset: float = 0.0  # kohya --noise_offset (~0.1 for darker darks / brighter brights)
    min_snr_gamma: float = 0.0  # kohya --min_snr_gamma (5 is the paper's value; 0 = off)
    multires_noise_iterations: int = (
        0  # kohya --multires_noise_iterations (pyramid noise; 6-10 common; 0 = off)
    )
    multires_noise_discount: float = (
        0.3  # kohya --multires_noise_discount: weight ratio of each coarser level
    )
    ip_noise_gamma: float = 0.0  # kohya --ip_noise_gamma (input perturbation; 0 = off)
    ip_noise_gamma_random_strength: bool = False  # kohya --ip_noise_gamma_random_strength
    zero_terminal_snr: bool = False  # kohya --zero_terminal_snr
    loss_type: str = "l2"  # kohya --loss_type: l2 | l1 | huber | smooth_l1
    huber_schedule: str = "snr"  # kohya --huber_schedule: constant | exponential | snr
    huber_c: float = 0.1  # kohya --huber_c
    huber_scale: float = 1.0  # kohya --huber_scale
    debiased_estimation_loss: bool = False  # kohya --debiased_estimation_loss
    scale_v_pred_loss_like_noise_pred: bool = False  # kohya: v-prediction loss x SNR / (SNR + 1)
    save_every_n_epochs: int | None = None  # kohya --save_every_n_epochs; the last epoch is the final file
    save_every_n_steps: int | None = None  # kohya --save_every_n_steps: NAME-step00000100.safetensors
    save_last_n_epochs: int | None = None  # kohya --save_last_n_epochs: keep only the newest K epoch files
    save_last_n_steps: int | None = None  # kohya --save_last_n_steps: keep only the newest K step files
    save_state: bool = False  # kohya --save_state: a resumable state folder beside each LoRA file
    full_fp16: bool = (
        False  # kohya --full_fp16: LoRA weights and gradients in fp16 too (mixed_precision=fp16)
    )
    full_bf16: bool = (
        False  # kohya --full_bf16: LoRA weights and gradients in bf16 too (mixed_precision=bf16)
    )
    compile: bool = False  # torch.compile the UNet (kohya --torch_compile); the first steps compile
    save_precision: str = "float"  # float | fp16 | bf16 (kohya --save_precision)
    # With dataset.validation_split (train/validation.py): the held-out loss, `loss/validation`, at the end
    # of the run and every N steps / N epochs; kohya's names and default (every epoch).
    validate_every_n_steps: int | None = None  # kohya --validate_every_n_steps
    validate_every_n_epochs: int | None = None  # kohya --validate_every_n_epochs; null = every epoch
    max_validation_steps: int | None = None  # kohya --max_validation_steps: pictures measured; null = all


@dataclass
class LoggerConfig:
    kind: str = "wandb"  # wandb | tensorboard | none
    project: str = "lorasmith"
    wandb_mode: str = "offline"  # offline by default; `online` needs an account


@dataclass
class EvalConfig:
    enabled: bool = True
    prompts: list[str] = field(default_factory=list)
    negative_prompt: str = ""
    weights: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    seeds: list[int] = field(default_factory=lambda: [1])
    steps: int = 20
    cfg_scale: float = 7.0
    sampler: str = "euler"  # any A1111 sampler name or alias: "Euler", "euler", "DPM++ 2M", "k_euler_a", ...
    scheduler: str = "Automatic"  # A1111's schedule type: Automatic (the sampler's default), Karras, ...
    width: int | None = None  # null: dataset.resolution
    height: int | None = None
    scorer: str | None = None  # toy: score concept presence and base fidelity of the rendered images
    batch_size: int = 8  # images per sampling pass; each keeps its own seed's noise
    # Image scores (train/image_scores.py), a local folder or hub id each; null = not measured.
    clip_model: str | None = None  # CLIP: text-image score of each picture against its prompt
    identity_model: str | None = None  # CLIP vision or DINOv2: similarity to the training pictures


@dataclass
class SampleConfig:
    """Pictures rendered with the network as it trains (kohya --sample_*); each prompt's options win."""

    prompts: list[str] = field(default_factory=list)  # kohya's prompt-line syntax, `a cat --w 512 --d 1`
    prompt_file: str | None = None  # kohya --sample_prompts: .txt lines, .toml or .json
    every_n_steps: int | None = None  # kohya --sample_every_n_steps
    every_n_epochs: int | None = None  # kohya --sample_every_n_epochs (at the epoch's end)
    at_start: bool = False  # kohya --sample_at_first: before the first step
    sampler: str = "ddim"  # kohya --sample_sampler: kohya's names (euler_a, k_dpm_2) or A1111's
    steps: int = 30  # kohya's defaults: 30 steps, CFG 7.5, a random seed per picture
    cfg_scale: float = 7.5
    seed: int = -1  # -1: a fresh random seed for each picture (recorded in its infotext)
    width: int | None = None  # null: dataset.resolution
    height: int | None = None
    negative_prompt: str = ""
    weight: float = 1.0  # the network's strength (A1111's <lora:name:weight>)


@dataclass
class TrainConfig:
    name: str = "lora"  # run name; also the LoRA file name (kohya --output_name)
    seed: int = 42  # -1: pick one at random (A1111's convention) and record it
    output_dir: str = "."  # set by Hydra to the run folder
    resume: str | None = None  # null | auto (newest complete state of the run folder) | a state folder
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)  # what a sweep optimizes


def command_line_keys(overrides: Sequence[str]) -> set[str]:
    """The dotted keys that Hydra command-line overrides give a value (`+`/`++` dropped, `~` deletions not)."""
    return {
        item.split("=", 1)[0].lstrip("+") for item in overrides if "=" in item and not item.startswith("~")
    }


def _run_length_from_command_line(cfg: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """The run length typed on the command line wins over the one from config files.

    kohya lets --max_train_epochs win whenever both are set, so `training.max_train_steps=2` would lose to
    the default `max_train_epochs: 10` of a YAML file. Here the value the user typed wins and the other is
    unset; both typed together are refused, since either guess would surprise someone.
    """
    t, typed = cfg.training, command_line_keys(overrides)
    given = [k for k in RUN_LENGTH_KEYS if f"training.{k}" in typed and getattr(t, k) is not None]
    if len(given) == 2:
        raise ConfigError(
            f"training.max_train_epochs={t.max_train_epochs} and training.max_train_steps={t.max_train_steps} "
            "are both given on the command line: give only one (kohya would silently let the epochs win)"
        )
    if len(given) == 1:
        (other,) = (k for k in RUN_LENGTH_KEYS if k not in given)
        return replace(cfg, training=replace(t, **{other: None}))
    return cfg


def _imply_cache_latents(cfg: TrainConfig) -> TrainConfig:
    """kohya: --cache_latents_to_disk implies --cache_latents."""
    if cfg.dataset.cache_latents_to_disk and not cfg.dataset.cache_latents:
        return replace(cfg, dataset=replace(cfg.dataset, cache_latents=True))
    return cfg


def _resolve_token_string(cfg: TrainConfig) -> TrainConfig:
    """network=embedding: token_string null is the run's name, as A1111 triggers an embedding by its file."""
    net = cfg.network
    if net.module == "embedding" and net.token_string is None:
        return replace(cfg, network=replace(net, token_string=cfg.name))
    return cfg


def load_config(cfg: DictConfig, overrides: Sequence[str] = ()) -> TrainConfig:
    """Merge Hydra's composed config into the typed schema and validate it once.

    `overrides` are the user's command-line overrides (`HydraConfig.get().overrides.task`); they decide
    whether steps or epochs set the run length. Unknown keys, wrong types and bad values raise ConfigError.
    """
    typed = _resolve_token_string(_run_length_from_command_line(to_typed(TrainConfig, cfg), overrides))
    check_lora_keys_typed(typed, command_line_keys(overrides))
    return _imply_cache_latents(validate(typed))


def resolve_seed(cfg: TrainConfig) -> TrainConfig:
    """seed=-1 (A1111's "random") becomes a fresh seed in [0, 2**31); any other seed is kept."""
    if cfg.seed != -1:
        return cfg
    return replace(cfg, seed=secrets.randbelow(2**31))


from train.config_checks import validate  # noqa: E402
from train.network_checks import check_lora_keys_typed  # noqa: E402  (the checks need the dataclasses above)
