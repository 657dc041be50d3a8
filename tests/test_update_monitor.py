"""train.py's effective-LR monitor (--update_every): the ratio it logs at iteration t is ‖W_{t+1} − W_t‖_F / ‖W_t‖_F
of the checkpoints of iterations t and t+1 for every weight matrix and strategy (AdamW-based LLR, Muon), its per-kind
and overall means are means of those values, it never changes training, a negative interval stops the run with one
message, wandb gets one key per matrix and kind, eval/plots.py draws it, bench.py measures its cost."""
import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import bench
import groups
import logger
import model as M
import spectral
import train
from conftest import ROOT
from data.shakespeare.prepare import write_split

TINY = ["--model=llama_nano", "--block_size=32", "--batch_size=4", "--eval_tokens=512", "--dtype=float32",
        "--log_interval=1", "--learning_rate=3e-3", "--warmup_iters=2", "--eval_interval=100"]


@pytest.fixture(scope="module")
def text_dataset(tmp_path_factory):
    """A small byte-level dataset from Python's own argparse source (every machine has it)."""
    directory = tmp_path_factory.mktemp("data") / "argparse_src"
    write_split(open(argparse.__file__).read(), str(directory))
    return str(directory)


def run(args, text_dataset, out):
    """train.py in this process on one thread; its stdout."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            train.main(TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", *args])
    finally:
        torch.set_num_threads(threads)
    return printed.getvalue()


def records(out_dir):
    return [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]


def weights(path):
    """{matrix name: float64 weight} of a checkpoint file, named from its state dict (spectral.named_matrices)."""
    return {name: w.double() for name, w in spectral.named_matrices(M.load_checkpoint(path))}


@pytest.fixture(scope="module", params=["llr", "muon"])
def monitored(request, text_dataset, tmp_path_factory):
    """A 4-iteration run of the strategy with the monitor at every update and every checkpoint kept as
    ckpt_<iter>.pt: (strategy, out_dir, stdout)."""
    out = str(tmp_path_factory.mktemp(request.param) / "run")
    printed = run([f"--strategy={request.param}", "--max_iters=4", "--update_every=1", "--ckpt_every=1", "--keep_ckpts=10"],
                  text_dataset, out)
    return request.param, out, printed


# --- what is logged -----------------------------------------------------------------------------

def test_the_logged_ratio_is_the_update_between_the_checkpoints_of_t_and_t_plus_1(monitored):
    strategy, out, printed = monitored
    logged = {r["iter"]: r["update_ratio"] for r in records(out) if "update_ratio" in r}
    assert sorted(logged) == [0, 1, 2, 3]  # every update; none at max_iters (4), after the last update
    for t, ratios in logged.items():
        before, after = weights(os.path.join(out, f"ckpt_{t}.pt")), weights(os.path.join(out, f"ckpt_{t + 1}.pt"))
        assert set(ratios) == set(before) and len(ratios) == 16  # llama_nano: 2 blocks x 7 matrices, embed, head
        for name, w in before.items():
            expected = ((after[name] - w).norm() / w.norm()).item()
            assert expected > 0 and ratios[name] == pytest.approx(expected, rel=1e-6), (strategy, t, name)
    # stdout: the mean on each monitored line, and the monitor's cost once at the end
    assert len(re.findall(r"\| upd \d\.\de-\d\d", printed)) == 4
    assert printed.count("update monitor: ") == 1 and "% of the run (update_every=1)" in printed
    assert all(r["update_s"] >= 0 for r in records(out) if "update_ratio" in r)


def test_the_per_kind_and_overall_means_are_means_of_the_logged_matrices(monitored):
    _, out, _ = monitored
    for r in (r for r in records(out) if "update_ratio" in r):
        by_kind = {}
        for name, ratio in r["update_ratio"].items():
            by_kind.setdefault(groups.matrix_kind(name), []).append(ratio)
        assert set(r["update_ratio_kind"]) == {"embed", "attn_qk", "attn_vo", "mlp", "head"} == set(by_kind)
        for kind, values in by_kind.items():
            assert r["update_ratio_kind"][kind] == pytest.approx(sum(values) / len(values), rel=1e-12), kind
        assert r["update_ratio_mean"] == pytest.approx(sum(r["update_ratio"].values()) / 16, rel=1e-12)


def test_the_monitor_does_not_change_training_and_logs_its_iterations_whatever_log_interval(text_dataset, tmp_path):
    """Off and every 3 updates give bitwise the same losses and weights: the monitor reads the weights and nothing
    else. With log_interval=4 the monitored iterations 0, 3 are logged too (with their train loss)."""
    every = lambda d, n: [f"--out_dir={d}", "--max_iters=6", f"--update_every={n}", "--log_interval=4"]
    run(every(tmp_path / "off", 0)[1:], text_dataset, tmp_path / "off")
    run(every(tmp_path / "on", 3)[1:], text_dataset, tmp_path / "on")
    off, on = records(tmp_path / "off"), records(tmp_path / "on")
    assert not any("update_ratio" in r for r in off)
    assert [r["iter"] for r in on if "update_ratio" in r] == [0, 3]
    loss = lambda rs: {r["iter"]: r["train_loss"] for r in rs if "train_loss" in r}
    assert sorted(loss(on)) == [0, 3, 4] and sorted(loss(off)) == [0, 4]
    assert all(loss(on)[it] == loss(off)[it] for it in (0, 4))  # exact floats
    assert [r["val_loss"] for r in on if "val_loss" in r] == [r["val_loss"] for r in off if "val_loss" in r]
    a, b = M.load_checkpoint(str(tmp_path / "on"))["model"], M.load_checkpoint(str(tmp_path / "off"))["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_matrix_that_is_all_zeros_has_no_ratio_and_the_rest_are_logged():
    torch.manual_seed(0)
    net = M.Transformer(M.config_from_preset("llama_nano"))
    with torch.no_grad():
        net.blocks[0].attn.q.weight.zero_()
    monitor = logger.UpdateMonitor(net)
    monitor.snapshot()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1.5)  # every matrix moves by half of itself: ratio 0.5
    rec = monitor.record()
    assert "blocks.0.attn.q" not in rec["update_ratio"] and len(rec["update_ratio"]) == 15
    assert all(r == pytest.approx(0.5, rel=1e-6) for r in rec["update_ratio"].values())
    assert rec["update_ratio_kind"]["attn_qk"] == pytest.approx(0.5, rel=1e-6) and monitor.before is None


# --- bad settings -------------------------------------------------------------------------------

def test_a_negative_update_every_is_one_config_error_and_nothing_is_written(text_dataset, tmp_path, capsys):
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as stop:
        train.main(TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", "--max_iters=2", "--update_every=-1"])
    assert str(stop.value.code) == ("config error: update_every must be >= 0 (0: monitor off), got -1: "
                                    "set --update_every=0 or a positive interval such as --update_every=10")
    assert capsys.readouterr().err == "" and not out.exists()


# --- wandb, plots, the benchmark ------------------------------------------------------------------

def test_wandb_gets_one_key_per_matrix_and_per_kind(tmp_path):
    class Run:
        logged = []

        def log(self, values, step):
            self.logged.append((step, values))
    log = logger.Logger(argparse.Namespace(out_dir=str(tmp_path), wandb_log=False), {})
    log.run = Run()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        log.log(dict(iter=7, train_loss=2.0, update_ratio={"embed": 1e-3, "blocks.0.attn.q": 3e-3},
                     update_ratio_kind={"embed": 1e-3, "attn_qk": 3e-3}, update_ratio_mean=2e-3, update_s=0.01))
    [(step, values)] = Run.logged
    assert step == 7 and values == {"iter": 7, "train_loss": 2.0, "update_ratio/embed": 1e-3, "update_ratio/blocks.0.attn.q": 3e-3,
                                    "update_ratio_kind/embed": 1e-3, "update_ratio_kind/attn_qk": 3e-3,
                                    "update_ratio_mean": 2e-3, "update_s": 0.01}
    assert printed.getvalue() == "iter 7 | loss 2.0000 | upd 2.0e-03\n"
    log.run = None
    log.close()


def test_plots_draw_the_ratio_per_kind_and_two_runs_overlaid(monitored, text_dataset, tmp_path):
    pytest.importorskip("matplotlib")
    from eval import plots
    _, out, _ = monitored
    other = tmp_path / "other"
    run(["--strategy=uniform", "--max_iters=2", "--update_every=1"], text_dataset, other)
    with contextlib.redirect_stdout(io.StringIO()):
        plots.main([out, "--out", str(tmp_path / "p"), "--compare", str(other)])
    for png in ("update_ratio.png", "update_ratio_compare.png"):
        assert (tmp_path / "p" / png).stat().st_size > 1000, png
    assert not (tmp_path / "p" / "alpha_compare.png").exists()  # neither run has the HT-SR monitor
    series = plots.monitor_update_ratio(plots.read_metrics(out))
    assert [it for it, _ in series] == [0, 1, 2, 3] and series[0][1] == records(out)[0]["update_ratio_kind"]
    spectral_only = tmp_path / "spectral_only"
    spectral_only.mkdir()
    (spectral_only / "metrics.jsonl").write_text(json.dumps(dict(iter=0, spectral={"embed": {"alpha": 3.0}})) + "\n")
    with pytest.raises(SystemExit, match="have no monitor in common"):
        plots.main([out, "--out", str(tmp_path / "x"), "--compare", str(spectral_only)])


def test_bench_update_overhead_prints_the_share_and_the_command(capsys):
    torch.manual_seed(0)
    figures = bench.main(["--model=llama_nano", "--batch_size=2", "--block_size=32", "--compile=False", "--dtype=float32",
                          "--update_overhead", "--steps=10", "--rounds=2"])
    printed = capsys.readouterr().out
    assert printed.startswith("# python bench.py --model=llama_nano --batch_size=2")
    assert re.search(r"update monitor on llama_nano \(llr\), update_every=10, 16 matrices: [\d.]+ ms per monitored "
                     r"update, train step [\d.]+ ms \| share of the training time [\d.]+ %", printed)
    assert re.search(r"end to end, 10 steps: [\d.]+ s off, [\d.]+ s on, [-+][\d.]+ % \(median of 2 interleaved rounds", printed)
    assert figures["matrices"] == 16 and 0 < figures["share_pct"] < 100


# --- DDP ----------------------------------------------------------------------------------------

def test_two_gloo_processes_log_what_one_process_logs(text_dataset, tmp_path):
    """Every rank computes the ratios of its own (identical) weights and rank 0 logs them; two processes with
    grad_accum=2 make the updates of one process with grad_accum=2."""
    args = TINY + [f"--dataset={text_dataset}", "--max_iters=4", "--update_every=2", "--grad_accum=2", "--strategy=uniform"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for launcher, out in (((), "one"), (("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"), "ddp")):
        proc = subprocess.run([sys.executable, *launcher, "train.py", *args, f"--out_dir={tmp_path / out}"], cwd=ROOT,
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("update monitor: ") == 1  # rank 0 prints the cost line
    one, ddp = ({r["iter"]: r["update_ratio"] for r in records(tmp_path / d) if "update_ratio" in r} for d in ("one", "ddp"))
    assert sorted(one) == sorted(ddp) == [0, 2]
    for it in one:
        assert one[it].keys() == ddp[it].keys() and len(one[it]) == 16
        for name in one[it]:  # equal in practice; 1e-6 leaves room for all-reduce order in the weights' last bits
            assert ddp[it][name] == pytest.approx(one[it][name], rel=1e-6), (it, name)
