"""Robust unsupervised restoration (Poirier-Ginter & Lalonde, CVPR 2023,
yohan-pg/robust-unsupervised) in the shared engine (method.md §5).

Three stages of 150 steps, each starting where the previous ended: W (one code, from w̄),
W+ (one code per layer) and W++ (one code per *filter*: every output channel of every
modulated layer gets its own w, hence its own style vector). Normalised gradient descent
(every row moves by lr: 0.08 / 0.02 / 0.005) on multiscale LPIPS + 0.1·L1 at the coarsest
scale between D(x) and y; no other regulariser; the generator's constant noise maps; the last
iterate of each stage.

W++ through the generator's public structure (no generator change): for a layer with
weight ``W [O, I, k, k]`` and affine A, filter o's style is ``s_o = A(w_o) ∈ R^I`` and the
modulated weight is ``W[o, i]·s_o[i]``. That is the unmodified network run with per-image
weights ``W ⊙ S`` and an affine overridden to output 1 (weight 0, bias 1), via
``torch.func.functional_call`` under ``torch.func.vmap`` (docs/interfaces.md: the generator
supports both). Demodulation then acts on ``W ⊙ S`` exactly as in the authors' network.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from rls.search.base import Method, OptimGroup, Rendered, SearchContext, Stage, register
from rls.search.peer_losses import (
    method_degradation,
    multiscale_lpips,
    normalize_grad_rows,
    resolve_perceptual,
    unit,
)


def modulated_layers(synthesis: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """Every style-modulated layer as ``(module path, layer, ws row it reads)``, in order.

    A block reads ws rows ``[first, first + num_conv + num_torgb)``: conv0 (if any), conv1,
    then toRGB (which shares its row with the next block's conv0).
    """
    out = []
    for res, block, (first, _) in zip(
        synthesis.block_resolutions, synthesis.blocks, synthesis.ws_offsets()
    ):
        names = [n for n in ("conv0", "conv1") if hasattr(block, n)]
        if getattr(block, "num_torgb", 0):
            names.append("torgb")
        out += [(f"b{res}.{n}", getattr(block, n), first + i) for i, n in enumerate(names)]
    return out


def wpp_width(synthesis: nn.Module) -> int:
    """Codes per W++ row: the widest layer's number of output filters."""
    return max(layer.weight.shape[0] for _, layer, _ in modulated_layers(synthesis))


def synthesize_wpp(G: nn.Module, wpp: Tensor, noise_mode: str = "const") -> Tensor:
    """Render a W++ code ``[B, num_ws, C, w_dim]`` (filter o of the layer reading row j uses
    ``wpp[:, j, o]``); returns the image ``[B, C_img, R, R]`` in [-1, 1]."""
    syn = G.synthesis
    per_image, constant = {}, {}
    for path, layer, row in modulated_layers(syn):
        out_ch = layer.weight.shape[0]
        styles = layer.affine(wpp[:, row, :out_ch])  # [B, O, I]
        per_image[f"{path}.weight"] = layer.weight * styles[..., None, None]
        constant[f"{path}.affine.weight"] = torch.zeros_like(layer.affine.weight)
        constant[f"{path}.affine.bias"] = torch.ones_like(layer.affine.bias)
        if layer.affine.bias_gain != 1:
            constant[f"{path}.affine.bias"] /= layer.affine.bias_gain
    ws = wpp.mean(2)  # any valid code: every affine now outputs 1

    def one(weights, ws_b):
        params = {**constant, **weights}
        return functional_call(syn, params, (ws_b[None],), {"noise_mode": noise_mode})[0]

    return vmap(one)(per_image, ws)


@register("robust")
def build_robust(
    name: str = "robust",
    steps: tuple[int, int, int] = (150, 150, 150),  # W, W+, W++
    lrs: tuple[float, float, float] = (0.08, 0.02, 0.005),  # global_lr_scale = 1
    l1_weight: float = 0.1,
    min_loss_res: int = 16,  # LPIPS only at resolutions above this
    level_weights: tuple[float, ...] = (1.0,) * 6,
    perceptual="lpips-vgg",  # "lpips-vgg" | "off" | a module net(a, b) -> [B]
    perceptual_weights: str | None = None,
    allow_download: bool | None = None,
    downsampler: str = "shared",  # "shared" | "own" (average pooling)
    **unused,
) -> Method:
    net, note = resolve_perceptual(perceptual, name, perceptual_weights, allow_download)
    steps, lrs = tuple(steps), tuple(lrs)
    if len(steps) != 3 or len(lrs) != 3:
        raise ValueError(f"{name}: steps and lrs need 3 entries (W, W+, W++), got {steps}, {lrs}")

    def stages(ctx: SearchContext) -> list[Stage]:
        G = ctx.G
        D = method_degradation(ctx.D, downsampler, "robust").to(ctx.device)
        L, width = G.num_ws, wpp_width(G.synthesis)

        def losses(ctx, v, r):
            pred = D(unit(r.image))
            return {
                "lpips_l1": multiscale_lpips(
                    pred, ctx.y, net, min_loss_res, level_weights, l1_weight
                )
            }

        def init_w(ctx):
            return {"w": G.mapping.w_avg.to(ctx.device).expand(ctx.batch_size, -1).clone()}

        def render_w(ctx, v):
            ws = normalize_grad_rows(v["w"])[:, None].expand(-1, L, -1)
            return Rendered(G.synthesis(ws, noise_mode="const"), ws)

        def init_wp(ctx):
            return {"w": ctx.state["W"].vars["w"][:, None].expand(-1, L, -1).clone()}

        def render_wp(ctx, v):
            ws = normalize_grad_rows(v["w"])
            return Rendered(G.synthesis(ws, noise_mode="const"), ws)

        def init_wpp(ctx):
            wp = ctx.state["W+"].vars["w"]
            return {"w": wp[:, :, None].expand(-1, -1, width, -1).clone()}

        def render_wpp(ctx, v):
            wpp = normalize_grad_rows(v["w"])
            image = synthesize_wpp(G, wpp)
            # the W+ summary of a W++ code (per-layer mean over filters) for priors/metrics
            return Rendered(image, v["w"].detach().mean(2), {"wpp": v["w"].detach()})

        def stage(label, init, render, k):
            # plain SGD on row-normalised gradients = the authors' NGD (see normalize_grad_rows)
            group = OptimGroup(vars=["w"], lr=lrs[k], optimizer="sgd")
            return Stage(label, steps[k], init, render, losses, [group], select="last")

        return [
            stage("W", init_w, render_w, 0),
            stage("W+", init_wp, render_wp, 1),
            stage("W++", init_wpp, render_wpp, 2),
        ]

    notes = "; ".join(
        n for n in (note, "" if downsampler == "shared" else "robust: own downsampler") if n
    )
    return Method(name=name, stages=stages, notes=notes, config=dict(steps=steps, lrs=lrs))
