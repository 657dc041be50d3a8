"""
The comparison tool: train.py over strategies × learning rates × seeds, placed on the CPUs or GPUs of
this machine, resumable, then a verdict per strategy (eval/verdict.py): the loss at every grid point,
the optimal LR from a quadratic fit in ln LR with a bootstrap interval over seeds, Welch's t-test
against a baseline, steps to a target loss, and plots.

    python eval/sweep.py --strategies uniform,llr --lrs 3e-4:3e-2:7 --seeds 3
    python eval/sweep.py --strategies uniform,llr:llr_s1=0.5,llr_s2=2,blockwise:lrs=1e-5:1e-3:5 --lrs 1e-4,1e-3,1e-2
    python eval/sweep.py --strategies uniform_muon,llr_muon --baseline uniform_muon --seeds 3 -- configs/llama_60m.py --max_iters=1000
    python eval/sweep.py --script finetune.py --strategies uniform,llr,stlr_discriminative --lrs 1e-5:1e-4:4 -- configs/finetune_trec6.py
    python eval/sweep.py ... --plan            # check every run's arguments and print what would run, resume or be kept

Grid:
  --strategies  comma-separated; a colon gives a strategy overrides (`llr:llr_s1=0.5,llr_s2=2`: an item with
                '=' and no colon before it belongs to the strategy before it); `lrs=lo:hi:n` or `lrs=a/b/c`
                among them gives that strategy its own LR grid.
  --lrs         `lo:hi:n`: n values log-spaced from lo to hi inclusive (4 significant digits), or `a,b,c`;
                none: the config's learning_rate. The grid's LR is the run's final learning_rate: it
                overrides a method file that derives one (configs/blockwise.py divides by 10).
  --seeds N     seeds 0..N-1, run with --seed=1337+k.
  after `--`    config files and --key=value for every train.py run (before the sweep's own keys).
--script finetune.py runs finetune.py instead (one process per run; the verdict is on its val_loss, the accuracy and
  macro-F1 of every eval are in each run's metrics.jsonl).
Placement: with CUDA GPUs (--gpus auto: CUDA_VISIBLE_DEVICES, else nvidia-smi), one run per GPU, each
  with its own CUDA_VISIBLE_DEVICES; --nproc_per_node K runs each under torchrun on K GPUs (or K CPU
  processes). Without GPUs, --jobs runs at a time with --threads threads each.
Runs land in <out>/<tag>[_lr<lr>]/seed<k>/ (train.py's outputs, stdout.txt, sweep.json). Before any
run starts, each distinct (strategy, overrides) is checked once with `train.py ... --dry_run`, so an
unknown strategy or key, or a value out of its domain, stops the sweep with train.py's own message.
Resumable: a finished run (metrics.jsonl holds the final iteration's val_loss) is kept; an interrupted
one (ckpt.pt, not finished) continues with --init_from=resume; a diverged one is a result and is kept
(--retry_diverged reruns it); a failed one is retried. A directory holding a run of other arguments
stops the sweep. Writes <out>/results.json (every run, every figure), <out>/report.md and PNG plots;
exit status 1 if some run failed (the report is written all the same).
"""
import argparse
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
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from eval import verdict  # noqa: E402

OWNED = ("strategy", "seed", "out_dir", "init_from", "dry_run")  # keys the sweep sets for every run
TRAIN_OUTPUTS = ("ckpt.pt", "ckpt.pt.tmp", "metrics.jsonl", "metrics.jsonl.tmp", "config.json", "config.json.tmp")


class SweepError(SystemExit):
    def __init__(self, message):
        super().__init__(f"sweep error: {message}")


# ----------------------------------------------------------------------------------------------
# the grid

def parse_lrs(text, where="--lrs"):
    """'lo:hi:n' (log-spaced, inclusive, 4 significant digits), 'a,b,c' or 'a/b/c' -> [floats]."""
    try:
        if ":" in text:
            lo, hi, n = text.split(":")
            lo, hi, n = float(lo), float(hi), int(n)
            if n < 1 or lo <= 0 or hi < lo or (n == 1 and hi != lo):
                raise ValueError
            values = [lo] if n == 1 else [float(f"{math.exp(math.log(lo) + k * (math.log(hi) - math.log(lo)) / (n - 1)):.4g}")
                                          for k in range(n)]
        else:
            values = [float(x) for x in re.split(r"[,/]", text) if x.strip()]
    except ValueError:
        raise SweepError(f"{where}={text!r}: write lo:hi:n (0 < lo <= hi, n >= 1) or a list like 1e-3,3e-3") from None
    if not values or any(not v > 0 or not math.isfinite(v) for v in values):
        raise SweepError(f"{where}={text!r}: learning rates must be positive numbers")
    return sorted(set(values))


def split_top(text):
    """Split on the commas outside brackets and quotes (a value may be a literal such as lr_mult's list)."""
    parts, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return parts + [cur]


def parse_strategies(text, default_lrs):
    """'uniform,llr:llr_s1=0.5,llr_s2=2' -> [dict(label, name, overrides [(key, value)], lrs)]."""
    items = []
    for item in (x.strip() for x in split_top(text)):
        if not item:
            continue
        if "=" in item and ":" not in item.split("=")[0]:  # key=value: one more override of the strategy before it
            if not items:
                raise SweepError(f"--strategies={text!r}: {item!r} comes before any strategy name")
            items[-1][1].append(item)
        else:
            name, _, extra = item.partition(":")
            items.append((name.strip(), [extra] if extra else []))
    if not items:
        raise SweepError("--strategies is empty")
    specs = []
    for name, extras in items:
        overrides, lrs = [], default_lrs
        for kv in extras:
            key, eq, value = kv.partition("=")
            key = key.strip()
            if key == "lrs":
                lrs = parse_lrs(value, where=f"{name}:lrs")
                continue
            if not eq:
                raise SweepError(f"strategy {name}: override {kv!r} needs a value (write {key}=VALUE)")
            if key in OWNED:
                raise SweepError(f"strategy {name}: {key} is set by the sweep for every run")
            if key == "learning_rate" and lrs != [None]:
                raise SweepError(f"strategy {name}: give its learning rates as lrs=lo:hi:n, not learning_rate=")
            overrides.append((key, value))
        label = name + (":" + ",".join(f"{k}={v}" for k, v in overrides) if overrides else "")
        specs.append(dict(label=label, name=name, overrides=overrides, lrs=lrs))
    labels = [s["label"] for s in specs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise SweepError(f"strategy {dup[0]} appears twice in --strategies")
    return specs


def tag_of(label):
    """The directory name of a strategy: the label with ':' and ',' as '_' and '=' as '-'."""
    tag = label.replace(":", "_").replace("=", "-").replace(",", "_")
    return re.sub(r"[^A-Za-z0-9._+-]", "-", tag)


def absolute_files(passthrough):
    """Config files after `--` are read by train.py from the repository root: make them absolute."""
    return [os.path.abspath(a) if not a.startswith("--") and os.path.exists(a) else a for a in passthrough]


def build_runs(specs, n_seeds, passthrough, out):
    runs = []
    for seed in range(n_seeds):  # seed-major: a partial sweep has every strategy and LR at the first seeds
        for spec in specs:
            for lr in spec["lrs"]:
                directory = os.path.join(out, tag_of(spec["label"]) + (f"_lr{lr:g}" if lr is not None else ""), f"seed{seed}")
                args = passthrough + [f"--strategy={spec['name']}", f"--seed={1337 + seed}", f"--out_dir={directory}"]
                args += [f"--{k}={v}" for k, v in spec["overrides"]] + ([f"--learning_rate={lr}"] if lr is not None else [])
                runs.append(dict(label=spec["label"], name=spec["name"], overrides=[f"{k}={v}" for k, v in spec["overrides"]],
                                 lr=lr, seed=seed, dir=directory, args=args))
    return runs


# ----------------------------------------------------------------------------------------------
# checking the arguments with train.py --dry_run

def dry_run(args, script="train.py"):
    """(resolved config, None) or (None, the script's error)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, script, *args, "--dry_run"], cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [l for l in (proc.stderr + proc.stdout).splitlines() if l.strip()]
        errors = [l for l in lines if "error" in l.lower()]
        return None, (errors or lines or [f"train.py --dry_run exited with {proc.returncode}"])[-1].strip()
    lines = proc.stdout.splitlines()
    try:
        start = lines.index("{")
        end = len(lines) - 1 - lines[::-1].index("}")
        return json.loads("\n".join(lines[start:end + 1])), None
    except ValueError:
        return None, f"could not read the resolved config printed by {script} --dry_run"


def validate(specs, runs, jobs, nproc, script="train.py"):
    """One dry run per distinct (strategy, overrides); every error at once, before any run starts."""
    firsts = {}
    for r in runs:
        firsts.setdefault(r["label"], r)
    with ThreadPoolExecutor(max(1, min(jobs, len(firsts)))) as pool:
        results = dict(zip(firsts, pool.map(lambda r: dry_run(r["args"], script), firsts.values())))
    errors, resolved = [], {}
    for label, (cfg, err) in results.items():
        if err:
            errors.append(f"{label}: {err}")
            continue
        if "dataset" not in cfg:  # finetune.py: its data was loaded by the dry run
            resolved[label] = cfg
            continue
        if cfg["grad_accum"] % nproc:
            errors.append(f"{label}: grad_accum={cfg['grad_accum']} does not divide by --nproc_per_node={nproc}")
        dataset = cfg["dataset"]
        if dataset != "shakespeare":  # train.py prepares the embedded corpus itself
            from data.loader import dataset_dir
            path = os.path.join(ROOT, dataset_dir(dataset))
            if not os.path.exists(os.path.join(path, "meta.json")):
                errors.append(f"{label}: dataset {dataset!r} is not prepared ({path} has no meta.json)")
        resolved[label] = cfg
    if errors:
        raise SweepError("the grid has bad arguments; nothing was run:\n  " + "\n  ".join(errors))
    for r in runs:
        cfg = resolved[r["label"]]
        r.update(max_iters=cfg["max_iters"], tokens_per_iter=cfg["batch_size"] * cfg["block_size"] * cfg["grad_accum"]
                 if "block_size" in cfg else None)  # finetune.py's batches vary in length
        if r["lr"] is None:
            r["lr"] = cfg["learning_rate"]
    return resolved


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


def outcome(run):
    """Status of a run from its directory: finished, diverged (train.py stopped it, or it ended at or above its
    first validation loss), failed, or pending (interrupted or never started)."""
    evals = eval_points(run["dir"])
    final = dict(map(tuple, evals)).get(run["max_iters"])
    run.update(evals=evals, final_val_loss=final, message=None)
    record = read_json(os.path.join(run["dir"], "sweep.json")) or {}
    if final is not None:
        if not math.isfinite(final) or (len(evals) > 1 and final >= evals[0][1]):
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


def plan(runs, retry_diverged):
    """Set each run's action: keep (a result), resume, fresh; refuse directories holding other runs."""
    conflicts = []
    for r in runs:
        d = r["dir"]
        record = read_json(os.path.join(d, "sweep.json"))
        held = [f for f in ("ckpt.pt", "metrics.jsonl") if os.path.exists(os.path.join(d, f))]
        if record is not None and record.get("args") != r["args"]:
            conflicts.append(f"{d} holds a run of other arguments ({shlex.join(record.get('args') or [])})")
            continue
        if record is None and held:
            config = read_json(os.path.join(d, "config.json"))
            if config is not None and not same_run(r, config):
                conflicts.append(f"{d} holds another run (its config.json differs)")
                continue
        r.update(outcome(r))
        if r["status"] == verdict.FINISHED or (r["status"] == verdict.DIVERGED and not retry_diverged):
            r["action"] = "keep"
        elif r["status"] == verdict.DIVERGED or not os.path.exists(os.path.join(d, "ckpt.pt")):
            r["action"] = "fresh"  # a diverged run's checkpoint would diverge again; without one there is nothing to resume
        else:
            r["action"] = "resume"
    if conflicts:
        raise SweepError("run directories hold other runs; nothing was run (choose another --out, or delete them):\n  "
                         + "\n  ".join(conflicts))


# ----------------------------------------------------------------------------------------------
# placement

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

    def command(self, run):
        args = run["args"] + (["--init_from=resume"] if run["action"] == "resume" else [])
        head = [sys.executable] if self.nproc == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.nproc}"]
        return head + [self.script] + args

    def __call__(self, run):
        slot = self.free.get()
        try:
            return self.launch(run, slot)
        finally:
            self.free.put(slot)

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
            if diverged:
                run.update(status=verdict.DIVERGED, message=diverged[-1])
            else:
                run.update(status=verdict.FAILED, message=(lines[-1] if lines else "") + f" (exit status {rc})")
        write_json(os.path.join(d, "sweep.json"), dict(args=run["args"], status=run["status"], attempts=attempts, rc=rc,
                                                        message=run.get("message"), seconds=run["seconds"], action=run["action"]))
        with self.lock:
            self.done += 1
            shown = f"{run['final_val_loss']:.4f}" if run["status"] == verdict.FINISHED else \
                f"{run['status'].upper()}: {run.get('message')} (see {d}/stdout.txt)"
            print(f"[{self.done}/{self.total}] {run['label']} lr={run['lr']:g} seed={run['seed']} ({run['action']}): {shown} "
                  f"({run['seconds']:.0f}s)", flush=True)
        return run

    def stop(self):
        with self.lock:
            for proc in self.live:
                proc.terminate()


# ----------------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategies", default="uniform,llr")
    p.add_argument("--script", default="train.py", choices=("train.py", "finetune.py"),
                   help="what each run runs: pretraining (train.py) or fine-tuning a Hugging Face model (finetune.py)")
    p.add_argument("--lrs", default="", help="lo:hi:n (log-spaced, inclusive) or a comma list; default: the config's")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (train.py --seed=1337+k)")
    p.add_argument("--baseline", default=None, help="the strategy the others are tested against (default: uniform if swept, "
                                                    "else the first)")
    p.add_argument("--target", default="baseline", help="validation loss for steps-to-target: a number, 'baseline' (the "
                                                        "baseline's best mean final loss) or 'none'")
    p.add_argument("--fit_window", type=int, default=1, help="grid neighbours on each side of the best LR in the fit")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples over seeds")
    p.add_argument("--bootstrap_seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=0, help="runs at a time (default: CPU count // 2; with GPUs: one per GPU)")
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS per process (default: CPU count // processes)")
    p.add_argument("--gpus", default="auto", help="auto, none, or a comma list of CUDA device ids")
    p.add_argument("--nproc_per_node", type=int, default=1, help="> 1: every run under torchrun with this many processes")
    p.add_argument("--out", default="out/sweep")
    p.add_argument("--md", default="", help="also write the report here")
    p.add_argument("--no_plots", action="store_true")
    p.add_argument("--plan", action="store_true", help="check the grid, print what would run, resume or be kept, and exit")
    p.add_argument("--report_only", action="store_true", help="launch nothing; report the runs already there")
    p.add_argument("--retry_diverged", action="store_true", help="rerun diverged runs from scratch")
    split = argv.index("--") if "--" in argv else len(argv)
    a = p.parse_args(argv[:split])
    a.passthrough = argv[split + 1:]
    if a.script == "finetune.py" and a.nproc_per_node > 1:
        raise SweepError("finetune.py runs in one process: drop --nproc_per_node")
    for key in ("seeds", "fit_window", "nproc_per_node"):
        if getattr(a, key) < 1:
            raise SweepError(f"--{key} must be >= 1")
    if a.jobs < 0 or a.threads < 0 or a.bootstrap < 0:
        raise SweepError("--jobs, --threads and --bootstrap must be >= 0")
    if a.target not in ("baseline", "none"):
        try:
            a.target = float(a.target)
        except ValueError:
            raise SweepError(f"--target={a.target!r}: a loss, 'baseline' or 'none'") from None
    for arg in a.passthrough:
        key = arg[2:].partition("=")[0] if arg.startswith("--") else None
        if key in OWNED:
            raise SweepError(f"--{key} after `--`: the sweep sets it for every run"
                             + (" (use --strategies)" if key == "strategy" else ""))
    return a


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    specs = parse_strategies(a.strategies, parse_lrs(a.lrs) if a.lrs else [None])
    labels = [s["label"] for s in specs]
    baseline = a.baseline or ("uniform" if "uniform" in labels else labels[0])
    if baseline not in labels:
        raise SweepError(f"--baseline={baseline!r} is not one of the strategies: {', '.join(labels)}")
    out = os.path.abspath(a.out)
    runs = build_runs(specs, a.seeds, absolute_files(a.passthrough), out)
    gpus = detect_gpus(a.gpus)
    slots = slots_of(gpus, a.nproc_per_node, a.jobs, a.threads)
    command = shlex.join(["python", "eval/sweep.py"] + argv)

    print(f"checking {len(specs)} strateg{'ies' if len(specs) > 1 else 'y'} with {a.script} --dry_run ...", flush=True)
    validate(specs, runs, len(slots), a.nproc_per_node, a.script)
    plan(runs, a.retry_diverged)
    todo = [r for r in runs if r["action"] != "keep"] if not a.report_only else []
    where = f"GPUs {', '.join(s['gpus'] for s in slots)}" if gpus else f"CPU, {len(slots)} at a time"
    print(f"{len(runs)} runs: {sum(r['action'] == 'keep' for r in runs)} kept, {sum(r['action'] == 'resume' for r in runs)} to "
          f"resume, {sum(r['action'] == 'fresh' for r in runs)} to start; {where}, {slots[0]['threads']} thread"
          f"{'s' if slots[0]['threads'] > 1 else ''} per process"
          + (f", torchrun --nproc_per_node={a.nproc_per_node}" if a.nproc_per_node > 1 else ""), flush=True)
    if a.plan:
        for r in runs:
            print(f"  {r['action']:<6} {r['label']} lr={r['lr']:g} seed={r['seed']} -> {os.path.relpath(r['dir'])}")
        return 0

    for r in runs:
        if r not in todo:
            r.setdefault("rc", None)
    launcher = Launcher(slots, a.nproc_per_node, a.script)
    launcher.total = len(todo)
    pool = ThreadPoolExecutor(len(slots))
    try:
        list(pool.map(launcher, todo))
    except KeyboardInterrupt:
        launcher.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        raise SystemExit("interrupted: run the same command again to resume")
    pool.shutdown()

    analysis = verdict.analyze(runs, labels, baseline=baseline, target=None if a.target == "none" else a.target,
                               window=a.fit_window, n_boot=a.bootstrap, boot_seed=a.bootstrap_seed)
    os.makedirs(out, exist_ok=True)
    figures = [] if a.no_plots else verdict.plots(analysis, runs, labels, out)
    if not a.no_plots and not figures:
        analysis["notes"].append("no plots: matplotlib is not installed")
    report = verdict.markdown(analysis, runs, command, labels, figures)
    for r in runs:
        r["dir"] = os.path.relpath(r["dir"], out)
    write_json(os.path.join(out, "results.json"), dict(command=command, argv=argv, baseline=baseline,
                                                       grid=dict(strategies=specs, seeds=a.seeds, passthrough=a.passthrough),
                                                       placement=dict(gpus=gpus, slots=slots, nproc_per_node=a.nproc_per_node),
                                                       runs=runs, analysis=analysis))
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(report + "\n")
    if a.md:
        with open(a.md, "w") as f:
            f.write(report + "\n")
    print("\n" + report)
    print(f"\nwrote {os.path.join(a.out, 'report.md')}, results.json"
          + (f", {', '.join(os.path.basename(p) for p in figures)}" if figures else ""))
    return 1 if any(r["status"] == verdict.FAILED for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
