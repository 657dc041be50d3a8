"""
The run directory: ckpt.pt (atomic, optionally kept as ckpt_<iter>.pt branch points), config.json, the lock that
keeps it to one process, and what a resumed or branched run takes from a checkpoint: its weights, strategy state,
RNG and iteration, and the config keys it must share (the model, the batches, the LR schedule). A run stopped by
a scheduler's signal writes its checkpoint and exits with REQUEUE_EXIT (Preemption).
"""
import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import asdict

import numpy as np
import torch

import optim
from configurator import ConfigError
from data.loader import dataset_dir
from model import ModelConfig, load_checkpoint
from preflight import gib


def rng_state():
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def kept_checkpoints(run_dir):
    """Iterations of the ckpt_<iter>.pt files in run_dir, ascending."""
    names = os.listdir(run_dir) if os.path.isdir(run_dir) else []
    return sorted(int(m.group(1)) for m in (re.fullmatch(r"ckpt_(\d+)\.pt", n) for n in names) if m)


def save_checkpoint(out_dir, ckpt, keep=0):
    """Atomic: write a temporary file, then rename over ckpt.pt; a crash midway leaves the old one. keep > 0:
    the same checkpoint also becomes ckpt_<iter>.pt (a branch point), and only the newest `keep` of those stay."""
    final = os.path.join(out_dir, "ckpt.pt")
    with failed_write(final + ".tmp", out_dir):
        torch.save(ckpt, final + ".tmp")
    os.replace(final + ".tmp", final)
    if keep > 0:
        kept = os.path.join(out_dir, f"ckpt_{ckpt['iter_num']}.pt")
        with failed_write(kept + ".tmp", out_dir):
            try:  # a hard link costs no copy: the next ckpt.pt is a new file renamed over the name, this one stays
                os.link(final, kept + ".tmp")
            except FileExistsError:  # a stale .tmp of a killed run
                os.remove(kept + ".tmp")
                os.link(final, kept + ".tmp")
            except OSError:  # no hard links on this file system: copy
                shutil.copyfile(final, kept + ".tmp")
        os.replace(kept + ".tmp", kept)
        for old in kept_checkpoints(out_dir)[:-keep]:
            os.remove(os.path.join(out_dir, f"ckpt_{old}.pt"))
    with failed_write(os.path.join(out_dir, "config.json.tmp"), out_dir):
        write_config(out_dir, ckpt["config"])


@contextmanager
def failed_write(tmp, out_dir):
    """A write that fails (a full disk: torch.save says 'unexpected pos', the OS says ENOSPC) removes its
    temporary file, which would keep the disk full, and stops the run with one line; the previous file stays."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        free = shutil.disk_usage(out_dir).free
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "the write failed (a full disk or a file size limit)"
        raise SystemExit(f"checkpoint: cannot write {tmp}: {reason}; {gib(free)} free in {out_dir}. The partial file was "
                         "removed and the previous checkpoint kept: free some space (or move --out_dir) and continue with "
                         "--init_from=resume") from None


def write_config(out_dir, cfg):
    """out_dir/config.json, atomically: the run's resolved config, readable without torch."""
    with open(os.path.join(out_dir, "config.json.tmp"), "w") as f:
        json.dump(cfg, f, indent=1, default=str)
    os.replace(os.path.join(out_dir, "config.json.tmp"), os.path.join(out_dir, "config.json"))


def prepare_out_dir(c):
    """out_dir must be writable and not in use by another process; a fresh run never writes over another run's
    checkpoint or log. Returns the run directory's lock: keep it while the run lives (it is released when dropped)."""
    try:
        os.makedirs(c.out_dir, exist_ok=True)
        probe = os.path.join(c.out_dir, ".write_test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"out_dir {c.out_dir!r} is not writable ({e.strerror}): choose another --out_dir")
    held = [f for f in ("ckpt.pt",) if os.path.exists(os.path.join(c.out_dir, f))] + \
        [f"ckpt_{i}.pt" for i in kept_checkpoints(c.out_dir)]
    if c.init_from != "resume" and held:
        fix = "a branch starts a new run: choose a fresh --out_dir" if c.init_from != "scratch" else \
            "continue it with --init_from=resume, or choose another --out_dir (or delete that one)"
        raise ConfigError(f"out_dir {c.out_dir!r} already holds a run ({', '.join(held)}): {fix}")
    lock = RunLock(c.out_dir)  # the checks above only read; from here on the directory is this process's
    if c.init_from != "resume" and os.path.exists(os.path.join(c.out_dir, "metrics.jsonl")):
        print(f"{c.out_dir}: its run stopped before its first checkpoint, so it cannot be resumed; starting over "
              "(its metrics.jsonl is replaced)")
        os.remove(os.path.join(c.out_dir, "metrics.jsonl"))
    return lock


# ----------------------------------------------------------------------------------------------
# one process per run directory

def process_start(pid):
    """The start time of a process (clock ticks since boot, /proc), or None: tells a live holder from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def holder_is_gone(holder):
    """Whether the process that wrote a lock is certainly gone: a dead pid (or one reused since) on this host, this
    very process (an earlier run in it that raised), or an earlier start of this SLURM job (a requeue: SLURM ends
    a job's processes before it starts the job again). A holder on another host cannot be checked from here."""
    job = os.environ.get("SLURM_JOB_ID")
    if job and holder.get("slurm_job") == job:
        return True
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder["pid"]
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    started = holder.get("started")
    return started is not None and process_start(pid) not in (None, started)


def read_lock(path):
    """The holder a lock file names; None when it is gone or unreadable (both: free to take)."""
    try:
        with open(path) as f:
            holder = json.load(f)
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def release_lock(path, pid):
    """Remove the lock if this process holds it (not a forked child, nor after another process took it over)."""
    holder = read_lock(path)
    if os.getpid() == pid and holder is not None and holder["pid"] == pid:
        try:
            os.remove(path)
        except OSError:
            pass


class RunLock:
    """out_dir/lock: this process's pid, host, start and SLURM job id, so that two processes never write one run
    directory at once. It appears complete and at once (a hard link of a written file, which fails if the name
    exists: atomic like O_CREAT|O_EXCL, also on NFS). Released when the object is dropped (train() returning or
    raising) or at exit; a kill leaves it behind, and the next run takes it over (holder_is_gone)."""

    def __init__(self, out_dir):
        self.path = os.path.join(out_dir, "lock")
        me = dict(pid=os.getpid(), host=socket.gethostname(), started=process_start(os.getpid()),
                  slurm_job=os.environ.get("SLURM_JOB_ID"), since=time.strftime("%Y-%m-%d %H:%M:%S"))
        mine = f"{self.path}.{me['pid']}"
        with open(mine, "w") as f:
            json.dump(me, f)
        try:
            for _ in range(3):  # a stale lock is removed, then taken like a free one
                try:
                    os.link(mine, self.path)
                    break
                except FileExistsError:
                    holder = read_lock(self.path)
                    if holder is not None and not holder_is_gone(holder):
                        raise ConfigError(f"out_dir {out_dir!r} is in use by process {holder['pid']} on {holder.get('host')} "
                                          f"(since {holder.get('since')}): wait for that run to end or stop it; if that "
                                          f"process is gone (its machine went down), delete {self.path}") from None
                    if holder is not None and holder["pid"] != me["pid"]:
                        print(f"{out_dir}: process {holder['pid']} on {holder.get('host')}, which held this run directory, "
                              "is gone: taking over its lock")
                    try:
                        os.remove(self.path)
                    except FileNotFoundError:
                        pass
            else:
                raise ConfigError(f"out_dir {out_dir!r}: could not take its lock {self.path}: other processes keep taking it")
        finally:
            os.remove(mine)
        self.release = weakref.finalize(self, release_lock, self.path, me["pid"])  # also runs at exit


# ----------------------------------------------------------------------------------------------
# preemption: a scheduler's signal stops the run at the end of its update, with a checkpoint

REQUEUE_EXIT = 75  # EX_TEMPFAIL: a launcher runs the run again with --init_from=resume (eval/sweep.py, eval/slurm.py)
PREEMPTED = "preempted:"  # how the line a preempted run prints last starts; launchers look for it under torchrun
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Preemption:
    """SIGTERM (a scheduler preempting or requeueing the job, a launcher stopping the run), SIGUSR1 (SLURM's warning
    before the time limit, as eval/slurm.py asks for it) or SIGUSR2 (submitit's) only sets a flag; the loop asks
    requested() at the end of each update and then writes its checkpoint and calls stop(). Under DDP a signal may
    reach only some ranks, so every rank takes part in agreeing (a MAX all_reduce of the flag, a sync with the
    device): every `every` updates, which train.py makes its log steps (at least every 10th). The previous handlers
    come back when the object is dropped."""

    def __init__(self, device=None, every=1):
        self.received, self.device, self.every = None, device, max(1, every)
        if threading.current_thread() is not threading.main_thread():  # signals reach only the main thread
            return
        me = weakref.ref(self)  # the handler must not keep the object alive: dropping it restores the old handlers

        def receive(signum, frame):
            if me() is not None:
                me().received = signal.Signals(signum).name
        previous = {sig: signal.signal(sig, receive) for sig in PREEMPT_SIGNALS}
        weakref.finalize(self, restore_handlers, previous)

    def requested(self, it):
        if self.device is None:
            return self.received is not None
        if it % self.every:
            return False
        flag = torch.tensor(int(self.received is not None), device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def stop(self, it, out_dir, logger=None, lock=None, saved=True):
        """Exit with REQUEUE_EXIT once the checkpoint of iteration it is written (saved=False: there is none)."""
        if int(os.environ.get("RANK", 0)) == 0:
            where = f"ckpt.pt of iter {it} written in {out_dir}; continue with --init_from=resume" if saved else \
                "no checkpoint is written (write_checkpoints=False): the run starts over"
            print(f"{PREEMPTED} {self.received or 'a signal on another rank'}: {where}", flush=True)
        if logger is not None:
            logger.close()
        if lock is not None:
            lock.release()
        if self.device is None:
            raise SystemExit(REQUEUE_EXIT)
        # Under DDP, leave at once: a process group torn down by the interpreter's exit can abort the process
        # (see the end of train.train), and every rank's part is done.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(REQUEUE_EXIT)


def restore_handlers(previous):
    if threading.current_thread() is threading.main_thread():
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def load_start(c, map_location):
    """(checkpoint, its run directory) a run starts from; (None, None) for a fresh run. A resume reads
    out_dir/ckpt.pt; a branch reads init_from's ckpt_<branch_at>.pt, or its ckpt.pt (or the file given)
    when that is at branch_at, or branch_at is -1."""
    if c.init_from == "scratch":
        return None, None
    branch = c.init_from != "resume"
    src = c.init_from if branch else c.out_dir
    run_dir = src if os.path.isdir(src) else os.path.dirname(src)
    kept = os.path.join(run_dir, f"ckpt_{c.branch_at}.pt")
    if not branch and not os.path.exists(os.path.join(src, "ckpt.pt")) and os.path.exists(os.path.join(src, "metrics.jsonl")):
        raise ConfigError(f"cannot resume: the run in {src!r} stopped before its first checkpoint (no ckpt.pt): "
                          "start it again without --init_from=resume, which reuses the directory")
    try:
        ckpt = load_checkpoint(kept if branch and c.branch_at >= 0 and os.path.isfile(kept) else src, map_location=map_location)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"cannot {'branch' if branch else 'resume'}: {e}") from None
    it = ckpt["iter_num"]
    if branch and c.branch_at > it:
        raise ConfigError(f"branch_at={c.branch_at} is beyond the checkpoint in {src!r}, which is at iteration {it}: "
                          f"branch at {it} or before (--branch_at=-1 branches at {it})")
    if branch and 0 <= c.branch_at < it:
        have = ", ".join(f"ckpt_{i}.pt" for i in kept_checkpoints(run_dir)) or "none"
        raise ConfigError(f"branch_at={c.branch_at}: no ckpt_{c.branch_at}.pt in {run_dir!r} (kept: {have}): branch at "
                          f"a kept iteration or at -1 (iteration {it}); a run keeps them with keep_ckpts > 0 and ckpt_every")
    return ckpt, run_dir


# batches are a function of (seed, iteration, micro-step) of this data: a resume or branch keeps all of them
DATA_KEYS = ("dataset", "seed", "batch_size", "grad_accum", "block_size")


def same_data(key, value):
    """A dataset compared by the directory it names, so a relative and an absolute path agree."""
    return os.path.realpath(dataset_dir(value)) if key == "dataset" else value


BRANCH_OWN = ("max_iters", "decay_iters", "decay_shape", "decay_power", "min_lr_ratio")  # a branch chooses its cooldown


def schedule_keys(old, cfg):
    """The keys that define the LR of every update, for the strategies of both configs."""
    own = [k for name in (old.get("strategy"), cfg["strategy"]) if name in optim.STRATEGIES for k in optim.STRATEGIES[name].defaults]
    return list(dict.fromkeys(["strategy", "learning_rate", "lr_mult", "faithful", *optim.SCHEDULE_KEYS, "decay_iters", *own]))


def continue_config(cfg, ckpt, run_dir, defaults):
    """A resumed or branched run's config, in place. A branch gets max_iters = its iteration + decay_iters and
    cfg['branch'], which optim.schedule reads: its parent's schedule keys up to the branch point, its own
    cooldown after it. Keys that define the schedule must match the checkpoint's (allow_schedule_change: not).
    defaults: the values of keys the checkpoint's config predates (train.DEFAULTS)."""
    old, it = ckpt["config"], ckpt["iter_num"]
    plain = lambda v: tuple(map(plain, v)) if isinstance(v, (list, tuple)) else v  # lr_mult: lists and tuples alike
    resume = cfg["init_from"] == "resume"
    if resume and "branch" in old:  # resuming a branch: its branch point and parent stay
        if cfg["decay_iters"] <= 0:
            raise ConfigError(f"{cfg['out_dir']} is a branch (at iteration {old['branch']['at']}): resume it with its "
                              f"--decay_iters={old['branch']['iters']}")
        cfg["branch"], cfg["max_iters"] = old["branch"], old["branch"]["at"] + cfg["decay_iters"]
    elif resume and cfg["decay_iters"] > 0:
        raise ConfigError("decay_iters > 0 is for a branch: start one with --init_from=<this run dir> and a fresh --out_dir")
    elif not resume:
        parent = {k: old.get(k, defaults[k]) for k in optim.SCHEDULE_KEYS}
        if "branch" in old:  # a branch of a branch
            parent["branch"] = old["branch"]
        cfg["branch"] = dict(at=it, iters=cfg["decay_iters"], parent=parent, source=run_dir)
        cfg["max_iters"] = it + cfg["decay_iters"]
    data_changed = {k: (old.get(k, defaults[k]), cfg[k]) for k in DATA_KEYS if same_data(k, old.get(k, defaults[k])) != same_data(k, cfg[k])}
    if data_changed:
        fields = ", ".join(f"{k} (checkpoint {a!r}, config {b!r})" for k, (a, b) in data_changed.items())
        raise ConfigError(f"the checkpoint in {run_dir} was trained on other batches: {fields}. These keys set the "
                          "data order or the tokens per step: pass the checkpoint's values, or start a new run in another --out_dir")
    changed = {k: (old.get(k, defaults[k]), cfg[k]) for k in schedule_keys(old, cfg)
               if (resume or k not in BRANCH_OWN) and plain(old.get(k, defaults[k])) != plain(cfg[k])}
    if changed and not cfg["allow_schedule_change"]:
        fields = ", ".join(f"{k} (checkpoint {a!r}, config {b!r})" for k, (a, b) in changed.items())
        raise ConfigError(f"the checkpoint in {run_dir} has other values of keys that define the LR schedule: {fields}. "
                          "Pass the checkpoint's values, or --allow_schedule_change=True to continue under the new ones")


def check_same_model(mcfg, ckpt, run_dir):
    saved = asdict(ModelConfig(**ckpt["model_config"]))  # fields added since the checkpoint: their defaults
    mismatched = {k: (v, saved.get(k)) for k, v in asdict(mcfg).items() if saved.get(k) != v}
    if mismatched:
        fields = ", ".join(f"{k} (checkpoint {old!r}, config {new!r})" for k, (new, old) in mismatched.items())
        raise ConfigError(f"the checkpoint in {run_dir} is of another model config: {fields}")


def diverged(what, it, out_dir):
    return SystemExit(f"training diverged: {what} at iter {it}; ckpt.pt in {out_dir} (the last good state) was left "
                      "as it was. Lower learning_rate or set grad_clip.")
