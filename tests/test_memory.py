"""A batch that does not fit in memory: a clear error, or chunks that fit (batch_size=auto)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from rls.degradations import build_degradation
from rls.generators import load_generator
from rls.search import build_method, search
from rls.search.memory import is_out_of_memory, search_fitting

ROOT = Path(__file__).resolve().parents[1]


def test_chunked_search_gives_each_image_the_result_of_the_whole_batch():
    G = load_generator("tiny")
    D = build_degradation(8)
    y = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    method = build_method("rls", steps=3, lambda_logp=0, lambda_pn=0)
    seeds = torch.tensor([5, 6, 7])
    whole = search(method, G, y, D, seeds)
    chunked, chunk = search_fitting(method, G, y, D, seeds, chunk=2)
    assert chunk == 2 and chunked.status == whole.status
    assert torch.allclose(chunked.images, whole.images, atol=1e-5)
    assert torch.allclose(chunked.latents, whole.latents, atol=1e-5)
    for key, curve in whole.history.items():
        assert chunked.history[key].shape == curve.shape
        assert torch.allclose(chunked.history[key], curve, rtol=1e-4, atol=1e-5), key


def test_only_allocation_failures_count_as_out_of_memory():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: 8 GB"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))


# Run in a child process whose address space is capped: a real allocation failure of the
# CPU allocator. Each image's loss needs a 400 MB buffer; the cap leaves room for 2.
OOM_SCRIPT = textwrap.dedent(
    """
    import resource, sys, torch
    from rls.degradations import build_degradation
    from rls.generators import load_generator
    from rls.search import Method, OptimGroup, Rendered, Stage
    from rls.search.memory import BatchTooLargeError, search_fitting

    G = load_generator("tiny")
    D = build_degradation(8)
    y = torch.rand(4, 3, 4, 4)

    def init(ctx):
        return {"w": G.mapping.w_avg.expand(ctx.batch_size, G.num_ws, -1).clone()}

    def render(ctx, v):
        return Rendered(G.synthesis(v["w"]), v["w"])

    def losses(ctx, v, r):
        big = torch.ones(r.image.shape[0], 100_000_000)  # 400 MB per image
        return {"l1": (D((r.image + 1) / 2) - ctx.y).abs().flatten(1).mean(1) * big[:, 0]}

    method = Method("big", [Stage("big", 1, init, render, losses, [OptimGroup(["w"], lr=0.1)])])
    with open("/proc/self/status") as f:
        vm = next(int(l.split()[1]) for l in f if l.startswith("VmSize")) * 1024
    cap = vm + 1_300_000_000
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    split = sys.argv[1] == "split"
    try:
        result, chunk = search_fitting(method, G, y, D, torch.arange(4), split=split)
        print("CHUNK", chunk, result.images.shape[0], result.status)
    except BatchTooLargeError as err:
        print("ERROR", err)
    """
)


def _run_capped(mode: str) -> str:
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin"}
    done = subprocess.run(
        [sys.executable, "-c", OOM_SCRIPT, mode], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_batch_too_big_for_memory_names_its_size_and_what_to_set():
    out = _run_capped("refuse")
    assert "ERROR method big: a batch of 4 images does not fit in cpu memory" in out, out
    assert "data.batch_size=2 or smaller, or data.batch_size=auto" in out


def test_batch_size_auto_halves_the_batch_until_it_fits():
    out = _run_capped("split")
    assert "CHUNK 2 4 ['ok', 'ok', 'ok', 'ok']" in out, out


def test_evaluate_reads_batch_size_auto_and_refuses_nonsense():
    import pytest
    from omegaconf import OmegaConf

    import evaluate

    auto = OmegaConf.create({"data": {"batch_size": "auto"}})
    assert evaluate.batch_size_override(auto) == {"batch_size": evaluate.AUTO_BATCH_START}
    assert evaluate.batch_size_override(OmegaConf.create({"data": {"batch_size": 2}})) == {}
    with pytest.raises(ValueError, match="data.batch_size must be a positive integer or auto"):
        evaluate.batch_size_override(OmegaConf.create({"data": {"batch_size": 0}}))
