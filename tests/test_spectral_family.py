"""The HT-SR family beside LLR in optim.py: TempBalance (per-matrix LR), tempbalance_block (model balancing, per-block
LR) and AlphaDecay (per-matrix weight decay) against hand computations of their maps, their refit calendars, training,
bitwise resume and bad input."""
import math
import re

import pytest
import torch

import optim
import spectral
from test_llr import tiny_model
from optim import warmup_cosine


def cfg(**kw):
    base = dict(max_iters=100, learning_rate=1e-3, warmup_iters=10, tb_every=10, ad_every=10, grad_clip=0.0,
                llr_every=10, llr_ratio=0.3, llr_ramp=0)
    return optim.default_config(**{**base, **kw})


def fixed_alphas(monkeypatch, values):  # test_llr.fake_alphas, for every layerwise class
    """Replace the spectral fit of every layerwise strategy with fixed α per matrix (a function of the refit count)."""
    calls = []

    def fit(self):
        calls.append(1)
        return {n: values(n, len(calls)) for n in self.names if self.kinds[n] != "norm"}
    monkeypatch.setattr(optim.Layerwise, "fit", fit)
    monkeypatch.setattr(optim.LLR, "fit", fit)
    return calls


def spread(n, k):
    """Distinct α per matrix, changing with the refit count k."""
    return 2.0 + (sum(map(ord, n)) % 11) / 4 + 0.3 * k * ("mlp" in n)


def step_without_grads(strategy, steps, start=0):
    """The LR/wd schedule only: no gradients, AdamW leaves the weights alone. Returns each update's LRs."""
    lrs = []
    for it in range(start, start + steps):
        strategy.step(it)
        lrs.append(dict(strategy.lrs()))
    return lrs


def linear(alphas, s1, s2):
    lo, hi = min(alphas.values()), max(alphas.values())
    return {n: s1 + (s2 - s1) * (a - lo) / (hi - lo) for n, a in alphas.items()}


def refit_steps(strategy, calls, steps):
    done = []
    for it in range(steps):
        before = len(calls)
        strategy.step(it)
        done += [it + 1] if len(calls) > before else []
    return done


# --- TempBalance -------------------------------------------------------------------------------------------

def test_tempbalance_lr_is_base_times_schedule_times_linear_map_of_alpha(monkeypatch):
    fixed_alphas(monkeypatch, spread)
    s = optim.build("tempbalance", tiny_model(), cfg())
    lrs = step_without_grads(s, 15)  # refits at t = 1 and t = 10; the LRs of t = 15 come from the second
    alphas = {n: spread(n, 2) for n in s.names if s.kinds[n] != "norm"}
    f = linear(alphas, 0.5, 1.5)
    lam = warmup_cosine(15, 100, 10, 0.1)
    assert "embed" in f and "head" in f  # first and last layer are balanced too
    for n in s.names:
        assert lrs[14][n] == pytest.approx(1e-3 * lam * f.get(n, 1.0), rel=1e-12), n
    assert lrs[14]["rest"] == pytest.approx(1e-3 * lam, rel=1e-12)
    assert min(f.values()) == pytest.approx(0.5) and max(f.values()) == pytest.approx(1.5)
    # the switch at a refit is immediate: t = 10 already runs at the new multipliers
    f1 = linear({n: spread(n, 1) for n in alphas}, 0.5, 1.5)
    assert lrs[8]["blocks.0.mlp.up"] == pytest.approx(1e-3 * warmup_cosine(9, 100, 10, 0.1) * f1["blocks.0.mlp.up"])
    assert lrs[9]["blocks.0.mlp.up"] == pytest.approx(1e-3 * warmup_cosine(10, 100, 10, 0.1) * f["blocks.0.mlp.up"])


def test_tempbalance_refits_through_all_of_training_where_llr_freezes(monkeypatch):
    calls = fixed_alphas(monkeypatch, spread)
    tb = refit_steps(optim.build("tempbalance", tiny_model(), cfg()), calls, 100)
    assert tb == [1] + list(range(10, 101, 10))
    calls.clear()
    llr = refit_steps(optim.build("llr", tiny_model(), cfg()), calls, 100)
    assert llr == [1, 10, 20, 30]  # LLR: refit phase 0.3 · 100, then frozen
    calls.clear()  # tb_every = 0: once per optim.epoch_iters (epoch_iters, or a tenth of the run)
    assert refit_steps(optim.build("tempbalance", tiny_model(), cfg(tb_every=0, epoch_iters=25)), calls, 100) == \
        [1, 25, 50, 75, 100]
    calls.clear()
    assert refit_steps(optim.build("tempbalance", tiny_model(), cfg(tb_every=0, max_iters=50)), calls, 50) == \
        [1, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50]


def test_tempbalance_refit_is_logged_with_alphas_and_lrs(monkeypatch):
    fixed_alphas(monkeypatch, spread)
    s = optim.build("tempbalance", tiny_model(), cfg())
    s.step(0)
    rec = s.log_record()
    assert rec["refit_iter"] == 0 and rec["alpha"]["blocks.1.attn.q"] == spread("blocks.1.attn.q", 1)
    assert rec["lrs"] == s.lrs() and "lr_kind" in rec
    s.step(1)
    assert "alpha" not in s.log_record()  # once per refit


# --- tempbalance_block (model balancing) -------------------------------------------------------------------------

def test_tempbalance_block_gives_every_matrix_of_a_block_the_sigmoid_of_the_block_mean(monkeypatch):
    fixed_alphas(monkeypatch, spread)
    s = optim.build("tempbalance_block", tiny_model(), cfg(tbb_s1=2.0, tbb_s2=1.0))
    lrs = step_without_grads(s, 15)
    alphas = {n: spread(n, 2) for n in s.names if s.kinds[n] != "norm"}
    units = {}
    for n, a in alphas.items():
        m = re.match(r"blocks\.(\d+)\.", n)
        units.setdefault(f"blocks.{m.group(1)}" if m else n, []).append(a)
    unit_alpha = {u: sum(v) / len(v) for u, v in units.items()}
    assert set(unit_alpha) == {"blocks.0", "blocks.1", "embed", "head"}
    mean = sum(unit_alpha.values()) / len(unit_alpha)

    def tb_sigmoid(a):  # Liu et al. 2024, eq. 3-4, τ = 10; s = 2 below the mean, 1 above
        s_ = 2.0 if a < mean else 1.0
        return 10 ** (s_ * (1 / (1 + math.exp(-10 * (a - mean))) - 0.5))
    lam = warmup_cosine(15, 100, 10, 0.1)
    for i in (0, 1):
        block = [n for n in s.names if n.startswith(f"blocks.{i}.")]
        assert len(block) == 7
        expect = 1e-3 * lam * tb_sigmoid(unit_alpha[f"blocks.{i}"])
        assert all(lrs[14][n] == pytest.approx(expect, rel=1e-12) for n in block), i
        assert len({lrs[14][n] for n in block}) == 1
    assert lrs[14]["embed"] == pytest.approx(1e-3 * lam * tb_sigmoid(unit_alpha["embed"]), rel=1e-12)
    assert lrs[14]["rest"] == pytest.approx(1e-3 * lam, rel=1e-12)
    s.log_record()
    s.step(15)
    assert "block_alpha" not in s.log_record()  # logged once per refit
    s.step(19)  # the refit at t = 20 logs the block alphas with the matrix alphas and LRs
    rec = s.log_record()
    third = {u: sum(spread(n, 3) for n in alphas if n == u or n.startswith(u + ".")) / len(v) for u, v in units.items()}
    assert rec["block_alpha"] == pytest.approx(third) and rec["refit_iter"] == 19 and "lrs" in rec


def test_tb_sigmoid_map_is_1_at_the_mean_and_bounded():
    m = optim.alpha_to_peak({"a": 2.0, "b": 3.0, "c": 4.0}, 1.25, 1.25, "tb_sigmoid")
    assert m["b"] == pytest.approx(1.0)
    assert m["a"] == pytest.approx(1 / m["c"]) and 10 ** -0.625 < m["a"] < 1 < m["c"] < 10 ** 0.625


# --- AlphaDecay -----------------------------------------------------------------------------------------------

def test_alphadecay_weight_decay_follows_the_linear_map_and_lrs_are_uniform(monkeypatch):
    calls = fixed_alphas(monkeypatch, spread)
    c = cfg(weight_decay=0.1)
    s = optim.build("alphadecay", tiny_model(), c)
    ad_lrs = step_without_grads(s, 25)
    assert len(calls) == 3  # t = 1, 10, 20
    alphas = {n: spread(n, 3) for n in s.names if s.kinds[n] != "norm"}
    f = linear(alphas, 0.67, 1.5)
    groups = {g["name"]: g for g in s.optimizer.param_groups}
    for n in alphas:
        assert groups[n]["weight_decay"] == pytest.approx(0.1 * f[n], rel=1e-12), n
    assert groups["rest"]["weight_decay"] == 0.0  # decay_norms=False: norms never decay
    heavy = min(alphas, key=alphas.get)
    assert groups[heavy]["weight_decay"] == pytest.approx(0.067)  # heaviest tail (smallest α): least decay
    uniform = step_without_grads(optim.build("uniform", tiny_model(), c), 25)
    assert ad_lrs == uniform  # the LR is uniform's, bit for bit
    s.step(29)  # refit at t = 30: logged with the new weight decays
    rec = s.log_record()
    assert rec["refit_iter"] == 29 and rec["wd"][heavy] == pytest.approx(0.1 * linear(
        {n: spread(n, 4) for n in alphas}, 0.67, 1.5)[heavy])


def test_alphadecay_multiplier_composes_with_wd_follows_lr_false(monkeypatch):
    fixed_alphas(monkeypatch, spread)
    s = optim.build("alphadecay", tiny_model(), cfg(weight_decay=0.1, wd_follows_lr=False))
    step_without_grads(s, 15)
    g = {g["name"]: g for g in s.optimizer.param_groups}["blocks.0.mlp.up"]
    f = linear({n: spread(n, 2) for n in s.names if s.kinds[n] != "norm"}, 0.67, 1.5)["blocks.0.mlp.up"]
    assert g["lr"] * g["weight_decay"] == pytest.approx(1e-3 * warmup_cosine(15, 100, 10, 0.1) * 0.1 * f)


# --- end to end: the real fit, training, resume, bad input -------------------------------------------------------

NAMES = ("tempbalance", "tempbalance_block", "alphadecay")


def train_steps(strategy, model, its, data):
    losses = []
    for it in its:
        x = data[it % len(data)]
        _, loss = model(x, torch.roll(x, -1, 1))
        loss.backward()
        strategy.step(it)
        strategy.zero_grad()
        losses.append(loss.item())
    return losses


DATA = [torch.randint(0, 16, (4, 32), generator=torch.Generator().manual_seed(k)) for k in range(2)]


@pytest.mark.parametrize("name", NAMES)
def test_trains_with_the_real_fit_and_resumes_bitwise(name):
    c = cfg(max_iters=30, warmup_iters=3, learning_rate=3e-3, tb_every=5, ad_every=5, weight_decay=0.1)
    model = tiny_model()
    s = optim.build(name, model, c)
    ref = train_steps(s, model, range(30), DATA)
    assert all(math.isfinite(l) for l in ref) and min(ref[-3:]) < ref[0] - 1.0, ref
    assert s.last_refit == 30 and len(s.alphas) == 2 + 2 * 7  # refitted to the end, every matrix fitted
    if name == "alphadecay":
        assert len({round(m, 9) for m in s.wd_mults.values()}) > 2
    else:
        assert len({round(p, 9) for p in s.peaks.values()}) > 2
    model = tiny_model()
    s = optim.build(name, model, c)
    first = train_steps(s, model, range(12), DATA)  # stop between the refits at t = 10 and t = 15
    state, weights = s.state_dict(), {k: v.clone() for k, v in model.state_dict().items()}
    model2 = tiny_model(seed=1)
    model2.load_state_dict(weights)
    s2 = optim.build(name, model2, c)
    s2.load_state_dict(state)
    assert first + train_steps(s2, model2, range(12, 30), DATA) == ref


@pytest.mark.parametrize("name, key, value, message", [
    ("tempbalance", "tb_s1", 2.0, "tb_s1 must be in (0, tb_s2], got tb_s1=2.0, tb_s2=1.5"),
    ("alphadecay", "ad_s1", 1.6, "ad_s1 must be in (0, ad_s2], got ad_s1=1.6, ad_s2=1.5"),
    ("tempbalance", "tb_every", -1, "tb_every must be an integer >= 0, got -1"),
    ("alphadecay", "ad_every", 0, "ad_every must be an integer >= 1, got 0"),
    ("tempbalance_block", "tbb_tau", 0.0, "tbb_tau must be in (0, inf), got 0.0"),
    ("tempbalance", "tb_s2", -1.0, "tb_s2 must be in (0, inf), got -1.0"),
])
def test_bad_config_fails_before_training(name, key, value, message):
    with pytest.raises(optim.ConfigError, match=re.escape(message)):
        optim.build(name, tiny_model(), cfg(**{key: value}))


def test_registered_in_the_layerwise_family():
    import eval.strategies as es
    for name in NAMES:
        assert name in optim.LAYERWISE_FAMILY and name not in optim.CATALOGUE
        assert optim.STRATEGIES[name].generation == "HT-SR" and optim.STRATEGIES[name].uses_schedule
        assert optim.STRATEGIES[name].lr_family == "adam" and es.lm_hparams(name)["learning_rate"] == es.LM_LR["adam"]
    assert optim.STRATEGIES["tempbalance"].defaults["tb_s1"] == 0.5 and optim.STRATEGIES["alphadecay"].defaults["ad_s1"] == 0.67


# --- the shape-corrected α (alpha_correction="shape", any layerwise strategy) ----------------------------------

def test_random_alpha_grows_with_the_aspect_ratio_in_either_orientation():
    square, tall = spectral.random_alpha(64, 64), spectral.random_alpha(256, 64)
    assert 1.5 < square < tall and spectral.random_alpha(64, 256) == tall
    assert spectral.shape_corrected_alpha(tall, 256, 64) == pytest.approx(square, rel=1e-12)


@pytest.mark.parametrize("name", ["llr", "tempbalance", "alphadecay"])
def test_shape_correction_removes_the_aspect_ratio_gap_of_a_fresh_model(name):
    raw = optim.build(name, tiny_model(), cfg()).fit()
    fixed = optim.build(name, tiny_model(), cfg(alpha_correction="shape")).fit()
    shapes = {n: p.shape for n, p in tiny_model().named_parameters()}
    mlp = [n for n in raw if ".mlp." in n]
    attn = [n for n in raw if ".attn." in n]
    assert mlp and attn

    def gap(alphas):
        return sum(alphas[n] for n in mlp) / len(mlp) - sum(alphas[n] for n in attn) / len(attn)
    assert gap(raw) > 0.5 and abs(gap(fixed)) < 0.25 * gap(raw)  # rectangular MLP matrices no longer read lighter-tailed
    for n in raw:  # each value is α · α_rand(M, M) / α_rand(N, M) of its own shape
        N, M = max(shapes[n + ".weight"]), min(shapes[n + ".weight"])
        assert fixed[n] == pytest.approx(raw[n] * spectral.random_alpha(M, M) / spectral.random_alpha(N, M), rel=1e-12)


def test_an_unknown_alpha_correction_is_a_config_error():
    with pytest.raises(optim.ConfigError, match="alpha_correction"):
        optim.build("llr", tiny_model(), cfg(alpha_correction="aspect"))
