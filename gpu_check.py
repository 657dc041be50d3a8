"""
The GPU path in one command (`python bench.py --gpu_check`): every CUDA path run and every GPU target measured,
in one report. This file holds the harness (the run's settings, running the checks, the report) and the checks of
the training paths; the measurements against peers and targets are bench.py's, which holds the table of checks.

    python bench.py --gpu_check --out out/gpu_check     # one H100/H200, about 10 minutes
    python bench.py --gpu_check --smoke                 # the same checks on a CPU: tiny model, eager, gloo (CI)

A check is a function of the run's settings g that returns its figures (a dict; "command" names the command that
produced them when it is not this one), raises Skip(reason) where it does not apply, and fails on anything else:
the error's last line is recorded (with the figures of a Failed) and the next check runs. Figures named in the targets are held to them on CUDA
only (a CPU's figures say nothing about a GPU). gpu_check.json and gpu_check.md go to --out.
"""
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import time
import types

import torch

import optim
import preflight
import train
from configurator import ConfigError
from model import PRESETS, Transformer

ROOT = os.path.dirname(os.path.abspath(__file__))
# the model and batch of every in-process check: llama_135m at the paper's micro-batch on a GPU; a tiny model on a CPU
GPU_ARGS = ["--model=llama_135m", "--block_size=1024", "--batch_size=32", "--device=cuda"]
SMOKE_ARGS = ["--model=llama_nano", "--block_size=32", "--batch_size=4", "--device=cpu", "--dtype=float32",
              "--compile=False"]


class Skip(Exception):
    """A check that does not apply here (no CUDA, an optional package missing): reported, never a failure."""


class Failed(AssertionError):
    """A check that ran and fell short; its figures so far still go to the report."""

    def __init__(self, reason, figures):
        super().__init__(reason)
        self.figures = figures


def settings(argv, smoke, out, steps, rounds, command):
    """The run's settings: train.py's config of the checked model (GPU_ARGS or SMOKE_ARGS, then argv), its device,
    precision and compilation, a batch of random tokens. --gpu_check without CUDA stops here, pointing to --smoke."""
    if not smoke and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"--gpu_check needs a CUDA GPU and this torch ({torch.__version__}, {build}) sees none: "
                          f"run `python bench.py --gpu_check --smoke` for the CPU smoke mode")
    size_args = (SMOKE_ARGS if smoke else GPU_ARGS) + list(argv)
    cfg = train.parse_config(size_args)
    c = types.SimpleNamespace(**cfg)
    dev, device_type, use_bf16, ctx, use_compile = preflight.runtime(c)
    mcfg = preflight.model_config(c, c.vocab_size or PRESETS[c.model]["vocab_size"])
    torch.manual_seed(c.seed)
    x = torch.randint(0, mcfg.vocab_size, (c.batch_size, c.block_size), device=dev)
    device = torch.cuda.get_device_name() if device_type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    return types.SimpleNamespace(smoke=smoke, out=out, steps=2 if smoke else steps, rounds=2 if smoke else rounds,
                                 command=command, size_args=size_args, cfg=cfg, c=c, dev=dev, device_type=device_type,
                                 use_bf16=use_bf16, ctx=ctx, use_compile=use_compile, mcfg=mcfg, x=x, device=device,
                                 cache={})


def run_checks(checks, g, targets):
    """Each (name, check) in order, each failure recorded with its error's last line; one pass/fail line each."""
    results = []
    for name, check in checks:
        t0, status, reason, figures = time.time(), "pass", "", {}
        try:
            figures = dict(check(g) or {})
            misses = [f"{k} {figures[k]:.4g} misses the target {op} {bound:g}" for k, (op, bound) in targets.items()
                      if g.device_type == "cuda" and figures.get(k) is not None and not meets(figures[k], op, bound)]
            if misses:
                status, reason = "fail", "; ".join(misses)
        except Skip as e:
            status, reason = "skipped", str(e)
        except (Exception, SystemExit) as e:  # ConfigError is a SystemExit: one check's bad setting stops only it
            figures = getattr(e, "figures", {})
            status, reason = "fail", last_line(e)
        if g.device_type == "cuda":
            torch.cuda.empty_cache()  # an OOM in one check leaves nothing behind for the next
        command = figures.pop("command", g.command)
        results.append(dict(name=name, status=status, reason=reason, seconds=round(time.time() - t0, 2),
                            figures=figures, command=command))
        print(f"{status.upper():7} {name} ({time.time() - t0:.1f} s)" + (f": {reason}" if reason else ""), flush=True)
    return results


def last_line(e):
    """'ErrorType: the last line of its message' (a config error's message already names itself)."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[-1]}" if lines else type(e).__name__


def meets(value, op, bound):
    return value >= bound if op == ">=" else value <= bound


def write_report(g, results, targets, wall_s):
    """gpu_check.json and gpu_check.md under g.out: device, versions, date, every check with its figures and command."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    report = dict(command=g.command, date=datetime.datetime.now().isoformat(timespec="seconds"), device=g.device,
                  torch=torch.__version__, cuda=torch.version.cuda, commit=commit or None, smoke=g.smoke,
                  model=g.c.model, batch=f"{g.c.batch_size}x{g.c.block_size}", dtype="bf16" if g.use_bf16 else "fp32",
                  wall_s=round(wall_s, 1), targets={k: f"{op} {bound:g}" for k, (op, bound) in targets.items()},
                  peak_memory_mib=round(torch.cuda.max_memory_allocated() / 2**20) if g.device_type == "cuda" else None,
                  passed=all(r["status"] != "fail" for r in results), checks=results)
    os.makedirs(g.out, exist_ok=True)
    with open(os.path.join(g.out, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    lines = [f"# GPU check{' (smoke mode)' if g.smoke else ''}", "",
             f"`{g.command}`: {g.device}, torch {torch.__version__} (CUDA {torch.version.cuda}), {report['date']}, "
             f"commit {commit or '?'}, {g.c.model} {report['batch']} {report['dtype']}, {report['wall_s']} s in all"
             + (f", peak memory {report['peak_memory_mib']} MiB" if report["peak_memory_mib"] else "") + ".", "",
             "Targets (held on CUDA only): " + ", ".join(f"{k} {t}" for k, t in report["targets"].items()) + ".", "",
             "| check | status | figures | command |", "|---|---|---|---|"]
    for r in results:
        figures = ", ".join(f"{k} {fmt(v)}" for k, v in r["figures"].items()) or "—"
        status = r["status"] + (f": {r['reason']}" if r["reason"] else "")
        commands = r["command"] if isinstance(r["command"], list) else [r["command"]]
        lines.append(f"| {r['name']} | {status} | {figures} | " + "<br>".join(f"`{c}`" for c in commands) + " |")
    with open(os.path.join(g.out, "gpu_check.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return report


def fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "/")


# ----------------------------------------------------------------------------------------------
# The checks of the training paths


def strategy_cases(g):
    """(label, config overrides) of each strategy family: the LLR family and its baselines, schedule-free, the HT-SR
    relatives, the first SGD-family strategy of the registry, DALS, and muP (on uniform AdamW)."""
    sgd = next(n for n, s in optim.STRATEGIES.items() if s.lr_family == "sgd" and not s.uses_loss)
    names = ["uniform", "llr", "llr_muon", "uniform_muon", "schedule_free", "tempbalance", "alphadecay", sgd, "dals"]
    mup = ["--strategy=uniform", "--parametrization=mup", f"--base_width={g.mcfg.n_embd // 2}"]
    return [(n, [f"--strategy={n}"]) for n in names] + [("uniform, parametrization=mup", mup)]


def strategies(g):
    """A few steps of each strategy family, eager and then compiled (inductor on CUDA; on a CPU the aot_eager backend:
    dynamo and AOTAutograd without code generation), from the same weights and batches. Fails on an error, a
    non-finite loss, a compiled loss off the eager one by more than the tolerance, or a graph compiled after the
    first compiled step (a recompilation; torch._dynamo's unique_graphs counter)."""
    steps = 3 if g.smoke else 4
    tol = 1e-5 if not g.use_bf16 else 1e-2  # relative; bf16 and inductor's fusions round differently from eager
    backend = "inductor" if g.device_type == "cuda" else "aot_eager"
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, g.mcfg.vocab_size, g.x.shape, generator=gen).to(g.dev) for _ in range(steps)]
    models, figures, bad = {}, {}, []
    for label, args in strategy_cases(g):
        try:  # one strategy's error is its line in the reason; the others still run
            losses, recompiles = eager_and_compiled(g, args, batches, backend, models)
        except (Exception, SystemExit) as e:
            bad.append(f"{label}: {last_line(e)}")
            continue
        diff = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(losses["eager"], losses["compiled"]))
        figures[f"{label}: max rel diff"] = diff
        figures[f"{label}: recompiles"] = recompiles
        if not all(math.isfinite(v) for v in losses["eager"] + losses["compiled"]):
            bad.append(f"{label}: non-finite loss {losses}")
        elif diff > tol:
            bad.append(f"{label}: compiled loss off eager by {diff:.2e} (tolerance {tol:g} relative)")
        if recompiles:
            bad.append(f"{label}: {recompiles} recompilation(s) after warm-up")
    if bad:
        raise Failed("; ".join(bad), figures)
    figures["tolerance"] = f"{tol:g} relative, {steps} steps, {backend}"
    return figures


def eager_and_compiled(g, args, batches, backend, models):
    """The losses of one strategy's steps, eager and then compiled, from the same weights, and the graphs compiled
    after the first compiled step. models caches one model per parametrization, compiled once."""
    from torch._dynamo.utils import counters
    cfg = train.parse_config(g.size_args + args)
    c = types.SimpleNamespace(**cfg)
    mcfg = preflight.model_config(c, c.vocab_size or PRESETS[c.model]["vocab_size"])
    if repr(mcfg) not in models:  # later strategies reuse the compiled graphs
        torch.manual_seed(c.seed)
        model = Transformer(mcfg).to(g.dev)
        model.fused_ce = preflight.loss_path(c, g.device_type)
        init = {k: v.clone() for k, v in model.state_dict().items()}
        models[repr(mcfg)] = model, torch.compile(model, backend=backend), init
    model, compiled, init = models[repr(mcfg)]
    losses = {}
    for mode, runner in (("eager", model), ("compiled", compiled)):
        model.load_state_dict(init)
        strategy = optim.build(c.strategy, model, cfg)
        losses[mode] = []
        for it, x in enumerate(batches):
            def forward_backward():
                with g.ctx:
                    loss = runner(x, x)[1]
                loss.backward()
                return loss.detach()
            losses[mode].append(optim.update(strategy, it, forward_backward).item())
            if mode == "compiled" and it == 0:  # warm-up done: every graph this strategy needs exists now
                graphs = counters["stats"]["unique_graphs"]
    return losses, counters["stats"]["unique_graphs"] - graphs


def torchrun(g):
    """train.py under torchrun, one process per GPU (nccl) or 2 CPU processes (gloo): an uninterrupted run that keeps
    its mid-run checkpoint, then a run resumed from that checkpoint in a fresh directory, whose losses must equal the
    uninterrupted run's: exactly on a CPU, within a tolerance on a GPU (atomics in the kernels). The HT-SR monitor
    runs under DDP in both (a collective: each rank fits its share of the matrices)."""
    nproc, tol = (torch.cuda.device_count(), 1e-3) if g.device_type == "cuda" else (2, 0.0)
    iters, half = 6, 3
    root = os.path.join(g.out, "torchrun")
    shutil.rmtree(root, ignore_errors=True)
    full, resumed = os.path.join(root, "full"), os.path.join(root, "resumed")
    size = (SMOKE_ARGS if g.smoke else ["--model=llama_135m", "--block_size=1024", "--batch_size=8"])
    args = ["train.py", *size, "--dataset=shakespeare", f"--grad_accum={nproc}", f"--max_iters={iters}",
            f"--eval_interval={half}", f"--ckpt_every={half}", "--keep_ckpts=2", "--log_interval=1",
            f"--eval_tokens={g.c.block_size * 8 if g.smoke else 8192}", f"--spectral_every={half}"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))  # the CPU processes share the cores
    commands = [launch + args + [f"--out_dir={full}"], launch + args + [f"--out_dir={resumed}", "--init_from=resume"]]
    out = run_command(commands[0], env)
    os.makedirs(resumed)
    shutil.copyfile(os.path.join(full, f"ckpt_{half}.pt"), os.path.join(resumed, "ckpt.pt"))  # as if it stopped there
    run_command(commands[1], env)
    a, b = metrics(full), metrics(resumed)
    compared = [(it, k) for it in range(half, iters + 1) for k in ("train_loss", "val_loss") if k in a.get(it, {})]
    missing = [f"{k}@{it}" for it, k in compared if k not in b.get(it, {})]
    if missing:
        raise AssertionError(f"the resumed run logged no {', '.join(missing)}")
    diff = max(abs(a[it][k] - b[it][k]) / abs(a[it][k]) for it, k in compared)
    if diff > tol:
        raise AssertionError(f"resumed losses differ from the uninterrupted run's by {diff:.2e} relative (tolerance {tol:g})")
    monitor = next((line for line in out.splitlines() if line.startswith("spectral monitor:")), "")
    return {"processes": nproc, "backend": "nccl" if g.device_type == "cuda" else "gloo", "iterations": iters,
            "resumed at": half, "max rel diff of resumed losses": diff, "tolerance": tol,
            "final val_loss": a[iters]["val_loss"], "monitor under DDP": monitor.partition(": ")[2] or None,
            "command": [" ".join(["python", *cmd[1:]]) for cmd in commands]}


def run_command(cmd, env):
    """stdout of cmd run in the repository; a failure raises with the last line it wrote to stderr."""
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"`{' '.join(cmd[2:])}` exited {p.returncode}: {last}")
    return p.stdout


def metrics(run_dir):
    """iteration -> its merged metrics.jsonl rows."""
    rows = {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            rows.setdefault(r["iter"], {}).update(r)
    return rows

