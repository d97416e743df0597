"""Textual inversion (network=embedding): only the new vectors train, from the init word; captions get the
placeholders where the trigger stands, or templates; the file is A1111's and the engine loads it by name."""

from __future__ import annotations

import random
from itertools import chain

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from inference.cli import RenderConfig, render
from inference.embedding_grid import with_strength
from inference.models.loading import load_base_model
from train.caption_ops import CaptionOptions, process_caption
from train.config import DatasetConfig, EvalConfig, ModelConfig, NetworkConfig, TrainConfig
from train.errors import ConfigError
from train.eval import render_eval_grid
from train.network.embedding import EmbeddingNetwork
from train.network.ti_captions import caption_templates, check_trigger_in_captions, expand
from train.step import diffusion_loss

CAPTION = "sls star, blue background, large"


def embedding_config(**overrides) -> NetworkConfig:
    values = {"module": "embedding", "token_string": "sls", "train_unet": False, "train_text_encoder": False}
    return NetworkConfig(**(values | overrides))


@pytest.fixture
def toy():
    bundle = load_base_model(ModelConfig(kind="toy"))
    bundle.freeze()
    return bundle


def ids_of(bundle, text: str) -> list[int]:
    return bundle.tokenizer(text, add_special_tokens=False).input_ids


def frozen_weights(bundle) -> dict[str, torch.Tensor]:
    parts = chain(bundle.text_encoder.state_dict().items(), bundle.unet.state_dict().items())
    return {name: tensor.clone() for name, tensor in parts}


def test_start_values_are_the_init_words_rows_repeated_or_truncated(toy):
    table = toy.text_encoder.get_input_embeddings().weight
    star = ids_of(toy, "star")
    assert len(star) == 1
    three = EmbeddingNetwork(toy, embedding_config(init_word="star", num_vectors_per_token=3))
    assert torch.equal(three.vectors.data, table[star * 3])
    three.remove()
    words = ids_of(toy, "blue background")
    assert len(words) == 2
    one = EmbeddingNetwork(toy, embedding_config(init_word="blue background", num_vectors_per_token=1))
    assert torch.equal(one.vectors.data, table[words[:1]])  # truncated
    one.remove()
    odd = EmbeddingNetwork(toy, embedding_config(init_word="blue background", num_vectors_per_token=3))
    assert torch.equal(odd.vectors.data, table[[words[0], words[1], words[0]]])  # repeated
    odd.remove()


def test_only_the_new_vectors_change_during_training(toy):
    before = frozen_weights(toy)
    network = EmbeddingNetwork(toy, embedding_config(init_word="star", num_vectors_per_token=2))
    start = network.vectors.detach().clone()
    optimizer = torch.optim.AdamW(network.param_groups(0.0, 1e-2))
    torch.manual_seed(0)
    batch = {
        "latent_mean": torch.randn(2, 4, 8, 8),  # cached latents: no VAE pass
        "latent_std": torch.zeros(2, 4, 8, 8),
        "input_ids": torch.stack([network.caption_ids(CAPTION), network.caption_ids("a small sls star")]),
        "is_reg": torch.tensor([False, False]),
    }
    toy.text_encoder.train()
    for _ in range(2):
        diffusion_loss(toy, batch).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert not torch.equal(network.vectors.detach(), start)
    assert (network.vectors.detach() - start).abs().amax(dim=1).min() > 0  # each of the two vectors moved
    network.remove()
    assert type(toy.text_encoder.get_input_embeddings()) is torch.nn.Embedding
    after = frozen_weights(toy)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], before[name]) for name in before)  # table, encoder, UNet: bit for bit


def test_the_trigger_becomes_its_placeholders_and_other_captions_tokenise_as_before(toy):
    network = EmbeddingNetwork(toy, embedding_config(num_vectors_per_token=3))
    first = toy.text_encoder.config.vocab_size
    assert network.placeholders == [first, first + 1, first + 2]
    plain = "red circle, blue background, large"
    padded = toy.tokenizer(plain, padding="max_length", max_length=77, truncation=True).input_ids
    assert network.caption_ids(plain).tolist() == padded
    ids = network.caption_ids(CAPTION).tolist()
    rest = ids_of(toy, "star, blue background, large")
    bos, eos = toy.tokenizer.bos_token_id, toy.tokenizer.eos_token_id
    assert ids[: 5 + len(rest)] == [bos, *network.placeholders, *rest, eos] and len(ids) == 77
    long = network.caption_ids(" ".join(["sls"] * 40)).tolist()  # 120 placeholders: cut at 75 + EOS
    assert len(long) == 77 and long[-1] == eos and set(long[1:76]) == set(network.placeholders)
    assert expand([5, 7, 8, 7, 8], [7, 8], [90, 91, 92]) == [5, 90, 91, 92, 90, 91, 92]
    network.remove()


def test_templates_replace_captions_reproducibly(compose_config):
    cfg = compose_config("network=embedding", "name=sls", "network.template=object", "dataset=toy_character")
    filled = caption_templates(cfg)
    assert len(filled) == 27 and all("sls" in caption for caption in filled)
    assert "a photo of a sls" in filled
    options = CaptionOptions(templates=filled)
    drawn = [process_caption(CAPTION, options, 1, random.Random(f"42/1/{i}")) for i in range(40)]
    again = [process_caption(CAPTION, options, 1, random.Random(f"42/1/{i}")) for i in range(40)]
    assert drawn == again and set(drawn) <= set(filled) and len(set(drawn)) > 10
    style = compose_config("network=embedding", "name=chk", "network.template=style", "dataset=toy_character")
    assert "a painting in the style of chk" in caption_templates(style)
    assert caption_templates(compose_config("network=embedding", "name=sls", "dataset=toy_character")) == ()


def write_embedding(toy, path):
    """A strong, trained-looking 2-vector embedding for `sls`, written by the network's own writer (fp16)."""
    network = EmbeddingNetwork(toy, embedding_config(init_word="star", num_vectors_per_token=2))
    with torch.no_grad():
        network.vectors.copy_(
            torch.randn(network.vectors.shape, generator=torch.Generator().manual_seed(3)) * 2
        )
    meta = {"ss_steps": "7", "ss_sd_model_name": "models/toy", "ss_network_dim": "8"}
    meta["modelspec.architecture"] = "stable-diffusion-v1/lora"
    path = network.write_file(path, network.state_dict(torch.float16), meta)
    network.remove()
    return path


def test_the_file_is_a1111s_and_the_engine_loads_it_by_its_file_name(toy, tmp_path):
    path = write_embedding(toy, tmp_path / "emb" / "sls.safetensors")
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    with safe_open(str(path), framework="pt") as file:
        assert list(file.keys()) == ["emb_params"]  # A1111's single-tensor rule; kohya's key
        vectors = file.get_tensor("emb_params")
        header = file.metadata()
    assert vectors.shape == (2, 64) and vectors.dtype == torch.float16
    assert header["name"] == "sls" and header["step"] == "7" and header["sd_checkpoint_name"] == "toy"
    assert header["modelspec.architecture"] == "stable-diffusion-v1/textual-inversion"
    assert "ss_network_dim" not in header

    def image(prompt: str, embeddings: bool, out: str) -> tuple[np.ndarray, str]:
        config = RenderConfig(prompt=prompt, steps=3, seed=5, model="toy", out=str(tmp_path / out))
        config.embeddings_dir = str(path.parent) if embeddings else None
        [written] = render(config).paths
        return np.asarray(Image.open(written).convert("RGB")), Image.open(written).info["parameters"]

    with_file, infotext = image(CAPTION, True, "with")
    without, _ = image(CAPTION, False, "without")
    assert np.abs(with_file.astype(int) - without.astype(int)).mean() > 3  # the trigger = the file name
    assert 'TI hashes: "sls: ' in infotext
    plain = "red circle, blue background, large"
    assert np.array_equal(image(plain, True, "plain")[0], image(plain, False, "plain0")[0])  # no trigger


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["network.train_unet=true"], "network.train_unet=true cannot be honoured"),
        (["network.train_text_encoder=true"], "only the new token vectors"),
        (["dataset.cache_text_encoder_outputs=true"], "pass through the text encoder"),
        (["network.token_string=sls", "name=char"], "set name=sls"),
        (["network.template=objects"], "network.template='objects' is not valid"),
        (["network.num_vectors_per_token=0"], "between 1 and 75"),
        (["optimizer.text_encoder_lr=0"], "trains at the text encoder's rate"),
    ],
)
def test_what_an_embedding_cannot_honour_is_one_line(compose_config, overrides, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")) as error:
        compose_config("network=embedding", "name=sls", "dataset=toy_character", *overrides)
    assert "\n" not in str(error.value)


def test_lora_refuses_embedding_keys_and_captions_must_name_the_trigger(compose_config):
    with pytest.raises(ConfigError, match="apply to textual inversion only"):
        compose_config("dataset=toy_character", "+network.init_word=star")
    cfg = compose_config("network=embedding", "name=sls", "dataset=toy_character")
    check_trigger_in_captions(cfg, ["red circle", "an SLS star, large"])  # case-insensitive, as CLIP reads
    with pytest.raises(ConfigError, match="no training caption contains the token string `sls`"):
        check_trigger_in_captions(cfg, ["red circle", "slsx star"])
    prefixed = compose_config(
        "network=embedding", "name=sls", "dataset=toy_character", "dataset.caption_prefix=sls"
    )
    check_trigger_in_captions(prefixed, ["red circle"])
    templated = compose_config(
        "network=embedding", "name=sls", "dataset=toy_character", "network.template=object"
    )
    check_trigger_in_captions(templated, ["red circle"])


def test_the_eval_grid_renders_strength_0_without_the_embedding_and_others_with_it(toy, tmp_path):
    path = write_embedding(toy, tmp_path / "sls.safetensors")
    plain = "red circle, blue background, large"
    e = EvalConfig(prompts=[CAPTION, plain], weights=[0.0, 0.5, 1.0], steps=3, cfg_scale=3.0, scorer="toy")
    cfg = TrainConfig(name="sls", dataset=DatasetConfig(resolution=64), eval=e)
    outcome = render_eval_grid(toy, cfg, path, tmp_path / "eval", "embedding")
    assert outcome.grid_path.is_file() and set(outcome.scores) == {"0.0", "0.5", "1.0"}
    cells = [
        [Image.open(next((tmp_path / "eval").glob(f"{r:03d}-{c:02d}-*.png"))) for c in range(3)]
        for r in range(2)
    ]
    pixels = [[np.asarray(cell.convert("RGB")).astype(int) for cell in row] for row in cells]
    assert np.abs(pixels[0][2] - pixels[0][0]).mean() > 3  # the trigger prompt changes with the embedding
    assert "TI hashes" not in cells[0][0].info["parameters"] and "TI hashes" in cells[0][2].info["parameters"]
    assert cells[0][1].info["parameters"].startswith("(sls:0.5) star,")  # A1111's emphasis as the strength
    assert all(np.array_equal(pixels[1][0], pixels[1][c]) for c in (1, 2))  # no trigger: no change at all
    assert with_strength("a SLS star, slsx", "sls", 0.25) == "a (SLS:0.25) star, slsx"


@pytest.mark.slow
def test_an_embedding_learns_a_thing_the_base_model_can_draw(tmp_path):
    """`sls` = a red star, from 20 captioned pictures: 250 steps (about a minute) turn the base model's
    reading of `sls` (0 red stars in 16) into red shapes, mostly stars. The toy character itself is out of
    textual inversion's reach: magenta and rings are nothing the frozen UNet ever drew."""
    from dataclasses import replace

    from data.toy.score import analyse
    from data.toy.world import caption, render, sample_scene
    from tests.test_cli import run_train

    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "10_sls shape"
    folder.mkdir(parents=True)
    for i in range(20):
        scene = sample_scene(rng)
        scene = replace(scene, shape="star", color="red", background=scene.background.replace("red", "blue"))
        render(scene, 64).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(caption(scene, bool(i % 2)).replace("red star", "sls") + "\n")
    prompts = (
        '["sls, blue background, large","sls, green background, small","a large sls on a white background"]'
    )
    result = run_train(
        tmp_path / "run", "+experiment=char_lora", "network=embedding", "name=sls", "network.init_word=circle",
        "network.num_vectors_per_token=2", "optimizer.text_encoder_lr=5e-3", "dataset=folders",
        f"dataset.train_dir={folder.parent}", "dataset.resolution=64", "dataset.cache_latents=true",
        "training.max_train_epochs=10", "training.batch_size=8", "training.save_every_n_epochs=null", "logger=none",
        "eval.scorer=null",
        f"eval.prompts={prompts}", "eval.weights=[0.0,1.0]", "objective=train_loss",  # no toy scorer here
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    seen: dict[int, list] = {0: [], 1: []}
    for path in sorted((tmp_path / "run" / "eval").glob("0*-*.png")):
        found = analyse(Image.open(path).convert("RGB"))
        seen[int(path.name.split("-")[1])].append((found.color, found.shape))
    assert sum(cell == ("red", "star") for cell in seen[0]) == 0
    assert sum(color == "red" for color, _ in seen[1]) >= 10  # of 12
    assert sum(cell == ("red", "star") for cell in seen[1]) >= 4
