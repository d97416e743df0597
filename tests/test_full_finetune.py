"""network=full (kohya's train_db.py): what trains and what stays, the LDM single file and the diffusers folder
it saves, and that both render like the model that was trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from inference.models.ldm_export import ldm_names
from inference.models.single_file import load_single_file
from inference.models.tiny import build_tiny
from inference.txt2img import initial_noise
from train.config import NetworkConfig
from train.errors import ConfigError
from train.network.base import begin_step
from train.network.full import FullFineTune
from train.step import diffusion_loss

from .test_cli import QUICK, run_train
from .test_inference_cli import run_cli
from .test_network_keys import sd15_skeleton

STOP = 2  # network.stop_text_encoder_training in the trained fixture


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> int:
    """How many of the module's tensors differ from `before`."""
    return sum(not torch.equal(before[k], v) for k, v in module.state_dict().items())


def a_batch() -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "pixel_values": torch.rand(2, 3, 64, 64, generator=generator) * 2 - 1,
        "input_ids": torch.randint(0, 100, (2, 77), generator=generator),
        "is_reg": torch.tensor([False, True]),
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny model after 4 steps of network=full with stop_text_encoder_training=2, saved both ways."""
    torch.manual_seed(0)
    bundle = build_tiny(seed=0)
    bundle.freeze()
    network = FullFineTune(bundle, NetworkConfig(module="full", stop_text_encoder_training=STOP))
    optimizer = torch.optim.AdamW(network.param_groups(1e-3, 1e-3))
    parts = ("unet", "vae", "text_encoder")
    history = [{part: snapshot(getattr(bundle, part)) for part in parts}]
    for step in range(4):
        begin_step(network, step)
        diffusion_loss(bundle, a_batch(), train_text_encoder=network.trains_text_encoder).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        history.append({part: snapshot(getattr(bundle, part)) for part in parts})
    network.remove()
    folder = tmp_path_factory.mktemp("full")
    path = network.write_file(folder / "tuned.safetensors", network.state_dict(), {"ss_steps": "4"})
    network.write_final(path, torch.float32)
    return bundle, network, path, history


def test_unet_trains_every_step_text_encoder_until_stop_vae_never(trained):
    bundle, network, _, history = trained
    for step in range(1, 5):
        before, after = history[step - 1], history[step]
        assert any(not torch.equal(before["unet"][k], after["unet"][k]) for k in before["unet"]), step
        assert all(torch.equal(history[0]["vae"][k], v) for k, v in after["vae"].items()), step
        te_moved = any(
            not torch.equal(before["text_encoder"][k], v) for k, v in after["text_encoder"].items()
        )
        assert te_moved == (step <= STOP), step  # kohya: frozen from global_step == N on, exactly
    assert not network.trains_text_encoder and not any(
        p.requires_grad for p in bundle.text_encoder.parameters()
    )
    names = {group["name"] for group in network.param_groups(1e-3, 1e-3)}
    assert names == {"unet", "te"}  # the LR_LOG_KEYS groups


def test_single_file_has_sd15_key_names():
    """The keys A1111 and ComfyUI look for, on the real SD 1.5 architecture (names only, no weights)."""
    names = set(ldm_names(sd15_skeleton()).values())
    known = {
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
        "model.diffusion_model.input_blocks.3.0.op.weight",
        "model.diffusion_model.middle_block.1.proj_in.weight",
        "model.diffusion_model.middle_block.2.in_layers.2.weight",
        "model.diffusion_model.output_blocks.2.1.conv.weight",
        "model.diffusion_model.output_blocks.5.2.conv.weight",
        "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.time_embed.0.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.encoder.down.0.block.0.conv1.weight",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "first_stage_model.encoder.mid.attn_1.q.weight",
        "first_stage_model.decoder.norm_out.weight",
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.bias",
    }
    assert known <= names
    assert len(names) == len(ldm_names(sd15_skeleton()))  # no two weights share a name


def test_single_file_loads_back_bit_identical_with_its_header(trained, tmp_path):
    bundle, _, path, _ = trained
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata()["ss_steps"] == "4"
        assert handle.get_tensor("first_stage_model.encoder.mid.attn_1.q.weight").ndim == 4  # a 1x1 conv
    assert path.with_suffix(".yaml").is_file()  # the tiny architecture is not SD 1.5's: loaders need it
    loaded = load_single_file(path, tokenizer=str(path.with_suffix("")))
    for part in ("unet", "vae", "text_encoder"):
        expected, got = getattr(bundle, part).state_dict(), getattr(loaded, part).state_dict()
        assert expected.keys() == got.keys(), part
        assert all(torch.equal(expected[k], got[k]) for k in expected), part


def test_diffusers_folder_and_single_file_render_the_same(trained, tmp_path):
    """`python -m inference model=<file>` against diffusers' StableDiffusionPipeline on the folder.

    Same weights, noise and sampler (Euler, 10 steps: integer timesteps, where diffusers' Euler with linspace
    spacing and k-diffusion's agree). The two samplers differ in float summation order only, so pixels
    (both truncated to 0-255 as A1111 saves them) may differ by 2 levels at most; the mean by far less.
    """
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    _, _, path, _ = trained
    folder = path.with_suffix("")
    assert json.loads((folder / "model_index.json").read_text())["unet"] == [
        "diffusers",
        "UNet2DConditionModel",
    ]
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    pipe.set_progress_bar_config(disable=True)
    prompt, seed = "a red circle", 5
    reference = pipe(
        prompt, num_inference_steps=10, guidance_scale=6.0, latents=initial_noise(seed, (1, 4, 8, 8)),
        height=64, width=64, output_type="np",
    ).images[0]  # fmt: skip
    reference = (255 * reference).astype(np.uint8)
    settings = ["steps=10", "cfg_scale=6", "sampler=Euler", "scheduler=Automatic", f"seed={seed}"]
    result = run_cli(tmp_path, f"model={path}", f"tokenizer={folder}", f"prompt={prompt}", *settings)
    assert result.returncode == 0, result.stderr[-3000:]
    ours = np.asarray(Image.open(next(tmp_path.glob("*.png"))).convert("RGB"), dtype=np.int16)
    diff = np.abs(ours - reference)
    assert reference.std() > 1 and int(diff.max()) <= 2 and float(diff.mean()) < 0.1


def test_lora_keys_typed_for_a_full_fine_tune_are_refused(repo, tmp_path):
    from hydra import compose, initialize_config_dir

    from train.config import load_config

    def load(*overrides: str):
        with initialize_config_dir(config_dir=str(repo / "configs"), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides))
        cfg.output_dir = str(tmp_path)
        return load_config(cfg, overrides)

    with pytest.raises(ConfigError, match=r"network.dim=16.*network=full"):
        load("network=full", "network.dim=16", "dataset.train_dir=x")
    load("network=full", "network.dim=8", "dataset.train_dir=x")  # the default: nothing to refuse
    # the same keys from an experiment written for a LoRA are ignored
    assert load("+experiment=char_lora", "network=full").network.module == "full"
    with pytest.raises(ConfigError, match="applies to network=full only"):
        load("+network.stop_text_encoder_training=5", "dataset.train_dir=x")
    with pytest.raises(ConfigError, match="train_text_encoder=false"):
        load("network=full", "network.stop_text_encoder_training=0", "dataset.train_dir=x")


def test_train_full_writes_single_files_a_diffusers_folder_and_scores(tmp_path):
    """The users' path: `+experiment=char_lora network=full` on QUICK, 2 prompts."""
    prompts = "eval.prompts=[sls star blue background large,red circle blue background large]"
    run_dir = tmp_path / "run"
    result = run_train(run_dir, *QUICK, "network=full", "optimizer.unet_lr=2e-5", "optimizer.text_encoder_lr=1e-5",
                       "network.stop_text_encoder_training=3", prompts)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for name in (
        "char_lora.safetensors",
        "char_lora.yaml",
        "char_lora-000001.safetensors",
        "char_lora-000001.yaml",
    ):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "char_lora" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(run_dir.glob("*.tmp*"))
    with safe_open(str(run_dir / "char_lora.safetensors"), framework="pt") as handle:
        header = handle.metadata()
        assert any(k.startswith("model.diffusion_model.") for k in handle.keys())
    assert header["ss_network_module"] == "full" and header["ss_network_dim"] == "None"
    assert header["modelspec.architecture"] == "stable-diffusion-v1"  # a checkpoint, not a LoRA
    assert json.loads(header["ss_network_args"]) == {"stop_text_encoder_training": "3"}
    scores = json.loads((run_dir / "scores.json").read_text())["weight"]
    assert set(scores) == {"0.0", "1.0"}  # the base and the fine-tuned model
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"lr/unet", "lr/textencoder"} <= {key for r in records for key in r}
