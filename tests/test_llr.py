"""The layerwise family of optim.py (LLR): the α → LR map, refit/ramp/freeze schedule, embedding rules, reduction to uniform, resume,
DDP agreement, degenerate matrices, config errors, baselines."""
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

import groups
import optim
from conftest import ROOT
from model import Transformer, config_from_preset
from test_train import TINY, run_train, text_dataset  # noqa: F401  (fixture)
from optim import warmup_cosine


def tiny_model(seed=0, preset="llama_nano"):
    torch.manual_seed(seed)
    return Transformer(config_from_preset(preset))


def cfg(**kw):
    base = dict(max_iters=100, learning_rate=1e-3, warmup_iters=10, llr_every=10, llr_ramp=3, llr_ratio=0.3,
                llr_min_evals=8, grad_clip=0.0)
    return optim.default_config(**{**base, **kw})


def fake_alphas(monkeypatch, values):
    """Replace the spectral fit with fixed α per group (a function of the refit count)."""
    calls = []

    def fit(self):
        calls.append(1)
        return {n: values(n, len(calls)) for n in self.names if self.kinds[n] != "norm"}
    monkeypatch.setattr(optim.LLR, "fit", fit)
    return calls


def train_steps(strategy, model, steps, start=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    losses = []
    for it in range(start, start + steps):
        x = torch.randint(0, 256, (4, 16), generator=g)
        _, loss = model(x, torch.roll(x, -1, 1))
        loss.backward()
        strategy.step(it)
        strategy.zero_grad()
        losses.append(loss.item())
    return losses


# --- the map -------------------------------------------------------------------------------------

def test_linear_map_spans_s1_to_s2_over_the_alpha_range():
    peaks = optim.alpha_to_peak({"a": 2.0, "b": 3.0, "c": 6.0}, 1.0, 5.0)
    assert peaks == pytest.approx({"a": 1.0, "b": 2.0, "c": 5.0})
    assert optim.alpha_to_peak({"a": 4.0, "b": 4.0}, 1.0, 5.0) == {"a": 1.0, "b": 1.0}  # documented: s1, not s2


def test_alternative_maps_follow_their_formulas():
    a = {"x": 2.0, "y": 4.0, "z": 8.0}
    sq = optim.alpha_to_peak(a, 1, 5, "sqrt")
    assert sq["x"] == pytest.approx(3 * 2 ** 0.5 / (2 ** 0.5 + 2 + 8 ** 0.5))
    lg = optim.alpha_to_peak(a, 1, 5, "log2")
    assert lg["z"] == pytest.approx(3 * 3 / (1 + 2 + 3))
    sg = optim.alpha_to_peak(a, 1, 5, "sigmoid")
    z = (8 - 14 / 3) / torch.tensor([2.0, 4.0, 8.0]).std().item()
    assert sg["z"] == pytest.approx(2 / (1 + torch.exp(torch.tensor(-4 * z)).item()))
    assert sg["x"] < sg["y"] < sg["z"] < 2


# --- schedule --------------------------------------------------------------------------------------

def test_refits_at_1_and_every_k_then_frozen_peaks_follow_cosine(monkeypatch):
    calls = fake_alphas(monkeypatch, lambda n, k: 2.0 + (hash(n) % 7) / 7 + 0.01 * k)
    model = tiny_model()
    s = optim.build("llr", model, cfg())
    refit_iters = []
    for it in range(100):
        before = len(calls)
        s.step(it)
        if len(calls) > before:
            refit_iters.append(it + 1)
    assert refit_iters == [1, 10, 20, 30]  # t = 1 and every 10 while t <= 0.3 * 100
    lam = warmup_cosine(100, 100, 10, 0.1)
    for g in s.optimizer.param_groups:  # frozen: the last refit's peaks, times the schedule, to the end
        assert g["lr"] == pytest.approx(1e-3 * s.peaks[g["name"]] * lam)
    matrices = [g for g in s.optimizer.param_groups if g["kind"] not in ("norm", "embed", "head")]
    assert len({round(s.peaks[g["name"]], 9) for g in matrices}) > 1  # never back to uniform


def test_soft_switch_ramps_linearly_and_hard_switch_jumps(monkeypatch):
    fake_alphas(monkeypatch, lambda n, k: 2.0 if "attn" in n else 4.0)
    s = optim.build("llr", tiny_model(), cfg(llr_ramp=4))
    lrs = []
    for it in range(12):
        s.step(it)
        lrs.append(s.lrs()["blocks.0.mlp.up"])
    peak = 5.0 * 1e-3  # mlp has the largest α: top of the range
    target = peak * warmup_cosine(1 + 4, 100, 10, 0.1)
    assert lrs[:5] == pytest.approx([target * k / 5 for k in range(1, 6)])  # from 0 at t = 0 to target at t = 5
    assert lrs[5] == pytest.approx(peak * warmup_cosine(6, 100, 10, 0.1))  # then the schedule again
    hard = optim.build("llr", tiny_model(), cfg(llr_ramp=0))
    hard.step(0)
    assert hard.lrs()["blocks.0.mlp.up"] == pytest.approx(peak * warmup_cosine(1, 100, 10, 0.1))
    assert hard.lrs()["blocks.0.attn.q"] == pytest.approx(1e-3 * warmup_cosine(1, 100, 10, 0.1))


@pytest.mark.parametrize("rule, embed_peak", [("max", 5.0), ("base", 1.0), ("fixed", 2.5), ("data", 1.0)])
def test_embedding_and_head_rules(monkeypatch, rule, embed_peak):
    # embedding gets the smallest α of all: only 'data' lets it through as is
    fake_alphas(monkeypatch, lambda n, k: 1.5 if n in ("embed", "head") else (2.0 if "attn" in n else 4.0))
    extra = dict(llr_embed_lr=2.5e-3) if rule == "fixed" else dict(llr_embed=rule)
    s = optim.build("llr", tiny_model(), cfg(llr_ramp=0, **extra))
    s.step(0)
    assert s.peaks["embed"] == pytest.approx(embed_peak) and s.peaks["head"] == pytest.approx(embed_peak)
    assert s.peaks["rest"] == 1.0
    assert s.peaks["blocks.1.mlp.down"] == pytest.approx(5.0)


def test_real_fit_on_gpt_counts_tied_matrix_once_as_embed():
    s = optim.build("llr", tiny_model(preset="gpt_micro"), cfg(llr_ramp=0))
    s.step(0)
    assert "embed" in s.alphas and "head" not in s.alphas and s.peaks["embed"] == 5.0
    assert all(1 < a < 20 for a in s.alphas.values())


def test_with_s1_equal_s2_equal_1_llr_is_the_uniform_baseline():
    # one refit at t = 1 whose ramp (from 0) lies on the warmup line: same LRs, same weights
    c = cfg(llr_s1=1.0, llr_s2=1.0, llr_ratio=0.0, llr_ramp=3, fused=False)
    m1, m2 = tiny_model(), tiny_model()
    l1 = train_steps(optim.build("uniform", m1, c), m1, 30)
    l2 = train_steps(optim.build("llr", m2, c), m2, 30)
    assert l1 == pytest.approx(l2, rel=1e-5)
    for (n, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=n)


def test_weight_decay_coupling_is_switchable(monkeypatch):
    fake_alphas(monkeypatch, lambda n, k: 2.0 if "attn" in n else 4.0)
    for follows in (True, False):
        s = optim.build("llr", tiny_model(), cfg(llr_ramp=0, wd_follows_lr=follows, weight_decay=0.1))
        s.step(0)   # the refit at t = 1
        s.step(20)
        g = {g["name"]: g for g in s.optimizer.param_groups}["blocks.0.mlp.up"]
        decay_per_step = g["lr"] * g["weight_decay"]
        lam = warmup_cosine(21, 100, 10, 0.1)
        assert decay_per_step == pytest.approx((5.0 if follows else 1.0) * 1e-3 * lam * 0.1)


def test_degenerate_matrix_keeps_its_previous_lr_and_warns_once(capsys):
    model = tiny_model()
    s = optim.build("llr", model, cfg(llr_ramp=0))
    train_steps(s, model, 9)
    before = s.peaks["blocks.1.attn.v"]
    for start in (9, 19):  # zeroed right before the refits at t = 10 and t = 20
        with torch.no_grad():
            model.blocks[1].attn.v.weight.zero_()
        train_steps(s, model, 1, start=start)
        assert s.peaks["blocks.1.attn.v"] == before and "blocks.1.attn.v" not in s.alphas
        assert len(s.alphas) == 2 + 2 * 7 - 1  # every other matrix was refitted
        train_steps(s, model, 9, start=start + 1)
    assert capsys.readouterr().out.count("blocks.1.attn.v not refitted") == 1


def test_state_dict_round_trip_continues_identically():
    c = cfg(llr_ramp=5)
    ref_model = tiny_model()
    ref = optim.build("llr", ref_model, c)
    ref_losses = train_steps(ref, ref_model, 26)
    model = tiny_model()
    s = optim.build("llr", model, c)
    first = train_steps(s, model, 12)  # stop inside the ramp of the refit at t = 10
    state, weights = s.state_dict(), {k: v.clone() for k, v in model.state_dict().items()}
    model2 = tiny_model(seed=1)
    model2.load_state_dict(weights)
    s2 = optim.build("llr", model2, c)
    s2.load_state_dict(state)
    g = torch.Generator().manual_seed(0)
    for _ in range(12):
        torch.randint(0, 256, (4, 16), generator=g)  # skip the batches already seen
    rest = []
    for it in range(12, 26):
        x = torch.randint(0, 256, (4, 16), generator=g)
        _, loss = model2(x, torch.roll(x, -1, 1))
        loss.backward()
        s2.step(it)
        s2.zero_grad()
        rest.append(loss.item())
    assert first + rest == ref_losses


@pytest.mark.parametrize("key, value, message", [
    ("llr_s1", 6.0, "llr_s1 must be in (0, llr_s2]"),
    ("llr_every", 0, "llr_every must be an integer >= 1"),
    ("llr_ratio", 1.5, "llr_ratio must be in [0, 1]"),
    ("llr_map", "cubic", "llr_map must be one of linear, sqrt, log2, sigmoid, got 'cubic'"),
    ("llr_method", "mle", "llr_method must be one of median, ks, fix-finger, got 'mle'"),
    ("llr_metric", "alpha_hat", "llr_metric must be one of alpha, D, "),
    ("llr_embed", "top", "llr_embed must be one of max, fixed, data, base, got 'top'"),
    ("muon_scale", "bogus", "muon_scale must be one of original, match_rms_adamw, got 'bogus'"),
    ("muon_ns_steps", 0, "muon_ns_steps must be an integer >= 1, got 0"),
    ("beta2", 1.0, "beta2 must be in [0, 1), got 1.0"),
])
def test_bad_llr_config_fails_before_training(key, value, message):
    with pytest.raises(optim.ConfigError, match=re.escape(message)):
        optim.build("llr", tiny_model(), cfg(**{key: value}))


def test_muon_refuses_a_non_matrix_group():
    import rules
    named = groups.param_groups(tiny_model())
    named[-1]["use_muon"] = True  # the rest group: norm gains
    with pytest.raises(ValueError, match="Muon needs matrices"):
        rules.MuonAdamW(named)


def test_baselines_multipliers():
    up = optim.build("uniform_upbound", tiny_model(), cfg(llr_s2=5.0, warmup_iters=0))
    up.step(0)
    lam = warmup_cosine(1, 100, 0, 0.1)
    assert all(lr == pytest.approx(5e-3 * lam) for lr in up.lrs().values())
    bw = optim.build("blockwise", tiny_model(), cfg(warmup_iters=0))
    bw.step(0)
    lrs = bw.lrs()
    assert (lrs["blocks.0.attn.q"], lrs["blocks.0.attn.v"], lrs["blocks.0.mlp.up"], lrs["embed"], lrs["rest"]) == \
        pytest.approx((8e-3 * lam, 4e-3 * lam, 6e-3 * lam, 1e-2 * lam, 1e-3 * lam))


def test_llr_muon_puts_hidden_matrices_on_muon_with_llr_multipliers(monkeypatch):
    fake_alphas(monkeypatch, lambda n, k: 2.0 if "attn" in n else 4.0)
    model = tiny_model()
    s = optim.build("llr_muon", model, cfg(llr_ramp=0, muon_lr=0.02, warmup_iters=0))
    x = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    losses = []
    for it in range(15):  # one batch, memorised
        _, loss = model(x, torch.roll(x, -1, 1))
        loss.backward()
        s.step(it)
        s.zero_grad()
        losses.append(loss.item())
    groups = {g["name"]: g for g in s.optimizer.param_groups}
    assert groups["blocks.0.mlp.up"]["use_muon"] and not groups["embed"]["use_muon"] and not groups["rest"]["use_muon"]
    lam = warmup_cosine(15, 100, 0, 0.1)
    assert groups["blocks.0.mlp.up"]["lr"] == pytest.approx(0.02 * 5.0 * lam)  # muon_lr × top multiplier
    assert groups["blocks.0.attn.q"]["lr"] == pytest.approx(0.02 * 1.0 * lam)
    assert groups["embed"]["lr"] == pytest.approx(1e-3 * 5.0 * lam)          # AdamW side at learning_rate × s2
    assert losses[-1] < losses[0] - 1.0


# --- end to end through train.py ---------------------------------------------------------------------

def refit_records(out):
    return [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if '"alpha"' in l]


def test_ddp_ranks_apply_the_same_lrs_as_one_process(text_dataset, tmp_path):  # noqa: F811
    args = TINY + [f"--dataset={text_dataset}", "--max_iters=12", "--eval_interval=100", "--grad_accum=2",
                   "--strategy=llr", "--llr_every=5", "--llr_ratio=1.0", "--llr_ramp=2", "--llr_min_evals=8"]
    single, ddp = str(tmp_path / "single"), str(tmp_path / "ddp")
    run_train(args + [f"--out_dir={single}"])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
                           *args, f"--out_dir={ddp}"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = refit_records(single), refit_records(ddp)
    assert [r["refit_iter"] for r in a] == [0, 4, 9] == [r["refit_iter"] for r in b]
    for ra, rb in zip(a, b):
        assert ra["lrs"].keys() == rb["lrs"].keys() and ra["alpha"].keys() == rb["alpha"].keys()
        assert len(ra["alpha"]) == 2 + 2 * 7 and "rest" not in ra["alpha"]  # every matrix has an alpha, the rest none
        for k in ra["lrs"]:
            assert ra["lrs"][k] == pytest.approx(rb["lrs"][k], rel=1e-6)
        for k in ra["alpha"]:
            assert ra["alpha"][k] == pytest.approx(rb["alpha"][k], rel=1e-6)


# --- reference fidelity: late refits, llr_ratio = 0, mean-preserving normalisation ---------------------------

def step_without_grads(strategy, steps):
    """Run the LR schedule only: no gradients, so AdamW leaves the weights alone. Returns each update's LRs."""
    lrs = []
    for it in range(steps):
        strategy.step(it)
        lrs.append(dict(strategy.lrs()))
    return lrs


def swapping_alphas(monkeypatch, swap_at):
    """attn light-tailed and mlp heavy-tailed until refit number swap_at, then the other way round."""
    return fake_alphas(monkeypatch, lambda n, k: (4.0 if "attn" in n else 2.0) if k >= swap_at else (2.0 if "attn" in n else 4.0))


@pytest.mark.parametrize("drop", [False, True])
def test_a_late_refit_stays_by_default_and_is_dropped_at_the_phase_end_with_the_reference_flag(monkeypatch, drop):
    calls = swapping_alphas(monkeypatch, swap_at=4)  # the 4th refit, at t = 30, is late: 30 + 3 > 0.3 * 100
    s = optim.build("llr", tiny_model(), cfg(llr_drop_late_refits=drop))
    lrs = step_without_grads(s, 40)
    assert len(calls) == 4  # t = 1, 10, 20, 30 either way
    up, q = "blocks.0.mlp.up", "blocks.0.attn.q"
    target = 1e-3 * 1.0 * warmup_cosine(33, 100, 10, 0.1)  # the late refit moves mlp to s1 = 1 over its ramp
    assert lrs[29][up] == pytest.approx(lrs[28][up] + (target - lrs[28][up]) / 4)  # t = 30: on that ramp either way
    t = 31 if drop else 34  # dropped: the peaks of the refit at t = 20 are back at once; kept: after the ramp to t = 33
    lam = warmup_cosine(t - drop, 100, 10, 0.1)  # dropped: λ lags by the 1 update (30) the dropped ramp ran, as released
    expect_up, expect_q = (5.0, 1.0) if drop else (1.0, 5.0)
    assert lrs[t - 1][up] == pytest.approx(1e-3 * expect_up * lam) and lrs[t - 1][q] == pytest.approx(1e-3 * expect_q * lam)
    assert drop or lrs[30][up] < lrs[29][up]  # kept: still on the ramp after the phase end
    assert (s.peaks[up], s.peaks[q]) == (expect_up, expect_q)
    assert s.late == ([30] if drop else [])


def test_faithful_turns_on_dropping_late_refits(monkeypatch):
    swapping_alphas(monkeypatch, swap_at=4)
    s = optim.build("llr", tiny_model(), cfg(faithful=True))
    step_without_grads(s, 31)
    assert s.peaks["blocks.0.mlp.up"] == 5.0 and "llr_drop_late_refits" in optim.FAITHFUL_FLAGS


@pytest.mark.parametrize("config, refits, late", [
    ("llama_60m_llr", [1] + list(range(100, 601, 100)), [600]),      # phase end 0.2 * 3200 = 640 < 600 + 50
    ("llama_135m_llr", [1] + list(range(100, 1001, 100)), [1000]),   # 1040 < 1050
    ("default", [1, 25, 50, 75, 100], [100]),                        # 100 < 100 + 10: the embedded default too
    ("tiny_400", [1, 20, 40, 60, 80], [80]),                         # 80 < 80 + 10: the previous default
])
def test_the_paper_configs_have_a_late_last_refit(monkeypatch, config, refits, late):
    import train
    c = train.parse_config([os.path.join(ROOT, "configs", f"{config}.py")])
    calls = fake_alphas(monkeypatch, lambda n, k: 2.0 + (hash(n) % 7) / 7 + 0.01 * k)
    strategy_cfg = optim.default_config(**{**{k: c[k] for k in optim.hyperparameters()}, "llr_drop_late_refits": True})
    s = optim.build("llr", tiny_model(), strategy_cfg)
    done = []
    for it in range(int(c["llr_ratio"] * c["max_iters"]) + 2):
        before = len(calls)
        s.step(it)
        done += [it + 1] if len(calls) > before else []
    assert done == refits and s.late == late and s.kept is None  # restored right after the phase end


def test_the_dropped_refit_state_survives_a_checkpoint(monkeypatch):
    swapping_alphas(monkeypatch, swap_at=4)
    c = cfg(llr_drop_late_refits=True)
    ref = optim.build("llr", tiny_model(), c)
    ref_lrs = step_without_grads(ref, 40)
    swapping_alphas(monkeypatch, swap_at=4)  # a fresh refit count
    s = optim.build("llr", tiny_model(), c)
    step_without_grads(s, 30)  # inside the late ramp
    s2 = optim.build("llr", tiny_model(), c)
    s2.load_state_dict(s.state_dict())
    rest = []
    for it in range(30, 40):
        s2.step(it)
        rest.append(dict(s2.lrs()))
    assert rest == ref_lrs[30:]


@pytest.mark.parametrize("drop", [False, True])
def test_llr_ratio_0_refits_once_by_default_and_stays_uniform_with_the_reference_flag(monkeypatch, drop):
    calls = fake_alphas(monkeypatch, lambda n, k: 2.0 if "attn" in n else 4.0)
    c = cfg(llr_ratio=0.0, llr_drop_late_refits=drop)
    lrs = step_without_grads(optim.build("llr", tiny_model(), c), 20)
    assert len(calls) == (0 if drop else 1)
    uniform = [dict.fromkeys(l, 1e-3 * warmup_cosine(t + 1, 100, 10, 0.1)) for t, l in enumerate(lrs)]
    if drop:
        assert lrs == [pytest.approx(u) for u in uniform]
    else:
        assert lrs[-1]["blocks.0.mlp.up"] == pytest.approx(5 * uniform[-1]["blocks.0.mlp.up"])


def test_llr_normalize_holds_the_parameter_weighted_mean_multiplier_at_1(monkeypatch):
    fake_alphas(monkeypatch, lambda n, k: 1.5 + (hash(n) % 5) / 2 + 0.1 * k)
    plain = optim.build("llr", tiny_model(), cfg(llr_ramp=0))
    norm = optim.build("llr", tiny_model(), cfg(llr_ramp=0, llr_normalize=True))
    sizes = {g["name"]: sum(p.numel() for p in g["params"]) for g in norm.optimizer.param_groups}
    matrices = [n for n in norm.names if norm.kinds[n] != "norm"]
    for start, steps in ((0, 1), (1, 25)):  # after the first refit, and after the refits at t = 10 and 20
        for it in range(start, start + steps):
            norm.step(it)
            plain.step(it)
        mean = sum(sizes[n] * norm.peaks[n] for n in matrices) / sum(sizes[n] for n in matrices)
        assert mean == pytest.approx(1.0, rel=1e-12)
        assert norm.peaks["rest"] == 1.0
        scale = norm.peaks["embed"] / plain.peaks["embed"]  # the same shape of peaks, one factor below
        assert all(norm.peaks[n] == pytest.approx(scale * plain.peaks[n]) for n in matrices) and scale < 1
    lam = warmup_cosine(26, 100, 10, 0.1)
    assert norm.lrs()["blocks.0.mlp.up"] == pytest.approx(1e-3 * norm.peaks["blocks.0.mlp.up"] * lam)


# --- the released code's schedule, transcribed (llr_drop_late_refits) ------------------------------------------

def released_multipliers(T, W, f, every, ramp, ratio, peaks_of):
    """Per-update {group: LR / learning_rate} of the LLR reference code's loop, transcribed from its semantics:
    a LambdaLR on its cyclical cosine (period T) with each group's base LR, and at each refit (t = 1 and every
    `every` while t <= P = ratio·T) a linear LambdaLR that runs instead of it from the last LR to peak·λ(ramp end);
    the first linear scheduler has `ramp` steps, the others ramp + 1. While t <= P, the update where
    t % every > min(ramp, every) after a refit makes the cosine scheduler again with the new peaks at epoch t;
    after P the linear scheduler is dropped and the cosine scheduler steps on from wherever it stopped."""
    P = T * ratio

    def lam(e):
        c = e % T
        if c < W:
            return 1e-7 if e != c and c < 2 else c / max(1, W)
        progress = (c - W) / max(1, T - W)
        return f + (1 - f) * 0.5 * (1.0 + math.cos(math.pi * progress))

    lr, out, refits = None, [], 0
    linear, newest, performed = None, None, False
    for t in range(1, T + 1):
        if lr is None:  # the scheduler made before training: base LR η for every group, epoch 0 (λ(0) = 0)
            names = list(peaks_of(1))
            base, epoch, lr = dict.fromkeys(names, 1.0), 0, dict.fromkeys(names, 0.0)
        if t <= P:
            if t == 1 or t % every == 0:
                refits += 1
                newest, performed = peaks_of(refits), True
                steps = ramp if t == 1 else ramp + 1
                target = {n: p * lam(t + steps - 1) for n, p in newest.items() if n != "rest"}
                target["rest"] = min(target.values())  # the untuned group ramps to the smallest target
                linear = dict(before=dict(lr), target=target, start=t, epoch=t, steps=steps)
            if performed and t % every > min(ramp, every):
                linear, base, epoch, performed = None, newest, t - 1, False
        else:
            linear = None
        if linear is not None:
            linear["epoch"] += 1
            frac = (linear["epoch"] - linear["start"]) / linear["steps"]
            lr = {n: b + (linear["target"][n] - b) * frac for n, b in linear["before"].items()}
        else:
            epoch += 1
            lr = {n: base[n] * lam(epoch) for n in base}
        out.append(lr)
    return out


def exact_peaks(monkeypatch, model):
    """Fake α of 2..6 over the block matrices at every refit (both ends present), so the linear map over [1, 5]
    gives peak α − 1 exactly; embedding and head at the top (5), the rest group 1. Returns peaks_of(refit count)."""
    s = optim.build("llr", model, cfg())
    blocks = [n for n in s.names if s.kinds[n] not in ("norm", "embed", "head")]
    alpha = lambda n, k: 2.0 + (blocks.index(n) + k) % 5 if n in blocks else 3.0
    fake_alphas(monkeypatch, alpha)
    return lambda k: {n: alpha(n, k) - 1 if n in blocks else 1.0 if n == "rest" else 5.0 for n in s.names}


def schedule_only(strategy, steps):
    strategy.optimizer_step = lambda: None  # the LRs only
    return [dict(l) for l in step_without_grads(strategy, steps)]


def released_case(monkeypatch, **keys):
    model = tiny_model()
    peaks_of = exact_peaks(monkeypatch, model)
    c = optim.default_config(**{**dict(cfg()), **keys, "llr_drop_late_refits": True})
    s = optim.build("llr", model, c)
    T, W = c["max_iters"], optim.warmup_iters_of(c)
    want = released_multipliers(T, W, c["min_lr_ratio"], c["llr_every"], c["llr_ramp"], c["llr_ratio"], peaks_of)
    got = schedule_only(s, T)
    eta = c["learning_rate"]
    for t, (g, w) in enumerate(zip(got, want), 1):
        assert g == {n: eta * m for n, m in w.items()}, f"update {t}"
    return s, got, want, c


@pytest.mark.parametrize("size", ["60m", "135m", "350m", "1b"])
def test_faithful_llr_is_the_released_schedule_on_the_recipes(monkeypatch, size):
    import train
    r = train.parse_config([os.path.join(ROOT, "configs", f"llama_{size}_llr.py")])
    keys = {k: r[k] for k in ("max_iters", "warmup_iters", "warmup_frac", "min_lr_ratio", "learning_rate", "schedule",
                              "llr_every", "llr_ramp", "llr_ratio", "llr_s1", "llr_s2", "llr_embed")}
    s, got, want, c = released_case(monkeypatch, **keys)
    T, P, t0 = c["max_iters"], int(c["llr_ratio"] * c["max_iters"]), s.late[0]
    # the last refit is late on every recipe: 600/640, 1000/1040, 2700/2720, 8000/8000 (t0/P)
    assert len(s.late) == 1 and s.lag() == P - t0 + 1 == {"60m": 41, "135m": 41, "350m": 21, "1b": 1}[size]
    if size == "60m":  # the numbers: 41 updates behind, up to 0.10·η from kept_peak·λ(t) over 641..3200
        lam = optim.schedule(c)
        gap = max(abs(got[t - 1][n] - c["learning_rate"] * s.peaks[n] * lam(t)) for t in range(P + 1, T + 1)
                  for n in s.names) / c["learning_rate"]
        assert (t0, P, s.lag(), round(gap, 2)) == (600, 640, 41, 0.10)


@pytest.mark.parametrize("keys, late, lag", [
    (dict(llr_ratio=0.33), [30], 4),                 # the ramp of the refit at 30 ends at 33 = P: dropped too
    (dict(llr_ratio=0.35), [], 0),                   # 30 + 3 + 1 <= 35: kept, no lag; the last update wraps to 1e-7
    (dict(llr_ratio=1.0), [100], 0),                 # refit on the last update: its ramp target past T wraps, no lag
    (dict(warmup_iters=2, llr_ramp=5), [30], 1),     # warmup W < ramp + 1: the first ramp off the warmup line
    (dict(llr_ratio=0.0), [], 0),                    # no refit: uniform, as released
    (dict(llr_ramp=1), [30], 1),                     # the first ramp is 0 updates long; P = 30.000000000000004
])
def test_faithful_llr_matches_the_released_schedule_at_its_edges(monkeypatch, keys, late, lag):
    s, got, want, c = released_case(monkeypatch, **keys)
    assert s.late == late and s.lag() == lag
    if not late and c["llr_ratio"] > 0:
        assert got[-1]["rest"] == c["learning_rate"] * 1e-7  # released: λ(T) is the next cycle's warmup


def test_a_ramp_ending_exactly_at_the_phase_end_is_late_only_with_the_flag(monkeypatch):
    swapping_alphas(monkeypatch, swap_at=4)
    default = optim.build("llr", tiny_model(), cfg(llr_ratio=0.33))
    step_without_grads(default, 40)
    assert default.late == [] and default.peaks["blocks.0.mlp.up"] == 1.0  # t0 + L = P = 33: kept by default
    lam = warmup_cosine(40, 100, 10, 0.1)
    assert default.lrs()["blocks.0.mlp.up"] == 1e-3 * (1.0 * lam) and default.lag() == 0


@pytest.mark.parametrize("drop", [False, True])
def test_fix_finger_uses_the_released_window_only_with_the_flag(drop):
    import spectral
    model = tiny_model()
    s = optim.build("llr", model, cfg(llr_method="fix-finger", llr_ramp=0, llr_drop_late_refits=drop))
    s.step(0)
    rows = spectral.analyze(model, method="fix-finger", metrics=("alpha",), min_evals=8, filter_zeros=False,
                            reference=drop)
    assert s.alphas == {r["name"]: r["alpha"] for r in rows if not r["skipped"] and math.isfinite(r["alpha"])}
