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
    python eval/sweep.py ... --status          # every run: pending, running, done, failed or diverged
    python eval/sweep.py --launcher slurm --slurm_partition gpu --slurm_time 4:00:00 ...   # a SLURM job per run

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
  processes). Without GPUs, --jobs runs at a time with --threads threads each. --launcher slurm submits
  every run as a task of a SLURM job array instead (eval/slurm.py, docs/cluster.md). A run stopped by a
  signal (preemption) writes its checkpoint and is run again from it, by either launcher.
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
import re
import shlex
import socket
import subprocess
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from eval import verdict  # noqa: E402
from eval.runs import (Launcher, SweepError, detect_gpus, outcome, read_json,  # noqa: E402
                       same_run, slots_of, tag_of, write_json)

OWNED = ("strategy", "seed", "out_dir", "init_from", "dry_run")  # keys the sweep sets for every run


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


def absolute_files(passthrough):
    """Config files after `--` are read by train.py from the repository root: make them absolute."""
    return [os.path.abspath(a) if not a.startswith("--") and os.path.exists(a) else a for a in passthrough]


def build_runs(specs, n_seeds, passthrough, out, script="train.py", cells=(None,)):
    """Every run of the grid: seeds × cells (the ladder's size × token budget × batch; one None cell without a
    ladder) × strategies × LRs. A ladder's runs land in <out>/<cell>/<tag>_lr<lr>/seed<k>."""
    runs = []
    for seed in range(n_seeds):  # seed-major: a partial sweep has every strategy, cell and LR at the first seeds
        for cell in cells:
            for spec in specs:
                for lr in spec["lrs"]:
                    where = os.path.join(out, cell["key"]) if cell else out
                    directory = os.path.join(where, tag_of(spec["label"]) + (f"_lr{lr:g}" if lr is not None else ""), f"seed{seed}")
                    args = passthrough + (cell_args(cell, spec) if cell else []) + [
                        f"--strategy={spec['name']}", f"--seed={1337 + seed}", f"--out_dir={directory}"]
                    args += [f"--{k}={v}" for k, v in spec["overrides"]] + ([f"--learning_rate={lr}"] if lr is not None else [])
                    run = dict(label=spec["label"], name=spec["name"], overrides=[f"{k}={v}" for k, v in spec["overrides"]],
                               lr=lr, seed=seed, dir=directory, args=args, script=script, group=spec["label"])
                    if cell:
                        run.update(cell=cell["key"], size=cell["size"], tokens=cell["tokens"], batch=cell["batch"],
                                   group=(spec["label"], cell["size"], cell["batch"]))
                    runs.append(run)
    return runs


# ----------------------------------------------------------------------------------------------
# ladders: model sizes × token budgets (× batch sizes), each crossed with the strategies × LRs × seeds

ITER_KEYS = ("warmup_iters", "eval_interval", "llr_every", "llr_ramp", "tb_every", "ad_every", "spectral_every",
             "update_every", "ckpt_every")  # counts of updates: a token budget scales them with max_iters


def parse_sizes(text):
    """'llama_mini,w96,w192d6' -> [(label, preset or None, width, depth)]: a model preset, or a width (and depth) of the
    run's own preset with its aspect (head dim, ffn_hidden/n_embd; preflight.scaled_widths' rounding)."""
    from model import PRESETS
    sizes = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        m = re.fullmatch(r"w(\d+)(?:d(\d+))?", item)
        if item in PRESETS:
            sizes.append((item, item, None, None))
        elif m and int(m.group(1)) > 0 and (m.group(2) is None or int(m.group(2)) > 0):
            sizes.append((item, None, int(m.group(1)), int(m.group(2)) if m.group(2) else None))
        else:
            raise SweepError(f"--sizes: {item!r} is not a model size: write a preset ({', '.join(PRESETS)}) or w<n_embd> "
                             f"or w<n_embd>d<n_layer> (the run's preset at that width and depth)")
    if len({s[0] for s in sizes}) != len(sizes):
        raise SweepError(f"--sizes={text!r} names a size twice")
    return sizes


def parse_count(text, where):
    """'250k,1M,4e6' -> sorted ints (k = 1e3, M = 1e6, B = 1e9)."""
    values = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        try:
            scale = {"k": 1e3, "M": 1e6, "B": 1e9}.get(item[-1], 1)
            v = float(item[:-1] if scale != 1 else item) * scale
        except ValueError:
            v = float("nan")
        if not (v >= 1 and abs(v - round(v)) <= 1e-9 * v):  # 1.3B is 1.3 × 1e9 up to the float's last bit
            raise SweepError(f"{where}: {item!r} is not a positive whole number (write e.g. 250k, 1M, 4e6)")
        values.append(round(v))
    if not values:
        raise SweepError(f"{where} is empty")
    return sorted(set(values))


def count_text(n):
    if n < 10_000:
        return str(n)
    return f"{n / 1e9:g}B" if n >= 1e9 else f"{n / 1e6:g}M" if n >= 1e6 else f"{n / 1e3:g}k" if n >= 1e3 else str(n)


def ladder_cells(sizes, tokens, batches, base, explicit=()):
    """One dict per (size, token budget, batch): the train.py keys that make it (model shape, max_iters and every
    update count of ITER_KEYS scaled from the base config's max_iters, but for those given as --key=value after
    `--`, in `explicit`: the command line wins), and its realized D."""
    from configurator import ConfigError
    from model import PRESETS
    from preflight import scaled_widths
    shape0 = {**PRESETS[base["model"]], **{k: base[k] for k in ("n_layer", "n_head", "n_embd", "ffn_hidden") if base.get(k)}}
    base_shape = dict(n_embd=shape0["n_embd"], n_layer=shape0["n_layer"], head_dim=shape0["n_embd"] // shape0["n_head"])
    cells = []
    for label, preset, width, depth in sizes:
        shape = dict(model=preset) if preset else {}
        if preset:  # a preset brings its own shape: undo any width/depth the config files set
            shape.update({k: 0 for k in ("n_layer", "n_head", "n_embd", "ffn_hidden") if base.get(k)})
        elif width:
            model = base["model"]
            probe = types.SimpleNamespace(model=model, n_embd=width, n_head=0, ffn_hidden=0, parametrization="mup")
            try:  # muP's width rule is the aspect rule of the presets: head dim kept, ffn_hidden in proportion
                shape.update({"n_embd": width, "n_head": PRESETS[model]["n_head"], "ffn_hidden": PRESETS[model]["ffn_hidden"],
                              **scaled_widths(probe)})
            except ConfigError as e:
                raise SweepError(f"--sizes {label}: {str(e).split(', but ', 1)[-1]}") from None
            if depth:
                shape["n_layer"] = depth
        for batch in batches or [None]:
            b = batch or base["batch_size"]
            per_iter = b * base["block_size"] * base["grad_accum"]
            for d in tokens or [None]:
                iters = max(1, round(d / per_iter)) if d else base["max_iters"]
                keys = dict(shape, max_iters=iters, **({"batch_size": b} if batch else {}))
                for k in ITER_KEYS:
                    if base.get(k, 0) > 0 and iters != base["max_iters"] and k not in explicit:
                        keys[k] = max(1, round(base[k] * iters / base["max_iters"]))
                key = label + (f"_{count_text(d)}" if d else "") + (f"_b{b}" if batch else "")  # D as asked; realized below
                cells.append(dict(key=key, size=label, tokens=iters * per_iter, batch=b, keys=keys, base=base_shape, config=base))
    return cells


def cell_args(cell, spec):
    """A cell's train.py keys; under mup/completep without a base shape, the run's preset is the base (what the
    width exponent of η* is measured against)."""
    args = [f"--{k}={v}" for k, v in cell["keys"].items()]
    over = dict(spec["overrides"])
    if over.get("parametrization", "sp") != "sp":
        for k, dim in (("base_width", "n_embd"), ("base_depth", "n_layer"), ("base_head_dim", "head_dim")):
            if k not in over and not cell["config"].get(k):
                args.append(f"--{k}={cell['base'][dim]}")
    return args


def calibrate(run, threads, out):
    """(seconds per training token, seconds per run besides training) of a run's model on this machine: 8 updates
    with a log line each, timed from the log's tok/s; the rest of the process's wall time (start-up and two evals)
    is the fixed part. Cached in <out>/calibration.json by arguments and threads."""
    cache_path = os.path.join(out, "calibration.json")
    cache = read_json(cache_path) or {}
    args = [x for x in run["args"] if not x.startswith(("--out_dir=", "--seed="))]
    key = f"{threads} threads: {shlex.join(args)}"
    if key not in cache:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), CUDA_VISIBLE_DEVICES="")
            t0 = time.time()
            proc = subprocess.run([sys.executable, "train.py", *args, f"--out_dir={tmp}/run", "--max_iters=8",
                                   "--eval_interval=8", "--log_interval=1", "--wandb_log=False"], cwd=ROOT, env=env,
                                  capture_output=True, text=True)
            wall = time.time() - t0
            if proc.returncode != 0:
                raise SweepError(f"calibration run failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
            rows = [json.loads(l) for l in open(os.path.join(tmp, "run", "metrics.jsonl")) if '"tok_per_s"' in l]
        speeds = sorted(r["tok_per_s"] for r in rows if r["iter"] >= 2 and r.get("tok_per_s"))  # the first updates warm up
        per_token = 1 / speeds[len(speeds) // 2]
        cache[key] = dict(s_per_token=per_token, fixed_s=max(0.0, wall - 8 * run["tokens_per_iter"] * per_token))
        if os.path.isdir(out):  # a --plan before the first run: nothing is written
            write_json(cache_path, cache)
    return cache[key]["s_per_token"], cache[key]["fixed_s"]


def print_ladder_plan(runs, cells, slots, out):
    """Every cell: N (non-embedding and total), D, 6ND and the time its runs take here (calibrated on one run of
    each size and batch, the first strategy's), then the ladder's total."""
    threads = slots[0]["threads"]
    print(f"\ncalibrating each size on this machine ({threads} thread{'s' if threads > 1 else ''}, 8 updates) ...", flush=True)
    speed, rows, total = {}, [], 0.0
    for cell in cells:
        mine = [r for r in runs if r["cell"] == cell["key"]]
        first = mine[0]
        group = (first["size"], first["batch"])
        if group not in speed:
            speed[group] = calibrate(first, threads, out)
        s_tok, fixed = speed[group]
        eval_s = first["eval_tokens"] * s_tok / 3  # an eval is a forward pass: about a third of an update per token
        per_run = fixed - 2 * eval_s + s_tok * cell["tokens"] + (first["max_iters"] // first["eval_interval"] + 1) * eval_s
        todo = [r for r in mine if r["action"] != "keep"]
        total += per_run * len(todo)
        n, n_all = first["n_params_nonembed"], first["n_params"]
        rows.append((cell["key"], f"{n / 1e6:.3f}M", f"{n_all / 1e6:.3f}M", count_text(cell["tokens"]),
                     f"{6 * n * cell['tokens']:.2e}", f"{len(mine)}", f"{len(todo)}", f"{per_run:.0f} s"))
    head = ("cell", "N non-emb", "N total", "D tokens", "6ND FLOPs", "runs", "to run", "per run")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    for row in [head] + rows:
        print("  " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths)))
    print(f"about {total / 3600:.2f} h of runs here, {total / 3600 / len(slots):.2f} h at {len(slots)} at a time "
          f"(6ND counts non-embedding parameters, Kaplan et al. 2020)")


def ladder_report(runs, cells, labels, baseline, target, a, command, out):
    """A ladder's report: the laws across its cells (eval/lawfit.py), then a verdict per cell in <out>/<cell>/."""
    from eval import lawfit
    analysis, links, figures = dict(cells={}, law=None), [], []
    for cell in cells:
        mine = [r for r in runs if r["cell"] == cell["key"]]
        where = os.path.join(out, cell["key"])
        os.makedirs(where, exist_ok=True)
        cell_analysis = verdict.analyze(mine, labels, baseline=baseline, target=target, window=a.fit_window,
                                        n_boot=a.bootstrap, boot_seed=a.bootstrap_seed)
        cell_figures = [] if a.no_plots else verdict.plots(cell_analysis, mine, labels, where)
        with open(os.path.join(where, "report.md"), "w") as f:
            f.write(verdict.markdown(cell_analysis, mine, command, labels, cell_figures) + "\n")
        analysis["cells"][cell["key"]] = cell_analysis
        best = {k: v.get("fit", {}).get("best_lr") for k, v in cell_analysis["strategies"].items()}
        links.append(f"- [{cell['key']}]({cell['key']}/report.md): N = {mine[0]['n_params_nonembed']:,} non-embedding, "
                     f"D = {cell['tokens']:,}; best grid LR " + ", ".join(f"{k} {lr_or_none(v)}" for k, v in best.items()))
    law = lawfit.analyze(runs, labels, baseline, n_boot=a.bootstrap, boot_seed=a.bootstrap_seed, window=a.fit_window)
    law["source"], law["command"] = os.path.join(out, "results.json"), command
    analysis["law"] = law
    if not a.no_plots:
        figures = lawfit.plots(law, runs, out)
    laws = lawfit.write_laws(law, out)
    shown = "\n".join(f"![{os.path.splitext(os.path.basename(f))[0]}]({os.path.basename(f)})" for f in figures)
    report = "\n\n".join([f"# Ladder: {len(cells)} cells × {len(labels)} strategies\n\n`{command}`",
                           lawfit.markdown(law) + ("\n\n" + shown if shown else ""), "## Law files\n\n" + ("\n".join(f"- {os.path.relpath(p, out)}" for p in laws)
                                                                        or "none: no strategy has a usable fit"),
                           "## Cells\n\n" + "\n".join(links)])
    return analysis, report, figures


def lr_or_none(v):
    return f"{v:g}" if v is not None else "none"


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
        cfg = json.loads("\n".join(lines[start:end + 1]))
    except ValueError:
        return None, f"could not read the resolved config printed by {script} --dry_run"
    size = re.search(r"# model \S+: ([\d,]+) parameters \(([\d,]+) non-embedding\)", proc.stdout)  # train.py's size line
    if size:
        cfg["n_params"], cfg["n_params_nonembed"] = (int(g.replace(",", "")) for g in size.groups())
    return cfg, None


def validate(specs, runs, jobs, nproc, script="train.py"):
    """One dry run per distinct (strategy, overrides); every error at once, before any run starts."""
    firsts = {}  # one dry run per strategy (per strategy, size and batch in a ladder: a token budget changes only counts)
    for r in runs:
        firsts.setdefault(r["group"], r)
    with ThreadPoolExecutor(max(1, min(jobs, len(firsts)))) as pool:
        results = dict(zip(firsts, pool.map(lambda r: dry_run(r["args"], script), firsts.values())))
    errors, resolved = [], {}
    for group, (cfg, err) in results.items():
        label = group if isinstance(group, str) else f"{group[0]} at size {group[1]}" + (f", batch {group[2]}" if len(
            {r["batch"] for r in runs}) > 1 else "")
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
        resolved[group] = cfg
    if errors:
        raise SweepError("the grid has bad arguments; nothing was run:\n  " + "\n  ".join(errors))
    for r in runs:
        cfg = resolved[r["group"]]
        r.update(max_iters=cfg["max_iters"], tokens_per_iter=cfg["batch_size"] * cfg["block_size"] * cfg["grad_accum"]
                 if "block_size" in cfg else None)  # finetune.py's batches vary in length
        if "cell" in r:  # the dry run saw the first token budget of the group; the others differ only in their counts
            r.update(max_iters=r["tokens"] // r["tokens_per_iter"], n_params=cfg.get("n_params"), eval_tokens=cfg["eval_tokens"],
                     eval_interval=arg_keys(r).get("eval_interval", cfg["eval_interval"]),
                     n_params_nonembed=cfg.get("n_params_nonembed"), parametrization=cfg["parametrization"],
                     tokenizer=tokenizer_of(cfg["dataset"]))
        if r["lr"] is None:
            r["lr"] = cfg["learning_rate"]
    return resolved


def arg_keys(run):
    """The --key=value pairs of a run's arguments (the last of each key), values as ints where they are."""
    keys = dict(x[2:].split("=", 1) for x in run["args"] if x.startswith("--") and "=" in x)
    return {k: int(v) if v.isdigit() else v for k, v in keys.items()}


def tokenizer_of(dataset):
    """The tokenizer a prepared dataset was written with (its meta.json), 'byte' for the embedded corpus."""
    if dataset == "shakespeare":
        return "byte"
    from data.loader import dataset_dir
    meta = read_json(os.path.join(ROOT, dataset_dir(dataset), "meta.json")) or {}
    return meta.get("tokenizer")


# ----------------------------------------------------------------------------------------------
# the state of a run directory

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


def lock_holder(directory):
    """'pid P on HOST' of the process holding a run directory's lock (checkpoint.RunLock), or None: no lock, or
    one left by a process of this host that is gone (a killed run)."""
    holder = read_json(os.path.join(directory, "lock"))
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return None
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
    return f"pid {holder['pid']} on {holder.get('host')}"


def last_iter(directory):
    last = None
    try:
        with open(os.path.join(directory, "metrics.jsonl")) as f:
            for line in f:
                try:
                    last = json.loads(line).get("iter", last)
                except ValueError:
                    continue
    except OSError:
        pass
    return last


def print_status(runs, launcher, out):
    """Each run as done, diverged, failed, running or pending, and a bar of the runs that have ended. Running: its
    directory's lock is held by a live process (local), or its job runs (slurm: the queue says)."""
    queued = {}
    if launcher == "slurm":
        from eval import slurm
        queued = slurm.run_states(runs, out)
    names = {verdict.FINISHED: "done", verdict.DIVERGED: "diverged", verdict.FAILED: "failed"}
    rows = []
    for r in runs:
        holder = lock_holder(r["dir"])
        state = names.get(r["status"]) or queued.get(r["dir"]) or ("running" if holder and launcher == "local" else "pending")
        if state == "done":
            note = f"val loss {r['final_val_loss']:.4f}"
        elif state in ("failed", "diverged"):
            note = f"{r.get('message')} (see {os.path.relpath(r['dir'])}/stdout.txt)"
        elif state == "running":
            note = f"iter {last_iter(r['dir'])}/{r['max_iters']}" + (f", {holder}" if holder else "")
        else:
            note = "in the queue" if r["dir"] in queued else \
                f"stopped at iter {last_iter(r['dir'])}, resumes from its checkpoint" if r["action"] == "resume" else "not started"
        rows.append((state, r, note))
    counts = {s: sum(row[0] == s for row in rows) for s in ("done", "running", "pending", "failed", "diverged")}
    print(f"{len(runs)} runs ({launcher} launcher): " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for state, r, note in rows:
        print(f"  {state:<8} {r['label']} lr={r['lr']:g} seed={r['seed']}: {note}")
    ended = counts["done"] + counts["failed"] + counts["diverged"]
    print(tqdm.format_meter(ended, len(runs), 0, ncols=72, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} runs ended"))


# ----------------------------------------------------------------------------------------------
# placement

# ----------------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategies", default="uniform,llr")
    p.add_argument("--sizes", default="", help="a ladder's model sizes: presets or w<n_embd>[d<n_layer>] of the config's preset")
    p.add_argument("--tokens", default="", help="a ladder's token budgets, e.g. 250k,1M (max_iters at the run's batch)")
    p.add_argument("--batch_sizes", default="", help="a ladder's batch sizes (micro-batch per process), e.g. 8,16")
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
    p.add_argument("--launcher", default="local", choices=("local", "slurm"),
                   help="where runs run: this machine's CPUs or GPUs, or one SLURM job per run (docs/cluster.md)")
    p.add_argument("--status", action="store_true", help="list every run as pending, running, done, failed or diverged; exit")
    p.add_argument("--slurm_partition", default=None, help="the partition of the jobs (default: the cluster's default)")
    p.add_argument("--slurm_time", default=None, help="time limit of a job, as sbatch --time (default 1:00:00); a run that "
                                                      "needs longer is requeued at the limit and continues from its checkpoint")
    p.add_argument("--slurm_gpus_per_run", type=int, default=None, help="GPUs of a run's job (default 1; 0: CPU only; "
                                                                        "> 1: the run runs under torchrun)")
    p.add_argument("--slurm_cpus_per_run", type=int, default=None, help="CPUs of a run's job (default: the cluster's); "
                                                                        "each process gets CPUs // GPUs threads")
    p.add_argument("--slurm_array_parallelism", type=int, default=None, help="runs of the array at once (default: all)")
    p.add_argument("--slurm_account", default=None, help="the account the jobs are charged to")
    p.add_argument("--slurm_sbatch", action="append", default=None, metavar="KEY=VALUE",
                   help="any other sbatch option (qos=high, mem=64G, exclusive); repeat it for more")
    split = argv.index("--") if "--" in argv else len(argv)
    a = p.parse_args(argv[:split])
    a.passthrough = argv[split + 1:]
    if a.script == "finetune.py" and a.nproc_per_node > 1:
        raise SweepError("finetune.py runs in one process: drop --nproc_per_node")
    if a.script == "finetune.py" and (a.sizes or a.tokens or a.batch_sizes):
        raise SweepError("--sizes, --tokens and --batch_sizes are ladders of pretraining runs: drop them with --script finetune.py")
    given = {x[2:].partition("=")[0] for x in a.passthrough if x.startswith("--")}
    clash = [k for k in ("n_embd", "n_head", "ffn_hidden") if k in given]
    if a.sizes and clash:
        raise SweepError(f"--{clash[0]} after `--` with --sizes: each size sets it; drop one of them")
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
    given = [k for k, v in vars(a).items() if k.startswith("slurm_") and v is not None]
    if a.launcher != "slurm" and given:
        raise SweepError(f"--{given[0]} is an option of the slurm launcher: add --launcher slurm, or drop it")
    if a.launcher == "slurm":
        local = [k for k, default in (("jobs", 0), ("threads", 0), ("gpus", "auto"), ("nproc_per_node", 1))
                 if getattr(a, k) != default]
        if local:
            raise SweepError(f"--{local[0]} places runs on this machine: with --launcher slurm a run's job has "
                             "--slurm_gpus_per_run GPUs (torchrun above 1) and --slurm_cpus_per_run CPUs")
        for key, default in (("slurm_time", "1:00:00"), ("slurm_gpus_per_run", 1), ("slurm_cpus_per_run", 0),
                             ("slurm_array_parallelism", 0), ("slurm_partition", ""), ("slurm_account", ""), ("slurm_sbatch", [])):
            setattr(a, key, default if getattr(a, key) is None else getattr(a, key))
            if isinstance(default, int) and getattr(a, key) < 0:
                raise SweepError(f"--{key} must be >= 0")
        if a.script == "finetune.py" and a.slurm_gpus_per_run > 1:
            raise SweepError("finetune.py runs in one process: --slurm_gpus_per_run 0 or 1")
        from eval import slurm
        slurm.parameters(a, 1)  # --slurm_time and --slurm_sbatch are read here: their errors come before any run
        a.nproc_per_node = max(1, a.slurm_gpus_per_run)  # a job's processes (what grad_accum must divide by)
        a.gpus, a.threads = "none", max(1, a.slurm_cpus_per_run // a.nproc_per_node)  # the job's, not this machine's
        a.jobs = os.cpu_count() or 1  # what runs here is only the dry runs of the grid's check
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
    passthrough = absolute_files(a.passthrough)
    cells = [None]
    if a.sizes or a.tokens or a.batch_sizes:  # a ladder: the config files' own run is the base every cell scales from
        sizes, tokens = parse_sizes(a.sizes) if a.sizes else None, parse_count(a.tokens, "--tokens") if a.tokens else []
        batches = parse_count(a.batch_sizes, "--batch_sizes") if a.batch_sizes else []
        base, err = dry_run(passthrough)
        if err:
            raise SweepError(f"the config after `--`: {err}")
        cells = ladder_cells(sizes or [(base["model"], None, None, None)], tokens, batches, base,  # no sizes: as configured
                             explicit={x[2:].partition("=")[0] for x in passthrough if x.startswith("--")})
    runs = build_runs(specs, a.seeds, passthrough, out, a.script, cells)
    gpus = detect_gpus(a.gpus)
    slots = slots_of(gpus, a.nproc_per_node, a.jobs, a.threads)
    command = shlex.join(["python", "eval/sweep.py"] + argv)

    groups = len({r["group"] for r in runs})
    what = f"{groups} strateg{'ies' if groups > 1 else 'y'}" if cells == [None] else f"{groups} (strategy, size, batch) group" \
        + ("s" if groups > 1 else "")
    print(f"checking {what} with {a.script} --dry_run ...", flush=True)
    validate(specs, runs, len(slots), a.nproc_per_node, a.script)
    plan(runs, a.retry_diverged)
    todo = [r for r in runs if r["action"] != "keep"] if not a.report_only else []
    where = f"GPUs {', '.join(s['gpus'] for s in slots)}" if gpus else f"CPU, {len(slots)} at a time"
    where = "SLURM, a job per run" if a.launcher == "slurm" else where
    print(f"{len(runs)} runs: {sum(r['action'] == 'keep' for r in runs)} kept, {sum(r['action'] == 'resume' for r in runs)} to "
          f"resume, {sum(r['action'] == 'fresh' for r in runs)} to start; {where}, {slots[0]['threads']} thread"
          f"{'s' if slots[0]['threads'] > 1 else ''} per process"
          + (f", torchrun --nproc_per_node={a.nproc_per_node}" if a.nproc_per_node > 1 else ""), flush=True)
    if a.status:
        print_status(runs, a.launcher, out)
        return 0
    if a.plan:
        if a.launcher == "slurm":
            from eval import slurm
            print(slurm.describe(a, len(todo)))
        for r in runs:
            print(f"  {r['action']:<6} {r['label']} lr={r['lr']:g} seed={r['seed']} -> {os.path.relpath(r['dir'])}")
        if cells != [None]:
            print_ladder_plan(runs, cells, slots, out)
        return 0

    for r in runs:
        if r not in todo:
            r.setdefault("rc", None)
    os.environ.setdefault("WANDB_RUN_GROUP", os.path.basename(out))  # one wandb group per sweep (-- --wandb_log=True)
    if a.launcher == "slurm":
        from eval import slurm
        slurm.launch(todo, a, out)
    else:
        launcher = Launcher(slots, a.nproc_per_node, a.script)
        launcher.total = len(todo)
        launcher.bar = tqdm(total=len(todo), unit="run", disable=None)  # on a terminal only
        pool = ThreadPoolExecutor(len(slots))
        try:
            list(pool.map(launcher, todo))
        except KeyboardInterrupt:  # the runs still alive get SIGTERM: each writes a checkpoint before it exits
            launcher.stop()
            pool.shutdown(wait=True, cancel_futures=True)
            raise SystemExit("interrupted: run the same command again to resume")
        finally:
            launcher.bar.close()
        pool.shutdown()

    target = None if a.target == "none" else a.target
    os.makedirs(out, exist_ok=True)
    if cells == [None]:
        analysis = verdict.analyze(runs, labels, baseline=baseline, target=target, window=a.fit_window, n_boot=a.bootstrap,
                                   boot_seed=a.bootstrap_seed)
        figures = [] if a.no_plots else verdict.plots(analysis, runs, labels, out)
        if not a.no_plots and not figures:
            analysis["notes"].append("no plots: matplotlib is not installed")
        report = verdict.markdown(analysis, runs, command, labels, figures)
    else:
        analysis, report, figures = ladder_report(runs, cells, labels, baseline, target, a, command, out)
    for r in runs:
        r["dir"] = os.path.relpath(r["dir"], out)
    write_json(os.path.join(out, "results.json"), dict(command=command, argv=argv, baseline=baseline,
                                                       grid=dict(strategies=specs, seeds=a.seeds, passthrough=a.passthrough,
                                                                 cells=[{k: v for k, v in c.items() if k != "config"} for c in cells if c]),
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
