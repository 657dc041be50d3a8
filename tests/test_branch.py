"""train.py: cooldown branches from a checkpoint, kept periodic checkpoints, and resumes that refuse a changed
schedule."""
import json
import math
import os
import re
import shutil
import types

import pytest

import checkpoint
import preflight
import train
from model import load_checkpoint
from test_train import TINY, losses, run_train, text_dataset  # noqa: F401  (fixture)

STABLE = ["--schedule=wsd", "--decay_frac=0", "--eval_interval=100"]  # warmup 2 (TINY), then 1 until the end


def lrs(out_dir):
    return {r["iter"]: r["lr"] for r in map(json.loads, open(os.path.join(out_dir, "metrics.jsonl"))) if "lr" in r}


@pytest.fixture(scope="module")
def stable(text_dataset, tmp_path_factory):  # noqa: F811
    """A 12-update run in the stable phase of WSD, keeping ckpt_4, ckpt_8 and ckpt_12."""
    out = str(tmp_path_factory.mktemp("runs") / "stable")
    run_train(TINY + STABLE + [f"--dataset={text_dataset}", f"--out_dir={out}", "--max_iters=12", "--ckpt_every=4",
                               "--keep_ckpts=3", "--strategy=uniform"])
    return out


def test_keep_ckpts_keeps_exactly_the_newest_n_checkpoints(text_dataset, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    run_train(TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", "--max_iters=12", "--ckpt_every=2", "--keep_ckpts=3",
                      "--eval_interval=100", "--strategy=uniform"])
    assert sorted(f for f in os.listdir(out) if f.startswith("ckpt")) == ["ckpt.pt", "ckpt_10.pt", "ckpt_12.pt", "ckpt_8.pt"]
    assert [load_checkpoint(out / f"ckpt_{i}.pt")["iter_num"] for i in (8, 10, 12)] == [8, 10, 12]
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


@pytest.mark.parametrize("strategy", ["uniform", "llr"])
def test_a_branch_from_the_stable_phase_is_the_wsd_run_that_decays_there(text_dataset, tmp_path, strategy):  # noqa: F811
    args = TINY + STABLE + [f"--dataset={text_dataset}", f"--strategy={strategy}", "--llr_ramp=0"]
    stable, branch, full = (str(tmp_path / n) for n in ("stable", "branch", "full"))
    run_train(args + [f"--out_dir={stable}", "--max_iters=12", "--ckpt_every=4", "--keep_ckpts=3"])
    run_train(args + [f"--out_dir={branch}", f"--init_from={stable}", "--branch_at=8", "--decay_iters=6",
                      "--ckpt_every=2", "--keep_ckpts=10"])
    # one WSD run of 14 updates whose decay (6 updates, 1-sqrt to min_lr_ratio 0.1) starts at 8
    run_train(args + [f"--out_dir={full}", "--max_iters=14", f"--decay_frac={6 / 14}"])
    assert losses(branch) == losses(full) and len(losses(branch)) == 14  # every iteration, as exact floats
    assert {i: l for i, l in losses(branch).items() if i <= 8} == {i: l for i, l in losses(stable).items() if i <= 8}
    lr, peak = lrs(branch), 3e-3 * (5.0 if strategy == "llr" else 1.0)  # the log's LR is the largest group's
    assert [lr[i] for i in range(2, 8)] == [peak] * 6  # the stable phase, the parent's rows
    assert [lr[i] for i in range(8, 14)] == pytest.approx([peak * (0.1 + 0.9 * (1 - math.sqrt((i + 1 - 8) / 6)))
                                                           for i in range(8, 14)], rel=1e-12)
    assert lr[13] == pytest.approx(0.1 * peak, rel=1e-15)  # min_lr_ratio·learning_rate at the branch's last update
    ckpt = load_checkpoint(branch)
    assert ckpt["iter_num"] == 14 and ckpt["config"]["max_iters"] == 14
    assert ckpt["config"]["branch"]["at"] == 8 and ckpt["config"]["branch"]["parent"]["max_iters"] == 12
    # a branch resumes exactly too: back to its checkpoint at 10, as if killed after it
    killed = str(tmp_path / "killed")
    shutil.copytree(branch, killed)
    shutil.copy(os.path.join(killed, "ckpt_10.pt"), os.path.join(killed, "ckpt.pt"))
    run_train(args + [f"--out_dir={killed}", "--init_from=resume", "--decay_iters=6"])
    assert losses(killed) == losses(branch) and lrs(killed) == lrs(branch)


def test_branch_at_minus_one_branches_at_the_checkpoints_own_iteration(stable, text_dataset, tmp_path):  # noqa: F811
    out = str(tmp_path / "cooldown")
    run_train(TINY + STABLE + [f"--dataset={text_dataset}", f"--out_dir={out}", f"--init_from={stable}", "--decay_iters=4",
                               "--strategy=uniform", "--min_lr_ratio=0", "--decay_shape=linear"])
    lr = lrs(out)
    assert max(lr) == 15 and [lr[i] for i in range(12, 16)] == pytest.approx([3e-3 * (1 - k / 4) for k in (1, 2, 3, 4)])
    assert lr[15] == 0.0 and {i: lr[i] for i in range(12)} == lrs(stable)


def test_resume_with_a_changed_schedule_refuses_and_names_the_keys_unless_allowed(text_dataset, tmp_path):  # noqa: F811
    out = str(tmp_path / "run")
    args = TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", "--eval_interval=100", "--strategy=uniform"]
    run_train(args + ["--max_iters=4"])
    proc = run_train(args + ["--max_iters=6", "--init_from=resume", '--lr_mult=[("embed", 2.0)]'], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "max_iters (checkpoint 4, config 6)" in proc.stderr and "lr_mult (checkpoint (), config (('embed', 2.0),))" in proc.stderr
    assert "--allow_schedule_change=True" in proc.stderr and load_checkpoint(out)["iter_num"] == 4
    run_train(args + ["--max_iters=6", "--init_from=resume", "--allow_schedule_change=True"])
    assert load_checkpoint(out)["iter_num"] == 6 and sorted(losses(out)) == list(range(6))


def namespace(*args):
    return types.SimpleNamespace(**train.parse_config(list(TINY) + list(args)))


@pytest.mark.parametrize("args, message", [
    (["--branch_at=20", "--decay_iters=4"], "branch_at=20 is beyond the checkpoint in '{stable}', which is at iteration 12: "
                                            "branch at 12 or before"),
    (["--branch_at=6", "--decay_iters=4"], "branch_at=6: no ckpt_6.pt in '{stable}' (kept: ckpt_4.pt, ckpt_8.pt, ckpt_12.pt)"),
])
def test_a_branch_point_that_is_not_there_is_a_config_error(stable, args, message):
    with pytest.raises(SystemExit, match="^" + re.escape(f"config error: {message.format(stable=stable)}")):
        checkpoint.load_start(namespace(f"--init_from={stable}", *args), "cpu")
    assert checkpoint.load_start(namespace(f"--init_from={stable}", "--branch_at=4", "--decay_iters=4"), "cpu")[0]["iter_num"] == 4
    assert checkpoint.load_start(namespace(f"--init_from={stable}/ckpt.pt", "--decay_iters=4"), "cpu")[0]["iter_num"] == 12


@pytest.mark.parametrize("args, message", [
    (["--init_from={stable}"], "a branch from '{stable}' decays over decay_iters updates from branch_at: set --decay_iters > 0"),
    (["--branch_at=8"], "branch_at and decay_iters start a cooldown branch: set --init_from="),
    (["--init_from=/nonexistent/run", "--decay_iters=4"], "init_from must be 'scratch', 'resume', or a run directory"),
    (["--keep_ckpts=2"], "keep_ckpts=2 keeps the ckpt_every checkpoints: set ckpt_every > 0"),
])
def test_bad_branch_config_is_a_config_error(stable, args, message):
    with pytest.raises(SystemExit, match="^" + re.escape(f"config error: {message.format(stable=stable)}")):
        preflight.check_config(namespace(*[a.format(stable=stable) for a in args]), 1)


def test_a_branch_needs_a_fresh_out_dir(stable, text_dataset, tmp_path):  # noqa: F811
    proc = run_train(TINY + STABLE + [f"--dataset={text_dataset}", f"--out_dir={stable}", f"--init_from={stable}",
                                      "--decay_iters=4", "--strategy=uniform"], check=False)
    assert proc.returncode != 0 and "a branch starts a new run: choose a fresh --out_dir" in proc.stderr
    assert load_checkpoint(stable)["iter_num"] == 12
