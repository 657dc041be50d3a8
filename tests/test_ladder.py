"""eval/sweep.py's ladders: model sizes that keep the preset's aspect, token budgets that set max_iters and scale
every count of updates, muP's base shape, bad axes refused before anything runs, and a tiny 2-size × 2-budget ×
3-LR ladder end to end, resumed after a deleted run."""
import json
import shutil

import pytest
import torch

from eval import lawfit, sweep
from model import ModelConfig, Transformer
from test_train import text_dataset  # noqa: F401  (fixture)

# the resolved config of `python train.py` (configs/default.py) as a dry run prints it: the base a ladder scales
BASE = dict(model="llama_mini", n_layer=0, n_head=0, n_embd=0, ffn_hidden=0, batch_size=8, block_size=256, grad_accum=1,
            max_iters=500, eval_interval=250, llr_every=25, llr_ramp=10, warmup_iters=-1, spectral_every=0, base_width=0,
            base_depth=0, base_head_dim=0)


def cells_of(sizes="", tokens="", batches="", base=BASE, explicit=()):
    return sweep.ladder_cells(sweep.parse_sizes(sizes) if sizes else [(base["model"], None, None, None)],
                              sweep.parse_count(tokens, "--tokens") if tokens else [],
                              sweep.parse_count(batches, "--batch_sizes") if batches else [], base, explicit)


def test_a_width_keeps_the_preset_s_head_dim_and_mlp_ratio():
    # llama_mini: n_embd 128, 4 heads of 32, ffn_hidden 352 = 2.75 × 128
    cells = {c["size"]: c["keys"] for c in cells_of("w64,w96,w256d6,llama_nano")}
    assert cells["w64"] == dict(n_embd=64, n_head=2, ffn_hidden=176, max_iters=500)
    assert cells["w96"] == dict(n_embd=96, n_head=3, ffn_hidden=264, max_iters=500)
    assert cells["w256d6"] == dict(n_embd=256, n_head=8, ffn_hidden=704, n_layer=6, max_iters=500)
    assert cells["llama_nano"] == dict(model="llama_nano", max_iters=500)  # a preset brings its own shape
    for size in ("w64", "w96", "w256d6"):
        keys = {k: v for k, v in cells[size].items() if k != "max_iters"}
        with torch.device("meta"):
            net = Transformer(ModelConfig(**{**dict(arch="llama", n_layer=4, n_head=4, n_embd=128, ffn_hidden=352,
                                                    vocab_size=256, block_size=256), **keys}))
        assert net.cfg.n_embd // net.cfg.n_head == 32 and net.cfg.ffn_hidden / net.cfg.n_embd == 352 / 128
    # a config that set a width itself: a preset size undoes it
    assert cells_of("llama_tiny", base=dict(BASE, n_embd=96))[0]["keys"] == dict(model="llama_tiny", n_embd=0, max_iters=500)


def test_a_token_budget_sets_max_iters_and_scales_every_count_of_updates():
    # 8 × 256 tokens per update: 256k tokens are 125 updates, a quarter of the base run's 500
    cell = cells_of(tokens="256k")[0]
    assert cell["tokens"] == 125 * 2048 and cell["key"] == "llama_mini_256k"
    assert cell["keys"] == dict(max_iters=125, eval_interval=62, llr_every=6, llr_ramp=2)  # round(62.5), round(6.25), round(2.5)
    # warmup_iters=-1 means warmup_frac of max_iters: it scales by itself and is left alone
    assert cells_of(tokens="1M")[0]["keys"] == dict(max_iters=488, eval_interval=244, llr_every=24, llr_ramp=10)
    # a count given on the command line is kept as given
    assert cells_of(tokens="256k", explicit={"eval_interval"})[0]["keys"] == dict(max_iters=125, llr_every=6, llr_ramp=2)
    # the base budget itself changes nothing
    assert cells_of(tokens="1024000")[0]["keys"] == dict(max_iters=500)
    # a batch axis: the same tokens in fewer, larger updates
    by_batch = {c["batch"]: c for c in cells_of(tokens="256k", batches="8,32")}
    assert by_batch[32]["keys"] == dict(max_iters=31, batch_size=32, eval_interval=16, llr_every=2, llr_ramp=1)
    assert by_batch[32]["key"] == "llama_mini_256k_b32" and by_batch[32]["tokens"] == 31 * 32 * 256


def test_mup_runs_get_the_base_shape_of_the_config_s_preset_unless_given():
    cell = cells_of("w256")[0]
    mup = dict(label="uniform:parametrization=mup", overrides=[("parametrization", "mup")])
    assert sweep.cell_args(cell, mup)[-3:] == ["--base_width=128", "--base_depth=4", "--base_head_dim=32"]
    given = dict(mup, overrides=[("parametrization", "mup"), ("base_width", "64")])
    assert "--base_width=128" not in sweep.cell_args(cell, given) and "--base_depth=4" in sweep.cell_args(cell, given)
    assert not any(a.startswith("--base_") for a in sweep.cell_args(cell, dict(label="uniform", overrides=[])))


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "llama_huge"], "'llama_huge' is not a model size: write a preset (llama_60m, "),
    (["--sizes", "w0"], "'w0' is not a model size"),
    (["--sizes", "w64,w64"], "names a size twice"),
    (["--tokens", "lots"], "--tokens: 'lots' is not a positive whole number"),
    (["--batch_sizes", "0"], "--batch_sizes: '0' is not a positive whole number"),
    (["--sizes", "w100"], "n_head cannot scale"),  # head dim 32 does not divide 100
    (["--script", "finetune.py", "--tokens", "1M"], "ladders of pretraining runs"),
    (["--sizes", "w64", "--", "--n_embd=96"], "--n_embd after `--` with --sizes: each size sets it"),
])
def test_bad_ladder_axes_stop_the_sweep_before_anything_runs(argv, message, tmp_path):
    with pytest.raises(SystemExit) as e:
        sweep.main(argv + ["--out", str(tmp_path / "s"), "--plan"])
    assert message in str(e.value)
    assert not (tmp_path / "s").exists()


def test_a_tiny_ladder_end_to_end_then_resumed_after_a_deleted_run(text_dataset, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "ladder"
    base = tmp_path / "base.py"  # the counts of a config file scale with each budget; those given after `--` are kept
    base.write_text('model = "llama_nano"\nblock_size = 32\nbatch_size = 4\neval_tokens = 256\nmax_iters = 8\n'
                    'eval_interval = 4\n')
    argv = ["--strategies", "uniform", "--sizes", "w32,w64", "--tokens", "512,2048", "--lrs", "1e-3:3e-2:3", "--seeds", "1",
            "--jobs", "2", "--threads", "1", "--out", str(out), "--bootstrap", "50", "--no_plots", "--", str(base),
            "--dtype=float32", f"--dataset={text_dataset}", "--warmup_iters=1", "--update_every=1"]
    assert sweep.main(argv) == 0
    results = json.load(open(out / "results.json"))
    runs = results["runs"]
    assert len(runs) == 12 and all(r["status"] == "finished" for r in runs)
    by_cell = {}
    for r in runs:
        by_cell.setdefault(r["cell"], []).append(r)
    assert sorted(by_cell) == ["w32_2048", "w32_512", "w64_2048", "w64_512"]
    # 128 tokens per update: 4 and 16 updates; the base's eval_interval of 4 in 8 updates scales to 2 and 8
    assert {r["max_iters"] for r in by_cell["w32_512"]} == {4} and {r["max_iters"] for r in by_cell["w64_2048"]} == {16}
    assert [e[0] for e in by_cell["w32_512"][0]["evals"]] == [0, 2, 4]
    assert [e[0] for e in by_cell["w64_2048"][0]["evals"]] == [0, 8, 16]
    # N from train.py's own count: w64 is llama_nano itself; w32 has 1 head of 32 and ffn_hidden 88
    w64 = by_cell["w64_512"][0]
    assert w64["n_params_nonembed"] == 2 * (4 * 64 * 64 + 3 * 64 * 176 + 2 * 64) + 64
    assert by_cell["w32_512"][0]["n_params_nonembed"] == 2 * (4 * 32 * 32 + 3 * 32 * 88 + 2 * 32) + 32
    assert w64["tokens"] == 512 and w64["tokenizer"] == "byte" and w64["parametrization"] == "sp"
    cfg = json.load(open(out / w64["dir"] / "config.json"))
    assert (cfg["n_embd"], cfg["max_iters"], cfg["eval_interval"], cfg["warmup_iters"]) == (64, 4, 2, 1)
    report = (out / "report.md").read_text()
    assert "# Ladder: 4 cells × 1 strategies" in report and "(w32_512/report.md)" in report
    assert all((out / c / "report.md").exists() for c in by_cell)
    assert set(results["analysis"]["cells"]) == set(by_cell) and "law" in results["analysis"]
    assert all(r["effective_lr"] > 0 for r in runs)  # the update monitor's mean ‖ΔW‖/‖W‖: the x of --x effective
    assert lawfit.main([str(out), "--x", "effective", "--bootstrap", "20", "--no_plots"]) in (0, None)
    assert (out / "law.md").exists()

    deleted = out / by_cell["w32_2048"][1]["dir"]
    shutil.rmtree(deleted)
    capsys.readouterr()
    assert sweep.main(argv) == 0
    assert "12 runs: 11 kept, 0 to resume, 1 to start" in capsys.readouterr().out
    again = {r["dir"]: r for r in json.load(open(out / "results.json"))["runs"]}
    assert all(r["status"] == "finished" for r in again.values())
    assert [r["action"] for r in again.values()].count("fresh") == 1
