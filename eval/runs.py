"""
The runs of a sweep on disk and on this machine: a run directory's state (its metrics, sweep.json, whether it
finished, diverged, failed, was preempted or is still to run) and the local launcher that places runs on this
machine's CPUs or GPUs. eval/sweep.py decides what runs (the grid, the ladders, the report); eval/slurm.py runs
them on a SLURM cluster; both read and run them through this file.
"""
import json
import math
import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time

from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from eval import verdict  # noqa: E402

TRAIN_OUTPUTS = ("ckpt.pt", "ckpt.pt.tmp", "metrics.jsonl", "metrics.jsonl.tmp", "config.json", "config.json.tmp")
REQUEUED = "requeued"  # stopped by a signal (preemption) after writing its checkpoint: to be run again from it
REQUEUE_EXIT, PREEMPTED = 75, "preempted:"  # checkpoint.REQUEUE_EXIT and checkpoint.PREEMPTED (eval/ does not import it)


class SweepError(SystemExit):
    def __init__(self, message):
        super().__init__(f"sweep error: {message}")


def tag_of(label):
    """The directory name of a strategy: the label with ':' and ',' as '_' and '=' as '-'."""
    tag = label.replace(":", "_").replace("=", "-").replace(",", "_")
    return re.sub(r"[^A-Za-z0-9._+-]", "-", tag)


# ----------------------------------------------------------------------------------------------
# the state of a run directory

def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, default=str)
    os.replace(path + ".tmp", path)


def eval_points(directory):
    """[[iter, val_loss], ...] from metrics.jsonl (a later row for an iteration replaces an earlier one)."""
    points = {}
    try:
        with open(os.path.join(directory, "metrics.jsonl")) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a kill
                if "val_loss" in rec and "iter" in rec:
                    points[rec["iter"]] = rec["val_loss"]
    except OSError:
        pass
    return [[k, points[k]] for k in sorted(points)]


def effective_lr(directory):
    """The run's mean relative update ‖ΔW‖/‖W‖ over the steps its update monitor logged (train.py --update_every),
    None when it logged none: the x-axis of a law in the effective LR (eval/lawfit.py --x effective)."""
    values = []
    try:
        with open(os.path.join(directory, "metrics.jsonl")) as f:
            for line in f:
                if '"update_ratio_mean"' in line:
                    try:
                        values.append(json.loads(line)["update_ratio_mean"])
                    except (ValueError, KeyError):
                        continue
    except OSError:
        pass
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def outcome(run):
    """Status of a run from its directory: finished, diverged (the script stopped it; or pretraining that ended at or
    above its first validation loss), failed, or pending (interrupted or never started). Fine-tuning is not judged by
    its first loss: a classifier's val loss often rises while its accuracy improves (overconfidence), so a finetune.py
    run diverges only when finetune.py stops it or its loss is not finite."""
    evals = eval_points(run["dir"])
    final = dict(map(tuple, evals)).get(run["max_iters"])
    run.update(evals=evals, final_val_loss=final, message=None, effective_lr=effective_lr(run["dir"]))
    record = read_json(os.path.join(run["dir"], "sweep.json")) or {}
    if final is not None:
        pretraining = run.get("script", "train.py") == "train.py"
        if not math.isfinite(final):
            return dict(status=verdict.DIVERGED, message=f"ended at val loss {final}")
        if pretraining and len(evals) > 1 and final >= evals[0][1]:
            return dict(status=verdict.DIVERGED, message=f"ended at val loss {final:.4f}, not below its first {evals[0][1]:.4f}")
        return dict(status=verdict.FINISHED)
    if record.get("status") in (verdict.DIVERGED, verdict.FAILED):
        return dict(status=record["status"], message=record.get("message"))
    return dict(status=verdict.PENDING)


def same_run(run, config):
    """Does a train.py config.json (no sweep.json beside it) belong to this run?"""
    want = dict(strategy=run["name"], seed=1337 + run["seed"], **dict(kv.split("=", 1) for kv in run["overrides"]))
    if run["lr"] is not None:
        want["learning_rate"] = run["lr"]
    return all(str(config.get(k)).lower() == str(v).lower() or _close(config.get(k), v) for k, v in want.items())


def _close(a, b):
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return False


def clear(directory):
    for name in TRAIN_OUTPUTS:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            os.remove(path)


# ----------------------------------------------------------------------------------------------
# placement on this machine

def detect_gpus(spec):
    if spec == "none":
        return []
    if spec != "auto":
        return [g.strip() for g in spec.split(",") if g.strip()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, _ in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def slots_of(gpus, nproc, jobs, threads):
    """One dict per concurrent run: its CUDA_VISIBLE_DEVICES and threads per process."""
    cpus = os.cpu_count() or 1
    if gpus:
        groups = [gpus[i:i + nproc] for i in range(0, len(gpus) - nproc + 1, nproc)]
        if not groups:
            raise SweepError(f"--nproc_per_node={nproc} needs {nproc} GPUs per run; {len(gpus)} visible ({','.join(gpus)})")
        groups = groups[:jobs] if jobs else groups
        per = threads or max(1, cpus // (len(groups) * nproc))
        return [dict(gpus=",".join(g), threads=per) for g in groups]
    jobs = jobs or max(1, cpus // 2)
    per = threads or max(1, cpus // (jobs * nproc))
    return [dict(gpus="", threads=per) for _ in range(jobs)]


class Launcher:
    def __init__(self, slots, nproc, script="train.py"):
        self.slots, self.nproc, self.script, self.free, self.live = slots, nproc, script, queue.Queue(), set()
        for s in slots:
            self.free.put(s)
        self.lock, self.done, self.total = threading.Lock(), 0, 0
        self.stopping, self.bar = False, None  # bar: a tqdm bar across runs, advanced as each run ends

    def command(self, run):
        args = run["args"] + (["--init_from=resume"] if run["action"] == "resume" else [])
        head = [sys.executable] if self.nproc == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.nproc}",
             "--signals_to_handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1,SIGUSR2"]  # passed on to the ranks, not fatal
        return head + [self.script] + args

    def __call__(self, run):
        slot = self.free.get()
        try:
            run = self.launch(run, slot)
            while run["status"] == REQUEUED and not self.stopping:  # preempted here too: continue from its checkpoint
                run["action"] = "resume" if os.path.exists(os.path.join(run["dir"], "ckpt.pt")) else "fresh"
                run = self.launch(run, slot)
            return run
        finally:
            self.free.put(slot)
            if self.bar is not None:
                self.bar.update()

    def launch(self, run, slot):
        d = run["dir"]
        os.makedirs(d, exist_ok=True)
        if run["action"] == "fresh":
            clear(d)
        record = read_json(os.path.join(d, "sweep.json")) or {}
        attempts = record.get("attempts", 0) + 1
        write_json(os.path.join(d, "sweep.json"), dict(args=run["args"], status="running", attempts=attempts, action=run["action"]))
        env = dict(os.environ, OMP_NUM_THREADS=str(slot["threads"]), MKL_NUM_THREADS=str(slot["threads"]),
                   CUDA_VISIBLE_DEVICES=slot["gpus"])
        cmd = self.command(run)
        t0 = time.time()
        with open(os.path.join(d, "stdout.txt"), "a") as log:
            log.write(f"\n### attempt {attempts} ({run['action']}), {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                      f"CUDA_VISIBLE_DEVICES={slot['gpus']!r} OMP_NUM_THREADS={slot['threads']} {shlex.join(cmd)}\n")
            log.flush()
            start = log.tell()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            with self.lock:
                self.live.add(proc)
            rc = proc.wait()
            with self.lock:
                self.live.discard(proc)
        with open(os.path.join(d, "stdout.txt")) as f:
            f.seek(start)
            text = f.read()
        run.update(outcome(run), rc=rc, seconds=time.time() - t0)
        lines = [l.strip() for l in text.splitlines() if l.strip()]
        if run["status"] not in (verdict.FINISHED, verdict.DIVERGED):
            diverged = [l for l in lines if "training diverged" in l]
            preempted = [l for l in lines if l.startswith(PREEMPTED)]  # under torchrun the exit status is torchrun's
            if rc == REQUEUE_EXIT or preempted:
                run.update(status=REQUEUED, message=(preempted or [f"exit status {rc}"])[-1])
            elif diverged:
                run.update(status=verdict.DIVERGED, message=diverged[-1])
            else:
                run.update(status=verdict.FAILED, message=(lines[-1] if lines else "") + f" (exit status {rc})")
        write_json(os.path.join(d, "sweep.json"), dict(args=run["args"], status=run["status"], attempts=attempts, rc=rc,
                                                        message=run.get("message"), seconds=run["seconds"], action=run["action"]))
        with self.lock:
            self.done += run["status"] != REQUEUED  # a requeued run is counted when it ends
            shown = f"{run['final_val_loss']:.4f}" if run["status"] == verdict.FINISHED else \
                f"{run['status'].upper()}: {run.get('message')} (see {d}/stdout.txt)"
            cell = f"{run['cell']} " if "cell" in run else ""  # a ladder's size and budget
            tqdm.write(f"[{self.done}/{self.total}] {cell}{run['label']} lr={run['lr']:g} seed={run['seed']} ({run['action']}): "
                       f"{shown} ({run['seconds']:.0f}s)")  # above the progress bar
            sys.stdout.flush()
        return run

    def stop(self):
        with self.lock:
            self.stopping = True
            for proc in self.live:
                proc.terminate()
