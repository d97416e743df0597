"""Upscaler model files (A1111's `models/ESRGAN`): find one by name, read it, build its network from its keys.

Two key layouts of RRDBNet are in use. The original ESRGAN one numbers a flat Sequential: `model.0` the
first convolution, `model.1.sub.N.RDB1.conv1.0` the blocks with the trunk convolution as `model.1.sub.<nb>`,
then for each x2 step an (upsample, conv, activation) triple (convs at 3, 6, ...), then the HR and last
convolutions two apart. BasicSR's (Real-ESRGAN) names them `conv_first`, `body.N.rdb1.conv1`, `conv_body`,
`conv_up1`..., `conv_hr`, `conv_last`, often inside a `params_ema` or `params` dict. The old layout is renamed
to BasicSR's; scale, blocks, features, growth and channels are read from the tensors' shapes.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from data.typed_config import ConfigError
from inference.esrgan import RRDBNet, SRVGGNetCompact

EXTENSIONS = (".pth", ".pt", ".safetensors")  # what A1111 lists in models/ESRGAN
SUPPORTED = (
    "ESRGAN / Real-ESRGAN RRDBNet (original or BasicSR keys, x1/x2/x4/x8) and Real-ESRGAN SRVGGNetCompact"
)
_OLD_BLOCK = re.compile(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)")
_OLD_TOP = re.compile(r"model\.(\d+)\.(weight|bias)")
_TRUNK = re.compile(r"model\.1\.sub\.(\d+)\.(weight|bias)")


def find_upscaler_file(name: str, folder: str | Path) -> Path | None:
    """The file in `folder` whose name without its suffix is `name` (A1111's upscaler names), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    matches = sorted(p for p in folder.iterdir() if p.stem == name and p.suffix.lower() in EXTENSIONS)
    return matches[0] if matches else None


def upscaler_names(folder: str | Path) -> list[str]:
    """The names of the upscaler files in `folder`, sorted (empty when it is not a folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted({p.stem for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file()})


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a `.safetensors` or `.pth`/`.pt` file (pickles only as plain tensors), unwrapped."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise many types for a broken or foreign file
        raise ConfigError(f"upscaler file {path} cannot be read ({str(error).splitlines()[0]})") from None
    # BasicSR saves the weights under params_ema (the averaged ones, which A1111 prefers) and/or params.
    for wrapper in ("params_ema", "params"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"upscaler file {path} holds no state dict of tensors; supported: {SUPPORTED}")
    return state


def rename_old_esrgan(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Original ESRGAN keys (`model.0.weight`, `model.1.sub.0.RDB1.conv1.0.weight`, ...) → BasicSR's."""
    blocks = sum(1 for key in state if key.endswith("RDB1.conv1.0.weight"))
    tops = sorted({int(m.group(1)) for key in state if (m := _OLD_TOP.fullmatch(key))})
    last = tops[-1]
    # Upsampling convs sit at 3, 6, ... below the HR conv (last - 2); everything else is fixed.
    names = {0: "conv_first", last - 2: "conv_hr", last: "conv_last"}
    names |= {index: f"conv_up{index // 3}" for index in tops if 0 < index < last - 2}
    renamed = {}
    for key, tensor in state.items():
        if m := _OLD_BLOCK.fullmatch(key):
            block, rdb, conv, kind = m.groups()
            renamed[f"body.{block}.rdb{rdb}.conv{conv}.{kind}"] = tensor
        elif (m := _TRUNK.fullmatch(key)) and int(m.group(1)) == blocks:
            renamed[f"conv_body.{m.group(2)}"] = tensor
        elif (m := _OLD_TOP.fullmatch(key)) and int(m.group(1)) in names:
            renamed[f"{names[int(m.group(1))]}.{m.group(2)}"] = tensor
        else:
            renamed[key] = tensor  # left as is: loading then names it as unexpected
    return renamed


def build_rrdbnet(state: dict[str, Tensor]) -> RRDBNet:
    """An RRDBNet shaped like BasicSR-named `state` (not yet loaded)."""
    first, last = state["conv_first.weight"], state["conv_last.weight"]
    in_channels, out_channels = first.shape[1], last.shape[0]
    # Real-ESRGAN x2 / x1 pixel-unshuffle the input: 4x or 16x the output's channels go in.
    unshuffle = {4: 2, 16: 4}.get(in_channels // out_channels, 1) if in_channels % out_channels == 0 else 1
    return RRDBNet(
        in_channels // unshuffle**2,
        out_channels,
        features=first.shape[0],
        blocks=len({key.split(".")[1] for key in state if key.startswith("body.")}),
        growth=state["body.0.rdb1.conv1.weight"].shape[0],
        upsamples=sum(1 for key in state if re.fullmatch(r"conv_up\d+\.weight", key)),
        unshuffle=unshuffle,
    )


def build_compact(state: dict[str, Tensor]) -> SRVGGNetCompact:
    """An SRVGGNetCompact shaped like `state` (`body.N.weight`, PReLU at the odd indices)."""
    last_index = max(int(key.split(".")[1]) for key in state)
    first, last = state["body.0.weight"], state[f"body.{last_index}.weight"]
    in_channels = first.shape[1]
    scale = round((last.shape[0] / in_channels) ** 0.5)  # the pixel shuffle's channels: out * scale**2
    return SRVGGNetCompact(in_channels, in_channels, first.shape[0], (last_index - 2) // 2, scale)


def build_network(state: dict[str, Tensor]) -> nn.Module | None:
    """The network whose architecture `state`'s keys describe, weights loaded; None for unknown keys."""
    if "model.0.weight" in state and any(_OLD_BLOCK.fullmatch(key) for key in state):
        state = rename_old_esrgan(state)
    if "conv_first.weight" in state and "body.0.rdb1.conv1.weight" in state and "conv_last.weight" in state:
        network: nn.Module = build_rrdbnet(state)
    elif "body.0.weight" in state and "body.1.weight" in state and state["body.1.weight"].ndim == 1:
        if not all(re.fullmatch(r"body\.\d+\.(weight|bias)", key) for key in state):
            return None
        network = build_compact(state)
    else:
        return None
    try:
        network.load_state_dict({key: value.float() for key, value in state.items()})
    except RuntimeError:  # shapes or names that only look like a supported layout
        return None
    return network.eval().requires_grad_(False)


@functools.lru_cache(maxsize=2)
def _cached_network(path: str, modified: float, size: int) -> nn.Module:
    network = build_network(read_state_dict(Path(path)))
    if network is None:
        raise ConfigError(f"upscaler file {path} has keys of an unknown architecture; supported: {SUPPORTED}")
    try:  # a 4x4 probe: pictures go in and come out as RGB
        with torch.no_grad():
            rgb_out = network(torch.zeros(1, 3, 4, 4)).shape[1] == 3
    except RuntimeError:
        rgb_out = False
    if not rgb_out:
        raise ConfigError(
            f"upscaler file {path} is not an RGB to RGB model (grey or RGBA ones are not supported)"
        )
    return network


def load_upscaler_network(path: str | Path) -> nn.Module:
    """The network in an upscaler file, on the CPU; read again only when the file changes."""
    stat = Path(path).stat()
    return _cached_network(str(Path(path).resolve()), stat.st_mtime, stat.st_size)
