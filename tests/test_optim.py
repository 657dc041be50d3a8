"""Strategies of optim.py: schedules against torch.optim.lr_scheduler and closed forms, update rules
against hand computations of their published formulas, training, resume, bad input."""
import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import optim
import rules as O
from conftest import ROOT
from model import Transformer, config_from_preset, load_checkpoint
from test_train import TINY as TINY_TRAIN, losses as train_losses, text_dataset  # noqa: F401  (fixture)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return Transformer(config_from_preset("llama_nano", block_size=32))


def lr_curve(name, steps, key=None, **cfg):
    s = optim.build(name, tiny_model(), optim.default_config(**cfg))
    key = key or next(iter(s.group_lrs()))
    out = []
    for it in range(steps):
        out.append(s.group_lrs()[key])
        s.step(it)  # no gradients: the optimizers skip, the schedule advances
    return out


def torch_curve(make_sched, steps, lr, momentum=0.9):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr, momentum=momentum)
    sched = make_sched(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


# ---------------------------------------------------------------------------------------------
# schedules


def test_sgdr_restarts_after_10_30_70_and_matches_torch():
    lr, T = 0.05, 160
    ours = lr_curve("sgdr", T, learning_rate=lr, max_iters=T, sgdr_t0=10, sgdr_t_mult=2, min_lr_ratio=0.0002)
    eta_min = 0.0002 * lr
    ref = torch_curve(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=eta_min), T, lr)
    assert ours == pytest.approx(ref, rel=1e-12)
    starts, Ti, k = [0], 10, 0  # closed form: cycle i has length 10·2^i
    for it in range(T):
        if k == Ti:
            k, Ti = 0, 2 * Ti
            starts.append(it)
        assert ours[it] == pytest.approx(eta_min + 0.5 * (lr - eta_min) * (1 + math.cos(math.pi * k / Ti)), rel=1e-9)
        k += 1
    assert starts == [0, 10, 30, 70, 150]
    faithful = lr_curve("sgdr", 40, learning_rate=lr, max_iters=T, faithful=True)  # T₀ 10 steps, η_min 1e-5
    ref = torch_curve(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=1e-5), 40, lr)
    assert faithful == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("name,cfg,make", [
    ("cosine_sgd", {}, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50, eta_min=0.1 * 0.2)),
    ("step_decay", {"step_decay_every": 7, "step_decay_gamma": 0.5}, lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5)),
    ("exponential", {"exp_decay_gamma": 0.9}, lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9)),
    ("cyclical", {"cyclic_half": 6}, lambda o: torch.optim.lr_scheduler.CyclicLR(o, base_lr=0.02, max_lr=0.2, step_size_up=6, base_momentum=0.8, max_momentum=0.9)),
    ("one_cycle", {}, lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.2, total_steps=50)),
])
def test_schedules_match_torch(name, cfg, make):
    ours = lr_curve(name, 50, learning_rate=0.2, max_iters=50, **cfg)
    assert ours == pytest.approx(torch_curve(make, 50, 0.2), rel=1e-12)


def test_closed_forms_of_step_exponential_onecycle():
    T, lr = 50, 0.2
    assert lr_curve("step_decay", T, learning_rate=lr, max_iters=T) == pytest.approx([lr * 0.1 ** (t // 16) for t in range(T)])
    g = 0.1 ** (1 / T)
    assert lr_curve("exponential", T, learning_rate=lr, max_iters=T) == pytest.approx([lr * g ** t for t in range(T)])
    oc = lr_curve("one_cycle", T, learning_rate=lr, max_iters=T)
    assert oc[0] == pytest.approx(lr / 25) and max(oc) == pytest.approx(lr) and oc[-1] == pytest.approx(lr / 25 / 1e4, rel=1e-6)
    assert oc.index(max(oc)) == round(0.3 * T) - 1


def test_stlr_discriminative_levels_and_shape():
    T, lr = 100, 0.05
    s = optim.build("stlr_discriminative", tiny_model(), optim.default_config(learning_rate=lr, max_iters=T))
    K = 4  # 2 blocks: embed, block 0, block 1, head
    levels = {g["name"]: g["level"] for g in s.optimizer.param_groups}
    assert levels["embed"] == 0 and levels["blocks.0.attn.q"] == 1 and levels["blocks.1.mlp.up"] == 2 and levels["head"] == 3
    curve = {n: [] for n in levels}
    for it in range(T):
        for n, v in s.group_lrs().items():
            curve[n].append(v)
        s.step(it)
    cut = 10
    for n, l in levels.items():
        peak = lr / 2.6 ** (K - 1 - l)
        expect = [peak * (1 + (t / cut if t < cut else max(0, 1 - (t - cut) / (cut * 9))) * 31) / 32 for t in range(T)]
        assert curve[n] == pytest.approx(expect, rel=1e-9)
    assert curve["head"][0] == pytest.approx(lr / 32) and curve["head"][cut] == pytest.approx(lr)
    # reference quirks: double decay, constant within an epoch, epoch 1 at the single-decayed peak
    f = optim.build("stlr_discriminative", tiny_model(), optim.default_config(learning_rate=lr, max_iters=T, faithful=True, epoch_iters=20))
    emb = []
    for it in range(T):
        emb.append(f.group_lrs()["embed"])
        f.step(it)
    assert emb[:20] == pytest.approx([lr / 2.6 ** 3] * 20)
    double = lr / 2.6 ** 6
    assert emb[20:40] == pytest.approx([double * (1 + (1 - 10 / 90) * 31) / 32] * 20)


def test_discriminative_and_llrd_and_unfreezing_levels():
    d = optim.build("discriminative", tiny_model(), optim.default_config(learning_rate=1.0))
    lrs = d.group_lrs()
    assert lrs["head"] == 1.0 and lrs["embed"] == pytest.approx(2.6 ** -3) and lrs["blocks.0.attn.q"] == pytest.approx(2.6 ** -2)
    assert lrs["rest.1.0000"] == 1.0  # final norm sits with the head
    b = optim.build("discriminative", tiny_model(), optim.default_config(learning_rate=1.0, disc_levels=2))
    assert b.group_lrs()["embed"] == pytest.approx(1 / 2.6) and b.group_lrs()["blocks.1.mlp.up"] == 1.0
    l = optim.build("llrd", tiny_model(), optim.default_config(learning_rate=1.0)).group_lrs()
    assert l["embed"] == pytest.approx(0.95 ** 3)
    u = optim.build("gradual_unfreezing", tiny_model(), optim.default_config(learning_rate=1.0, unfreeze_every=5))
    seen = []
    for it in range(16):
        seen.append((u.group_lrs()["head"], u.group_lrs()["blocks.1.mlp.up"], u.group_lrs()["embed"]))
        u.step(it)
    assert seen[0] == (1.0, 0.0, 0.0) and seen[5] == (1.0, 1.0, 0.0) and seen[15] == (1.0, 1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# update rules against hand computations


def grads(seed, *shapes):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) for s in shapes]


def run(opt, params, n, seed=0):
    for t in range(n):
        for p, g in zip(params, grads(seed + t, *[p.shape for p in params])):
            p.grad = g
        opt.step()


def fresh(*tensors):
    return [t.clone().requires_grad_() for t in tensors]


W0, B0, Z0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(9)), torch.ones(3) * 0.5, torch.zeros(2, 2)


def test_lars_canonical_and_reference():
    lr, mu, wd, trust = 0.1, 0.9, 0.01, 0.001
    w, b, z = fresh(W0, B0, Z0)
    run(O.LARS([w, b, z], lr=lr, momentum=mu, weight_decay=wd, trust=trust), [w, b, z], 2)
    hw, hb, hz = W0.clone(), B0.clone(), Z0.clone()
    vw, vb, vz = [torch.zeros_like(x) for x in (hw, hb, hz)]
    for t in range(2):
        gw, gb, gz = grads(t, W0.shape, B0.shape, Z0.shape)
        ratio = trust * hw.norm() / (gw.norm() + wd * hw.norm())
        vw = mu * vw + lr * ratio * (gw + wd * hw)
        hw = hw - vw
        vb = mu * vb + lr * gb  # 1-D: no ratio, no decay
        hb = hb - vb
        r = 1.0 if hz.norm() == 0 else trust * hz.norm() / (gz.norm() + wd * hz.norm())  # zero norm: ratio 1
        vz = mu * vz + lr * r * (gz + wd * hz)
        hz = hz - vz
    torch.testing.assert_close(w.detach(), hw), torch.testing.assert_close(b.detach(), hb), torch.testing.assert_close(z.detach(), hz)
    assert not torch.equal(z.detach(), Z0)  # a zero-initialised matrix moves
    w, z = fresh(W0, Z0)
    run(O.LARS([w, z], lr=lr, momentum=mu, weight_decay=wd, trust=0.02, reference=True), [w, z], 2)
    hw, hz, mw, mz = W0.clone(), Z0.clone(), torch.zeros_like(W0), torch.zeros_like(Z0)
    for t in range(2):
        gw, gz = grads(t, W0.shape, Z0.shape)
        dw, dz = gw + wd * hw, gz + wd * hz
        rw = 0.02 * hw.norm() / (dw.norm() + 1e-8)
        rz = 0.02 if hz.norm() == 0 else 0.02 * hz.norm() / (dz.norm() + 1e-8)
        mw, mz = mu * mw + dw, mu * mz + dz
        hw, hz = hw - lr * rw * mw, hz - lr * rz * mz
    torch.testing.assert_close(w.detach(), hw), torch.testing.assert_close(z.detach(), hz)


def test_lamb_first_steps():
    lr, (b1, b2), eps, wd = 0.01, (0.9, 0.999), 1e-6, 0.01
    w, b, z = fresh(W0, B0, Z0)
    run(O.LAMB([w, b, z], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd), [w, b, z], 2)
    hs = [W0.clone(), B0.clone(), Z0.clone()]
    ms = [torch.zeros_like(h) for h in hs]
    vs = [torch.zeros_like(h) for h in hs]
    for t in range(1, 3):
        for i, g in enumerate(grads(t - 1, W0.shape, B0.shape, Z0.shape)):
            ms[i] = b1 * ms[i] + (1 - b1) * g
            vs[i] = b2 * vs[i] + (1 - b2) * g * g
            u = (ms[i] / (1 - b1 ** t)) / ((vs[i] / (1 - b2 ** t)).sqrt() + eps)
            if hs[i].ndim >= 2:
                u = u + wd * hs[i]
                r = hs[i].norm() / u.norm() if hs[i].norm() > 0 else 1.0
            else:
                r = 1.0
            hs[i] = hs[i] - lr * r * u
    for p, h in zip((w, b, z), hs):
        torch.testing.assert_close(p.detach(), h)


def test_lion_first_steps():
    lr, b1, b2, wd = 1e-3, 0.9, 0.99, 0.1
    (w,) = fresh(W0)
    run(O.Lion([w], lr=lr, betas=(b1, b2), weight_decay=wd), [w], 3)
    h, m = W0.clone(), torch.zeros_like(W0)
    for t in range(3):
        (g,) = grads(t, W0.shape)
        h = h - lr * (torch.sign(b1 * m + (1 - b1) * g) + wd * h)
        m = b2 * m + (1 - b2) * g
    torch.testing.assert_close(w.detach(), h)


def test_adabound_first_steps():
    lr, (b1, b2), final, gamma, eps = 3e-4, (0.9, 0.999), 0.01, 1e-3, 1e-8
    (w,) = fresh(W0)
    run(O.AdaBound([w], lr=lr, betas=(b1, b2), final_lr=final, gamma=gamma, eps=eps), [w], 3)
    h, m, v = W0.clone(), torch.zeros_like(W0), torch.zeros_like(W0)
    for t in range(1, 4):
        (g,) = grads(t - 1, W0.shape)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        s = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) / (v.sqrt() + eps)
        s = s.clamp(final * (1 - 1 / (gamma * t + 1)), final * (1 + 1 / (gamma * t)))
        h = h - s * m
    torch.testing.assert_close(w.detach(), h)


def test_grokfast_filters():
    g1, g2 = grads(0, (3, 3)) + grads(1, (3, 3))
    p = torch.zeros(3, 3, requires_grad=True)
    f = O.GrokfastEMA([p], alpha=0.98, lamb=2.0)
    p.grad = g1.clone(); f.apply()
    torch.testing.assert_close(p.grad, g1 + 2 * g1)  # μ₀ = first gradient
    p.grad = g2.clone(); f.apply()
    torch.testing.assert_close(p.grad, g2 + 2 * (0.98 * g1 + 0.02 * g2))
    r = O.GrokfastEMA([p], alpha=0.98, lamb=1.0, zero_init=True)
    p.grad = g1.clone(); r.apply()
    torch.testing.assert_close(p.grad, g1 + 0.02 * g1)
    p.grad = torch.full((3, 3), float("nan")); r.apply()  # a NaN step leaves the EMA alone
    assert torch.isfinite(r.ema[0]).all()
    ma = O.GrokfastMA([p], window=2, lamb=5.0)
    p.grad = g1.clone(); ma.apply()
    torch.testing.assert_close(p.grad, g1)  # queue not full yet
    p.grad = g2.clone(); ma.apply()
    torch.testing.assert_close(p.grad, g2 + 5 * (g1 + g2) / 2)


def test_grokfast_reference_base_rule():
    lr, mu, wd = 0.03, 0.9, 5e-4
    (w,) = fresh(W0)
    run(O.DampenedSGD([w], lr=lr, momentum=mu, weight_decay=wd), [w], 2)
    h, m = W0.clone(), torch.zeros_like(W0)
    for t in range(2):
        (g,) = grads(t, W0.shape)
        m = mu * m + (1 - mu) * g
        h = h - lr * m
        h = h - lr * wd * h
    torch.testing.assert_close(w.detach(), h)


@pytest.mark.parametrize("lazy", [False, True])
def test_lookahead(lazy):
    (w,) = fresh(W0)
    (ref,) = fresh(W0)
    la = O.Lookahead(torch.optim.AdamW([w], lr=0.01), k=3, alpha=0.5, lazy=lazy)
    inner = torch.optim.AdamW([ref], lr=0.01)
    slow = None if lazy else W0.clone()
    for t in range(7):
        (g,) = grads(t, W0.shape)
        w.grad, ref.grad = g.clone(), g.clone()
        la.step(); inner.step()
        if slow is None:
            slow = ref.detach().clone()
        if (t + 1) % 3 == 0:
            slow = slow + 0.5 * (ref.detach() - slow)
            with torch.no_grad():
                ref.copy_(slow)
        torch.testing.assert_close(w.detach(), ref.detach())


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_on_a_quadratic(adaptive):
    """loss = Σ a⊙w²/2, so ∇ = a⊙w: the SAM step is computable by hand."""
    torch.manual_seed(0)
    model = tiny_model()
    a = {n: torch.rand_like(p) + 0.5 for n, p in model.named_parameters()}
    loss_fn = lambda: sum((a[n] * p * p).sum() / 2 for n, p in model.named_parameters())
    lr, rho, mu = 0.1, 0.05, 0.9
    cfg = optim.default_config(learning_rate=lr, weight_decay=0.0, sam_rho=rho, sam_adaptive=adaptive)
    s = optim.build("sam", model, cfg)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}

    def closure():
        s.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss.detach()
    loss_fn().backward()
    s.step(0, closure=closure)
    g = {n: a[n] * w for n, w in w0.items()}
    if adaptive:
        norm = torch.sqrt(sum(((w0[n].abs() * g[n]) ** 2).sum() for n in g))
        e = {n: rho * w0[n] ** 2 * g[n] / norm for n in g}
    else:
        norm = torch.sqrt(sum((x ** 2).sum() for x in g.values()))
        e = {n: rho * g[n] / norm for n in g}
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), w0[n] - lr * a[n] * (w0[n] + e[n]), rtol=1e-5, atol=1e-7)
    with pytest.raises(RuntimeError, match="closure"):
        s.step(1)


def hand_dals(variant, w0, depth, gs, losses, T, lr, mu, alpha0, tau2, warmup, wd=5e-4, t0=10, zero_first=False):
    """Direct transcription of DALS (docs/strategies.md) for one tensor. The LR of 0-based step k is
    η·λ(k+1), λ the warmup-cosine rule (the reference, zero_first: η·λ(k)); dals_acc: η·SGDR(k+1)."""
    w, e, m = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    E, P, k, c, i, Ti = None, 0, 0, 0, 0, t0
    for g, loss in zip(gs, losses):
        if E is None:
            E = loss
        else:
            E2 = 0.95 * E + 0.05 * loss
            d = (E - E2) / max(abs(E), 1e-8)
            E = E2
            P = 0 if d > 0.01 else 1 if d > tau2 else 2
        if variant == "dals_acc":
            c += 1
            if c >= Ti:
                c, i = 0, i + 1
                Ti = int(t0 * 2 ** i)
            eta = lr * 0.5 * (1 + math.cos(math.pi * min(c / Ti, 1)))
        else:
            W, t = int(warmup * T), (k if zero_first else k + 1)
            s = t / W if t < W else 0.5 * (1 + math.cos(math.pi * min((t - W) / max(1, T - W), 1)))
            eta = lr * s
        k += 1
        if variant == "dals_acc":
            a = {0: max(0.4, alpha0 - 0.15), 1: alpha0, 2: min(0.9, alpha0 + 0.1)}[P]
        else:
            a = {0: max(0.3, alpha0 - 0.3), 1: alpha0, 2: min(0.9, alpha0 + 0.1)}[P]
        if variant == "dals_fast" and P == 0:
            gh = g.clone()
        else:
            e = a * e + (1 - a) * g
            b = 0.3 + 0.4 * depth
            gh = b * g + (1 - b) * e
        gh = gh + wd * w
        r = 1.0 if w.norm() == 0 or gh.norm() == 0 else float((0.02 * w.norm() / gh.norm()).clamp(0.2, 5.0))
        m = mu * m + gh
        w = w - eta * r * m
    return w


@pytest.mark.parametrize("variant,opts", [
    ("dals", dict(mu=0.9, alpha0=0.6, tau2=0.002, warmup=0.05)),
    ("dals_fast", dict(mu=0.85, alpha0=0.6, tau2=0.002, warmup=0.02)),
    ("dals_acc", dict(mu=0.9, alpha0=0.7, tau2=0.001, warmup=0.0, t0=3)),
])
@pytest.mark.parametrize("zero_first", [False, True])
def test_dals_matches_the_spec(variant, opts, zero_first):
    T, lr, n = 100, 0.05, 12
    # losses chosen to visit all three phases: loss < 0.8E (P0), < 0.96E (P1), else P2
    losses = [3.0, 2.0, 2.7, 3.0, 2.0, 2.7, 3.0, 3.0, 2.0, 2.7, 2.7, 3.0]  # E ≈ 2.9: P0, P1, P2 in turn
    shapes = [(4, 3), (3,), (2, 2)]
    depths = [0.25, 1.0, 0.5]
    starts = [W0, B0, Z0]
    gs = [grads(t, *shapes) for t in range(n)]
    params = fresh(*starts)
    keys = {"dals": ("dals_momentum", "dals_alpha0", "dals_tau2", "dals_warmup_frac"),
            "dals_fast": ("dals_fast_momentum", "dals_alpha0", "dals_tau2", "dals_fast_warmup_frac"),
            "dals_acc": ("dals_momentum", "dals_acc_alpha0", "dals_acc_tau2", "dals_acc_t0")}[variant]
    values = (opts["mu"], opts["alpha0"], opts["tau2"], opts.get("t0") if variant == "dals_acc" else opts["warmup"])
    strategy = optim.build(variant, tiny_model(), optim.default_config(learning_rate=lr, max_iters=T, dals_zero_first_lr=zero_first,
                                                                       **dict(zip(keys, values))))
    opt = O.DALS([dict(params=[p], depth=d) for p, d in zip(params, depths)], lr=lr, variant=variant,
                 momentum=opts["mu"], alpha0=opts["alpha0"], tau2=opts["tau2"])
    phases = []
    for t in range(n):
        for p, g in zip(params, gs[t]):
            p.grad = g
        opt.observe(torch.tensor(losses[t]))
        phases.append(opt.glob["phase"])
        for group in opt.param_groups:  # the schedule lives in the strategy, not in the optimizer
            group["lr"] = lr * strategy.scale(t)
        opt.step()
    assert set(phases) == {0, 1, 2}
    for j, (p, d, w0) in enumerate(zip(params, depths, starts)):
        h = hand_dals(variant, w0, d, [g[j] for g in gs], losses, T, lr, opts["mu"], opts["alpha0"], opts["tau2"],
                      opts["warmup"], t0=opts.get("t0", 10), zero_first=zero_first)
        torch.testing.assert_close(p.detach(), h, rtol=1e-5, atol=1e-7)


def test_dals_strategy_first_lr_and_depths():
    m = tiny_model()
    s = optim.build("dals", m, optim.default_config(learning_rate=0.03, max_iters=200, faithful=True))
    depths = {g["name"]: g["depth"] for g in s.optimizer.param_groups}
    assert depths["embed"] == 0.0 and depths["blocks.0.attn.q"] == pytest.approx(1 / 3) and depths["head"] == 1.0
    s.step(0)  # no gradients: only the LR is set
    assert set(s.lrs().values()) == {0.0}  # reference: first update at LR 0
    c = optim.build("dals", m, optim.default_config(learning_rate=0.03, max_iters=200))
    c.step(0)
    assert list(set(c.lrs().values())) == [pytest.approx(0.03 / 10)]  # the warmup rule t/W at t = 1, W = 10


# ---------------------------------------------------------------------------------------------
# every strategy: trains, resumes exactly, rejects bad hyperparameters

LR = {"adam": 3e-3, "adamw": 3e-3, "radam": 3e-3, "adabound": 3e-3, "lookahead_adamw": 3e-3, "uniform": 1e-2,
      "llrd": 3e-3, "gradual_unfreezing": 3e-3, "lion": 1e-3, "adagrad": 0.1, "rmsprop": 1e-3, "lamb": 1e-2,
      "adafactor": 1e-2, "muon": 1e-2, "lars": 5.0, "dals": 1.0, "dals_fast": 1.0, "dals_acc": 1.0, "grokfast": 0.3,
      "schedule_free": 3e-3}
SGD_LR = 1.0
DATA = torch.randint(0, 16, (8, 33), generator=torch.Generator().manual_seed(0))  # 16-symbol bytes: learnable in 20 steps


def train(s, model, its, losses=None):
    x, y = DATA[:, :-1], DATA[:, 1:]

    def closure():
        s.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        return loss.detach()
    for it in its:
        _, loss = model(x, y)
        loss.backward()
        s.step(it, loss=loss.detach() if s.uses_loss else None, closure=closure)
        s.zero_grad()
        if losses is not None:
            losses.append(loss.item())


def build(name, model, **kw):
    return optim.build(name, model, optim.default_config(learning_rate=LR.get(name, SGD_LR), max_iters=20,
                                                         grad_clip=1.0, weight_decay=0.0, **kw))


@pytest.mark.parametrize("name", optim.CATALOGUE)
def test_trains_and_resumes_exactly(name):
    model = tiny_model()
    s = build(name, model)
    losses = []
    train(s, model, range(10), losses)
    saved_model, saved = copy.deepcopy(model.state_dict()), copy.deepcopy(s.state_dict())
    train(s, model, range(10, 20), losses)
    assert all(math.isfinite(l) for l in losses)
    assert min(losses[-3:]) < losses[0] - 0.1, losses
    resumed = tiny_model(seed=1)
    resumed.load_state_dict(saved_model)
    r = build(name, resumed)
    r.load_state_dict(saved)
    train(r, resumed, range(10, 20))
    for (n, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name}: {n} differs after resume"
    assert r.lrs() == s.lrs()


BAD = [
    ("fixed_sgd", "learning_rate", -0.1), ("adamw", "learning_rate", 0.0), ("fixed_sgd", "sgd_momentum", 1.0),
    ("adam", "beta1", 1.0), ("adamw", "weight_decay", -1e-4), ("lars", "lars_trust", 0.0), ("sam", "sam_rho", 0.0),
    ("sam_discriminative", "sam_rho", -0.05), ("discriminative", "disc_factor", 0.0), ("lion", "lion_beta2", 1.5),
    ("lookahead_adamw", "lookahead_alpha", 0.0), ("grokfast", "grokfast_alpha", 1.0), ("stlr_discriminative", "stlr_cut_frac", 1.0),
    ("dals", "dals_alpha0", 1.2), ("dals_acc", "dals_acc_tau2", 0.0), ("dals_fast", "dals_fast_momentum", 1.0), ("dals", "dals_trust", -1.0),
    ("adabound", "adabound_final_lr", 0.0), ("one_cycle", "onecycle_pct", 0.0), ("muon", "muon_scale", "bogus"),
    ("muon", "muon_momentum", 1.0), ("llrd", "llrd_xi", 0.0), ("step_decay", "step_decay_gamma", 2.0),
]


@pytest.mark.parametrize("name,key,value", BAD)
def test_bad_hyperparameter_fails_at_construction(name, key, value):
    with pytest.raises(optim.ConfigError, match=key):
        optim.build(name, tiny_model(), optim.default_config(**{key: value}))


def test_registry():
    with pytest.raises(optim.ConfigError, match="available: uniform, fixed_sgd"):
        optim.build("nope", tiny_model(), optim.default_config())
    names = list(optim.STRATEGIES)
    assert names[0] == "uniform" and tuple(names[:len(optim.CATALOGUE)]) == optim.CATALOGUE
    assert optim.PAPER_18 == ("fixed_sgd", "cosine_sgd", "sgdr", "adam", "adamw", "adabound", "lars", "discriminative",
                              "radam", "lion", "lookahead_adamw", "sam", "grokfast", "stlr_discriminative",
                              "sam_discriminative", "dals", "dals_fast", "dals_acc")
    hp = optim.hyperparameters()
    assert set(optim.FAITHFUL_FLAGS) <= set(hp) and set(optim.COMMON) <= set(hp)
    assert [optim.STRATEGIES[n].uses_loss for n in optim.CATALOGUE].count(True) == 3


def out_of_domain(key):
    inside, _ = optim.KEYS[key].domain
    for value in (-1, -1.5, 2.0, 0, "bogus", 1.5):
        try:
            if not inside(value):
                return value
        except TypeError:
            return value


def test_every_hyperparameter_outside_its_domain_gives_the_same_error_in_every_strategy_that_uses_it():
    messages = {}
    for name, cls in optim.STRATEGIES.items():
        for key in [*optim.COMMON, *cls.defaults]:  # every key has a domain: register refuses one without
            with pytest.raises(optim.ConfigError, match=f"^{key} must be ") as err:
                optim.build(name, tiny_model(), optim.default_config(**{key: out_of_domain(key)}))
            messages.setdefault(key, set()).add(str(err.value))
    assert all(len(m) == 1 for m in messages.values()), {k: m for k, m in messages.items() if len(m) > 1}
    assert {"muon_scale", "muon_ns_steps", "sgd_momentum", "beta1", "faithful", "llr_embed_lr"} <= set(messages)


# ---------------------------------------------------------------------------------------------
# the registry: family facts, bad registrations, a strategy added in its own module


def test_the_registry_answers_every_family_question():
    S = optim.STRATEGIES
    assert optim.LAYERWISE_FAMILY == tuple(n for n in S if S[n].layerwise) and "blockwise" in optim.LAYERWISE_FAMILY
    assert optim.CATALOGUE + optim.LAYERWISE_FAMILY == tuple(S)
    assert {n for n in S if not S[n].supports_mup} == {"lars", "lamb", "dals", "dals_fast", "dals_acc"}
    assert (S["fixed_sgd"].lr_family, S["adamw"].lr_family, S["grokfast_ma"].lr_family, S["dals_acc"].lr_family,
            S["llr"].lr_family, S["llr_muon"].lr_family) == ("sgd", "adam", "sgd", "dals", "adam", "muon")
    assert S["uniform"].decoupled_wd and not S["adam"].decoupled_wd and S["sam_discriminative"].slow
    assert set(optim.FAITHFUL_FLAGS) == {"dals_zero_first_lr", "stlr_double_decay", "stlr_per_epoch", "lars_ref",
                                         "grokfast_ref", "sam_adaptive", "lookahead_lazy_slow", "sgdr_t0_steps",
                                         "llr_drop_late_refits"}
    for name, cls in S.items():  # one declaration per key, defaults and domains from it
        assert cls.defaults == {k: optim.KEYS[k].default for k in cls.keys} and all(d.doc for d in cls.keys.values())


@pytest.mark.parametrize("keys, error, message", [
    (dict(zz_rate=0.1), TypeError, "@register('zz_new'): key 'zz_rate' has no domain: declare it as zz_rate=key(0.1, "),
    (dict(zz_rate=optim.key(-1.0, optim.POS, "a rate")), ValueError,
     "@register('zz_new'): key 'zz_rate' has default -1.0, which is not in (0, inf)"),
    (dict(zz_rate=optim.key(0.1, optim.POS, "a rate"), sgd_momentum=optim.key(0.5, optim.PROB, "momentum")), ValueError,
     "@register('zz_new'): key 'sgd_momentum' is declared with default 0.5 (in [0, 1)), but another declaration "
     "has 0.9"),
    (dict(learning_rate=optim.key(1.0, optim.POS, "LR")), ValueError, "@register('zz_new'): key 'learning_rate'"),
])
def test_a_key_without_a_domain_or_with_a_second_default_fails_at_registration(keys, error, message):
    with pytest.raises(error, match="^" + re.escape(message)):
        optim.register("zz_new", "extra", "a rule", "a reference", **keys)(lambda model, cfg: None)
    assert "zz_new" not in optim.STRATEGIES and "zz_rate" not in optim.KEYS  # nothing half-registered


def test_a_taken_strategy_name_fails_at_registration():
    with pytest.raises(ValueError, match=r"^@register\('uniform'\): a strategy of that name is already registered"):
        optim.register("uniform", "extra", "a rule", "a reference")(lambda model, cfg: None)
    assert optim.STRATEGIES["uniform"].rule.startswith("AdamW")


# A forker's strategy, in its own file and nothing else: momentum SGD whose gradient on each matrix is scaled by a
# clamped trust ratio, in the benchmark's LARS family (its default would be 'sgd': it reads sgd_momentum).
def doc_block(path, first_line):
    """The fenced code block of a doc that starts with first_line: the recipes of docs/hacking.md run as written."""
    blocks = re.findall(r"```\w*\n(.*?)```", open(os.path.join(ROOT, path)).read(), re.S)
    found = [b for b in blocks if b.startswith(first_line)]
    assert len(found) == 1, f"{path} has {len(found)} code blocks starting with {first_line!r}"
    return found[0]


FORKER_MODULE = doc_block("docs/hacking.md", "# optim_trust.py")  # recipe 1 of docs/hacking.md, as written there

# run in the fork: what the in-process tools see of it
FORKER_CHECKS = '''
import json
import optim
from eval import strategies as S
from model import Transformer, config_from_preset
cfg = optim.default_config(max_iters=20, warmup_iters=4, schedule="wsd", decay_frac=0.5, learning_rate=0.1)
s = optim.build("trust_sgd", Transformer(config_from_preset("llama_nano", block_size=32)), cfg)
lam, lrs = optim.schedule(cfg), []
for it in range(20):
    s.step(it)  # no gradients: only the LR moves
    lrs.append(s.lrs())
print(json.dumps(dict(lrs=lrs, lam=[0.1 * lam(t) for t in range(1, 21)], catalogue=list(optim.CATALOGUE),
                      lm=S.lm_hparams("trust_sgd"), lm_lr=S.LM_LR, paper=S.paper_hparams("trust_sgd"),
                      paper_family=S.PAPER_FAMILY)))
'''


@pytest.fixture
def fork(tmp_path):
    """A copy of this working tree (tracked and untracked files, not ignored ones): a forker's checkout, which the
    test may add files to without touching the project's own tree."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    root = tmp_path / "fork"
    for rel in filter(None, files):
        if os.path.isfile(os.path.join(ROOT, rel)):
            os.makedirs(root / os.path.dirname(rel), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, rel), root / rel)
    return root


def in_fork(fork, *args, check=True):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *args], cwd=fork, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_a_strategy_added_in_its_own_module_is_listed_validated_scheduled_resumable_swept_and_benchmarked(
        fork, text_dataset, tmp_path):
    (fork / "optim_trust.py").write_text(FORKER_MODULE)
    listed = in_fork(fork, "optim.py", "--list").stdout
    assert "\ntrust_sgd            extra     momentum SGD" in listed
    assert "trust_max = 10.0: the largest trust ratio" in in_fork(fork, "optim.py", "--list", "trust_sgd").stdout

    tiny = TINY_TRAIN + [f"--dataset={text_dataset}", "--strategy=trust_sgd"]
    bad = in_fork(fork, "train.py", *tiny, "--trust_max=-1", "--dry_run", check=False)
    assert bad.returncode != 0 and "config error: trust_max must be in (0, inf), got -1.0" in bad.stderr

    seen = json.loads(in_fork(fork, "-c", FORKER_CHECKS).stdout)
    assert [lrs["blocks.0.mlp.up"] for lrs in seen["lrs"]] == seen["lam"]  # λ(t) of schedule='wsd', exactly
    assert seen["catalogue"][-1] == "trust_sgd"  # after the project's own strategies
    assert seen["lm"] == dict(learning_rate=seen["lm_lr"]["lars"], weight_decay=0.0, grad_clip=1.0)
    assert seen["lm"]["learning_rate"] != seen["lm_lr"]["sgd"]  # its own family, not the SGD default
    assert seen["paper"] == seen["paper_family"]["lars"]

    # 8 updates in one run = 4, then a resume to 8 (schedule 'constant': λ does not depend on max_iters)
    whole, halves = str(tmp_path / "whole"), str(tmp_path / "halves")
    run = tiny + ["--schedule=constant", "--eval_interval=4", "--ckpt_every=0"]
    in_fork(fork, "train.py", *run, "--max_iters=8", f"--out_dir={whole}")
    in_fork(fork, "train.py", *run, "--max_iters=4", f"--out_dir={halves}")
    in_fork(fork, "train.py", *run, "--max_iters=8", f"--out_dir={halves}", "--init_from=resume",
            "--allow_schedule_change=True")
    assert train_losses(halves) == train_losses(whole) and len(train_losses(whole)) == 8  # exact floats
    assert load_checkpoint(halves)["strategy"]["scaled"] == load_checkpoint(whole)["strategy"]["scaled"] > 0

    sweep_out = tmp_path / "sweep"
    in_fork(fork, "eval/sweep.py", "--strategies", "trust_sgd", "--lrs", "1e-3,1e-2", "--seeds", "1", "--jobs", "2",
            "--threads", "1", "--out", str(sweep_out), "--no_plots", "--", "--model=llama_nano", "--block_size=32",
            "--batch_size=4", "--eval_tokens=256", "--dtype=float32", "--warmup_iters=1", f"--dataset={text_dataset}",
            "--max_iters=2", "--eval_interval=2")
    runs = json.load(open(sweep_out / "results.json"))["runs"]
    assert sorted(r["lr"] for r in runs) == [1e-3, 1e-2] and all(r["status"] == "finished" for r in runs)

    bench_out = tmp_path / "bench"
    in_fork(fork, "eval/strategies.py", "--regimes", "a", "--strategies", "trust_sgd", "--seeds", "0", "--epochs", "1",
            "--eval_every", "100", "--jobs", "1", "--out", str(bench_out))
    assert "| trust_sgd | extra |" in (bench_out / "strategies.md").read_text()


def test_a_strategy_module_that_fails_to_import_stops_every_tool_with_its_path_and_error(fork):
    bad = fork / "optim_zz_broken.py"
    bad.write_text("from optim_core import register\n\n\n@register('zz_broken', 'extra', 'a rule', 'a reference', "
                   "zz_rate=0.1)\ndef zz_broken(model, cfg):\n    return None\n")
    proc = in_fork(fork, "optim.py", "--list", check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and f"{bad} failed to import: TypeError: @register('zz_broken'): key 'zz_rate' has " \
                                    f"no domain" in last
