"""LoRA files are written atomically and canonically: equal contents give equal bytes."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from train.network.lora_file import save_lora


def _tensors():
    return {"lora_unet_x.lora_down.weight": torch.ones(2, 3), "lora_unet_x.alpha": torch.tensor(1.0)}


def test_metadata_order_does_not_change_the_bytes(tmp_path):
    forward = {f"ss_key_{i}": str(i) for i in range(40)}
    backward = dict(reversed(list(forward.items())))
    a = save_lora(tmp_path / "a.safetensors", _tensors(), forward).read_bytes()
    b = save_lora(tmp_path / "b.safetensors", _tensors(), backward).read_bytes()
    assert a == b
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as f:
        assert f.metadata() == forward
        assert torch.equal(f.get_tensor("lora_unet_x.lora_down.weight"), torch.ones(2, 3))


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "lora.safetensors"
    target.write_bytes(b"previous good file")

    def interrupted(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("data.atomic.os.replace", interrupted)
    with pytest.raises(OSError):
        save_lora(target, _tensors(), {})
    assert target.read_bytes() == b"previous good file"
    assert [p.name for p in tmp_path.iterdir()] == ["lora.safetensors"]
