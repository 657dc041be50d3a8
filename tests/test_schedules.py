"""optim.schedule: every `schedule` at its closed form and its exact boundaries, against torch.optim.lr_scheduler
where torch has the rule, the strategies that follow it, cooldown branches, and bad input."""
import math
import re
import types

import pytest
import torch

import optim
import train
from model import Transformer, config_from_preset
from test_optim import torch_curve  # the LR a torch scheduler gives each update

pytestmark = pytest.mark.usefixtures("one_thread")
LR = torch.optim.lr_scheduler
T, W, F = 40, 5, 0.1
SHAPES = {"linear": lambda p: 1 - p, "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p)),
          "1-sqrt": lambda p: 1 - math.sqrt(p), "power": lambda p: (1 - p) ** 2.0}


def lam(**kw):
    return optim.schedule(optim.default_config(**{**dict(max_iters=T, warmup_iters=W, min_lr_ratio=F), **kw}))


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return Transformer(config_from_preset("llama_nano", block_size=32))


def applied_lrs(name, steps, **cfg):
    """The LRs (group -> LR) of updates 1..steps of a strategy, without gradients (the optimizer skips)."""
    s = optim.build(name, tiny_model(), optim.default_config(**cfg))
    out = []
    for it in range(steps):
        s.step(it)
        out.append(s.lrs())
    return out


# --- closed forms and boundaries ------------------------------------------------------------------

def closed_form(kind, t, shape="1-sqrt", D=8):
    if t < W:
        return t / W
    if kind == "cosine":
        return F + (1 - F) * 0.5 * (1 + math.cos(math.pi * (t - W) / (T - W)))
    if kind == "linear":
        return F + (1 - F) * (1 - (t - W) / (T - W))
    if kind == "constant":
        return 1.0
    if kind == "inv_sqrt":
        return max(F, math.sqrt(W / t))
    return 1.0 if t <= T - D else F + (1 - F) * SHAPES[shape]((t - (T - D)) / D)


@pytest.mark.parametrize("kind", optim.SCHEDULES)
def test_every_schedule_is_its_closed_form_at_every_step_and_warms_up_from_zero(kind):
    f = lam(schedule=kind, decay_frac=0.2)
    assert [f(t) for t in range(T + 1)] == pytest.approx([closed_form(kind, t) for t in range(T + 1)], rel=1e-12, abs=1e-15)
    assert f(0) == 0.0 and f(1) == 1 / W                  # λ(0) = 0: the first update runs at 1/W
    assert f(W - 1) == (W - 1) / W and f(W) == 1.0        # the last warmup step, then the peak
    if kind in ("cosine", "linear", "wsd"):
        assert f(T) == F                                   # exactly min_lr_ratio at t = max_iters


def test_cosine_is_warmup_cosine_bit_for_bit_and_the_default():
    assert optim.COMMON["schedule"] == "cosine"
    f = lam()
    assert all(f(t) == optim.warmup_cosine(t, T, W, F) for t in range(T + 2))
    # what uniform ran before `schedule` existed: a LambdaLR over warmup_cosine
    old = torch_curve(lambda o: LR.LambdaLR(o, lambda s: optim.warmup_cosine(s + 1, T, W, F)), T, lr=3e-3)
    new = [lrs["embed"] for lrs in applied_lrs("uniform", T, learning_rate=3e-3, max_iters=T, warmup_iters=W, min_lr_ratio=F)]
    assert new == old


@pytest.mark.parametrize("shape", optim.DECAY_SHAPES)
def test_wsd_boundaries_stable_then_decay_to_min_lr_ratio(shape):
    D = round(0.2 * T)
    f = lam(schedule="wsd", decay_frac=0.2, decay_shape=shape)
    assert [f(t) for t in range(W, T - D + 1)] == [1.0] * (T - D - W + 1)   # stable up to and with the decay's start
    assert f(T - D + 1) == pytest.approx(F + (1 - F) * SHAPES[shape](1 / D))  # the first decay step
    assert f(T - 1) == pytest.approx(F + (1 - F) * SHAPES[shape](1 - 1 / D))  # the second to last
    assert f(T) == F                                                          # the last decay step
    assert [f(t) for t in range(T + 1)] == pytest.approx([closed_form("wsd", t, shape, D) for t in range(T + 1)], rel=1e-12)
    assert all(f(t) > f(t + 1) for t in range(T - D, T))


def test_wsd_edge_cases_power_and_inv_sqrt_floor():
    assert [lam(schedule="wsd", decay_frac=0.0)(t) for t in range(W, T + 1)] == [1.0] * (T - W + 1)  # no decay: stable
    full = lam(schedule="wsd", decay_frac=(T - W) / T, decay_shape="linear")  # decays right after the warmup
    assert [full(t) for t in range(T + 1)] == pytest.approx([lam(schedule="linear")(t) for t in range(T + 1)], rel=1e-12)
    p3 = lam(schedule="wsd", decay_frac=0.5, decay_shape="power", decay_power=3.0)
    assert p3(30) == pytest.approx(F + (1 - F) * (1 - 10 / 20) ** 3)
    pure = lam(schedule="inv_sqrt", min_lr_ratio=0.0)
    assert pure(4 * W) == pytest.approx(0.5) and pure(100 * W) == pytest.approx(0.1)  # sqrt(W/t), no floor at 0
    assert lam(schedule="inv_sqrt", min_lr_ratio=0.3)(100 * W) == 0.3
    assert lam(schedule="inv_sqrt", warmup_iters=0)(4) == 0.5  # no warmup: sqrt(1/t)


# --- against torch.optim.lr_scheduler, through the strategies -------------------------------------------

def warmup(o):
    return LR.LinearLR(o, start_factor=1 / W, end_factor=1.0, total_iters=W - 1)  # (s + 1)/W for 0-based s


D = 8
TORCH = {
    "cosine": lambda o: LR.SequentialLR(o, [warmup(o), LR.CosineAnnealingLR(o, T_max=T - W, eta_min=F)], milestones=[W - 1]),
    "linear": lambda o: LR.SequentialLR(o, [warmup(o), LR.LinearLR(o, 1.0, F, total_iters=T - W)], milestones=[W - 1]),
    "constant": warmup,
    "wsd": lambda o: LR.SequentialLR(o, [warmup(o), LR.ConstantLR(o, factor=1.0, total_iters=0),
                                         LR.LinearLR(o, 1.0, F, total_iters=D)], milestones=[W - 1, T - D - 1]),
    "wsd_cosine": lambda o: LR.SequentialLR(o, [warmup(o), LR.ConstantLR(o, factor=1.0, total_iters=0),
                                                LR.CosineAnnealingLR(o, T_max=D, eta_min=F)], milestones=[W - 1, T - D - 1]),
}


@pytest.mark.parametrize("case", TORCH)
@pytest.mark.parametrize("name", ["uniform", "warmup_cosine", "muon"])
def test_schedules_equal_torch_lr_schedulers(case, name):
    kind, shape = ("wsd", "cosine") if case == "wsd_cosine" else (case, "linear")
    ours = [lrs["head"] for lrs in applied_lrs(name, T, learning_rate=1.0, max_iters=T, warmup_iters=W, min_lr_ratio=F,
                                                schedule=kind, decay_frac=D / T, decay_shape=shape)]
    assert ours == pytest.approx(torch_curve(TORCH[case], T, 1.0), rel=1e-9, abs=1e-12)


def test_the_strategies_that_honour_schedule_and_those_that_keep_their_own():
    """The registry says which strategies follow `schedule` (uses_schedule); the others refuse a schedule they would ignore."""
    honour = {n for n, cls in optim.STRATEGIES.items() if cls.uses_schedule}
    assert {"uniform", "muon", "llr", "llr_muon", "blockwise", "tempbalance", "alphadecay"} <= honour
    wsd = dict(max_iters=T, warmup_iters=W, schedule="wsd", decay_frac=0.5, llr_min_evals=8, llr_ratio=0.0, llr_ramp=0,
               tb_every=10**6, ad_every=10**6)  # the HT-SR family: one fit at t = 1, then fixed multiples of λ(t)
    f = optim.schedule(optim.default_config(**wsd))
    for name in sorted(honour):  # every group at a constant multiple of λ(t)
        curve = applied_lrs(name, T, **wsd)
        for g in curve[0]:
            c = curve[W - 1][g] / f(W)
            assert [lrs[g] for lrs in curve] == pytest.approx([c * f(t) for t in range(1, T + 1)], rel=1e-12), (name, g)
    for name in sorted(set(optim.STRATEGIES) - honour):  # cosine_sgd, sgdr, one_cycle, dals, schedule_free, ...
        with pytest.raises(optim.ConfigError, match=f"strategy '{name}' keeps a schedule of its own, so schedule='wsd' would be ignored"):
            optim.build(name, tiny_model(), optim.default_config(max_iters=12, schedule="wsd"))


def test_llr_refits_and_ramps_compose_with_the_schedule(monkeypatch):
    monkeypatch.setattr(optim.LLR, "fit", lambda self: {n: 2.0 + (i % 3) for i, n in enumerate(self.names) if self.kinds[n] != "norm"})
    cfg = optim.default_config(max_iters=100, warmup_iters=10, llr_every=10, llr_ramp=4, llr_ratio=0.3, schedule="wsd",
                               decay_frac=0.3, decay_shape="cosine", learning_rate=1e-3)
    f = optim.schedule(cfg)
    s = optim.build("llr", tiny_model(), cfg)
    lrs = []
    for it in range(100):
        s.step(it)
        lrs.append(s.lrs()["blocks.0.mlp.gate"])
    peak = s.peaks["blocks.0.mlp.gate"]
    assert peak == 5.0
    assert lrs[30 - 1 + 4] == pytest.approx(1e-3 * peak * f(34))  # the last ramp (refit at 30) ends on λ_wsd(34)
    assert lrs[35:] == pytest.approx([1e-3 * peak * f(t) for t in range(36, 101)], rel=1e-12)  # frozen peaks follow WSD
    assert lrs[-1] == pytest.approx(1e-3 * peak * 0.1)


# --- cooldown branches ---------------------------------------------------------------------------------

@pytest.mark.parametrize("parent_kind, b", [("wsd", 24), ("cosine", 20), ("inv_sqrt", 30), ("cosine", 3)])
def test_a_branch_is_its_parent_up_to_the_branch_point_then_a_cooldown_to_min_lr_ratio(parent_kind, b):
    parent = optim.default_config(max_iters=T, warmup_iters=W, schedule=parent_kind, decay_frac=0.0)
    p = optim.schedule(parent)
    Db = 10
    cfg = optim.default_config(max_iters=b + Db, min_lr_ratio=0.0, decay_shape="1-sqrt", warmup_iters=W)
    cfg["branch"] = dict(at=b, iters=Db, parent={k: parent[k] for k in optim.SCHEDULE_KEYS})
    f = optim.schedule(cfg)
    assert [f(t) for t in range(b + 1)] == [p(t) for t in range(b + 1)]
    assert [f(t) for t in range(b + 1, b + Db + 1)] == pytest.approx([p(b) * (1 - math.sqrt(k / Db)) for k in range(1, Db + 1)])
    assert f(b + Db) == 0.0
    nested = dict(optim.default_config(max_iters=b + Db + 4, min_lr_ratio=0.0, warmup_iters=W))  # a branch of the branch
    nested["branch"] = dict(at=b + 6, iters=4, parent={**{k: cfg[k] for k in optim.SCHEDULE_KEYS}, "branch": cfg["branch"]})
    g = optim.schedule(nested)
    assert [g(t) for t in range(b + 7)] == [f(t) for t in range(b + 7)] and g(b + 10) == 0.0


# --- bad input -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (dict(decay_frac=1.5), "decay_frac must be in [0, 1], got 1.5"),
    (dict(decay_frac=-0.1), "decay_frac must be in [0, 1], got -0.1"),
    (dict(warmup_iters=50, max_iters=40), "the warmup (50 updates) is longer than the run (max_iters=40): lower warmup_iters"),
    (dict(schedule="wsd", decay_frac=0.95, max_iters=1000), "schedule='wsd': the warmup (100 updates) and the decay"),
    (dict(schedule="step"), "schedule must be one of cosine, wsd, linear, inv_sqrt, constant, got 'step'"),
    (dict(decay_shape="sqrt"), "decay_shape must be one of linear, cosine, 1-sqrt, power, got 'sqrt'"),
    (dict(decay_power=0.0), "decay_power must be in (0, inf), got 0.0"),
])
def test_bad_schedule_input_is_a_config_error_before_training(overrides, message):
    with pytest.raises(optim.ConfigError, match="^" + re.escape(message)):
        optim.build("uniform", tiny_model(), optim.default_config(**overrides))
    args = [f"--{k}={v}" for k, v in overrides.items()] + ["--strategy=llr", "--model=llama_nano"]
    c = train.parse_config(args)  # the same message from train.py, before anything runs
    with pytest.raises(SystemExit, match=re.escape(f"config error: {message}")):
        train.dry_run_report(types.SimpleNamespace(**c), c)
