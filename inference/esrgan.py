"""The ESRGAN family's networks, with BasicSR's parameter names so its files load one to one.

RRDBNet (ESRGAN, Real-ESRGAN x4plus / x2plus, most community "4x-..." models): a stack of
Residual-in-Residual Dense Blocks at the input size, then nearest-neighbour x2 steps, each followed by a
convolution. Real-ESRGAN's x2 and x1 models pixel-unshuffle the input first (12 or 48 input channels), so the
same x4 body gives x2 or x1. SRVGGNetCompact (Real-ESRGAN's compact models, e.g. realesr-general-x4v3): plain
convolutions with PReLU, a pixel shuffle, plus the nearest-upscaled input as a residual.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, 1, 1)


class ResidualDenseBlock(nn.Module):
    """Five convolutions, each seeing the block input and every earlier output; the residual is scaled 0.2."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        for index in range(1, 5):
            setattr(self, f"conv{index}", _conv(features + (index - 1) * growth, growth))
        self.conv5 = _conv(features + 4 * growth, features)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, features, H, W) → the same shape."""
        seen = [x]
        for index in range(1, 5):
            conv = getattr(self, f"conv{index}")
            seen.append(F.leaky_relu(conv(torch.cat(seen, 1)), 0.2))
        return self.conv5(torch.cat(seen, 1)) * 0.2 + x


class RRDB(nn.Module):
    """Three dense blocks in a row with a 0.2-scaled residual around them."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(features, growth)
        self.rdb2 = ResidualDenseBlock(features, growth)
        self.rdb3 = ResidualDenseBlock(features, growth)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, features, H, W) → the same shape."""
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's generator: (B, in, H, W) → (B, out, H*scale, W*scale), scale = 2**upsamples / unshuffle."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        features: int = 64,
        blocks: int = 23,
        growth: int = 32,
        upsamples: int = 2,
        unshuffle: int = 1,
    ) -> None:
        super().__init__()
        self.upsamples, self.unshuffle = upsamples, unshuffle
        self.conv_first = _conv(in_channels * unshuffle**2, features)
        self.body = nn.Sequential(*(RRDB(features, growth) for _ in range(blocks)))
        self.conv_body = _conv(features, features)
        for index in range(1, upsamples + 1):
            setattr(self, f"conv_up{index}", _conv(features, features))
        self.conv_hr = _conv(features, features)
        self.conv_last = _conv(features, out_channels)

    @property
    def scale(self) -> int:
        return 2**self.upsamples // self.unshuffle

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in, H, W) in [0, 1] → (B, out, H*scale, W*scale)."""
        height, width = x.shape[-2:]
        if self.unshuffle > 1:
            # The unshuffle needs sides divisible by it: mirror-pad, then crop the output back.
            pad_h, pad_w = -height % self.unshuffle, -width % self.unshuffle
            x = F.pixel_unshuffle(F.pad(x, (0, pad_w, 0, pad_h), mode="reflect"), self.unshuffle)
        features = self.conv_first(x)
        features = features + self.conv_body(self.body(features))
        for index in range(1, self.upsamples + 1):
            conv = getattr(self, f"conv_up{index}")
            features = F.leaky_relu(conv(F.interpolate(features, scale_factor=2, mode="nearest")), 0.2)
        out = self.conv_last(F.leaky_relu(self.conv_hr(features), 0.2))
        return out[..., : height * self.scale, : width * self.scale]


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact network: (B, in, H, W) → (B, out, H*scale, W*scale)."""

    def __init__(
        self, in_channels: int = 3, out_channels: int = 3, features: int = 64, convs: int = 16, scale: int = 4
    ) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [_conv(in_channels, features), nn.PReLU(features)]
        for _ in range(convs):
            layers += [_conv(features, features), nn.PReLU(features)]
        layers.append(_conv(features, out_channels * scale * scale))
        self.body = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in, H, W) in [0, 1] → (B, out, H*scale, W*scale)."""
        out = x
        for layer in self.body:
            out = layer(out)
        # The network learns the difference from a nearest-neighbour upscale of the input.
        return F.pixel_shuffle(out, self.scale) + F.interpolate(x, scale_factor=self.scale, mode="nearest")
