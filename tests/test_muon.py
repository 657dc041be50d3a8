"""Muon: oracle torch.optim.Muon, Newton-Schulz properties, the Muon/AdamW split, DDP on 2 gloo ranks."""
import copy
import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import groups
import optim
import rules
from model import Transformer, config_from_preset

SHAPES = [(32, 16), (16, 48), (24, 24)]


def make_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) * 0.1 for s in SHAPES]


def grads_for(step, seed=1):
    g = torch.Generator().manual_seed(seed + 100 * step)
    return [torch.randn(*s, generator=g) for s in SHAPES]


def run_ours(params, steps, **kw):
    ps = [p.clone().requires_grad_() for p in params]
    opt = rules.MuonAdamW([dict(params=[p], use_muon=True, name=f"m{i}") for i, p in enumerate(ps)], **kw)
    for t in range(steps):
        for p, g in zip(ps, grads_for(t)):
            p.grad = g.clone()
        opt.step()
    return ps, opt


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs PyTorch >= 2.9")
@pytest.mark.parametrize("scale", ["original", "match_rms_adamw"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_update_matches_torch_muon(scale, nesterov):
    params = make_params()
    lr, wd = 0.02, 0.1
    ref = [p.clone().requires_grad_() for p in params]
    ours = [p.clone().requires_grad_() for p in params]
    torch_opt = torch.optim.Muon(ref, lr=lr, weight_decay=wd, momentum=0.95, nesterov=nesterov, adjust_lr_fn=scale)
    opt = rules.MuonAdamW([dict(params=[p], use_muon=True) for p in ours], lr=lr, weight_decay=wd, momentum=0.95,
                          nesterov=nesterov, scale=scale)
    for t in range(3):
        with torch.no_grad():  # every step starts from the same weights (bf16 NS rounding differs slightly)
            for p, r in zip(ours, ref):
                p.copy_(r)
        start = [r.detach().clone() for r in ref]
        for p, r, g in zip(ours, ref, grads_for(t)):
            p.grad, r.grad = g.clone(), g.clone()
        torch_opt.step()
        opt.step()
        for p, s, r in zip(ours, start, ref):
            decayed = s * (1 - lr * wd)  # exact decoupled-decay term (unadjusted lr)
            ours_update, torch_update = (p - decayed).detach(), (r - decayed).detach()
            assert torch_update.abs().max() > 0
            torch.testing.assert_close(ours_update, torch_update, rtol=2e-2, atol=2e-2 * torch_update.abs().max().item())
            assert torch.equal(opt.state[p]["momentum_buffer"], torch_opt.state[r]["momentum_buffer"])
    with torch.no_grad():  # zero gradient, no momentum: the step is the decay alone, exactly
        p = torch.randn(4, 4, requires_grad=True)
        o = rules.MuonAdamW([dict(params=[p], use_muon=True)], lr=lr, weight_decay=wd, momentum=0.0, nesterov=False)
        p0 = p.clone()
        p.grad = torch.zeros_like(p)
        o.step()
        assert torch.equal(p, p0 * (1 - lr * wd))


def test_scale_factors():
    assert rules.lr_scale((32, 16), "original") == pytest.approx(2 ** 0.5)
    assert rules.lr_scale((16, 48), "original") == 1.0
    assert rules.lr_scale((16, 48), "match_rms_adamw") == pytest.approx(0.2 * 48 ** 0.5)
    with pytest.raises(ValueError):
        rules.lr_scale((2, 2), "bogus")


def test_newton_schulz_properties():
    g = torch.Generator().manual_seed(0)
    q1, _ = torch.linalg.qr(torch.randn(64, 64, generator=g))
    q2, _ = torch.linalg.qr(torch.randn(32, 32, generator=g))
    s = torch.linspace(1.0, 3.0, 32)  # well conditioned
    X = q1[:, :32] @ torch.diag(s) @ q2.T
    O = rules.zeropower_ns(X).float()
    sv = torch.linalg.svdvals(O)
    assert sv.min() > 0.5 and sv.max() < 1.5
    torch.testing.assert_close(rules.zeropower_ns(X.T).float(), O.T, rtol=0, atol=0)   # transpose equivariance
    torch.testing.assert_close(rules.zeropower_ns(7.5 * X).float(), O, rtol=2e-2, atol=2e-2)  # scale invariance
    batched = rules.zeropower_ns(torch.stack([X, 2 * X])).float()
    torch.testing.assert_close(batched[0], O, rtol=2e-2, atol=2e-2)


def test_split_routes_by_kind_and_adamw_side_matches_torch():
    torch.manual_seed(0)
    m = Transformer(config_from_preset("llama_nano"))
    split = rules.muon_split(groups.param_groups(m))
    kinds = {g["name"]: (g["kind"], g["use_muon"]) for g in split}
    assert kinds["embed"] == ("embed", False) and kinds["head"] == ("head", False) and kinds["rest"] == ("norm", False)
    assert all(use for name, (kind, use) in kinds.items() if kind in ("attn_qk", "attn_vo", "mlp"))
    # AdamW side equals torch AdamW (same betas, eps, decoupled decay, per-group lr)
    p0 = torch.randn(5, 3)
    a, b = p0.clone().requires_grad_(), p0.clone().requires_grad_()
    ours = rules.MuonAdamW([dict(params=[a], use_muon=False, lr=0.01, weight_decay=0.1)], betas=(0.9, 0.95), eps=1e-8)
    ref = torch.optim.AdamW([b], lr=0.01, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    for t in range(4):
        g = torch.randn(5, 3)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step(), ref.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_per_group_lr_and_state_roundtrip():
    """LLR layout: one matrix per group, each with its own lr, driven from outside."""
    params = make_params()
    ps, opt = run_ours(params, 1, lr=0.02, weight_decay=0.0)
    for i, g in enumerate(opt.param_groups):
        g["lr"] = 0.01 * (i + 1)
    start = [p.detach().clone() for p in ps]
    sd = copy.deepcopy(opt.state_dict())
    for p, g in zip(ps, grads_for(1)):
        p.grad = g.clone()
    opt.step()
    steps = [(p.detach() - s).norm() / rules.lr_scale(p.shape, "original") for p, s in zip(ps, start)]
    # same orthogonalised norm scale: the step norm follows each group's lr
    ratios = [float(st / (0.01 * (i + 1))) for i, st in enumerate(steps)]
    assert max(ratios) / min(ratios) < 2.5
    # reload into a fresh optimizer (group lrs come back), same next step
    qs = [s.clone().requires_grad_() for s in start]
    opt2 = rules.MuonAdamW([dict(params=[q], use_muon=True, name=f"m{i}") for i, q in enumerate(qs)], lr=0.5)
    opt2.load_state_dict(sd)
    assert [g["lr"] for g in opt2.param_groups] == [0.01, 0.02, 0.03]
    for q, g in zip(qs, grads_for(1)):
        q.grad = g.clone()
    opt2.step()
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)


def test_muon_strategy_puts_hidden_matrices_on_muon():
    m = Transformer(config_from_preset("llama_nano"))
    s = optim.build("muon", m, optim.default_config(learning_rate=1e-2, muon_lr=0.02))
    lrs = s.lrs()
    assert set(k for k, g in zip(lrs, s.optimizer.param_groups) if g["use_muon"]) == {
        n for n, mod in m.named_modules() if n.split(".")[-1] in ("q", "k", "v", "o", "gate", "up", "down")}


# ---------------------------------------------------------------------------------------------
# DDP: 2 gloo processes, Muon work sharded across a flat size-sorted list of all groups


def _ddp_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        params = make_params()
        ps = [p.clone().requires_grad_() for p in params]
        # two groups with several matrices, so sorting must cross groups
        groups = [dict(params=[ps[0], ps[2]], use_muon=True, name="a", lr=0.02),
                  dict(params=[ps[1]], use_muon=True, name="b", lr=0.03)]
        opt = rules.MuonAdamW(groups, weight_decay=0.1, scale="match_rms_adamw")
        for t in range(3):
            for p, g in zip(ps, grads_for(t)):
                p.grad = g.clone()  # stands for the DDP-all-reduced gradient
            opt.step()
        owned = sum(1 for p in ps if "momentum_buffer" in opt.state.get(p, {}))
        sd = opt.state_dict()  # collective: every buffer on every rank
        # resume from the gathered state in a fresh optimizer and take one more step
        qs = [p.detach().clone().requires_grad_() for p in ps]
        opt2 = rules.MuonAdamW([dict(params=[qs[0], qs[2]], use_muon=True, name="a", lr=0.02),
                                dict(params=[qs[1]], use_muon=True, name="b", lr=0.03)], weight_decay=0.1, scale="match_rms_adamw")
        opt2.load_state_dict(sd)
        for q, g in zip(qs, grads_for(3)):
            q.grad = g.clone()
        opt2.step()
        torch.save(dict(params=[p.detach() for p in ps], sd=sd, owned=owned, resumed=[q.detach() for q in qs]),
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_ranks_equals_single_device():
    params = make_params()
    ps = [p.clone().requires_grad_() for p in params]
    opt = rules.MuonAdamW([dict(params=[ps[0], ps[2]], use_muon=True, name="a", lr=0.02),
                           dict(params=[ps[1]], use_muon=True, name="b", lr=0.03)], weight_decay=0.1, scale="match_rms_adamw")
    for t in range(3):
        for p, g in zip(ps, grads_for(t)):
            p.grad = g.clone()
        opt.step()
    single_sd = copy.deepcopy(opt.state_dict())
    for p, g in zip(ps, grads_for(3)):
        p.grad = g.clone()
    opt.step()
    with tempfile.TemporaryDirectory() as d:
        mp.start_processes(_ddp_worker, args=(2, _free_port(), d), nprocs=2, join=True, start_method="fork")
        res = [torch.load(os.path.join(d, f"rank{r}.pt")) for r in range(2)]
    assert [r["owned"] for r in res] == [2, 1]  # 3 matrices round-robin over 2 ranks
    for r in res:
        assert set(r["sd"]["state"]) == set(single_sd["state"]) == {"a.0", "a.1", "b"}
        for name, st in single_sd["state"].items():
            assert torch.equal(r["sd"]["state"][name]["momentum_buffer"], st["momentum_buffer"])
        for a, b in zip(r["resumed"], ps):
            assert torch.equal(a, b)
    for a, b in zip(res[0]["params"], res[1]["params"]):
        assert torch.equal(a, b)
