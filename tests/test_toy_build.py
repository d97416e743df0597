"""The toy build runs end to end on a tiny budget and writes a loadable, checksummed diffusers folder."""

from __future__ import annotations

from inference.models.loading import load_pretrained
from train.toy_base.build import BuildSettings, build_toy_model
from train.toy_base.export import file_checksums


def test_tiny_build_writes_a_loadable_model(tmp_path):
    settings = BuildSettings(
        out=tmp_path / "toy",
        vae_pictures=32,
        vae_steps=2,
        vae_batch=4,
        base_pictures=32,
        unet_steps=2,
        unet_batch=4,
        fidelity_prompts=2,
        fidelity_seeds=1,
    )
    report = build_toy_model(settings, command="python scripts/build_toy.py (test)")
    assert 0.0 <= report["base_fidelity"] <= 1.0 and report["latent_scaling_factor"] > 0
    folder = tmp_path / "toy"
    listed = dict(
        reversed(line.split("  ", 1)) for line in (folder / "CHECKSUMS.sha256").read_text().splitlines()
    )
    assert listed == file_checksums(folder)
    assert {"model_index.json", "README.md", "base_grid.png", "tokenizer/vocab.json"} <= set(listed)
    assert not list(tmp_path.glob(".toy*"))  # the staging folder was swapped in, nothing left behind
    bundle = load_pretrained(str(folder))
    assert abs(bundle.vae.config.scaling_factor - report["latent_scaling_factor"]) < 1e-4


def test_tiny_controlnet_build_writes_a_judged_loadable_controlnet(tmp_path):
    from diffusers import ControlNetModel

    from inference.cli import load_model
    from train.toy_base.controlnet_build import ControlNetSettings, build_toy_controlnet

    settings = ControlNetSettings(out=tmp_path / "toy_controlnet", pictures=16, steps=2, batch=4, cases=2)
    report = build_toy_controlnet(settings, lambda path: load_model(str(path), "cpu"), "(test)")
    assert {report["matches_with_controlnet"], report["matches_without"]} <= {0.0, 0.5, 1.0}
    folder = settings.out
    listed = dict(
        reversed(line.split("  ", 1)) for line in (folder / "CHECKSUMS.sha256").read_text().splitlines()
    )
    assert listed == file_checksums(folder)
    assert {"config.json", "README.md", "control_grid.png"} <= set(listed)
    assert "| matches_with_controlnet |" in (folder / "README.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name != "toy_controlnet"]  # no staging left behind
    assert {oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {"0o644"}  # readable by a webui
    assert list(ControlNetModel.from_pretrained(folder).config.conditioning_embedding_out_channels) == [
        16,
        32,
        64,
        64,
    ]
