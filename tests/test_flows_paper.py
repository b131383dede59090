"""The authors' MAF (family maf_paper) and the reader of their flow checkpoints."""

import argparse
import math
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from rls.flows import WFlow, load_authors_flow, load_prior
from rls.flows.paper_maf import BatchNormFlow, PaperMADE
from rls.generators.formats_common import CheckpointError

D, HIDDEN, BLOCKS = 6, 12, 5


def skewed(n, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g) / math.sqrt(d) + torch.eye(d)
    return nn.functional.leaky_relu(torch.randn(n, d, generator=g) @ a.T + 0.3, 0.2) * 2 - 1


def trained_like_port(seed=0):
    """A maf_paper flow with perturbed weights and every statistic set, in eval mode."""
    torch.manual_seed(seed)
    flow = WFlow(D, family="maf_paper", transforms=BLOCKS, hidden=(HIDDEN, HIDDEN))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    w = skewed(2000)
    flow.fit_standardisation(w).set_running_statistics(w)
    return flow.eval()


def authors_mask(n_in, n_out, d, kind):
    """Their MADE connectivity, derived here from the MADE paper's degree rule: inputs get
    degrees 0..d-1, hidden units cycle through 0..d-2, outputs (m then a) get (k mod d)-1;
    a weight exists where the output degree is >= the input degree."""
    deg_in = np.arange(n_in) % (d if kind == "input" else d - 1)
    deg_out = np.arange(n_out) % d - 1 if kind == "output" else np.arange(n_out) % (d - 1)
    return torch.tensor((deg_out[:, None] >= deg_in[None, :]).astype(np.float32))


def authors_files(flow, tmp_path):
    """Save ``flow`` as the authors' code would: {'model': FlowSequential state dict} with
    their module numbering, float masks, no Reverse entries; and their stats pickle."""
    ours = {k: v.detach().clone() for k, v in flow.state_dict().items()}
    layers = "flow.transform.transforms."
    state = {}
    for b in range(BLOCKS):
        made, norm = 3 * b, 3 * b + 1
        for name, kind, shape in (
            ("joiner", "input", (HIDDEN, D)),
            ("trunk.1", None, (HIDDEN, HIDDEN)),
            ("trunk.3", "output", (2 * D, HIDDEN)),
        ):
            state[f"{made}.{name}.linear.weight"] = ours[f"{layers}{made}.{name}.weight"]
            state[f"{made}.{name}.linear.bias"] = ours[f"{layers}{made}.{name}.bias"]
            state[f"{made}.{name}.mask"] = authors_mask(shape[1], shape[0], D, kind)
        for name in ("log_gamma", "beta", "running_mean", "running_var"):
            state[f"{norm}.{name}"] = ours[f"{layers}{norm}.{name}"]
    state_path = tmp_path / "best_model.pth"
    torch.save({"model": state, "epoch": 7, "optimizer": {"lr": 1e-4}}, state_path)
    stats_path = tmp_path / "wlatent.pkl"
    stats = {"mu": flow.mu.numpy().astype(np.float64), "std": flow.sigma.numpy().astype(np.float64)}
    stats_path.write_bytes(pickle.dumps(stats))
    return state, state_path, stats_path


def authors_log_probs(state, x):
    """Their FlowSequential.log_probs on standardised x, written from their equations:
    per block u = (x − m)·exp(−a) (MADE), exp(γ)(u − mean)/√var + β (eval batch norm),
    reversal; log N(u; 0, I) + Σ log|det|."""
    logdet = torch.zeros(x.shape[0], dtype=x.dtype)
    for b in range(BLOCKS):
        made, norm = 3 * b, 3 * b + 1

        def masked(name, h, made=made):
            w = state[f"{made}.{name}.linear.weight"] * state[f"{made}.{name}.mask"]
            return h @ w.T + state[f"{made}.{name}.linear.bias"]

        h = masked("trunk.3", torch.relu(masked("trunk.1", torch.relu(masked("joiner", x)))))
        m, a = h[:, :D], h[:, D:]
        x = (x - m) * torch.exp(-a)
        logdet = logdet - a.sum(-1)
        gamma, beta = state[f"{norm}.log_gamma"], state[f"{norm}.beta"]
        mean, var = state[f"{norm}.running_mean"], state[f"{norm}.running_var"]
        x = torch.exp(gamma) * (x - mean) / var.sqrt() + beta
        logdet = logdet + (gamma - 0.5 * var.log()).sum()
        x = x.flip(-1)
    return (-0.5 * x.square() - 0.5 * math.log(2 * math.pi)).sum(-1) + logdet


def test_authors_checkpoint_loads_with_the_same_nll(tmp_path):
    flow = trained_like_port()
    val = skewed(300, seed=5)
    with torch.no_grad():
        before = flow.log_prob(val)
    state, state_path, stats_path = authors_files(flow, tmp_path)
    loaded = load_prior(state_path, stats=stats_path)
    assert isinstance(loaded, WFlow) and loaded.family == "maf_paper" and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_prob(val), before, rtol=0, atol=1e-5)
        torch.testing.assert_close(loaded.to_gaussian(val), flow.to_gaussian(val))
        # and it is their density: log_probs((w − mu)/std) − Σ log std
        x = (val - flow.mu) / flow.sigma
        theirs = authors_log_probs(state, x) - flow.sigma.log().sum()
        torch.testing.assert_close(loaded.log_prob(val), theirs, rtol=0, atol=1e-4)
    # a converted flow is an ordinary flow file of ours from then on
    again = WFlow.load(loaded.save(tmp_path / "flow.safetensors"))
    assert torch.equal(again.log_prob(val), loaded.log_prob(val))


def test_authors_checkpoint_with_other_connectivity_or_dims_is_refused(tmp_path):
    flow = trained_like_port()
    state, state_path, stats_path = authors_files(flow, tmp_path)
    bad = dict(state)
    bad["0.joiner.mask"] = torch.ones_like(bad["0.joiner.mask"])
    torch.save({"model": bad}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"bad\.pth.*mask '0\.joiner\.mask'"):
        load_authors_flow(tmp_path / "bad.pth", stats_path)
    (tmp_path / "short.pkl").write_bytes(pickle.dumps({"mu": np.zeros(D - 1), "std": np.ones(D)}))
    with pytest.raises(CheckpointError, match=r"short\.pkl.*'mu' has 5 entries.*w_dim is 6"):
        load_authors_flow(state_path, tmp_path / "short.pkl")
    from rls.generators import load_generator

    with pytest.raises(ValueError, match=r"best_model\.pth.*w_dim=6.*w_dim=64"):
        load_authors_flow(state_path, stats_path, generator=load_generator("tiny"))


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_hostile_stats_pickle_or_checkpoint_executes_nothing(tmp_path):
    flow = trained_like_port()
    _, state_path, _ = authors_files(flow, tmp_path)
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pkl"
    hostile.write_bytes(pickle.dumps({"mu": _Hostile(marker), "std": np.ones(D)}))
    with pytest.raises(CheckpointError, match=r"hostile\.pkl.*refused.*posix\.system"):
        load_prior(state_path, stats=hostile)
    torch.save({"model": _Hostile(marker)}, tmp_path / "hostile.pth")
    with pytest.raises(CheckpointError, match=r"hostile\.pth: refused.*posix\.system"):
        load_prior(tmp_path / "hostile.pth", stats=hostile)
    assert not marker.exists()


def training_script_arguments():
    """The arguments of the authors' flow-training script (CPFLOW_lib/train_tab_w.py at
    f8df15d), parsed as it parses them: an ``argparse.Namespace`` of strings, numbers,
    booleans and None."""
    parser = argparse.ArgumentParser("Convex Potential Flow")
    for name, default in (
        ("--data", "wlatent"), ("--arch", "icnn2"), ("--softplus_type", "gaussian_softplus"),
        ("--save", "experiments/cpfw_512_2"), ("--data_root", None), ("--resume", False),
    ):  # fmt: skip
        parser.add_argument(name, type=str, default=default)
    for name, default in (
        ("--zero_softplus", True), ("--symm_act_first", False), ("--trainable_w0", True),
    ):  # fmt: skip
        parser.add_argument(name, type=eval, choices=[True, False], default=default)
    for name, default in (
        ("--dimh", 4096), ("--nhidden", 5), ("--nblocks", 10), ("--nepochs", 1000),
        ("--early_stopping", 20), ("--batch_size", 256), ("--val_batch_size", 256),
        ("--test_batch_size", 256), ("--cuda", None), ("--seed", 0), ("--val_freq", 200),
        ("--log_freq", 100), ("--train_est_freq", None),
    ):  # fmt: skip
        parser.add_argument(name, type=int, default=default)
    for name, default in (("--clip_grad", 0.0), ("--lr", 1e-3), ("--wd", 1e-6),
                          ("--atol", 1e-3), ("--rtol", 0.0)):  # fmt: skip
        parser.add_argument(name, type=float, default=default)
    for name in ("--preload_data", "--evaluate", "--fp64", "--brute_val"):
        parser.add_argument(name, action="store_true", default=False)
    args = parser.parse_args([])
    args.train_est_freq = args.train_est_freq or args.log_freq  # as the script does after parsing
    return args


def save_as_training_script(state, path, args):
    """What the authors' training script writes on a better validation log-likelihood:
    ``torch.save({'args', 'model', 'optim', 'iters', 'ndecs'}, .../best_model.pth)`` with
    the model's state dict and the state of its Adam (betas 0.9/0.99, weight decay) after
    some steps."""
    params = [v.clone().requires_grad_() for v in state.values() if v.is_floating_point()]
    optim = torch.optim.Adam(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=args.wd)
    for _ in range(2):
        optim.zero_grad()
        sum(p.square().sum() for p in params).backward()
        optim.step()
    itr, ndecs = 4199, 1
    torch.save(
        {
            "args": args,
            "model": OrderedDict(state),
            "optim": optim.state_dict(),
            "iters": itr + 1,
            "ndecs": ndecs,
        },
        path,
    )


def test_checkpoint_of_the_authors_training_script_loads_with_their_density(tmp_path):
    flow = trained_like_port()
    state, _, stats_path = authors_files(flow, tmp_path)
    path = tmp_path / "experiments" / "best_model.pth"
    path.parent.mkdir()
    save_as_training_script(state, path, training_script_arguments())
    loaded = load_prior(path, stats=stats_path)
    val = skewed(300, seed=6)
    with torch.no_grad():
        x = (val - flow.mu) / flow.sigma
        theirs = authors_log_probs(state, x) - flow.sigma.log().sum()
        torch.testing.assert_close(loaded.log_prob(val), theirs, rtol=0, atol=1e-4)


def test_training_script_checkpoint_with_code_in_its_arguments_is_refused(tmp_path):
    flow = trained_like_port()
    state, _, stats_path = authors_files(flow, tmp_path)
    marker = tmp_path / "pwned"
    args = training_script_arguments()
    args.resume = _Hostile(marker)  # a Namespace is allowed; what it holds is not
    save_as_training_script(state, tmp_path / "best_model.pth", args)
    with pytest.raises(CheckpointError, match=r"best_model\.pth: refused.*posix\.system"):
        load_prior(tmp_path / "best_model.pth", stats=stats_path)
    assert not marker.exists()


def test_made_is_autoregressive_in_the_natural_order():
    """∂(m, a)_i/∂x_j is zero for j >= i, and every x_j with j < i has a path to m_i, a_i."""
    torch.manual_seed(0)
    made = PaperMADE(D, HIDDEN).double()
    below = torch.tril(torch.ones(D, D, dtype=torch.bool), diagonal=-1)
    for x in torch.randn(5, D, dtype=torch.float64):
        jac = torch.autograd.functional.jacobian(lambda v: made.trunk(made.joiner(v)), x)
        assert torch.all(jac[:D][~below] == 0) and torch.all(jac[D:][~below] == 0)
    paths = made.trunk[3].mask.double() @ made.trunk[1].mask.double() @ made.joiner.mask.double()
    assert torch.equal(paths[:D] > 0, below) and torch.equal(paths[D:] > 0, below)


def test_batch_norm_layer_uses_batch_statistics_in_training_and_running_ones_in_eval():
    flow = trained_like_port()
    w = skewed(500, seed=3)
    x = flow.standardise(w)
    first_made, first_norm = flow.flow.transform.transforms[:2]
    with torch.no_grad():
        u = first_made()(x)
        flow.set_running_statistics(w)  # the whole set's statistics, layer by layer
        torch.testing.assert_close(first_norm.running_mean, u.mean(0))
        torch.testing.assert_close(first_norm.running_var, u.var(0, unbiased=False) + 1e-5)
        alone = flow.log_prob(w[:1])
        torch.testing.assert_close(flow.log_prob(w[:50])[:1], alone)  # eval: per-sample density
        flow.train()
        y, _ = first_norm().call_and_ladj(u[:50])
        torch.testing.assert_close(y.mean(0), first_norm.beta.detach(), atol=1e-5, rtol=0)
        # training calls leave the whole-set statistics alone until the next refresh
        torch.testing.assert_close(first_norm.running_mean, u.mean(0))
    assert isinstance(first_norm, BatchNormFlow)
