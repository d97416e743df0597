"""Image scores load real transformers folders (tiny random models saved here) and compute their numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from train.errors import ConfigError
from train.image_scores import ClipScorer, IdentityScorer, image_scores, load_scorers

REPO = Path(__file__).resolve().parents[1]
VISION = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
              num_attention_heads=4)  # fmt: skip


def _image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(REPO / "models" / "toy" / "tokenizer")
    text = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    config = CLIPConfig(text_config=text, vision_config=VISION, projection_dim=16)
    folder = tmp_path_factory.mktemp("clip")
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=_image_processor(), tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["clip_vision", "dinov2"])
def identity_folder(request, tmp_path_factory) -> Path:
    from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "dinov2":
        Dinov2Model(Dinov2Config(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=37)).save_pretrained(folder)  # fmt: skip
    else:
        CLIPVisionModel(CLIPVisionConfig(**VISION)).save_pretrained(folder)
    _image_processor().save_pretrained(folder)
    return folder


def pictures(count: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)) for _ in range(count)]


def test_clip_score_of_pictures_against_prompts(clip_folder):
    scorer = ClipScorer(str(clip_folder))
    images, prompts = pictures(3, 0), ["a red circle", "a blue star", "a green square"]
    cosines = scorer.cosines(images, prompts)
    assert cosines.shape == (3,) and bool((cosines.abs() <= 1).all())
    score = scorer.score(images, prompts)
    assert score == pytest.approx(float((100 * cosines.clamp(min=0)).mean()))
    assert 0.0 <= score <= 100.0
    assert scorer.score(images, prompts) == score  # the same pictures and prompts, the same number
    assert scorer.cosines(images[:1], ["a blue star"])[0] != pytest.approx(float(cosines[0]))


def test_identity_of_a_picture_with_itself_is_one(identity_folder):
    scorer = IdentityScorer(str(identity_folder))
    one, others = pictures(1, 1), pictures(4, 2)
    assert scorer.similarity(one, one) == pytest.approx(1.0, abs=1e-5)
    across = scorer.similarity(one, others)
    assert -1.0 <= across < 0.9999
    assert scorer.similarity(one, scorer.embed(others)) == pytest.approx(across)  # precomputed references


def test_scores_of_one_grid_column(clip_folder, identity_folder):
    scorers = load_scorers(str(clip_folder), str(identity_folder), "cpu")
    images = pictures(2, 3)
    scores = image_scores(scorers, images, ["a", "b"], scorers["identity"].embed(images))
    assert set(scores) == {"clip_score", "identity"}
    embedded = scorers["identity"].embed(images)
    assert scores["identity"] == pytest.approx(
        float((embedded @ embedded.T).mean())
    )  # every pair, 2 of them 1.0
    assert scores["clip_score"] == pytest.approx(scorers["clip_score"].score(images, ["a", "b"]))


def test_a_model_that_cannot_load_is_one_line_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"eval.clip_model=.*cannot be loaded") as error:
        ClipScorer(str(tmp_path / "missing"))
    assert "\n" not in str(error.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"eval.identity_model=.*cannot be loaded"):
        IdentityScorer(str(tmp_path / "empty"))
