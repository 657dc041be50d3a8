"""Preemption and the run-directory lock, without a scheduler: a signal stops train.py (one process or DDP) and
finetune.py after an update with a checkpoint and the requeue exit status, the resumed run is bitwise the run never
stopped, the local sweep runs a preempted run again from its checkpoint, and no two processes write one run
directory (a live holder is named; a dead one's lock is taken over)."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

import checkpoint
import train
from configurator import ConfigError
from conftest import ROOT
from eval import runs, sweep
from model import load_checkpoint, read_checkpoint_file
from test_train import losses, run_train, text_dataset  # noqa: F401  (fixture)

TINY = ["--model=llama_nano", "--block_size=32", "--batch_size=4", "--eval_tokens=256", "--dtype=float32", "--log_interval=1",
        "--warmup_iters=2", "--max_iters=120", "--eval_interval=40"]
RUN = ["--strategy=uniform", "--seed=1337", "--learning_rate=0.003"]  # what the sweep below adds for its one run


def metrics(out_dir):
    """metrics.jsonl without its timings, which differ between any two runs."""
    rows = [json.loads(l) for l in open(os.path.join(out_dir, "metrics.jsonl"))]
    return [{k: v for k, v in r.items() if k not in ("tok_per_s", "mfu")} for r in rows]


def weights_equal(a, b):
    x, y = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def reference(text_dataset, tmp_path_factory):  # noqa: F811
    """The run never stopped, trained in this process (one thread, as the subprocesses below)."""
    out = str(tmp_path_factory.mktemp("reference") / "run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train.train(train.parse_config(TINY + RUN + [f"--dataset={text_dataset}", f"--out_dir={out}"]))
    finally:
        torch.set_num_threads(threads)
    return out


def signal_when(alive, out_dir, sig, at_iter, pid):
    """Send sig to pid() once out_dir's metrics.jsonl has logged iteration at_iter."""
    path = os.path.join(out_dir, "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and alive():
        if os.path.exists(path) and max(losses(out_dir) or {0: -1}) >= at_iter:
            os.kill(pid(), sig)
            return
        time.sleep(0.01)
    raise AssertionError(f"the run ended or stalled before iteration {at_iter}")


# --- train.py --------------------------------------------------------------------------------------------

def test_sigusr1_stops_train_py_after_its_update_with_a_checkpoint_and_the_requeue_status(text_dataset, reference, tmp_path):  # noqa: F811
    out = str(tmp_path / "run")
    args = TINY + RUN + [f"--dataset={text_dataset}", f"--out_dir={out}"]
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    signal_when(lambda: proc.poll() is None, out, signal.SIGUSR1, 20, lambda: proc.pid)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == checkpoint.REQUEUE_EXIT == 75, stderr[-2000:]
    stopped = load_checkpoint(out)["iter_num"]
    assert stopped == max(losses(out)) + 1 < 120  # the state after the last logged update, written before the exit
    assert stdout.strip().splitlines()[-1] == f"preempted: SIGUSR1: ckpt.pt of iter {stopped} written in {out}; continue with " \
                                              "--init_from=resume"
    assert "Traceback" not in stderr and not os.path.exists(os.path.join(out, "lock"))  # the lock went with the process

    run_train(args + ["--init_from=resume"])
    assert metrics(out) == metrics(reference)  # every logged value of every iteration, as exact floats
    assert weights_equal(out, reference)


def test_ddp_ranks_agree_when_one_rank_alone_is_signalled_and_resume_bitwise(text_dataset, tmp_path):  # noqa: F811
    """SIGTERM to rank 1 only: both ranks stop at the same logged step, rank 0 writes the checkpoint, and the run
    resumed under torchrun is the uninterrupted DDP run."""
    args = TINY + RUN + [f"--dataset={text_dataset}", "--grad_accum=2", "--max_iters=30", "--eval_interval=15"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")

    def rank1():
        children = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
        return next(int(p) for p in children if b"\0RANK=1\0" in b"\0" + open(f"/proc/{p}/environ", "rb").read())
    proc = subprocess.Popen(torchrun + args + [f"--out_dir={part}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    signal_when(lambda: proc.poll() is None, part, signal.SIGTERM, 8, rank1)
    output, _ = proc.communicate(timeout=120)
    stopped = load_checkpoint(part)["iter_num"]
    assert f"preempted: a signal on another rank: ckpt.pt of iter {stopped} written" in output, output[-3000:]
    assert output.count("exitcode  : 75") == 2 and stopped == max(losses(part)) + 1 < 30  # both ranks, the same step

    for extra, out in (([], whole), (["--init_from=resume"], part)):
        done = subprocess.run(torchrun + args + [f"--out_dir={out}"] + extra, cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    assert metrics(part) == metrics(whole) and weights_equal(part, whole)


# --- the local sweep -------------------------------------------------------------------------------------

def test_the_local_sweep_runs_a_preempted_run_again_from_its_checkpoint(text_dataset, reference, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "sweep"
    run_dir = str(out / "uniform_lr0.003" / "seed0")
    argv = ["--strategies", "uniform", "--lrs", "3e-3", "--seeds", "1", "--jobs", "1", "--threads", "1", "--out", str(out),
            "--no_plots", "--bootstrap", "0", "--", *TINY, f"--dataset={text_dataset}"]
    ended = {}
    thread = threading.Thread(target=lambda: ended.update(rc=sweep.main(argv)))
    thread.start()
    holder = lambda: json.load(open(os.path.join(run_dir, "lock")))["pid"]  # the run's own pid, from its lock
    signal_when(thread.is_alive, run_dir, signal.SIGTERM, 15, holder)
    thread.join(timeout=180)
    assert ended["rc"] == 0
    record = json.load(open(os.path.join(run_dir, "sweep.json")))
    assert record["status"] == "finished" and record["attempts"] == 2 and record["action"] == "resume"
    log = open(os.path.join(run_dir, "stdout.txt")).read()
    assert "preempted: SIGTERM: ckpt.pt of iter" in log and "### attempt 2 (resume)" in log
    assert "REQUEUED: preempted: SIGTERM" in capsys.readouterr().out
    assert metrics(run_dir) == metrics(reference) and weights_equal(run_dir, reference)


# --- finetune.py -----------------------------------------------------------------------------------------

def test_finetune_stops_on_a_signal_with_a_checkpoint_and_resumes_exactly(tmp_path, monkeypatch):
    """In this process: the handler is the run's while it lives, and the old one is back after it."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("datasets")
    import finetune
    import optim
    from test_finetune import TINY as HF_TINY, config, rows, write_jsonl
    data = tmp_path / "data"
    torch.manual_seed(0)
    hf = HF_TINY["distilbert"]()
    hf.num_labels, hf.pad_token_id = 3, 0
    transformers.AutoModelForSequenceClassification.from_config(hf).save_pretrained(data / "distilbert")
    write_jsonl(data / "train.jsonl", rows(96, 0))
    write_jsonl(data / "val.jsonl", rows(48, 1))
    keys = dict(model="distilbert", epochs=2, write_checkpoints=True, log_interval=1)  # 6 updates an epoch
    whole = config(data, out_dir=str(tmp_path / "whole"), **keys)
    finetune.finetune(whole)
    part = config(data, out_dir=str(tmp_path / "part"), **keys)
    real_update = optim.update

    def signal_at_update_3(strategy, it, *a, **k):
        if it == 3:
            os.kill(os.getpid(), signal.SIGUSR1)
        return real_update(strategy, it, *a, **k)
    monkeypatch.setattr(finetune.optim, "update", signal_at_update_3)
    before = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(SystemExit) as stop:
        finetune.finetune(part)
    assert stop.value.code == checkpoint.REQUEUE_EXIT and read_checkpoint_file(os.path.join(part["out_dir"], "ckpt.pt"))["iter_num"] == 4  # after update 3
    del stop  # the last reference to the run's frames
    assert signal.getsignal(signal.SIGUSR1) is before and not os.path.exists(os.path.join(part["out_dir"], "lock"))
    monkeypatch.setattr(finetune.optim, "update", real_update)
    finetune.finetune(dict(part, init_from="resume"))
    assert metrics(part["out_dir"]) == metrics(whole["out_dir"])


# --- the lock --------------------------------------------------------------------------------------------

def write_lock(directory, **holder):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "lock"), "w") as f:
        json.dump(dict(dict(host=socket.gethostname(), since="then"), **holder), f)


def test_a_live_holder_is_named_and_nothing_is_written(text_dataset, tmp_path):  # noqa: F811
    out = str(tmp_path / "run")
    os.makedirs(out)
    held = checkpoint.RunLock(out)  # this test process holds it
    holder = json.load(open(held.path))
    assert (holder["pid"], holder["host"], holder["started"]) == (os.getpid(), socket.gethostname(),
                                                                  checkpoint.process_start(os.getpid()))
    proc = run_train(TINY + RUN + [f"--dataset={text_dataset}", f"--out_dir={out}"], check=False)
    assert proc.returncode != 0
    assert f"out_dir {out!r} is in use by process {os.getpid()} on {socket.gethostname()}" in proc.stderr
    assert sorted(os.listdir(out)) == ["lock"]  # nothing written
    held.release()
    assert not os.path.exists(os.path.join(out, "lock"))


def test_stale_locks_are_taken_over_and_others_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    d = str(tmp_path / "a")
    write_lock(d, pid=gone.pid)  # a process of this host that is dead: taken over, with a note
    lock = checkpoint.RunLock(d)
    assert f"process {gone.pid} on {socket.gethostname()}, which held this run directory, is gone" in capsys.readouterr().out
    assert json.load(open(lock.path))["pid"] == os.getpid()
    del lock  # dropped: released
    assert not os.path.exists(os.path.join(d, "lock"))

    parent = os.getppid()  # alive on this host
    write_lock(d, pid=parent, started=checkpoint.process_start(parent))
    with pytest.raises(ConfigError, match=f"in use by process {parent} on {socket.gethostname()} \\(since then\\)"):
        checkpoint.RunLock(d)
    write_lock(d, pid=parent, started=-1)  # the pid lives, but it is another process now: the holder is gone
    lock = checkpoint.RunLock(d)
    assert json.load(open(lock.path))["pid"] == os.getpid()
    lock.release()
    write_lock(d, pid=123, host="node-elsewhere")  # cannot be checked from here: refused, with what to do
    with pytest.raises(ConfigError, match="process 123 on node-elsewhere .*delete .*lock"):
        checkpoint.RunLock(d)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")  # ... unless it is an earlier start of this very job (a requeue)
    write_lock(d, pid=123, host="node-elsewhere", slurm_job="4242")
    lock = checkpoint.RunLock(d)
    assert json.load(open(lock.path))["slurm_job"] == "4242"


def test_the_sweep_reads_the_status_and_lock_train_py_writes():
    assert (runs.REQUEUE_EXIT, runs.PREEMPTED) == (checkpoint.REQUEUE_EXIT, checkpoint.PREEMPTED)
