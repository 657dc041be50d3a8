"""The SLURM launcher (eval/slurm.py) against a real SLURM: munged, slurmctld and slurmd started here on localhost
(Debian's slurm-wlm; .ci/run installs it), one node with this machine's CPUs. A sweep through SLURM equals the same
sweep run locally, bitwise; a job preempted mid-run (SIGUSR1, or requeued by scontrol) is requeued and ends bitwise
equal to the run never stopped; a failed job is reported with its log; a rerun submits only the runs missing; bad
options stop before anything is submitted. Without the binaries, or without root, those tests skip."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import checkpoint
import train
from eval import slurm, sweep
from model import load_checkpoint
from test_train import text_dataset  # noqa: F401  (fixture)

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "srun")
TINY = ["--model=llama_nano", "--block_size=32", "--batch_size=4", "--eval_tokens=256", "--dtype=float32", "--warmup_iters=1",
        "--log_interval=1"]
SLURM = ["--launcher", "slurm", "--slurm_gpus_per_run", "0", "--slurm_cpus_per_run", "1", "--slurm_time", "10"]


def binary(name):
    """A SLURM or munge program: on PATH, or in the sbin folders a user's PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout, logs=()):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    tails = "".join(f"\n--- {p}:\n" + open(p).read()[-1500:] for p in logs if os.path.exists(p))
    pytest.fail(f"the test cluster: {what} within {timeout} s{tails}")


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node SLURM cluster for this session: its own munge key and socket, slurm.conf, ports and state in a
    temporary folder, SLURM_CONF pointing at it; every daemon stopped and the folder removed after."""
    missing = [b for b in DAEMONS if binary(b) is None]
    if missing:
        pytest.skip(f"no SLURM here ({', '.join(missing)} not on PATH): `apt-get install slurm-wlm munge`, as .ci/run does")
    if os.geteuid() != 0:
        pytest.skip("the test cluster's slurmd runs jobs as any user, so it needs root")
    pytest.importorskip("submitit", reason="the slurm launcher submits through submitit (requirements-dev.txt)")
    root = tempfile.mkdtemp(prefix="nanolr_slurm_")
    os.chmod(root, 0o755)  # munged wants a socket folder that every user can enter
    node = socket.gethostname().split(".")[0]
    memory = int(open("/proc/meminfo").read().split()[1]) // 1024 * 9 // 10  # MB, below what slurmd finds
    files = {k: os.path.join(root, k) for k in ("munge.key", "munge.socket", "slurm.conf", "state", "spool", "slurmctld.log",
                                                "slurmd.log", "munged.log")}
    with open(files["munge.key"], "wb") as f:
        f.write(os.urandom(1024))
    os.chmod(files["munge.key"], 0o400)
    os.makedirs(files["state"])
    os.makedirs(files["spool"])
    conf = f"""ClusterName=nanolr_test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={files['munge.socket']},cred_expire=5
StateSaveLocation={files['state']}
SlurmdSpoolDir={files['spool']}
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={files['slurmctld.log']}
SlurmdLogFile={files['slurmd.log']}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=1
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
    with open(files["slurm.conf"], "w") as f:
        f.write(conf)
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = files["slurm.conf"]
    daemons = []
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        daemons.append(subprocess.Popen([binary("munged"), "-F", f"--key-file={files['munge.key']}", f"--socket={files['munge.socket']}",
                                         f"--log-file={files['munged.log']}", f"--pid-file={root}/munged.pid",
                                         f"--seed-file={root}/munged.seed"], **quiet))
        wait_for("munged's socket", lambda: os.path.exists(files["munge.socket"]), 20, [files["munged.log"]])
        daemons.append(subprocess.Popen([binary("slurmctld"), "-D", "-f", files["slurm.conf"]], **quiet))
        daemons.append(subprocess.Popen([binary("slurmd"), "-D", "-N", node, "-f", files["slurm.conf"]], **quiet))
        idle = lambda: subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20).stdout.strip() == "idle"
        wait_for("the node idle", idle, 60, [files["slurmctld.log"], files["slurmd.log"]])
        yield dict(root=root, conf=files["slurm.conf"], node=node)
    finally:
        subprocess.run(["scancel", "-u", "root"], capture_output=True, timeout=30)
        for proc in reversed(daemons):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fast_polls(monkeypatch):
    monkeypatch.setattr(slurm, "POLL_S", 0.3)


def grid(out, dataset, strategies="uniform,llr:llr_min_evals=8", lrs="1e-3,1e-2", iters=6, extra=()):
    return ["--strategies", strategies, "--lrs", lrs, "--seeds", "1", "--out", str(out), "--no_plots", "--bootstrap", "0",
            *extra, "--", *TINY, f"--dataset={dataset}", f"--max_iters={iters}", f"--eval_interval={iters // 2}",
            "--llr_every=2", "--llr_ramp=1"]


def results(out):
    return {(r["label"], r["lr"], r["seed"]): r for r in json.load(open(os.path.join(out, "results.json")))["runs"]}


def train_losses(run_dir):
    rows = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    return [(r["iter"], r.get("train_loss"), r.get("val_loss")) for r in rows]


def weights(run_dir):
    return [t.tolist() for t in load_checkpoint(str(run_dir))["model"].values()]


def same_runs(a, b):
    """Two sweeps' runs: the same final losses and every logged loss, compared as exact floats."""
    ra, rb = results(a), results(b)
    assert ra.keys() == rb.keys()
    for k in ra:
        assert ra[k]["status"] == rb[k]["status"] == "finished", (k, ra[k].get("message"), rb[k].get("message"))
        assert ra[k]["final_val_loss"] == rb[k]["final_val_loss"], k
        assert train_losses(os.path.join(a, ra[k]["dir"])) == train_losses(os.path.join(b, rb[k]["dir"])), k


# --- with a cluster ------------------------------------------------------------------------------------------

def test_a_sweep_through_slurm_equals_the_local_sweep_and_a_rerun_submits_only_what_is_missing(
        slurm_cluster, text_dataset, tmp_path, capsys, fast_polls):  # noqa: F811
    local, remote = tmp_path / "local", tmp_path / "slurm"
    assert sweep.main(grid(local, text_dataset, extra=["--jobs", "2", "--threads", "1"])) == 0
    assert sweep.main(grid(remote, text_dataset, extra=SLURM)) == 0
    out = capsys.readouterr().out
    assert "submitted 4 runs as job" in out
    same_runs(str(local), str(remote))
    jobs = json.load(open(remote / "slurm" / "jobs.json"))
    assert len(jobs) == 4 and len({j["job"].split("_")[0] for j in jobs.values()}) == 1  # one array
    for key, job in jobs.items():  # each run's output beside it, each task's own log under <out>/slurm/
        assert "### attempt 1 (fresh)" in open(remote / key / "stdout.txt").read() and os.path.exists(job["log"])

    assert sweep.main(grid(remote, text_dataset, extra=SLURM + ["--status"])) == 0
    status = capsys.readouterr().out
    assert "4 runs (slurm launcher): 4 done, 0 running, 0 pending, 0 failed, 0 diverged" in status
    assert "100%|" in status and "4/4 runs ended" in status

    gone = next(k for k in jobs if k.startswith("uniform_lr0.01"))
    kept = {k: os.path.getmtime(remote / k / "metrics.jsonl") for k in jobs if k != gone}
    shutil.rmtree(remote / gone)
    assert sweep.main(grid(remote, text_dataset, extra=SLURM)) == 0
    assert "4 runs: 3 kept, 0 to resume, 1 to start" in capsys.readouterr().out
    again = json.load(open(remote / "slurm" / "jobs.json"))
    assert again[gone]["job"] != jobs[gone]["job"] and all(again[k] == jobs[k] for k in kept)  # one new job, the only one
    assert all(os.path.getmtime(remote / k / "metrics.jsonl") == t for k, t in kept.items())
    same_runs(str(local), str(remote))


def test_preempted_jobs_are_requeued_and_end_bitwise_equal_to_runs_never_stopped(
        slurm_cluster, text_dataset, tmp_path, fast_polls, one_thread):  # noqa: F811
    """One job gets SLURM's warning signal (scancel --signal=USR1), the other is requeued by scontrol (SIGTERM);
    each writes its checkpoint, exits for a requeue, and its job starts again from that checkpoint."""
    remote = tmp_path / "slurm"
    argv = grid(remote, text_dataset, strategies="uniform", lrs="1e-3,3e-3", iters=150, extra=SLURM)
    ended = {}
    thread = threading.Thread(target=lambda: ended.update(rc=sweep.main(argv)))
    thread.start()
    try:
        deadline, hit = time.time() + 90, {}
        while len(hit) < 2 and time.time() < deadline and thread.is_alive():
            jobs = sweep.read_json(str(remote / "slurm" / "jobs.json")) or {}
            for key, how in (("uniform_lr0.001/seed0", ["scancel", "--signal=USR1"]), ("uniform_lr0.003/seed0", ["scontrol", "requeue"])):
                path = remote / key / "metrics.jsonl"
                if key in jobs and key not in hit and path.exists() and sum(1 for _ in open(path)) > 30:
                    subprocess.run(how + [jobs[key]["job"]], check=True, timeout=30)
                    hit[key] = jobs[key]["job"]
            time.sleep(0.05)
        assert len(hit) == 2, "the runs ended before they could be preempted"
    finally:
        thread.join(timeout=240)
    assert ended.get("rc") == 0
    for key, sig in (("uniform_lr0.001/seed0", "SIGUSR1"), ("uniform_lr0.003/seed0", "SIGTERM")):
        reference = str(tmp_path / "reference" / key)
        args = json.load(open(remote / key / "sweep.json"))["args"]
        train.train(train.parse_config([a for a in args if not a.startswith("--out_dir=")] + [f"--out_dir={reference}"]))
        assert train_losses(remote / key) == train_losses(reference)  # every logged loss, as exact floats
        assert weights(remote / key) == weights(reference)
        log = open(remote / key / "stdout.txt").read()
        assert f"preempted: {sig}: ckpt.pt of iter" in log and "### attempt 2 (resume)" in log, log[-3000:]
        assert "--init_from=resume" in log.split("### attempt 2")[1].splitlines()[0]
        assert json.load(open(remote / key / "sweep.json"))["attempts"] == 2
    task_log = open(json.load(open(remote / "slurm" / "jobs.json"))["uniform_lr0.001/seed0"]["log"]).read()
    assert "requeued job" in task_log


def test_a_failed_job_is_reported_with_its_log_and_a_locked_run_names_its_holder(
        slurm_cluster, text_dataset, tmp_path, capsys, fast_polls):  # noqa: F811
    out = tmp_path / "slurm"
    run_dir = out / "uniform_lr0.001" / "seed0"
    run_dir.mkdir(parents=True)
    held = checkpoint.RunLock(str(run_dir))  # this test process holds the run directory
    assert sweep.main(grid(out, text_dataset, strategies="uniform", lrs="1e-3", extra=SLURM)) == 1
    printed = capsys.readouterr().out
    job = json.load(open(out / "slurm" / "jobs.json"))["uniform_lr0.001/seed0"]
    message = f"is in use by process {os.getpid()} on {socket.gethostname()}"
    assert message in printed and f"(see {run_dir}/stdout.txt and {job['log']})" in printed
    run = results(out)[("uniform", 1e-3, 0)]
    assert run["status"] == "failed" and message in run["message"] and run["log"] == job["log"]
    assert message in open(run_dir / "stdout.txt").read()
    held.release()


def test_bad_cluster_options_stop_before_anything_is_submitted(slurm_cluster, text_dataset, tmp_path, monkeypatch):  # noqa: F811
    out = tmp_path / "sweep"
    queued = lambda: subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout
    before = queued()
    with pytest.raises(SystemExit, match="Invalid partition name specified.*nothing was submitted"):
        sweep.main(grid(out, text_dataset, extra=SLURM + ["--slurm_partition", "nosuchpartition"]))
    dead = tmp_path / "dead.conf"
    dead.write_text(re.sub(r"SlurmctldPort=\d+", f"SlurmctldPort={free_port()}", open(slurm_cluster["conf"]).read()))  # nobody there
    monkeypatch.setenv("SLURM_CONF", str(dead))
    with pytest.raises(SystemExit, match=r"no SLURM controller reachable \(.*DOWN\); nothing was submitted"):
        sweep.main(grid(out, text_dataset, extra=SLURM))
    monkeypatch.undo()
    assert not out.exists() and queued() == before


# --- without a cluster ---------------------------------------------------------------------------------------

def test_slurm_options_need_the_slurm_launcher_and_the_launcher_must_be_known(tmp_path):
    with pytest.raises(SystemExit, match="--slurm_partition is an option of the slurm launcher: add --launcher slurm"):
        sweep.main(["--slurm_partition", "gpu", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as bad:
        sweep.main(["--launcher", "pbs", "--out", str(tmp_path)])
    assert bad.value.code == 2  # argparse: "invalid choice: 'pbs' (choose from 'local', 'slurm')"
    with pytest.raises(SystemExit, match="--jobs places runs on this machine"):
        sweep.main(["--launcher", "slurm", "--jobs", "4", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--slurm_sbatch 'time=5': the launcher sets --time"):
        sweep.main(["--launcher", "slurm", "--slurm_sbatch", "time=5", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--slurm_time='90min'"):
        sweep.main(["--launcher", "slurm", "--slurm_time", "90min", "--out", str(tmp_path)])
    assert [slurm.parse_time(t) for t in ("90", "1:30", "2:00:00", "1-0", "1-2:30", "0:0:1")] == [90, 2, 120, 1440, 1590, 1]
    assert not any(tmp_path.iterdir())


def test_plan_shows_the_jobs_and_their_sbatch_options_and_submitit_is_named_when_missing(
        text_dataset, tmp_path, capsys, monkeypatch):  # noqa: F811
    argv = grid(tmp_path / "sweep", text_dataset, strategies="uniform", lrs="1e-3,3e-3,1e-2,3e-2",
                extra=SLURM + ["--slurm_sbatch", "qos=high", "--slurm_array_parallelism", "3"])
    assert sweep.main(["--plan", *argv]) == 0
    printed = capsys.readouterr().out
    assert "SLURM: one array job of 4 tasks, one run each; sbatch --array=0-3%3 --cpus-per-task=1 --job-name=sweep " \
           "--qos=high --requeue --signal=USR1@90 --time=10" in printed
    assert "4 runs: 0 kept, 0 to resume, 4 to start; SLURM, a job per run" in printed
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    with pytest.raises(SystemExit, match="--launcher slurm needs the submitit package: pip install submitit"):
        sweep.main(argv)
    assert not (tmp_path / "sweep").exists()
