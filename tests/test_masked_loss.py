"""Masked loss: masks from the alpha channel or a mask folder follow their picture's crop and flip, and
zero-weight pixels contribute nothing to the loss."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.errors import DatasetError
from inference.models.tiny import build_tiny
from train.config import DatasetConfig
from train.dataset import DreamBoothDataset, SampleError, collate
from train.errors import ConfigError
from train.loss_mask import apply_loss_mask
from train.step import diffusion_loss


def picture(path: Path, size=(96, 64), alpha: bool = False) -> Path:
    """A random picture whose right half is transparent (alpha) or not."""
    rgb = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    if alpha:
        a = np.full((size[1], size[0], 1), 255, np.uint8)
        a[:, size[0] // 2 :] = 0
        rgb = np.concatenate([rgb, a], axis=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    path.with_suffix(".txt").write_text("sls toy")
    return path


def dataset(train: Path, tiny, **values) -> DreamBoothDataset:
    cfg = DatasetConfig(train_dir=str(train), resolution=64, masked_loss=True, **values)
    data = DreamBoothDataset(cfg, seed=0)
    data.bind_tokenizer(tiny.tokenizer)
    data.set_epoch(1)
    return data


@pytest.fixture(scope="module")
def tiny():
    bundle = build_tiny(seed=0)
    bundle.freeze()
    return bundle


def test_the_loss_is_weighed_on_the_latent_grid():
    per_element = torch.ones(1, 4, 8, 8)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :32] = 1.0
    mask[..., 32:36] = 0.5  # half of latent column 4 is at 0.5: area averaging gives 0.25 there
    weighed = apply_loss_mask(per_element, mask)
    assert torch.equal(weighed[..., :4], torch.ones(1, 4, 8, 4))
    assert torch.allclose(weighed[..., 4], torch.full((1, 4, 8), 0.25))
    assert not weighed[..., 5:].any()


def test_an_alpha_mask_follows_the_crop_and_the_flip(tmp_path, tiny):
    picture(tmp_path / "train" / "1_sls toy" / "a.png", size=(96, 64), alpha=True)
    data = dataset(tmp_path / "train", tiny, alpha_mask=True, flip_aug=True)
    # A 96x64 picture is scaled to cover 64x64 (96 → 96) and its centre 64 columns kept: columns 16..79,
    # so the transparent half starts at column 48 - 16 = 32.
    masks = {}
    for epoch in range(1, 9):
        data.set_epoch(epoch)
        item = data[0]
        masks[epoch] = item["loss_mask"]
    plain = [m for m in masks.values() if m[0, 0, 0] == 1.0]
    mirrored = [m for m in masks.values() if m[0, 0, 0] == 0.0]
    assert plain and mirrored  # flip_aug mirrors the mask with its picture
    assert plain[0].shape == (1, 64, 64)
    assert (plain[0][..., :31] == 1).all() and (plain[0][..., 33:] == 0).all()
    assert torch.equal(mirrored[0], plain[0].flip(-1))


def test_masked_pixels_add_nothing_to_the_loss(tmp_path, tiny):
    picture(tmp_path / "train" / "1_sls toy" / "a.png", size=(64, 64))
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.new("L", (64, 64), 0).save(masks / "a.png")
    data = dataset(tmp_path / "train", tiny, mask_dir=str(masks))
    batch = collate([data[0]])
    torch.manual_seed(0)
    assert diffusion_loss(tiny, batch).item() == 0.0  # everything masked out
    Image.new("L", (64, 64), 255).save(masks / "a.png")
    full = dataset(tmp_path / "train", tiny, mask_dir=str(masks))
    batch = collate([full[0]])
    torch.manual_seed(0)
    masked = diffusion_loss(tiny, batch).item()
    del batch["loss_mask"]
    torch.manual_seed(0)
    assert masked == pytest.approx(diffusion_loss(tiny, batch).item(), rel=1e-6)  # all-white: plain loss


def test_a_missing_or_misfit_mask_names_the_file(tmp_path, tiny):
    picture(tmp_path / "train" / "1_sls toy" / "a.png", size=(64, 64))
    masks = tmp_path / "masks"
    masks.mkdir()
    with pytest.raises(SampleError, match="a.png has no mask in .*masks"):
        dataset(tmp_path / "train", tiny, mask_dir=str(masks))[0]
    Image.new("L", (32, 32), 255).save(masks / "a.png")
    with pytest.raises(SampleError, match="is 32x32 but its picture a.png is 64x64"):
        dataset(tmp_path / "train", tiny, mask_dir=str(masks))[0]


def test_every_mask_is_checked_before_the_first_step(tmp_path, tiny, caplog):
    for name in ("a", "b", "c"):
        picture(tmp_path / "train" / "1_sls toy" / f"{name}.png", size=(64, 64))
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.new("L", (64, 64), 255).save(masks / "a.png")
    Image.new("L", (48, 64), 255).save(masks / "c.png")
    data = dataset(tmp_path / "train", tiny, mask_dir=str(masks))
    with pytest.raises(
        DatasetError,
        match=r"b.png has no mask in .*masks \(expected b.png\).*dataset.masked_loss=false \(and 1 more",
    ):
        data.check_pictures(progress=False)
    assert "is 48x64 but its picture c.png is 64x64" in caplog.text  # every problem is listed in one run
    Image.new("L", (64, 64), 255).save(masks / "b.png")
    Image.new("L", (64, 64), 255).save(masks / "c.png")
    dataset(tmp_path / "train", tiny, mask_dir=str(masks)).check_pictures(progress=False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dataset.masked_loss=true"], "dataset.masked_loss=true needs masks"),
        (["dataset.alpha_mask=true"], "has no effect without dataset.masked_loss=true"),
    ],
)
def test_mask_options_without_their_partner_are_one_line_errors(compose_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_config(*overrides, "dataset.train_dir=x")
