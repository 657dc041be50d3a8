"""muP and CompleteP (docs/mup.md): sp is today's model bit for bit, mup at its base width is sp, the coordinate
check is flat under mup and not under sp, every group's LR, weight decay and eps follow the hand rule, the rules
agree with the `mup` package where they overlap, and a missing base shape is one config error."""
import math
import re
import types

import pytest
import torch
import torch.nn as nn

import groups
import optim
import preflight
import train
from eval import coord_check
from model import ModelConfig, Transformer

torch.set_num_threads(1)


def tiny(width=64, arch="llama", seed=0, **kw):
    torch.manual_seed(seed)
    heads = max(1, width // 32)
    return Transformer(ModelConfig(arch=arch, n_layer=2, n_head=heads, n_embd=width, vocab_size=256, block_size=32, **kw))


def keys_of(net):
    return {k: getattr(net.cfg, k) for k in optim.PARAMETRIZATION_KEYS}


def losses(net, strategy="uniform", steps=4, **overrides):
    cfg = optim.default_config(**keys_of(net), max_iters=steps, learning_rate=1e-2, **overrides)
    strat, g = optim.build(strategy, net, cfg), torch.Generator().manual_seed(1)
    out = []
    for it in range(steps):
        x = torch.randint(0, 256, (2, 32), generator=g)

        def fb():
            _, loss = net(x, x)
            loss.backward()
            return loss.detach()
        out.append(optim.update(strat, it, fb).item())
    return out, strat


@pytest.mark.parametrize("arch", ["llama", "gpt"])
def test_sp_is_the_model_of_before(arch, monkeypatch):
    """sp draws today's init: nn.init.normal_ on every Linear/Embedding in module order at std 0.02 exactly (the
    same draws from the same RNG state), then GPT's o/down at 0.02/√(2L); it runs none of the multipliers, and the
    strategy scales nothing."""
    calls, draw = [], nn.init.normal_
    monkeypatch.setattr(nn.init, "normal_", lambda t, mean=0.0, std=1.0: calls.append((tuple(t.shape), std)) or draw(t, mean, std))
    net = tiny(arch=arch)
    old = [(tuple(m.weight.shape), 0.02) for m in net.modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    old += [(tuple(p.shape), 0.02 / math.sqrt(2 * net.cfg.n_layer)) for n, p in net.named_parameters()
            if arch == "gpt" and n.endswith(("attn.o.weight", "mlp.down.weight"))]
    calls = [c for c in calls if c[1] != 1.0]  # nn.Embedding's constructor draws N(0, 1) first, as before
    assert calls == old  # == on floats: bitwise the same std
    assert net.output_mult == 1.0 and all(b.branch_mult == 1.0 and b.attn.scale is None for b in net.blocks)
    _, strat = losses(net, steps=1)
    assert strat.lr_mults == {} and not any("wd_mult" in g for g in strat.optimizer.param_groups)


def test_sp_ignores_base_keys_bitwise():
    """configs/mup.py then --parametrization=sp: the base shapes are ignored, the losses are bitwise sp's."""
    plain, _ = losses(tiny(128))
    with_base, _ = losses(tiny(128, base_width=64, base_depth=1, base_head_dim=16))
    assert plain == with_base


@pytest.mark.parametrize("parametrization", ["mup", "completep"])
def test_at_the_base_shape_mup_and_completep_are_sp(parametrization):
    sp = tiny(64)
    mu = tiny(64, parametrization=parametrization, base_width=64, base_depth=2)
    x = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    assert torch.equal(sp(x)[0], mu(x)[0])
    assert losses(tiny(64))[0] == losses(tiny(64, parametrization=parametrization, base_width=64, base_depth=2))[0]


def test_coordinate_check_is_flat_under_mup_and_grows_under_sp():
    widths = [64, 128, 256]  # measured: mup slopes -0.21 to 0.08, sp 0.7 (logits) to 2.5 (mlp) at step 3
    data = coord_check.coord_data(widths, steps=4, lr=1e-2, batch_size=2, block_size=32, base_width=64)
    s = coord_check.slopes(widths, data)
    for kind in ("attn", "mlp", "logits"):
        assert abs(s["mup"][kind]) < 0.35, (kind, s)
        assert s["sp"][kind] > 0.5, (kind, s)
    # and at init the hidden layers' scale is width-independent under mup
    init = coord_check.slopes(widths, data, step=0)
    assert abs(init["mup"]["attn"]) < 0.2 and init["sp"]["attn"] > 0.4, init


def test_init_and_forward_multipliers():
    base, wide = tiny(64, parametrization="mup", base_width=64), tiny(256, parametrization="mup", base_width=64, seed=1)
    assert wide.output_mult == 0.25
    assert wide.blocks[0].mlp.up.weight.std().item() == pytest.approx(0.02 / 2, rel=0.03)       # 0.02 · m^-1/2
    assert base.blocks[0].mlp.up.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert wide.embed.weight.std().item() == pytest.approx(0.02, rel=0.03)                      # embed, head: the base's
    assert wide.head.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert wide.blocks[0].attn.scale is None  # head dim 32 at every width: SDPA's 1/sqrt(32)
    scaled = tiny(128, parametrization="mup", base_width=64, base_head_dim=16)  # head dim 32, base 16: 1/d · √16
    assert scaled.blocks[0].attn.scale == pytest.approx(4 / 32)
    x = torch.randint(0, 256, (1, 8))
    h = scaled.norm(scaled.blocks[1](scaled.blocks[0](scaled.embed(x), scaled.rope_cos, scaled.rope_sin),
                                     scaled.rope_cos, scaled.rope_sin))
    assert torch.allclose(scaled(x)[0], scaled.head(h) / 2, atol=1e-6)  # logits · 1/m
    deep = tiny(64, parametrization="completep", base_width=64, base_depth=1)  # 2 layers, base 1: branches × 1/2
    assert all(b.branch_mult == 0.5 for b in deep.blocks)
    gpt = tiny(64, arch="gpt", parametrization="completep", base_width=32, base_depth=1)
    assert gpt.blocks[0].attn.o.weight.std().item() == pytest.approx(0.02 / math.sqrt(2) / math.sqrt(2), rel=0.05)


def group_table(strat, lr=1e-2, wd=0.1, eps=1e-8):
    """{name: (LR of the update, weight decay, eps)} of a built strategy at a constant schedule."""
    lrs = strat.group_lrs()
    return {g["name"]: (lrs[g["name"]] / g["lr"] * lr, g["weight_decay"], g.get("eps")) for g in strat.optimizer.param_groups}


def build(strategy, net, **kw):
    return optim.build(strategy, net, optim.default_config(**keys_of(net), learning_rate=1e-2, weight_decay=0.1,
                                                           max_iters=10, **kw))


def test_per_group_rules_by_hand():
    m = 4.0
    net = tiny(128, parametrization="mup", base_width=32)
    for name, (lr, wd, eps) in group_table(build("uniform", net)).items():
        hidden = groups.matrix_kind(name) in optim.HIDDEN_KINDS if name != "rest" else False
        assert lr == pytest.approx(1e-2 / m if hidden else 1e-2), name
        assert wd == pytest.approx(0.1 * m if hidden else (0.0 if name == "rest" else 0.1)), name
        assert eps == pytest.approx(1e-8 / m), name
    for scale, width_lr in (("original", 1.0), ("match_rms_adamw", m ** -0.5)):
        for name, (lr, wd, _) in group_table(build("uniform_muon", net, muon_scale=scale)).items():
            hidden = name != "rest" and groups.matrix_kind(name) in optim.HIDDEN_KINDS
            assert lr == pytest.approx(1e-2 * width_lr if hidden else 1e-2), (scale, name)
            assert wd == pytest.approx(0.1 / width_lr if hidden else (0.0 if name == "rest" else 0.1)), (scale, name)
    for name, (lr, wd, _) in group_table(build("fixed_sgd", net)).items():
        hidden = name != "rest" and groups.matrix_kind(name) in optim.HIDDEN_KINDS
        assert lr == pytest.approx(1e-2 if hidden else 1e-2 * m), name
    # CompleteP, 2 layers over a base of 1: α = 1 leaves the LRs at muP's, the hidden eps gets 1/m_L more
    deep = tiny(128, parametrization="completep", base_width=32, base_depth=1)
    for name, (lr, wd, eps) in group_table(build("uniform", deep)).items():
        inner = name == "rest" or groups.matrix_kind(name) in optim.HIDDEN_KINDS
        assert eps == pytest.approx(1e-8 / m / (2 if inner else 1)), name
        assert lr == pytest.approx(1e-2 / m if inner and name != "rest" else 1e-2), name


def test_composes_with_lr_mult_llr_and_blockwise():
    net = tiny(128, parametrization="mup", base_width=32)
    t = group_table(build("uniform", net, lr_mult=(("blocks.*.attn.q", 3.0), ("embed", 2.0))))
    assert t["blocks.0.attn.q"][0] == pytest.approx(1e-2 * 3 / 4) and t["embed"][0] == pytest.approx(2e-2)
    t = group_table(build("blockwise", net))
    assert t["blocks.1.mlp.down"][0] == pytest.approx(1e-2 * 6 / 4) and t["head"][0] == pytest.approx(1e-1)
    llr = build("llr", net, warmup_iters=0, llr_ramp=0)
    llr.step(0)  # the refit sets the peaks; the muP factor multiplies them
    for g in llr.optimizer.param_groups:
        hidden = g["kind"] in optim.HIDDEN_KINDS
        assert llr.lrs()[g["name"]] == pytest.approx(1e-2 * llr.current[g["name"]] / (4 if hidden else 1)), g["name"]


def test_rules_agree_with_the_mup_package():
    mup = pytest.importorskip("mup")
    make = lambda w: Transformer(ModelConfig(n_layer=2, n_head=2, n_embd=w, ffn_hidden=2 * w, vocab_size=256, block_size=16,
                                             parametrization="mup", base_width=32))
    base, net = make(32), make(128)
    mup.set_base_shapes(net, base, rescale_params=False, do_assert=False)  # our head is a plain Linear: MuReadout by multiplier
    ours = {}
    for strategy, mu_opt in (("adamw", mup.MuAdamW), ("fixed_sgd", mup.MuSGD)):
        strat = build(strategy, net)
        ours = {id(p): (lr, wd) for g in strat.optimizer.param_groups for p in g["params"]
                for lr, wd, _ in [group_table(strat)[g["name"]]]}
        theirs = mu_opt([{"params": g["params"], "weight_decay": 0.0 if g["name"] == "rest" else 0.1}
                         for g in groups.param_groups(net)], lr=1e-2)
        for g in theirs.param_groups:
            for p in g["params"]:
                assert ours[id(p)] == pytest.approx((g["lr"], g["weight_decay"])), (strategy, p.shape)
    # MuReadout: logits = W (x · output_mult / width_mult), W at a constant-variance init: our head path
    readout = mup.MuReadout(128, 256, bias=False)
    holder, holder_base = nn.Sequential(readout), nn.Sequential(mup.MuReadout(32, 256, bias=False))
    mup.set_base_shapes(holder, holder_base, rescale_params=False)
    readout.weight.data.copy_(net.head.weight.data)
    x = torch.randn(3, 128)
    assert net.output_mult == pytest.approx(1 / readout.width_mult())
    assert torch.allclose(readout(x), net.head(x * net.output_mult), atol=1e-6)
    # hidden init: mup.init.normal_(std=0.02) draws matrix-like weights at 0.02 · width_mult^-1/2, as we do
    w = net.blocks[0].attn.q.weight
    drawn = torch.empty_like(w)
    drawn.infshape = w.infshape
    mup.init.normal_(drawn, std=0.02)
    assert drawn.std().item() == pytest.approx(w.std().item(), rel=0.05)


def as_train_py_builds(*args, model="llama_mini"):
    """(config namespace, config dict, model) of train.py's command line: preset, overrides, model_config."""
    cfg = train.parse_config([f"--model={model}", "--strategy=uniform", "--learning_rate=1e-2", "--weight_decay=0.1", *args])
    c = types.SimpleNamespace(**cfg)
    return c, cfg, Transformer(preflight.model_config(c, 256))


@pytest.mark.parametrize("model, proxy, target", [
    ("llama_mini", ["--n_embd=64", "--n_head=2"], []),      # the proxy: 12 MLP tensors differed
    ("llama_mini", ["--n_embd=64"], ["--n_embd=256"]),      # both widths by override, n_head scaled too
    ("llama_135m", ["--n_embd=384"], ["--n_embd=768"]),     # 2048 x 384/768 = 1024 exactly; 12 layers
    ("gpt_micro", ["--n_embd=32"], ["--n_embd=128"]),       # GPT: tied head, learned positions, 4x MLP
])
@pytest.mark.parametrize("parametrization", ["mup", "completep"])  # α = 1: CompleteP's LRs and wd are muP's
def test_a_proxy_built_as_train_py_builds_it_agrees_with_mup_adamw(model, proxy, target, parametrization):
    """The muP workflow end to end: the proxy and the target from a preset and overrides exactly as train.py
    builds them, the strategy as train.py builds it; every tensor's LR and weight decay is MuAdamW's."""
    mup = pytest.importorskip("mup")
    keys = [f"--parametrization={parametrization}", f"--base_width={proxy[0].split('=')[1]}", "--base_depth=2"]
    _, _, base = as_train_py_builds(*keys, *proxy, model=model)
    c, cfg, net = as_train_py_builds(*keys, *target, model=model)
    assert net.cfg.n_embd > base.cfg.n_embd  # a real width multiplier, and the MLP scaled with it
    assert net.cfg.ffn_hidden * base.cfg.n_embd == base.cfg.ffn_hidden * net.cfg.n_embd
    mup.set_base_shapes(net, base, rescale_params=False, do_assert=False)
    strat = preflight.build_strategy(c, cfg, net)
    ours = {id(p): (1e-2 * strat.lr_mults.get(g["name"], 1.0), g["weight_decay"])
            for g in strat.optimizer.param_groups for p in g["params"]}
    theirs = mup.MuAdamW([{"params": g["params"], "weight_decay": 0.0 if g["name"] == "rest" else 0.1}
                          for g in groups.param_groups(net)], lr=1e-2)
    names = {id(p): n for n, p in net.named_parameters()}
    differ = [names[id(p)] for g in theirs.param_groups for p in g["params"]
              if ours[id(p)] != pytest.approx((g["lr"], g["weight_decay"]), rel=1e-9)]
    assert len(ours) == len(names) and differ == [], differ


def test_a_width_override_scales_the_mlp_and_heads_under_mup_only_and_explicit_keys_win():
    mup = ["--parametrization=mup", "--base_width=256"]

    def shape(*args, model="llama_135m"):
        m = preflight.model_config(types.SimpleNamespace(**train.parse_config([f"--model={model}", *args])), 256)
        return m.n_embd, m.n_head, m.ffn_hidden
    assert shape(*mup) == (768, 12, 2048)                                    # the target: the preset
    assert shape(*mup, "--n_embd=768") == (768, 12, 2048)                    # the preset's own width: nothing scales
    assert shape(*mup, "--n_embd=256") == (256, 4, 688)                      # 682.67 rounded up to 16 (llama_tiny's)
    assert shape(*mup, "--n_embd=256", model="llama_60m") == (256, 4, 504)   # 1512/3 exactly
    assert shape(*mup, "--n_embd=512", model="llama_mini") == (512, 16, 1408)
    assert shape(*mup, "--n_embd=128", model="gpt_micro") == (128, 4, 512)
    assert shape(*mup, "--n_embd=256", "--ffn_hidden=683") == (256, 4, 683)  # explicit keys win
    assert shape(*mup, "--n_embd=256", "--n_head=2") == (256, 2, 688)
    assert shape("--parametrization=completep", "--base_width=256", "--base_depth=12", "--n_embd=256") == (256, 4, 688)
    assert shape("--n_embd=256", "--n_head=4") == (256, 4, 2048)             # sp: the preset's, as always


def test_configs_mup_recipe_builds_a_proxy_that_scales():
    """configs/mup.py's proxy recipe, read from its comment, on both size files that include it."""
    flags = re.findall(r"--\w+=\d+", open("configs/mup.py").read())
    assert "--n_embd=256" in flags
    for name, ffn in (("llama_60m", 504), ("llama_135m", 688)):
        cfg = train.parse_config([f"configs/{name}_mup.py", *flags])
        mcfg = preflight.model_config(types.SimpleNamespace(**cfg), 50304)
        assert (mcfg.n_embd, mcfg.n_head, mcfg.ffn_hidden) == (cfg["base_width"], 4, ffn), name


@pytest.mark.parametrize("args, key", [
    (["--n_embd=96"], r"n_head cannot scale: 12 x 96/768 = 1.5 heads .*: set --n_head \(e.g. --n_head=1\)"),
    (["--n_embd=32", "--n_head=1"], r"ffn_hidden cannot scale: 2048 x 32/768 = 85.33 .*: set --ffn_hidden \(e.g. --ffn_hidden=85"),
], ids=["n_head", "ffn_hidden"])
def test_a_width_that_cannot_scale_is_one_config_error_naming_it(args, key, tmp_path):
    cfg = train.parse_config(["configs/default.py", "--model=llama_135m", "--parametrization=mup", "--base_width=96",
                              f"--out_dir={tmp_path / 'run'}", *args])
    with pytest.raises(SystemExit, match=rf"config error: parametrization='mup' scales llama_135m's widths .*{key}"):
        train.train(cfg)
    assert not (tmp_path / "run").exists()


def test_alpha_agrees_with_the_model():
    import model
    assert optim.COMPLETEP_ALPHA == model.COMPLETEP_ALPHA == 1.0


@pytest.mark.parametrize("args, key", [(["--parametrization=mup"], "base_width"),
                                       (["--parametrization=completep", "--base_width=64"], "base_depth")])
def test_missing_base_shape_is_one_config_error_before_training(args, key, tmp_path):
    cfg = train.parse_config(["configs/default.py", f"--out_dir={tmp_path / 'run'}", *args])
    with pytest.raises(SystemExit, match=rf"config error: parametrization='\w+' needs {key}: set --{key}="):
        train.train(cfg)
    assert not (tmp_path / "run").exists()


def test_model_and_strategy_must_agree():
    with pytest.raises(optim.ConfigError, match="built with"):
        optim.build("uniform", tiny(64, parametrization="mup", base_width=32), optim.default_config())
    with pytest.raises(optim.ConfigError, match="trust ratio"):
        build("lars", tiny(64, parametrization="mup", base_width=32))


def test_mup_configs_resolve():
    for files in (["configs/llama_60m_mup.py"], ["configs/llama_135m_mup.py"]):
        c = types.SimpleNamespace(**train.parse_config(files))
        assert c.parametrization == "mup" and c.base_width > 0
        preflight.check_config(c, 1)
