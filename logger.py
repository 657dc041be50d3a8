"""
What a run logs: one record per logged step to stdout, out_dir/metrics.jsonl and wandb (Logger); the HT-SR
monitor's part of a record; the effective-LR monitor's (UpdateMonitor); the time left in a run, for the log line's eta.
"""
import json
import math
import os
import time

import torch

import groups
import spectral
from configurator import ConfigError


def start_wandb(c, cfg, run_id=None):
    """A wandb run: online with an API key, offline without one, and offline too when the server cannot
    be reached in WANDB_INIT_TIMEOUT seconds (30), so a run never waits on the network. A resumed
    training run continues the wandb run of its checkpoint (run_id)."""
    import wandb  # optional dependency, imported only when asked for
    mode = os.environ.get("WANDB_MODE") or ("online" if wandb.login(prompt=False, verify=False) else "offline")
    kw = dict(project=c.wandb_project, name=c.wandb_run_name or None, config=cfg, dir=c.out_dir,
              id=run_id, resume="allow" if run_id else None)
    try:
        timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", 30))
        return wandb.init(mode=mode, settings=wandb.Settings(init_timeout=timeout), **kw)
    except Exception as e:  # wandb raises its own CommError and friends; training goes on regardless
        print(f"wandb: {mode} start failed ({type(e).__name__}); logging offline instead, `wandb sync` the run later")
        return wandb.init(mode="offline", **kw)


def read_metrics(path):
    """The records of a metrics.jsonl. A cut-off last line (what a full disk or a kill mid-write leaves) is
    dropped with a message; any other line that is not JSON stops with its line number."""
    with open(path) as f:
        lines = [(n, l) for n, l in enumerate(f, 1) if l.strip()]
    records = []
    for n, line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n != lines[-1][0]:
                raise ConfigError(f"{path} line {n} is not JSON: repair or delete that line, then resume") from None
            print(f"{path}: dropped its cut-off last line {n} ({len(line.rstrip())} characters), the rest is kept")
    return records


class Logger:
    """One place every record goes: stdout, out_dir/metrics.jsonl (one JSON object per line) and wandb.
    A resumed run first drops the rows its checkpoint does not cover, so no iteration is logged twice."""

    def __init__(self, c, cfg, resume_iter=None, wandb_id=None, parent_log=None):
        path = os.path.join(c.out_dir, "metrics.jsonl")
        src = parent_log or path  # a branch starts with its parent's rows before the branch point
        if resume_iter is not None and os.path.exists(src):
            kept = [json.dumps(r) + "\n" for r in read_metrics(src) if r.get("iter", 0) < resume_iter]
            with open(path + ".tmp", "w") as f:
                f.writelines(kept)
            os.replace(path + ".tmp", path)
        self.file = open(path, "a")
        self.run = start_wandb(c, cfg, wandb_id) if c.wandb_log else None

    def log(self, record):
        parts = [f"iter {record['iter']}"]
        parts += [f"loss {record['train_loss']:.4f}"] if "train_loss" in record else []
        parts += [f"val_loss {record['val_loss']:.4f}"] if "val_loss" in record else []
        parts += [f"val_acc {100 * record['val_acc']:.2f}%"] if "val_acc" in record else []  # finetune.py's
        parts += [f"f1 {100 * record['val_f1']:.2f}%"] if "val_f1" in record else []
        parts += [f"lr {record['lr']:.2e}", f"{record['tok_per_s']:,.0f} tok/s"] if "lr" in record else []
        parts += [f"mfu {100 * record['mfu']:.1f}%"] if record.get("mfu") is not None else []
        parts += [spectral_summary(record)] if "spectral" in record else []  # the per-matrix values go to the file
        parts += [f"upd {record['update_ratio_mean']:.1e}"] if record.get("update_ratio_mean") is not None else []
        parts += [record["eta"]] if "eta" in record else []
        print(" | ".join(parts))
        self.file.write(json.dumps({k: v for k, v in record.items() if k != "eta"}) + "\n")
        self.file.flush()
        if self.run is not None:
            nested = ("eta", "spectral", "spectral_skipped", "update_ratio", "update_ratio_kind")
            flat = {k: v for k, v in record.items() if v is not None and k not in nested}
            flat.update({f"{m}/{name}": v for name, vals in record.get("spectral", {}).items() for m, v in vals.items()})
            flat.update({f"{key}/{name}": v for key in ("update_ratio", "update_ratio_kind")
                         for name, v in record.get(key, {}).items()})
            self.run.log(flat, step=record["iter"])  # the monitors' values as alpha/<name>, update_ratio/<name>, ...

    def close(self, summary=None):
        self.file.close()
        if self.run is not None:
            self.run.summary.update(summary or {})
            self.run.finish()


def spectral_metric_names(text):
    return tuple(m.strip() for m in text.split(",") if m.strip())


def spectral_record(model, metrics):
    """The HT-SR monitor's part of a metrics.jsonl record: spectral {name: {metric: value}}, spectral_skipped
    {name: reason} (degenerate matrices; never an error) and spectral_s. Collective under DDP: every rank calls
    it and gets the same rows. It only reads the weights: no RNG, no grads, no writes."""
    t0 = time.time()
    with torch.no_grad():
        rows = spectral.analyze(model, metrics=metrics)
    return dict(spectral={r["name"]: {m: r[m] for m in metrics} for r in rows if not r["skipped"]},
                spectral_skipped={r["name"]: r["skipped"] for r in rows if r["skipped"]}, spectral_s=time.time() - t0)


def spectral_summary(record):
    """'spectral: mean alpha 2.45 over 26 matrices' (the stdout form of a monitor record)."""
    fits = record["spectral"]
    logged = [m for v in fits.values() for m in v]
    metric = "alpha" if "alpha" in logged else (logged[0] if logged else None)
    vals = [v[metric] for v in fits.values() if metric in v]
    text = f"spectral: mean {metric} {sum(vals) / len(vals):.2f} over {len(vals)} matrices" if vals else "spectral: no matrix fitted"
    skipped = len(record.get("spectral_skipped") or {})
    return text + (f" ({skipped} skipped)" if skipped else "")


class UpdateMonitor:
    """The effective-LR monitor (train.py --update_every): the relative size ‖W_{t+1} − W_t‖_F / ‖W_t‖_F of one
    update of every weight matrix, the matrices of groups.param_groups (the weights of Linear and Embedding modules
    under their module names, a tied one once; norms and biases are left out). It reads the parameter tensors, not
    the optimizer, so it works for every strategy (schedule_free: the training point y that the model holds).
    snapshot() before update t keeps an fp32 copy of the matrices on their device (only then: nothing otherwise);
    record() after it computes every ratio there and syncs once. It only reads the weights: no RNG, no grads, no
    writes. Under DDP the weights are the same on every rank, so every rank computes the same record locally."""

    def __init__(self, model):
        self.matrices = [(g["name"], g["kind"], g["params"][0]) for g in groups.param_groups(model) if g["kind"] != "norm"]
        self.before, self.before_norms, self.snapshot_s = None, None, 0.0
        self.seconds = 0.0  # the monitor's time in the run so far, for its share printed at the end

    def snapshot(self):
        t0 = time.time()
        with torch.no_grad():
            self.before = [w.detach().to(torch.float32, copy=True) for _, _, w in self.matrices]
            self.before_norms = frobenius_norms(self.before)
        self.snapshot_s = time.time() - t0

    def record(self):
        """The metrics.jsonl fields of the update since snapshot(): update_ratio {name: ratio}, update_ratio_kind
        {kind: mean over its matrices}, update_ratio_mean (over all matrices: a run's effective LR) and update_s (the
        seconds of snapshot() and record()). A matrix that is all zeros before the update has no ratio and is left out."""
        if self.before[0].is_cuda:  # the update's kernels finish first: they are not the monitor's time
            torch.cuda.synchronize(self.before[0].device)
        t0 = time.time()
        with torch.no_grad():
            torch._foreach_sub_(self.before, [w.detach().float() for _, _, w in self.matrices])  # −ΔW, in place
            ratios = (frobenius_norms(self.before) / self.before_norms).tolist()  # one sync
        self.before, self.before_norms = None, None
        per_matrix, by_kind = {}, {}
        for (name, kind, _), ratio in zip(self.matrices, ratios):
            if math.isfinite(ratio):
                per_matrix[name] = ratio
                by_kind.setdefault(kind, []).append(ratio)
        seconds = self.snapshot_s + time.time() - t0
        self.seconds += seconds
        return dict(update_ratio=per_matrix, update_ratio_kind={k: sum(v) / len(v) for k, v in by_kind.items()},
                    update_ratio_mean=sum(per_matrix.values()) / len(per_matrix) if per_matrix else None, update_s=seconds)


def frobenius_norms(tensors):
    """‖T‖_F of each tensor as one fp32 vector: on CUDA one fused kernel (its blockwise sums agree with fp64 to ~1e-7); on
    a CPU row by row, then over the rows, because the CPU's one-pass fp32 norm drifts (by 5e-6 on a 256x64 update, 3e-3
    on a 50304x768 matrix) and the row norms do not (1e-8 to 1e-7), at the same speed."""
    if tensors[0].is_cuda:
        return torch.stack(torch._foreach_norm(tensors))
    return torch.stack([torch.linalg.vector_norm(torch.linalg.vector_norm(t, dim=-1)) for t in tensors])


class TimeLeft:
    """Seconds left in a run, evals included: time_left(it) after update `it`. Updates and evals are timed apart, so
    that the first log line has an estimate too: from the first update (eager only: a compiled one pays compilation)
    until there are others, which leave the first out. A compiled run's first eval pays compilation too: until a
    second one, an eval counts as a third of the updates its tokens would take (a forward alone)."""

    def __init__(self, c, start_iter, tokens_per_iter, compiled):
        self.c, self.start_iter, self.tokens_per_iter, self.compiled = c, start_iter, tokens_per_iter, compiled
        self.eval_s, self.eval_times, self.first = 0.0, [], None  # first: (end, eval_s then, seconds) of the first update

    def eval_took(self, seconds):
        self.eval_s += seconds
        self.eval_times.append(seconds)

    def first_update_took(self, seconds):
        self.first = (time.time(), self.eval_s, seconds)

    def __call__(self, it):
        c, first = self.c, self.first
        if it > self.start_iter:
            per_update = (time.time() - first[0] - (self.eval_s - first[1])) / (it - self.start_iter)
        elif not self.compiled:
            per_update = first[2]
        else:
            return None
        timed = self.eval_times[1:] if self.compiled else self.eval_times
        per_eval = sum(timed) / len(timed) if timed else c.eval_tokens / self.tokens_per_iter * per_update / 3
        return per_update * (c.max_iters - 1 - it) + per_eval * evals_after(it, c)


def eta(seconds):
    s = int(seconds)
    return f"eta {s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"eta {s // 60}m{s % 60:02d}s"


def evals_after(it, c):
    """How many evals come after iteration it: every eval_interval, and at max_iters."""
    return c.max_iters // c.eval_interval - it // c.eval_interval + (c.max_iters % c.eval_interval != 0)
