"""A pure-PyTorch StyleGAN2 generator (Karras et al. 2020, config-f) with NVIDIA's names.

Module, parameter and buffer names follow NVIDIA stylegan2-ada-pytorch ``training/networks.py``
(``mapping.fc0.weight``, ``synthesis.b64.conv0.affine.weight``, ``synthesis.b64.conv0.noise_const``,
...), so an official ``G_ema`` state dict loads with ``strict=True``. Compute is always fp32:
fp16 settings of a checkpoint (``num_fp16_res``, ``conv_clamp``) are read and kept in
``init_kwargs``; ``conv_clamp`` still clamps, as it does in the official fp32 path.

Beyond the official interface, the search methods get: per-layer noise overrides
(``noise=[...]``), ``noise_shapes()``, ``forward_blocks`` (start/stop inside the synthesis
network, for ILO) and ``ws_offsets()``. Nothing mutates parameters or inputs in place
(``w_avg`` tracking excepted, in training mode only, as upstream), so the network runs under
``torch.func.functional_call`` + ``torch.func.vmap`` with per-sample weights (RLS+).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rls.generators import ops

NOISE_MODES = ("const", "random", "none")


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalized learning rate: ``act(x @ (W * lr/sqrt(in)).T + b * lr)``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,  # additive bias before the activation
        activation: str = "linear",  # 'linear' | 'relu' | 'lrelu'
        lr_multiplier: float = 1.0,  # equalized-lr multiplier (0.01 in the mapping network)
        bias_init: float = 0.0,  # initial bias (1 for the style affines)
    ):
        super().__init__()
        self.activation = activation
        self.lr_multiplier = lr_multiplier
        self.bias_init = bias_init
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def reset_parameters(self, gen: torch.Generator) -> None:
        """Official init: ``W ~ N(0, 1) / lr_multiplier``, ``b = bias_init``."""
        with torch.no_grad():
            self.weight.copy_(torch.randn(self.weight.shape, generator=gen) / self.lr_multiplier)
            if self.bias is not None:
                self.bias.fill_(self.bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias
        if b is not None and self.bias_gain != 1:
            b = b * self.bias_gain
        if self.activation == "linear":
            return torch.nn.functional.linear(x, w, b)
        return ops.bias_act(x.matmul(w.t()), b, act=self.activation, dim=x.ndim - 1)


class Conv2dLayer(nn.Module):
    """Plain equalized-lr conv; here only the 1x1 upsampling skip of 'resnet' blocks."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,  # 1 or 2
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,  # clamp outputs to +-X; None = off
    ):
        super().__init__()
        if kernel_size != 1 and up != 1:
            raise ValueError("Conv2dLayer supports upsampling only for 1x1 kernels (resnet skip)")
        self.activation = activation
        self.up = up
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ops.activation_gain(activation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None

    def reset_parameters(self, gen: torch.Generator) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.randn(self.weight.shape, generator=gen))
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        x = torch.nn.functional.conv2d(x, self.weight * self.weight_gain, padding=self.padding)
        if self.up > 1:
            x = ops.upsample2d(x, self.resample_filter, up=self.up)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, self.bias, self.activation, gain=self.act_gain * gain, clamp=clamp)


class MappingNetwork(nn.Module):
    """z (+ label c) -> w through ``num_layers`` lrelu layers; broadcast to ``num_ws`` rows."""

    def __init__(
        self,
        z_dim: int,  # latent Z dimensionality (0 = none)
        c_dim: int,  # conditioning label dimensionality (0 = unconditional)
        w_dim: int,  # W dimensionality
        num_ws: int | None,  # rows to broadcast to; None = return [B, w_dim]
        num_layers: int = 8,  # mapping depth
        embed_features: int | None = None,  # label embedding size; None = w_dim
        layer_features: int | None = None,  # hidden width; None = w_dim
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,  # w_avg tracking decay (training mode only)
    ):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        skip_w_avg_update: bool = False,
    ) -> torch.Tensor:
        """``[B, num_ws, w_dim]``; truncation ``w_avg + psi (w - w_avg)`` on the first
        ``truncation_cutoff`` rows (all rows if None)."""
        parts = []
        dtype = self.fc0.weight.dtype  # fp32 normally; follows G.double() for exact checks
        if self.z_dim > 0:
            _check_shape(z, "z", self.z_dim)
            parts.append(ops.normalize_2nd_moment(z.to(dtype)))
        if self.c_dim > 0:
            _check_shape(c, "c", self.c_dim)
            parts.append(ops.normalize_2nd_moment(self.embed(c.to(dtype))))
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).expand(-1, self.num_ws, -1)
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError("truncation needs w_avg, but this mapping has w_avg_beta=None")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                # Per-row psi (psi on rows < cutoff, 1 after) instead of an in-place slice.
                rows = torch.arange(self.num_ws, device=x.device)
                psi = torch.where(rows < truncation_cutoff, float(truncation_psi), 1.0)
                x = torch.lerp(self.w_avg.expand_as(x), x, psi.to(x.dtype)[None, :, None])
        return x.contiguous()


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up) + per-pixel noise + bias + lrelu."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,  # output resolution
        kernel_size: int = 3,
        up: int = 1,  # 1 or 2
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        channels_last: bool = False,  # accepted for config compatibility; unused
    ):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.act_gain = ops.activation_gain(activation)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        if use_noise:
            self.register_buffer("noise_const", torch.empty(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.empty(out_channels))

    def reset_parameters(self, gen: torch.Generator) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.randn(self.weight.shape, generator=gen))
            if self.use_noise:
                self.noise_const.copy_(torch.randn(self.noise_const.shape, generator=gen))
                self.noise_strength.zero_()
            self.bias.zero_()

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "const",
        noise: torch.Tensor | None = None,
        gain: float = 1,
        fused_modconv: bool | None = None,
    ) -> torch.Tensor:
        # lrelu(conv + noise + b) * g == lrelu(g conv + g noise + g b) for g > 0: the gain and
        # bias ride on the demodulation (one pass over the activations instead of four).
        g = self.act_gain * gain
        x = ops.modulated_conv2d(
            x,
            self.weight,
            self.affine(w),
            up=self.up,
            resample_filter=self.resample_filter,
            fused=_fused(fused_modconv, self.weight),
            gain=g,
            bias=self.bias * g,
        )
        if self.use_noise:
            if noise is not None:
                x = x + noise * (self.noise_strength * g)
            elif noise_mode == "const":
                x = x + self.noise_const * (self.noise_strength * g)
            elif noise_mode == "random":
                shape = (x.shape[0], 1, self.resolution, self.resolution)
                noise = torch.randn(shape, device=x.device, dtype=x.dtype)
                x = x + noise * (self.noise_strength * g)
        if self.activation == "lrelu":
            x = torch.nn.functional.leaky_relu(x, 0.2, inplace=True)  # x is our own temporary
        else:
            x = ops.bias_act(x, None, self.activation, gain=1)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp * gain, self.conv_clamp * gain)
        return x


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to RGB, no demodulation (the skip-architecture output branch)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
        channels_last: bool = False,  # accepted for config compatibility; unused
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def reset_parameters(self, gen: torch.Generator) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.randn(self.weight.shape, generator=gen))
            self.bias.zero_()

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool | None = None):
        styles = self.affine(w) * self.weight_gain
        x = ops.modulated_conv2d(
            x,
            self.weight,
            styles,
            demodulate=False,
            fused=_fused(fused_modconv, self.weight),
            bias=self.bias,
        )
        return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (const | 2x-up conv0) -> conv1 -> toRGB added to the upsampled image."""

    def __init__(
        self,
        in_channels: int,  # 0 = first block (learned constant input)
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",  # 'orig' | 'skip' | 'resnet'
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        use_fp16: bool = False,  # read from configs; compute stays fp32
        fp16_channels_last: bool = False,  # read from configs; unused
        **layer_kwargs,  # SynthesisLayer arguments (use_noise, activation, kernel_size)
    ):
        super().__init__()
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"architecture must be orig, skip or resnet, got {architecture!r}")
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        common = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, **layer_kwargs)
        if in_channels == 0:
            self.const = nn.Parameter(torch.empty(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, up=2, resample_filter=resample_filter, **common
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, **common)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels, out_channels, 1, bias=False, up=2, resample_filter=resample_filter
            )

    @property
    def num_noise(self) -> int:
        """Noise inputs of this block (conv0 and conv1, or conv1 alone in the first block)."""
        return self.num_conv

    def reset_parameters(self, gen: torch.Generator) -> None:
        if self.in_channels == 0:
            with torch.no_grad():
                self.const.copy_(torch.randn(self.const.shape, generator=gen))

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str = "const",
        noise: Sequence[torch.Tensor | None] = (None, None),
        fused_modconv: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``ws``: ``[B, num_conv + num_torgb, w_dim]``; ``noise``: one entry per conv."""
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode, noise[0], fused_modconv=fused_modconv)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, ws[:, 0], noise_mode, noise[0], fused_modconv=fused_modconv)
            x = self.conv1(
                x, ws[:, 1], noise_mode, noise[1], gain=math.sqrt(0.5), fused_modconv=fused_modconv
            )
            x = y + x
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, noise[0], fused_modconv=fused_modconv)
            x = self.conv1(x, ws[:, 1], noise_mode, noise[1], fused_modconv=fused_modconv)
        if img is not None:
            img = ops.upsample2d(img, self.resample_filter)
        if self.num_torgb:
            y = self.torgb(x, ws[:, self.num_conv], fused_modconv)
            img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """W+ codes ``[B, num_ws, w_dim]`` -> image ``[B, C, R, R]`` in about [-1, 1]."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,  # power of two, >= 4
        img_channels: int,
        channel_base: int = 32768,  # channels at resolution r: min(channel_base // r, channel_max)
        channel_max: int = 512,
        num_fp16_res: int = 0,  # read from configs; compute stays fp32
        **block_kwargs,  # SynthesisBlock arguments
    ):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        log2 = int(math.log2(img_resolution))
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=res == img_resolution,
                use_fp16=res >= fp16_resolution,
                **block_kwargs,
            )
            self.num_ws += block.num_conv + (block.num_torgb if res == img_resolution else 0)
            setattr(self, f"b{res}", block)

    @property
    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def ws_offsets(self) -> list[tuple[int, int]]:
        """Per block, ``(first row, number of rows)`` of ws it reads; consecutive blocks
        overlap by one row (a block's toRGB shares the next block's conv0 code)."""
        out, idx = [], 0
        for block in self.blocks:
            out.append((idx, block.num_conv + block.num_torgb))
            idx += block.num_conv
        return out

    def noise_shapes(self) -> list[tuple[int, int]]:
        """``(H, W)`` of every noise input in forward order, coarse to fine."""
        return [(b.resolution, b.resolution) for b in self.blocks for _ in range(b.num_noise)]

    def _noise_offsets(self) -> list[int]:
        offsets, idx = [], 0
        for block in self.blocks:
            offsets.append(idx)
            idx += block.num_noise
        return offsets

    def forward_blocks(
        self,
        ws: torch.Tensor,
        noise: Sequence[torch.Tensor | None] | None = None,
        start: int = 0,
        stop: int | None = None,
        x: torch.Tensor | None = None,
        img: torch.Tensor | None = None,
        noise_mode: str = "const",
        fused_modconv: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run blocks ``[start, stop)``; return the feature map leaving block ``stop - 1``
        (entering block ``stop``) and the running RGB image (skip architecture).

        ``ws`` is the full ``[B, num_ws, w_dim]`` code; ``noise`` the full per-layer list (or
        None). ``fused_modconv``: see ``ops.modulated_conv2d`` and ``_fused`` (same values;
        None picks per layer). ``start > 0`` needs ``x``
        (and ``img`` for 'skip') from a previous call.
        """
        blocks = self.blocks
        stop = len(blocks) if stop is None else stop
        if not 0 <= start <= stop <= len(blocks):
            raise ValueError(f"need 0 <= start <= stop <= {len(blocks)}, got {start}, {stop}")
        if start > 0 and x is None:
            raise ValueError("forward_blocks with start > 0 needs the feature map x")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        _check_ws(ws, self.num_ws, self.w_dim)
        ws = ws.to(self.b4.const.dtype)  # fp32 normally; follows G.double() for exact checks
        noise = self._check_noise(noise, ws.shape[0])
        offsets, noise_offsets = self.ws_offsets(), self._noise_offsets()
        for i in range(start, stop):
            first, count = offsets[i]
            block_noise = noise[noise_offsets[i] : noise_offsets[i] + blocks[i].num_noise]
            block_ws = ws[:, first : first + count]
            x, img = blocks[i](x, img, block_ws, noise_mode, block_noise, fused_modconv)
        return x, img

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "const",
        noise: Sequence[torch.Tensor | None] | None = None,
        fused_modconv: bool | None = None,
        force_fp32: bool = True,  # accepted for official call sites; compute is always fp32
    ) -> torch.Tensor:
        return self.forward_blocks(ws, noise, noise_mode=noise_mode, fused_modconv=fused_modconv)[1]

    def _check_noise(self, noise, batch: int) -> list[torch.Tensor | None]:
        shapes = self.noise_shapes()
        if noise is None:
            return [None] * len(shapes)
        noise = list(noise)
        if len(noise) != len(shapes):
            raise ValueError(
                f"noise needs {len(shapes)} entries (noise_shapes()), got {len(noise)}"
            )
        for i, (n, (h, w)) in enumerate(zip(noise, shapes)):
            if n is not None and (n.ndim != 4 or n.shape[1] != 1 or tuple(n.shape[2:]) != (h, w)):
                raise ValueError(f"noise[{i}] must be [B, 1, {h}, {w}], got {list(n.shape)}")
        return noise


class Generator(nn.Module):
    """Mapping + synthesis: ``G(z, c) -> image``, NVIDIA stylegan2-ada-pytorch layout.

    ``init_kwargs`` holds the nested configuration that rebuilds this network
    (``build_generator(**G.init_kwargs)``); checkpoints store it.
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict | None = None,
        synthesis_kwargs: dict | None = None,
    ):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.init_kwargs = dict(
            z_dim=z_dim,
            c_dim=c_dim,
            w_dim=w_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            mapping_kwargs=mapping_kwargs,
            synthesis_kwargs=synthesis_kwargs,
        )
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            **synthesis_kwargs,
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs
        )

    def reset_parameters(self, seed: int = 0) -> Generator:
        """Official initialisation from a private RNG (the global RNG is left untouched)."""
        gen = torch.Generator().manual_seed(seed)
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters(gen)
        if hasattr(self.mapping, "w_avg"):
            self.mapping.w_avg.zero_()
        return self

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        noise: Sequence[torch.Tensor | None] | None = None,
        fused_modconv: bool | None = None,
        force_fp32: bool = True,  # accepted for official call sites; compute is always fp32
    ) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, noise=noise, fused_modconv=fused_modconv)


def _fused(fused_modconv: bool | None, weight: torch.Tensor) -> bool:
    """Resolve ``fused_modconv=None``: fused (one grouped conv, each sample's own weights) when
    the weights are trained or per-sample (RLS+'s per-image copies under vmap), where it keeps
    results independent of batch composition and the weight gradient is needed anyway;
    unfused (shared-weight conv) for frozen weights, where the backward w.r.t. W+ then skips
    the weight gradient (measured 1.5-2x faster forward+backward on CPU)."""
    if fused_modconv is not None:
        return bool(fused_modconv)
    # Inside vmap, per-sample weights are batched tensors that report requires_grad=False.
    return weight.requires_grad or torch._C._functorch.is_batchedtensor(weight)


def _check_shape(t: torch.Tensor | None, name: str, dim: int) -> None:
    if t is None or t.ndim != 2 or t.shape[1] != dim:
        got = None if t is None else list(t.shape)
        raise ValueError(f"{name} must be [B, {dim}], got {got}")


def _check_ws(ws: torch.Tensor, num_ws: int, w_dim: int) -> None:
    if ws.ndim != 3 or ws.shape[1] != num_ws or ws.shape[2] != w_dim:
        raise ValueError(f"ws must be [B, {num_ws}, {w_dim}], got {list(ws.shape)}")
