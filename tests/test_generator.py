"""The StyleGAN2 network: official names, shapes, truncation, noise, block-wise runs, vmap."""

import json
import math

import pytest
import torch
from torch.func import functional_call, vmap

from rls.generators import (
    Generator,
    build_generator,
    load_generator,
    normalize_config,
    ops,
    tiny_config,
)


@pytest.fixture(scope="module")
def G():
    return load_generator("tiny")


def _z(n, dim=64, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- names and configurations


def test_official_ffhq1024_layout_names_and_counts():
    """config-f FFHQ 1024²: 18 ws, 17 noise maps, NVIDIA names, 30.37 M parameters."""
    cfg = dict(
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=1024,
        img_channels=3,
        mapping_kwargs=dict(num_layers=8),
        synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256),
    )
    G = Generator(**normalize_config(cfg))  # no init: structure only, fast
    assert G.num_ws == 18
    assert len(G.synthesis.noise_shapes()) == 17
    assert G.synthesis.noise_shapes()[0] == (4, 4) and G.synthesis.noise_shapes()[-1] == (1024,) * 2
    sd = G.state_dict()
    for key, shape in {
        "mapping.fc0.weight": (512, 512),
        "mapping.fc7.bias": (512,),
        "mapping.w_avg": (512,),
        "synthesis.b4.const": (512, 4, 4),
        "synthesis.b4.resample_filter": (4, 4),
        "synthesis.b4.conv1.affine.weight": (512, 512),
        "synthesis.b4.conv1.noise_const": (4, 4),
        "synthesis.b4.torgb.weight": (3, 512, 1, 1),
        "synthesis.b8.conv0.noise_strength": (),
        "synthesis.b64.conv0.weight": (512, 512, 3, 3),
        "synthesis.b1024.conv0.weight": (32, 64, 3, 3),
        "synthesis.b1024.conv1.noise_const": (1024, 1024),
        "synthesis.b1024.torgb.affine.bias": (32,),
    }.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(".b4.conv0." in k for k in sd)
    n_params = sum(p.numel() for p in G.parameters())
    assert n_params == 30_370_060  # NVIDIA's reported G size for config-f at 1024²


def test_state_dict_round_trips_strict(G):
    H = build_generator(seed=5, **json.loads(json.dumps(G.init_kwargs)))  # JSON-safe config
    H.load_state_dict(G.state_dict(), strict=True)
    z = _z(2)
    assert torch.equal(H(z), G(z))


def test_config_forms_and_errors():
    flat = tiny_config(img_resolution=16)
    assert flat["img_resolution"] == 16 and flat["mapping_kwargs"]["num_layers"] == 4
    # stylegan3-repo form: synthesis keywords at top level, CUDA-only keys dropped
    sg3 = normalize_config(
        dict(
            z_dim=8,
            c_dim=0,
            w_dim=8,
            img_resolution=8,
            img_channels=3,
            mapping_kwargs={"num_layers": 2},
            channel_base=64,
            channel_max=8,
            fused_modconv_default="inference_only",
        )
    )
    assert sg3["synthesis_kwargs"] == {"channel_base": 64, "channel_max": 8}
    with pytest.raises(ValueError, match="unknown generator config key 'bogus'"):
        normalize_config(dict(tiny_config(), bogus=1))
    with pytest.raises(ValueError, match="lacks"):
        normalize_config(dict(z_dim=4))
    with pytest.raises(ValueError, match="power of two"):
        build_generator(**tiny_config(img_resolution=48))


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
def test_architectures_build_and_run(architecture):
    G = build_generator(**tiny_config(architecture=architecture, img_resolution=16))
    names = dict(G.state_dict())
    assert ("synthesis.b8.torgb.weight" in names) == (architecture == "skip")
    assert ("synthesis.b8.skip.weight" in names) == (architecture == "resnet")
    assert G.num_ws == 6
    img = G(_z(2))
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()


def test_fp16_settings_are_read_but_compute_is_fp32():
    cfg = tiny_config(num_fp16_res=2, conv_clamp=256)
    G = build_generator(**cfg)
    assert G.synthesis.b32.use_fp16 and G.synthesis.b16.use_fp16 and not G.synthesis.b8.use_fp16
    assert G.init_kwargs["synthesis_kwargs"]["num_fp16_res"] == 2
    plain = build_generator(**tiny_config())
    plain.load_state_dict(G.state_dict())
    z = _z(2)
    img = G(z)
    assert img.dtype == torch.float32
    assert torch.allclose(img, plain(z), atol=1e-6)  # clamp at 256 never bites here
    tight = build_generator(**tiny_config(conv_clamp=0.05))
    tight.load_state_dict(G.state_dict())
    assert tight(z).abs().max() <= 0.05 * 4 + 1e-5  # 4 clamped toRGB sums (skip)


def test_conditional_mapping_uses_the_label():
    G = build_generator(**tiny_config(c_dim=3, img_resolution=8))
    assert "mapping.embed.weight" in G.state_dict()
    z = _z(2)
    c0 = torch.tensor([[1.0, 0, 0], [1.0, 0, 0]])
    c1 = torch.tensor([[0, 1.0, 0], [0, 1.0, 0]])
    assert G.mapping(z, c0).shape == (2, G.num_ws, 64)
    assert not torch.allclose(G.mapping(z, c0), G.mapping(z, c1))
    with pytest.raises(ValueError, match=r"c must be \[B, 3\]"):
        G.mapping(z, None)


# ---------------------------------------------------------------- the tiny generator


def test_tiny_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = load_generator("tiny"), load_generator("tiny")
    assert torch.equal(torch.random.get_rng_state(), state)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert not a.training


def test_tiny_defaults_and_overrides(G):
    assert (G.z_dim, G.w_dim, G.img_resolution, G.img_channels, G.num_ws) == (64, 64, 32, 3, 8)
    assert G.mapping.w_avg.abs().sum() > 0  # a real centre for truncation
    assert all(p.item() != 0 for n, p in G.named_parameters() if n.endswith("noise_strength"))
    G64 = load_generator("tiny", img_resolution=64)
    assert G64(_z(1)).shape == (1, 3, 64, 64)


def test_tiny_images_are_structured_not_constant(G):
    img = G(_z(4))
    assert img.shape == (4, 3, 32, 32)
    assert img.std(dim=(2, 3)).min() > 0.05  # spatial variation in every channel
    assert (img[0] - img[1]).abs().mean() > 0.05  # different z, different image
    assert (img.abs() <= 1).float().mean() > 0.9  # mostly inside [-1, 1], like a trained G
    assert img.mean().abs() < 0.2
    # smooth: neighbouring pixels agree more than random pairs
    neighbour = (img[..., 1:] - img[..., :-1]).abs().mean()
    shuffled = img.flatten(2)[..., torch.randperm(32 * 32)].reshape(img.shape)
    assert neighbour < 0.5 * (img - shuffled).abs().mean()


# ---------------------------------------------------------------- mapping and truncation


def test_truncation_psi_and_cutoff(G):
    z = _z(3)
    ws = G.mapping(z)
    assert ws.shape == (3, 8, 64)
    assert torch.equal(ws[:, 0], ws[:, -1])  # broadcast
    w0 = G.mapping(z, truncation_psi=0.0)
    assert torch.allclose(w0, G.mapping.w_avg.expand_as(w0))
    wt = G.mapping(z, truncation_psi=0.7, truncation_cutoff=3)
    expected = G.mapping.w_avg + 0.7 * (ws[:, :3] - G.mapping.w_avg)
    assert torch.allclose(wt[:, :3], expected, atol=1e-6)
    assert torch.equal(wt[:, 3:], ws[:, 3:])


def test_w_avg_tracks_only_in_training_mode():
    G = load_generator("tiny")
    before = G.mapping.w_avg.clone()
    G.mapping(_z(8))
    assert torch.equal(G.mapping.w_avg, before)
    G.train()
    w = G.mapping(_z(8))[:, 0]
    assert torch.allclose(G.mapping.w_avg, w.mean(0).lerp(before, 0.995), atol=1e-6)


# ---------------------------------------------------------------- noise


def test_noise_modes(G):
    ws = G.mapping(_z(2))
    const = G.synthesis(ws)
    assert torch.equal(const, G.synthesis(ws, noise_mode="const"))
    assert not torch.allclose(const, G.synthesis(ws, noise_mode="none"))
    torch.manual_seed(0)
    r1 = G.synthesis(ws, noise_mode="random")
    r2 = G.synthesis(ws, noise_mode="random")
    assert not torch.allclose(r1, r2)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="fixed")


def test_noise_overrides(G):
    ws = G.mapping(_z(2))
    shapes = G.synthesis.noise_shapes()
    layers = [m for m in G.synthesis.modules() if hasattr(m, "noise_const")]
    assert [tuple(m.noise_const.shape) for m in layers] == shapes
    as_const = [m.noise_const.expand(2, 1, *m.noise_const.shape) for m in layers]
    assert torch.allclose(G.synthesis(ws, noise=as_const), G.synthesis(ws), atol=1e-6)
    zeros = [torch.zeros(2, 1, h, w) for h, w in shapes]
    assert torch.allclose(G.synthesis(ws, noise=zeros), G.synthesis(ws, noise_mode="none"))
    # None entries fall back to noise_mode; per-sample maps act per sample
    mixed = [None] * len(shapes)
    mixed[-1] = torch.stack([torch.zeros(1, 32, 32), torch.ones(1, 32, 32) * 3])
    out = G.synthesis(ws, noise=mixed)
    ref = G.synthesis(ws)
    assert not torch.allclose(out[0], ref[0]) and not torch.allclose(out[1], out[0])
    with pytest.raises(ValueError, match=r"noise\[0\] must be \[B, 1, 4, 4\]"):
        G.synthesis(ws, noise=[torch.zeros(2, 4, 4)] + [None] * (len(shapes) - 1))
    with pytest.raises(ValueError, match="noise needs 7 entries"):
        G.synthesis(ws, noise=[None])


def test_noise_is_differentiable_variable(G):
    ws = G.mapping(_z(1)).detach()
    noise = [torch.randn(1, 1, h, w, requires_grad=True) for h, w in G.synthesis.noise_shapes()]
    G.synthesis(ws, noise=noise).square().mean().backward()
    assert all(n.grad is not None and n.grad.abs().sum() > 0 for n in noise)


# ---------------------------------------------------------------- block-wise runs (ILO)


def test_ws_offsets_cover_all_rows(G):
    offsets = G.synthesis.ws_offsets()
    assert len(offsets) == len(G.synthesis.block_resolutions) == 4
    first, count = offsets[-1]
    assert first + count == G.num_ws
    assert offsets[0] == (0, 2) and offsets[1] == (1, 3)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
def test_forward_blocks_split_equals_full(G, k):
    ws = G.mapping(_z(2))
    x, img = G.synthesis.forward_blocks(ws, None, start=0, stop=k)
    if k > 0:
        res = G.synthesis.block_resolutions[k - 1]
        assert x.shape[-1] == res and img.shape == (2, 3, res, res)
    _, out = G.synthesis.forward_blocks(ws, None, start=k, x=x, img=img)
    assert torch.allclose(out, G.synthesis(ws), atol=1e-6)


def test_forward_blocks_errors(G):
    ws = G.mapping(_z(1))
    with pytest.raises(ValueError, match="needs the feature map x"):
        G.synthesis.forward_blocks(ws, None, start=2)
    with pytest.raises(ValueError, match="start <= stop"):
        G.synthesis.forward_blocks(ws, None, start=3, stop=2)
    with pytest.raises(ValueError, match=r"ws must be \[B, 8, 64\]"):
        G.synthesis(ws[:, :5])


# ---------------------------------------------------------------- gradients, functional use


def test_trainable_per_sample_weights_give_batch_independent_images(G):
    """With weights being trained (RLS+), each image's result must not depend on the batch."""
    syn = G.synthesis
    buffers = dict(syn.named_buffers())
    ws = G.mapping(_z(3)).detach()
    gen = torch.Generator().manual_seed(2)
    deltas = {
        k: (0.05 * torch.randn((3, *v.shape), generator=gen)).requires_grad_(True)
        for k, v in syn.named_parameters()
    }

    def render(d, w):
        def one(delta, w_b):
            params = {k: v.detach() + delta[k] for k, v in syn.named_parameters()}
            return functional_call(syn, {**params, **buffers}, (w_b[None],))[0]

        return vmap(one)(d, w)

    batch = render(deltas, ws)
    for b in range(3):
        alone = render({k: v[b : b + 1] for k, v in deltas.items()}, ws[b : b + 1])
        assert (alone[0] - batch[b]).abs().max() < 1e-5


def test_fused_and_unfused_modconv_agree_in_value_and_gradient(G):
    ws = G.mapping(_z(3)).detach()
    grads = []
    for fused in (False, True):
        w = ws.clone().requires_grad_(True)
        img = G.synthesis(w, fused_modconv=fused)
        img.square().mean().backward()
        grads.append((img.detach(), w.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)


def test_per_image_weights_get_gradients(G):
    """RLS+ fine-tunes the synthesis weights: every parameter must receive a gradient."""
    H = load_generator("tiny")
    ws = H.mapping(_z(2)).detach()
    H.synthesis(ws).square().mean().backward()
    missing = [n for n, p in H.synthesis.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_unknown_call_keywords_are_refused(G):
    with pytest.raises(TypeError):
        G(_z(1), noise_mod="none")


def test_gradient_flows_to_ws_and_inputs_are_untouched(G):
    ws = G.mapping(_z(2)).detach().requires_grad_(True)
    keep = ws.detach().clone()
    G.synthesis(ws).sum().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0
    assert torch.equal(ws.detach(), keep)


@pytest.mark.parametrize("fused", [False, True])
def test_vmap_functional_call_with_per_sample_weights_equals_separate_runs(G, fused):
    """RLS+ fine-tunes one weight copy per image: one vmapped pass == B separate passes."""
    batch = 3
    ws = G.mapping(_z(batch)).detach()
    syn = G.synthesis
    buffers = dict(syn.named_buffers())
    gen = torch.Generator().manual_seed(1)
    params = {
        k: v.detach()[None] + 0.05 * torch.randn((batch, *v.shape), generator=gen)
        for k, v in syn.named_parameters()
    }

    def one(p, w):
        return functional_call(syn, {**p, **buffers}, (w[None],), {"fused_modconv": fused})[0]

    batched = vmap(one)(params, ws)
    separate = torch.stack([one({k: v[i] for k, v in params.items()}, ws[i]) for i in range(batch)])
    assert torch.allclose(batched, separate, atol=1e-5)
    assert not torch.allclose(batched[0], syn(ws[:1])[0], atol=1e-3)  # the deltas matter


# ---------------------------------------------------------------- ops against plain references


def test_upsample2d_matches_zero_insert_pad_filter():
    x = torch.randn(2, 3, 5, 7)
    f = ops.setup_filter([1, 3, 3, 1])
    ref = ops.upfirdn2d_ref(x, f, up=2, padding=[2, 1, 2, 1], gain=4)
    assert torch.allclose(ops.upsample2d(x, f), ref, atol=1e-6)
    # DC gain 1: a constant image stays constant away from the border
    up = ops.upsample2d(torch.ones(1, 1, 6, 6), f)
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.ones(1, 1, 8, 8))


def test_modulated_conv2d_matches_per_sample_plain_convolution():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 6, 6, generator=gen)
    weight = torch.randn(5, 4, 3, 3, generator=gen)
    styles = torch.randn(2, 4, generator=gen)
    f = ops.setup_filter([1, 3, 3, 1])
    for up, fused in [(1, False), (1, True), (2, False), (2, True)]:
        out = ops.modulated_conv2d(x, weight, styles, up=up, resample_filter=f, fused=fused)
        assert out.shape == (2, 5, 6 * up, 6 * up)
        for b in range(2):
            w = weight * styles[b].reshape(1, -1, 1, 1)
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
            if up == 1:
                ref = torch.nn.functional.conv2d(x[b : b + 1], w, padding=1)
            else:  # upstream's generic path: up-filter (zero-insert, pad 3/2, FIR), then a
                # true convolution (flipped kernel) without padding
                xu = ops.upfirdn2d_ref(x[b : b + 1], f, up=2, padding=[3, 2, 3, 2], gain=4)
                ref = torch.nn.functional.conv2d(xu, w.flip([2, 3]))
            assert torch.allclose(out[b : b + 1], ref, atol=1e-5), (up, b)
    # demodulation: unit-variance input keeps roughly unit-variance output
    out = ops.modulated_conv2d(
        torch.randn(1, 64, 16, 16), torch.randn(8, 64, 3, 3), styles=torch.ones(1, 64) * 7
    )
    assert math.isclose(out.std().item(), 1.0, rel_tol=0.2)


def test_bias_act_lrelu_gain_and_clamp():
    x = torch.tensor([[-1.0, 0.5, 10.0]])
    out = ops.bias_act(x, torch.tensor([0.0, 0.5, 0.0]), act="lrelu", clamp=5.0)
    expected = torch.tensor([[-0.2 * math.sqrt(2), math.sqrt(2), 5.0]])
    assert torch.allclose(out, expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(G):
    ws = G.mapping(_z(2)).detach()
    cpu = G.synthesis(ws)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        gpu = load_generator("tiny").cuda().synthesis(ws.cuda())
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)
