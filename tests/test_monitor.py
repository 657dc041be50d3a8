"""train.py's HT-SR monitor (--spectral_every, --spectral_metrics): what it logs equals spectral.analyze on the
checkpoint of the same iteration, it never changes training, bad settings stop the run with one message,
a degenerate matrix is skipped with its reason, DDP logs what one process logs; eval/plots.py draws it."""
import argparse
import json
import os
import subprocess
import sys

import pytest
import torch

import checkpoint
import model as M
import spectral
import train
from conftest import ROOT
from data.shakespeare.prepare import write_split

TINY = ["--model=llama_nano", "--block_size=32", "--batch_size=4", "--eval_tokens=512", "--dtype=float32",
        "--log_interval=1", "--learning_rate=3e-3", "--warmup_iters=2"]
MONITOR = ["--spectral_every=3", "--spectral_metrics=alpha,stable_rank,D"]
METRICS = ("alpha", "stable_rank", "D")


@pytest.fixture(scope="module")
def text_dataset(tmp_path_factory):
    """A small byte-level dataset from Python's own argparse source (every machine has it)."""
    directory = tmp_path_factory.mktemp("data") / "argparse_src"
    write_split(open(argparse.__file__).read(), str(directory))
    return str(directory)


def run_train(args, check=True, launcher=()):
    """train.py in a subprocess (launcher: e.g. torchrun's module and flags before train.py)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *launcher, "train.py", *args], cwd=ROOT, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def records(out_dir):
    return [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]


def spectral_by_iter(out_dir):
    """iter -> (spectral, spectral_skipped) of the monitor's records."""
    return {r["iter"]: (r["spectral"], r["spectral_skipped"]) for r in records(out_dir) if "spectral" in r}


@pytest.fixture(scope="module")
def monitored(text_dataset, tmp_path_factory):
    """A 6-iteration run with the monitor every 3 iterations and every 3rd checkpoint kept as ckpt_<iter>.pt:
    (out_dir, the train.py process)."""
    out = str(tmp_path_factory.mktemp("monitored") / "run")
    proc = run_train(TINY + MONITOR + [f"--dataset={text_dataset}", f"--out_dir={out}", "--max_iters=6",
                                       "--eval_interval=100", "--ckpt_every=3", "--keep_ckpts=5"])
    return out, proc


# --- what is logged -----------------------------------------------------------------------------

def test_logged_values_equal_analyze_on_the_checkpoint_of_the_same_iteration(monitored):
    out, proc = monitored
    logged = spectral_by_iter(out)
    assert sorted(logged) == [0, 3, 6]  # every spectral_every iterations, and at max_iters
    assert checkpoint.kept_checkpoints(out) == [0, 3, 6]
    for it, (values, skipped) in logged.items():
        net, ckpt = M.model_from_checkpoint(os.path.join(out, f"ckpt_{it}.pt"))
        assert ckpt["iter_num"] == it
        rows = spectral.analyze(net, metrics=METRICS)
        assert skipped == {} and set(values) == {r["name"] for r in rows}  # every matrix of llama_nano is fitted
        for r in rows:
            assert set(values[r["name"]]) == set(METRICS), r["name"]  # exactly the requested metrics
            for m in METRICS:
                assert values[r["name"]][m] == pytest.approx(r[m], rel=1e-6), (it, r["name"], m)
    # the weights change between the monitored iterations, and so do the logged alphas
    assert logged[0][0]["blocks.0.mlp.up"]["alpha"] != logged[6][0]["blocks.0.mlp.up"]["alpha"]
    # stdout: a summary on each monitored line and the monitor's cost once at the end
    assert proc.stdout.count("spectral: mean alpha") == 3
    assert proc.stdout.count("spectral monitor: ") == 1 and "% of the run (spectral_every=3)" in proc.stdout
    assert all(r["spectral_s"] >= 0 for r in records(out) if "spectral" in r)


def test_the_monitor_does_not_change_training(monitored, text_dataset, tmp_path):
    """Off and on give bitwise the same losses and weights: the monitor reads the weights and nothing else
    (no RNG draw, no grad, no write)."""
    on, _ = monitored
    off = str(tmp_path / "off")
    run_train(TINY + [f"--dataset={text_dataset}", f"--out_dir={off}", "--max_iters=6", "--eval_interval=100",
                      "--ckpt_every=3", "--keep_ckpts=5"])
    assert not any("spectral" in r for r in records(off))
    loss = lambda d, key: [(r["iter"], r[key]) for r in records(d) if key in r]
    assert loss(on, "train_loss") == loss(off, "train_loss") and len(loss(off, "train_loss")) == 6  # exact floats
    assert loss(on, "val_loss") == loss(off, "val_loss")
    a, b = M.load_checkpoint(on)["model"], M.load_checkpoint(off)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- bad settings -------------------------------------------------------------------------------

@pytest.mark.parametrize("arg, named", [
    ("--spectral_metrics=alpha,bogus", "bogus"),
    ("--spectral_metrics=,", "(none given)"),
    ("--spectral_every=-1", "spectral_every"),
])
def test_bad_monitor_settings_stop_the_run_with_one_message(text_dataset, tmp_path, arg, named):
    out = tmp_path / "o"
    proc = run_train(TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", "--max_iters=2", arg], check=False)
    assert proc.returncode != 0 and named in proc.stderr, proc.stderr
    assert proc.stderr.count("config error:") == 1 and "Traceback" not in proc.stderr
    if "metrics" in arg:  # the message lists what is valid
        valid = proc.stderr.split("valid: ", 1)[1]
        assert all(m in valid for m in spectral.METRICS)
    assert not out.exists() or not (out / "metrics.jsonl").exists()  # stopped before anything started


# --- a degenerate matrix -------------------------------------------------------------------------

def test_a_degenerate_matrix_is_logged_as_skipped_and_the_run_finishes(text_dataset, tmp_path, monkeypatch, capsys, one_thread):
    """blocks.0.attn.q and .k zeroed: attention scores are 0, so both get zero gradients and stay all-zero
    matrices under AdamW; the monitor skips them at every record, with the reason, and fits the others."""
    def zeroed(cfg):
        net = M.Transformer(cfg)
        with torch.no_grad():
            net.blocks[0].attn.q.weight.zero_()
            net.blocks[0].attn.k.weight.zero_()
        return net
    monkeypatch.setattr(train, "Transformer", zeroed)
    monkeypatch.delenv("RANK", raising=False)
    out = str(tmp_path / "run")
    train.train(train.parse_config(TINY + MONITOR + [f"--dataset={text_dataset}", f"--out_dir={out}", "--max_iters=6",
                                                     "--eval_interval=100", "--strategy=uniform"]))
    dead = {"blocks.0.attn.q", "blocks.0.attn.k"}
    logged = spectral_by_iter(out)
    assert sorted(logged) == [0, 3, 6]
    for it, (values, skipped) in logged.items():
        assert set(skipped) == dead and all("all-zero matrix" in reason for reason in skipped.values()), (it, skipped)
        assert not dead & set(values) and len(values) == 14  # the other matrices are fitted as usual
    assert M.load_checkpoint(out)["iter_num"] == 6  # the run finished
    assert capsys.readouterr().out.count("over 14 matrices (2 skipped)") == 3


# --- DDP ----------------------------------------------------------------------------------------

def test_two_gloo_processes_log_what_one_process_logs(text_dataset, tmp_path):
    """Under torchrun each rank fits its share of the matrices and all-gathers the rows; rank 0 logs them.
    Two processes with grad_accum=2 train on the same global batches as one (grad_accum=2), so the weights and
    the logged values agree."""
    ddp = str(tmp_path / "ddp")
    args = TINY + MONITOR + [f"--dataset={text_dataset}", "--max_iters=6", "--eval_interval=100", "--grad_accum=2"]
    one = str(tmp_path / "one")
    run_train(args + [f"--out_dir={one}"])
    proc = run_train(args + [f"--out_dir={ddp}"], launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"))
    a, b = spectral_by_iter(one), spectral_by_iter(ddp)
    assert sorted(a) == sorted(b) == [0, 3, 6]
    for it in a:
        assert a[it][1] == b[it][1] == {}
        assert a[it][0].keys() == b[it][0].keys() and len(a[it][0]) == 16  # every matrix, whichever rank fitted it
        for name in a[it][0]:
            for m in METRICS:
                # equal in practice (measured: bitwise); 1e-6 leaves room for all-reduce order in the weights' last bits
                assert b[it][0][name][m] == pytest.approx(a[it][0][name][m], rel=1e-6), (it, name, m)
    assert proc.stdout.count("spectral monitor: ") == 1  # rank 0 prints the cost line


# --- plots --------------------------------------------------------------------------------------

def test_plots_draw_the_monitor_a_comparison_and_esds(monitored, text_dataset, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from eval import plots
    run, _ = monitored
    other = str(tmp_path / "other")
    run_train(TINY + [f"--dataset={text_dataset}", f"--out_dir={other}", "--max_iters=3", "--eval_interval=100",
                      "--spectral_every=3", "--learning_rate=1e-2"])
    out = tmp_path / "plots"
    plots.main([run, "--out", str(out), "--compare", other, "--esd", "embed,blocks.0.mlp.up", "--at", "0,6"])
    for png in ("loss.png", "alpha_monitor.png", "alpha_compare.png", "esd.png"):
        assert (out / png).stat().st_size > 1000, png
    # per-kind means of the monitor's records: the series the two alpha plots draw
    series = plots.monitor_alpha(plots.read_metrics(run))
    assert [it for it, _ in series] == [0, 3, 6] and set(series[0][1]) == {"embed", "attn_qk", "attn_vo", "mlp", "head"}
    first = records(run)[0]["spectral"]
    assert series[0][1]["mlp"] == pytest.approx(sum(v["alpha"] for n, v in first.items() if ".mlp." in n) / 6)

    # without --at, the ESD is ckpt.pt's; a missing checkpoint or matrix stops with the list of those there are
    plots.main([run, "--out", str(tmp_path / "latest"), "--esd", "head"])
    assert (tmp_path / "latest" / "esd.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match=r"no checkpoint of iteration 4 .*ckpt_0.pt, ckpt_3.pt, ckpt_6.pt"):
        plots.main([run, "--out", str(tmp_path / "x"), "--esd", "embed", "--at", "3,4"])
    with pytest.raises(SystemExit, match=r"no weight matrix named 'blocks.9.mlp.up'; names: embed, blocks.0.attn.q"):
        plots.main([run, "--out", str(tmp_path / "x"), "--esd", "blocks.9.mlp.up"])
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "metrics.jsonl").write_text(json.dumps(dict(iter=0, train_loss=5.0)) + "\n")
    with pytest.raises(SystemExit, match="has no monitor records with alpha"):
        plots.main([run, "--out", str(tmp_path / "x"), "--compare", str(plain)])
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").glob("*.png"))  # checked before drawing
    plots.main([str(plain), "--out", str(tmp_path / "p")])  # a run without the monitor: no alpha_monitor.png
    assert not (tmp_path / "p" / "alpha_monitor.png").exists() and (tmp_path / "p" / "loss.png").exists()
