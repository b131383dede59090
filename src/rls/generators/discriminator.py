"""A pure-PyTorch StyleGAN2 discriminator (Karras et al. 2020, 'resnet' architecture).

Written from the paper's Fig. 7 / Appendix B and the layer semantics of NVIDIA
stylegan2-ada-pytorch ``training/networks.py`` (``DiscriminatorBlock``,
``MinibatchStdLayer``, ``DiscriminatorEpilogue``): equalised learning rate everywhere,
lrelu with gain sqrt(2), [1,3,3,1] low-pass filter before every stride-2 conv, residual
blocks scaled by sqrt(0.5), and a minibatch-stddev feature in the 4² epilogue. Only what
training the project's own small generators needs: unconditional, fp32, no conv clamp.
It reuses the generator's ops (``rls.generators.ops``) and its equalised-lr dense layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rls.generators import ops
from rls.generators.networks import FullyConnectedLayer


class DownConv2dLayer(nn.Module):
    """Equalised-lr conv, optionally low-pass filtered then stride 2 (``down=2``), + bias/act.

    The down path is that of the official ``conv2d_resample``: FIR-filter the padded input,
    then a stride-2 convolution (3x3) or a 2x subsampling followed by the 1x1 conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        down: int = 1,  # 1 or 2
        resample_filter: Sequence[float] = (1, 3, 3, 1),
    ):
        super().__init__()
        if down not in (1, 2):
            raise ValueError(f"down must be 1 or 2, got {down}")
        self.activation = activation
        self.down = down
        self.kernel_size = kernel_size
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ops.activation_gain(activation)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        w = self.weight * self.weight_gain
        k = self.kernel_size
        if self.down == 1:
            x = F.conv2d(x, w, padding=k // 2)
        elif k == 1:  # official: downsample2d (pad 1, filter, keep every 2nd) then the 1x1 conv
            fw = self.resample_filter.shape[-1]
            p0, p1 = (fw - 2 + 1) // 2, (fw - 2) // 2
            x = ops.fir_filter(x, self.resample_filter, [p0, p1, p0, p1])[:, :, ::2, ::2]
            x = F.conv2d(x, w)
        else:  # official: filter with padding (fw - down) + (k - 1), then a stride-2 conv
            fw = self.resample_filter.shape[-1]
            p = (fw - 2) + (k - 1)
            pads = [(p + 1) // 2, p // 2, (p + 1) // 2, p // 2]
            x = ops.fir_filter(x, self.resample_filter, pads)
            x = F.conv2d(x, w, stride=2)
        return ops.bias_act(x, self.bias, self.activation, gain=self.act_gain * gain)


class DiscriminatorBlock(nn.Module):
    """One resolution of the resnet discriminator: (fromRGB) -> conv0 -> conv1 (down 2),
    plus a 1x1 down-2 skip; the sum scaled by sqrt(0.5)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int):
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.fromrgb = DownConv2dLayer(img_channels, tmp_channels, 1, activation="lrelu")
        self.conv0 = DownConv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu")
        self.conv1 = DownConv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2)
        self.skip = DownConv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, num_channels: int = 1) -> torch.Tensor:
    """Append the minibatch standard deviation as ``num_channels`` extra feature maps
    (Karras et al. 2018, Sec. 3; StyleGAN2's grouped form: statistics within groups of
    ``min(group_size, B)`` samples, averaged over channels and pixels)."""
    b, c, h, w = x.shape
    g = min(group_size, b)
    if b % g:
        raise ValueError(f"batch {b} is not divisible by the minibatch-stddev group size {g}")
    f = num_channels
    y = x.reshape(g, -1, f, c // f, h, w)  # [G, n, F, c, H, W]
    y = (y - y.mean(dim=0)).square().mean(dim=0)  # variance over the group
    y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n, F]
    y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [B, F, H, W]
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """StyleGAN2 resnet discriminator for ``img_resolution``² images (a power of 2, >= 8).

    Channels per resolution ``min(channel_base // res, channel_max)`` as in the generator.
    Returns one logit per image, ``[B, 1]``.
    """

    def __init__(
        self,
        img_resolution: int,
        img_channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group_size: int = 4,
        mbstd_num_channels: int = 1,
    ):
        super().__init__()
        log2 = int(math.log2(img_resolution))
        if 2**log2 != img_resolution or img_resolution < 8:
            raise ValueError(f"img_resolution must be a power of 2 >= 8, got {img_resolution}")
        self.init_kwargs = dict(
            img_resolution=img_resolution, img_channels=img_channels, channel_base=channel_base,
            channel_max=channel_max, mbstd_group_size=mbstd_group_size,
            mbstd_num_channels=mbstd_num_channels,
        )  # fmt: skip
        self.img_resolution = img_resolution
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        ch = {r: min(channel_base // r, channel_max) for r in self.block_resolutions + [4]}
        for res in self.block_resolutions:
            in_ch = ch[res] if res < img_resolution else 0
            block = DiscriminatorBlock(in_ch, ch[res], ch[res // 2], img_channels)
            setattr(self, f"b{res}", block)
        self.mbstd_group_size = mbstd_group_size
        self.mbstd_num_channels = mbstd_num_channels
        c4 = ch[4]
        self.b4_conv = DownConv2dLayer(c4 + mbstd_num_channels, c4, 3, activation="lrelu")
        self.b4_fc = FullyConnectedLayer(c4 * 16, c4, activation="lrelu")
        self.b4_out = FullyConnectedLayer(c4, 1)
        gen = torch.Generator().manual_seed(0)
        for module in self.modules():
            if isinstance(module, FullyConnectedLayer):
                module.reset_parameters(gen)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim != 4 or img.shape[-1] != self.img_resolution:
            raise ValueError(
                f"Discriminator expects [B, C, {self.img_resolution}, {self.img_resolution}],"
                f" got {list(img.shape)}"
            )
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
        if self.mbstd_num_channels > 0:
            x = minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_channels)
        x = self.b4_conv(x)
        x = self.b4_fc(x.flatten(1))
        return self.b4_out(x)
