"""lr_mult: per-group LR multipliers from (pattern, multiplier) rules on top of any strategy; the blockwise
baseline as lr_mult on uniform; parsing and bad input."""
import os
import re
import types

import pytest
import torch

import optim
import train
from conftest import ROOT
from model import Transformer, config_from_preset

pytestmark = pytest.mark.usefixtures("one_thread")
EMBED = [("embed", 10.0)]


def tiny_model(seed=0, preset="llama_nano"):
    torch.manual_seed(seed)
    return Transformer(config_from_preset(preset, block_size=32))


def run(name, lr_mult=(), steps=4, preset="llama_nano", **cfg):
    """(LRs of each update, parameters after each update) with the same fixed gradients every run."""
    model = tiny_model(preset=preset)
    cfg = {**dict(max_iters=20, weight_decay=0.0, llr_min_evals=8, llr_ratio=0.0), **cfg}
    s = optim.build(name, model, optim.default_config(lr_mult=lr_mult, **cfg))
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=g) for p in model.parameters()]
    lrs, params = [], []
    for it in range(steps):
        for p, gr in zip(model.parameters(), grads):
            p.grad = gr.clone()
        s.step(it)
        s.zero_grad()
        lrs.append(s.lrs())
        params.append({n: p.detach().clone() for n, p in model.named_parameters()})
    return s, lrs, params


@pytest.mark.parametrize("name", ["uniform", "cosine_sgd", "llr", "dals"])
def test_lr_mult_multiplies_one_groups_lr_on_top_of_any_strategy(name):
    base, base_lrs, base_params = run(name)
    s, lrs, params = run(name, EMBED)
    for a, b in zip(base_lrs, lrs):  # every update: embed at 10× what the strategy gave it, the rest untouched
        assert b["embed"] == pytest.approx(10 * a["embed"], rel=1e-15)
        assert {k: v for k, v in b.items() if k != "embed"} == {k: v for k, v in a.items() if k != "embed"}
    start = tiny_model().embed.weight.detach()
    step, base_step = params[0]["embed.weight"] - start, base_params[0]["embed.weight"] - start
    torch.testing.assert_close(step, 10 * base_step, rtol=1e-4, atol=2e-7)  # the first update is 10× larger (fp32 weights)
    for after, base_after in zip(params, base_params):
        assert all(torch.equal(after[n], base_after[n]) for n in after if not n.startswith("embed")), name
    # the multiplier never reaches the optimizer's or scheduler's state: it is applied per update
    assert [g["lr"] for g in s.optimizer.param_groups] == [g["lr"] for g in base.optimizer.param_groups]
    if base.scheduler is not None:
        assert s.scheduler.state_dict() == base.scheduler.state_dict()
    assert s.log_record()["lr_kind"]["embed"] == pytest.approx(10 * base_lrs[-1]["embed"], rel=1e-15)


def test_patterns_are_fnmatch_over_group_names_and_the_first_match_wins():
    s, lrs, _ = run("uniform", [("blocks.0.*", 2.0), ("blocks.*.attn.[qk]", 8.0), ("rest", 0.0)], steps=1)
    _, base, _ = run("uniform", steps=1)
    mult = {n: lrs[0][n] / base[0][n] for n in base[0]}
    assert mult["blocks.0.attn.q"] == mult["blocks.0.mlp.up"] == 2.0  # blocks.0.* came first
    assert mult["blocks.1.attn.q"] == mult["blocks.1.attn.k"] == 8.0 and mult["blocks.1.attn.v"] == 1.0
    assert mult["rest"] == 0.0 and mult["embed"] == mult["head"] == 1.0  # 0 freezes a group


# --- the blockwise baseline -----------------------------------------------------------------------------

def config_lr_mult(preset):
    """configs/blockwise.py's lr_mult after a size file of the preset's architecture."""
    size = "gpt_nano.py" if preset.startswith("gpt") else "llama_135m.py"
    return train.parse_config([os.path.join(ROOT, "configs", f) for f in (size, "blockwise.py")])["lr_mult"]


@pytest.mark.parametrize("preset", ["llama_nano", "gpt_micro"])
def test_blockwise_equals_uniform_with_the_blockwise_config_lr_mult(preset):
    kw = dict(preset=preset, max_iters=20, warmup_iters=3, steps=20, weight_decay=0.1)
    _, blockwise, _ = run("blockwise", **kw)
    _, config, _ = run("uniform", config_lr_mult(preset), **kw)
    _, uniform, _ = run("uniform", **kw)
    assert blockwise == config  # identical LRs at every step
    s = optim.build("blockwise", tiny_model(preset=preset), optim.default_config())
    kinds = {g["name"]: g["kind"] for g in s.optimizer.param_groups}
    for b, u in zip(blockwise, uniform):  # and they are BLOCKWISE of each group's kind, times uniform's LR
        assert b == {n: u[n] * optim.BLOCKWISE[kinds[n]] for n in u}


def test_blockwise_and_its_config_train_to_bitwise_identical_losses():
    def losses(name, lr_mult):
        model = tiny_model()
        s = optim.build(name, model, optim.default_config(max_iters=6, warmup_iters=2, learning_rate=1e-3, lr_mult=lr_mult))
        g, out = torch.Generator().manual_seed(0), []

        def forward_backward():
            _, loss = model(x, torch.roll(x, -1, 1))
            loss.backward()
            return loss.detach()
        for it in range(6):
            x = torch.randint(0, 256, (4, 16), generator=g)
            out.append(optim.update(s, it, forward_backward).item())
        return out
    assert losses("blockwise", ()) == losses("uniform", config_lr_mult("llama_nano"))


# --- parsing and bad input ------------------------------------------------------------------------------

def test_lr_mult_from_the_command_line_and_from_a_config_file(tmp_path):
    assert train.parse_config(['--lr_mult=[("embed", 10), ("blocks.*.attn.[qk]", 8.0)]'])["lr_mult"] == \
        (("embed", 10), ("blocks.*.attn.[qk]", 8.0))
    f = tmp_path / "m.py"
    f.write_text('lr_mult = [("embed", 10.0)]\n')
    assert train.parse_config([str(f)])["lr_mult"] == (("embed", 10.0),)
    assert train.parse_config([])["lr_mult"] == ()
    with pytest.raises(SystemExit, match=re.escape("--lr_mult=[(\"embed\", 10): not a Python literal; write a list such as")):
        train.parse_config(['--lr_mult=[("embed", 10)'])


@pytest.mark.parametrize("value", [[("embed",)], [("embed", "10")], {"embed": 10}, [("embed", -1.0)], [(3, 1.0)], "embed",
                                   [("embed", True)], [("embed", float("inf"))]])
def test_a_malformed_lr_mult_is_a_config_error_naming_the_key_and_the_form(value):
    with pytest.raises(optim.ConfigError, match=re.escape("lr_mult must be a list of (pattern, multiplier >= 0) pairs, e.g. [(")):
        optim.build("uniform", tiny_model(), optim.default_config(lr_mult=value))


def test_a_pattern_that_matches_no_group_lists_the_groups():
    with pytest.raises(optim.ConfigError, match=re.escape("lr_mult pattern 'embd' matches no parameter group; the groups are "
                                                          "embed, blocks.*.attn.q, blocks.*.attn.k,")) as err:
        optim.build("llr", tiny_model(), optim.default_config(lr_mult=[("embed", 2.0), ("embd", 10.0)], llr_min_evals=8))
    assert str(err.value).endswith("blocks.*.mlp.down, head, rest")
    with pytest.raises(optim.ConfigError, match=re.escape("the groups are embed, blocks.*.attn.q")) as err:
        optim.build("dals", tiny_model(), optim.default_config(lr_mult=[("rest", 2.0)]))  # norms by depth: rest.*
    assert str(err.value).endswith("head, rest.*")
    with pytest.raises(optim.ConfigError, match="lr_mult pattern 'head' only matches groups an earlier pattern took"):
        optim.build("uniform", tiny_model(), optim.default_config(lr_mult=[("*", 2.0), ("head", 3.0)]))
    c = train.parse_config(["--model=llama_nano", "--strategy=uniform", '--lr_mult=[("embd", 10)]'])
    with pytest.raises(SystemExit, match="config error: lr_mult pattern 'embd' matches no parameter group"):
        train.dry_run_report(types.SimpleNamespace(**c), c)
