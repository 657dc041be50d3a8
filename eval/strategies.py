"""
Every learning-rate strategy of optim.py in five regimes, several seeds each, at a fixed budget:

  a  synthetic classification (docs/strategies.md): the paper's task, its per-strategy LRs
  b  LM pretraining from scratch: llama_nano on Shakespeare bytes (data/shakespeare)
  c  LM transfer: llama_nano pretrained on Shakespeare (AdamW, warmup + cosine, one run per seed,
     shared by all strategies) fine-tuned on Python standard-library source, evaluated on held-out
     Python source (data/pystdlib)
  d  fine-tuning a pretrained Hugging Face model with finetune.py (--finetune: DistilBERT on TREC-6 by default)
  e  the same task and architecture from a random init (the papers' from-scratch regime); needs the hub, or a
     local model directory and jsonl files in --finetune

Both corpora are byte-level datasets of data/, prepared on first use; batches come from
data/loader.TokenData, so they are a pure function of (seed, split, iteration).

Per strategy and regime: mean ± std over seeds of the final metric (test accuracy for a, validation
loss for b and c, validation accuracy for d and e) and of the steps needed to reach a target (accuracy ≥ target, or loss ≤ target;
'–' when some seed never got there). Writes <out>/strategies.json and <out>/strategies.md.

python eval/strategies.py                                    # regime a, all strategies, 3 seeds (≈10 min, 2 cores)
python eval/strategies.py --regimes b,c --steps 300          # the LM regimes
python eval/strategies.py --regimes a --strategies dals,sgdr --seeds 0,1,2,3,4 --epochs 80 --report best --faithful
python eval/strategies.py --regimes a --synthetic text
python eval/strategies.py --regimes d,e --strategies uniform,stlr_discriminative,radam,llr --finetune "configs/finetune_trec6.py"

Canonical rules by default; --faithful turns on the reference quirks (docs/strategies.md) and
--report best reports the best evaluation instead of the last one, as the paper's table does.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import optim  # noqa: E402
from data.loader import PREPARE, TokenData, is_prepared  # noqa: E402
from data.pystdlib.prepare import prepare as prepare_pystdlib  # noqa: E402
from data.shakespeare.prepare import prepare as prepare_shakespeare  # noqa: E402
from model import Transformer, config_from_preset  # noqa: E402

# ----------------------------------------------------------------------------------------------
# Hyperparameters

# Regime a: the values behind the paper's table (docs/strategies.md, CV column). SGD-family
# decay 5e-4, Adam-family betas (0.9, 0.999). Strategies outside the paper's 18 get the values of their
# family (PAPER_FAMILY, by the lr_family each registers) unless listed. Canonical LARS uses trust 0.001, so its
# LR is 0.03·0.02/0.001 = 0.6 to keep the paper's trust·η; the faithful LARS runs at 0.03 with trust 0.02.
SGD_WD, ADAM_BETAS = 5e-4, (0.9, 0.999)
PAPER_HPARAMS = {
    "uniform": dict(learning_rate=3e-4, weight_decay=0.01),
    "fixed_sgd": dict(learning_rate=0.01), "cosine_sgd": dict(learning_rate=0.03), "sgdr": dict(learning_rate=0.05),
    "adam": dict(learning_rate=3e-4, weight_decay=0.0), "adamw": dict(learning_rate=3e-4, weight_decay=0.01),
    "adabound": dict(learning_rate=3e-4, weight_decay=0.0, adabound_final_lr=0.01),
    "lars": dict(learning_rate=0.6), "discriminative": dict(learning_rate=0.05),
    "radam": dict(learning_rate=3e-4, weight_decay=0.0), "lion": dict(learning_rate=1e-4, weight_decay=0.01),
    "lookahead_adamw": dict(learning_rate=3e-4, weight_decay=0.01), "sam": dict(learning_rate=0.03),
    "grokfast": dict(learning_rate=0.03), "stlr_discriminative": dict(learning_rate=0.05),
    "sam_discriminative": dict(learning_rate=0.05), "dals": dict(learning_rate=0.03),
    "dals_fast": dict(learning_rate=0.05), "dals_acc": dict(learning_rate=0.03),
    # extras (not in the paper's table) whose values are not their family's
    "grokfast_ma": dict(learning_rate=0.03),
    "schedule_free": dict(learning_rate=1e-3, weight_decay=0.01),  # its authors: 1-10x the scheduled AdamW LR
}
# family -> its values (SGD-like: the decay above); a rule registered with decoupled_wd gets weight decay 0.01
PAPER_FAMILY = {
    "sgd": dict(learning_rate=0.05), "lars": dict(learning_rate=0.6), "dals": dict(learning_rate=0.03),
    "grokfast": dict(learning_rate=0.03), "adam": dict(learning_rate=3e-4, weight_decay=0.0),
    "lion": dict(learning_rate=1e-4, weight_decay=0.0), "adagrad": dict(learning_rate=1e-2, weight_decay=0.0),
    "lamb": dict(learning_rate=3e-3, weight_decay=0.0), "adafactor": dict(learning_rate=3e-3, weight_decay=0.0),
    "muon": dict(learning_rate=1e-3, weight_decay=0.0),
}


def paper_hparams(name):
    """Regimes a, d and e: the strategy's values in PAPER_HPARAMS, else its family's."""
    if name in PAPER_HPARAMS:
        return PAPER_HPARAMS[name]
    s = optim.STRATEGIES[name]
    return dict(PAPER_FAMILY[s.lr_family], **(dict(weight_decay=0.01) if s.decoupled_wd else {}))


# Regimes b and c: one LR per family for a 2-layer, 64-wide byte-level LLaMA (llama_nano), the best
# of a ×3 grid at 200 steps of regime b, seed 0 (final val loss in brackets):
#   SGD (fixed_sgd)  0.3 [2.45]  1 [2.79]  3 [31.6]     AdamW  1e-3 [2.36]  3e-3 [2.21]  1e-2 [2.45]
#   Lion  1e-4 [3.80]  3e-4 [2.81]  1e-3 [2.29]         DALS   0.3 [2.56]  1 [3.35]  3 [3.34]
#   LARS  3 [2.39]  10 [2.39]  30 [4.86]                Muon   3e-3 [2.41]  1e-2 [2.05]  3e-2 [2.01]
#   AdaGrad  1e-2 [2.43]  3e-2 [2.48]  0.1 [2.81]       LAMB   3e-3 [3.61]  1e-2 [2.32]  3e-2 [2.31]
#   Adafactor  3e-3 [3.54]  1e-2 [2.48]  3e-2 [2.33]
# SGD-like rules need far larger LRs than Adam-like ones at this init scale (std 0.02). SAM, STLR and
# the schedule extras take the SGD value. Grokfast's filter g + 2·EMA(g) amplifies the slow gradient
# (×3, then ×10 through momentum), so it was swept on its own: 0.3 [5.3 at 300 steps], 0.1 [~3.1],
# 0.03 [2.86], 0.01 [3.26]; it stays well behind plain SGD on this task. Weight decay 0.1 decoupled / 0 coupled; clip 1.0.
# Each strategy's family (lr_family) and decay (decoupled_wd) are what it registered in optim.
LM_LR = {
    "sgd": 0.3, "grokfast": 0.03, "adam": 3e-3, "lion": 1e-3, "lars": 10.0, "dals": 0.3, "adagrad": 1e-2, "lamb": 3e-2,
    "adafactor": 3e-2, "muon": 3e-2,
}


def lm_hparams(name):
    s = optim.STRATEGIES[name]
    return dict(learning_rate=LM_LR[s.lr_family], weight_decay=0.1 if s.decoupled_wd else 0.0, grad_clip=1.0)


# ----------------------------------------------------------------------------------------------
# Regime a: synthetic classification


class MLPBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.mlp = nn.Module()
        self.mlp.up = nn.Linear(width, width)


class MLP(nn.Module):
    """ReLU MLP named like model.py (embed, blocks.i.mlp.up, head) so groups.param_groups gives the
    paper's grouping: one group per layer, depth from input to output."""

    def __init__(self, dims):
        super().__init__()
        self.embed = nn.Linear(dims[0], dims[1])
        self.blocks = nn.ModuleList(MLPBlock(w) for w in dims[1:-2])
        self.head = nn.Linear(dims[-2], dims[-1])

    def forward(self, x):
        x = F.relu(self.embed(x))
        for b in self.blocks:
            x = F.relu(b.mlp.up(x))
        return self.head(x)


def synthetic_data(version):
    """(x_train, y_train, x_test, y_test, dims, batch) of the paper's task (docs/strategies.md)."""
    if version == "code":
        g = torch.Generator().manual_seed(42)
        xa = torch.randn(10000, 20, generator=g)
        xt = torch.randn(2000, 20, generator=g)
        g = torch.Generator().manual_seed(43)
        xb = 0.5 * torch.randn(10000, 20, generator=g)
        ya, yt = (xa[:, :5].sum(1) > 0).long(), (xt[:, :5].sum(1) > 0).long()
        yb = (xb[:, 0] * xb[:, 1] + xb[:, 2] * xb[:, 3] > 0).long()
        perm = torch.randperm(20000, generator=torch.Generator().manual_seed(42))
        x, y = torch.cat([xa, xb])[perm], torch.cat([ya, yb])[perm]
        return x, y, xt, yt, [20, 256, 256, 256, 10], 128
    g = torch.Generator().manual_seed(42)
    x = 0.1 * torch.randn(8000, 64, generator=g)
    x[:, :10] = 3 * torch.randn(8000, 10, generator=g)
    y = x[:, :10].argmax(1)
    return x[:6400], y[:6400], x[6400:], y[6400:], [64, 128, 128, 10], 64


def run_synthetic(name, seed, args):
    x, y, xt, yt, dims, batch = synthetic_data(args.synthetic)
    steps_per_epoch = math.ceil(len(x) / batch)
    T = args.epochs * steps_per_epoch
    torch.manual_seed(seed)
    model = MLP(dims)
    hp = dict(weight_decay=SGD_WD, beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], grad_clip=0.0, warmup_frac=0.1)
    hp.update(paper_hparams(name))
    if args.faithful and name == "lars":
        hp["learning_rate"] = 0.03
    cfg = optim.default_config(max_iters=T, epoch_iters=steps_per_epoch, dals_acc_t0=max(1, T // 8), faithful=args.faithful, **hp)
    s = optim.build(name, model, cfg)
    curve, it = [], 0
    for epoch in range(args.epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1000 * seed + epoch))
        for b in range(steps_per_epoch):
            idx = order[b * batch:(b + 1) * batch]
            xb, yb = x[idx], y[idx]

            def forward_backward():
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                return loss.detach()
            loss = optim.update(s, it, forward_backward)
            it += 1
            if it % args.eval_every == 0 or it == T:
                with torch.no_grad(), s.eval_weights():
                    acc = (model(xt).argmax(1) == yt).float().mean().item() * 100
                curve.append((it, acc if math.isfinite(loss.item()) else float("nan")))
    return curve


# ----------------------------------------------------------------------------------------------
# Regimes b and c: byte-level language modelling


PREPARERS = {"shakespeare": prepare_shakespeare, "pystdlib": prepare_pystdlib}
CORPORA = {"b": ["shakespeare"], "c": ["shakespeare", "pystdlib"]}  # the datasets each LM regime reads
LM = dict(batch_size=16, block_size=64, val_batches=8)
_corpora = {}


def corpus(name):
    """data/<name> as byte tokens, prepared on first use as train.py prepares Shakespeare."""
    if name not in _corpora:
        if not is_prepared(name):
            PREPARERS[name]()
        data = TokenData(name)
        if data.tokenizer != "byte":
            raise SystemExit(f"data/{name} holds {data.tokenizer!r} tokens but llama_nano reads bytes: run `{PREPARE[name]}`")
        _corpora[name] = data
    return _corpora[name]


def lm_batch(data, split, seed, it):
    return data.batch(split, seed, it, 0, LM["batch_size"], LM["block_size"])


@torch.no_grad()
def val_loss(model, data):
    model.eval()
    losses = [model(*lm_batch(data, "val", 0, i))[1].item() for i in range(LM["val_batches"])]
    model.train()
    return sum(losses) / len(losses)


def train_lm(model, name, data, steps, seed, eval_every, hp):
    cfg = optim.default_config(max_iters=steps, **hp)
    s = optim.build(name, model, cfg)
    curve = []
    for it in range(steps):
        x, y = lm_batch(data, "train", seed, it)

        def forward_backward():
            _, loss = model(x, y)
            loss.backward()
            return loss.detach()
        loss = optim.update(s, it, forward_backward)
        if (it + 1) % eval_every == 0 or it + 1 == steps:
            with s.eval_weights():
                v = val_loss(model, data) if math.isfinite(loss.item()) else float("nan")
            curve.append((it + 1, v))
    return curve


def lm_model(seed):
    torch.manual_seed(seed)
    return Transformer(config_from_preset("llama_nano", block_size=LM["block_size"]))


def run_pretrain(name, seed, args):
    model = lm_model(seed)
    return train_lm(model, name, corpus("shakespeare"), args.steps, seed, args.eval_every_lm, lm_hparams(name))


_pretrained = {}


def run_transfer(name, seed, args):
    key = (seed, args.steps)
    if key not in _pretrained:  # the shared starting point: AdamW + warmup + cosine on Shakespeare
        model = lm_model(seed)
        train_lm(model, "uniform", corpus("shakespeare"), args.steps, seed, args.steps, lm_hparams("uniform"))
        _pretrained[key] = {k: v.clone() for k, v in model.state_dict().items()}
    model = lm_model(seed)
    model.load_state_dict(_pretrained[key])
    steps = max(1, args.steps // 2)
    return train_lm(model, name, corpus("pystdlib"), steps, seed + 1, args.eval_every_lm, lm_hparams(name))


# ----------------------------------------------------------------------------------------------
# Regimes d and e: fine-tuning a Hugging Face model (finetune.py) from its pretrained weights (d) and from a
# random init of the same architecture (e), on the task of --finetune (TREC-6 with DistilBERT by default).
# Each strategy runs at its regime-a LR (paper_hparams) times --ft_lr_scale, with its regime-a weight decay.


def run_finetune(name, seed, args, from_scratch=False):
    """finetune.py in its own process (it imports train.py, which imports eval/), its run kept under <out>/runs."""
    import shlex
    import shutil
    import subprocess
    out_dir = os.path.join(args.out, "runs", "e" if from_scratch else "d", name, f"seed{seed}")
    shutil.rmtree(out_dir, ignore_errors=True)  # this benchmark's own output: a rerun starts it again
    hp = dict(paper_hparams(name), learning_rate=paper_hparams(name)["learning_rate"] * args.ft_lr_scale)
    cmd = [sys.executable, "finetune.py", *shlex.split(args.finetune), f"--strategy={name}", f"--seed={1337 + seed}",
           f"--from_scratch={from_scratch}", f"--faithful={args.faithful}", "--write_checkpoints=False", "--log_interval=1000000",
           f"--out_dir={out_dir}", *(f"--{k}={v}" for k, v in hp.items())]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [l for l in (proc.stderr + proc.stdout).splitlines() if l.strip()]
        raise RuntimeError(f"regime {'e' if from_scratch else 'd'}, {name}, seed {seed}: finetune.py failed: "
                           f"{lines[-1] if lines else proc.returncode} (its log: {out_dir})")
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        evals = {r["iter"]: 100 * r["val_acc"] for r in map(json.loads, f) if "val_acc" in r}
    return sorted(evals.items())


def run_from_scratch(name, seed, args):
    return run_finetune(name, seed, args, from_scratch=True)


REGIMES = {
    "a": dict(title="synthetic classification", metric="test acc %", higher=True, run=run_synthetic),
    "b": dict(title="LM pretraining (Shakespeare bytes)", metric="val loss", higher=False, run=run_pretrain),
    "c": dict(title="LM transfer (Shakespeare → Python stdlib)", metric="val loss", higher=False, run=run_transfer),
    "d": dict(title="fine-tuning a pretrained model (finetune.py, --finetune)", metric="val acc %", higher=True, run=run_finetune),
    "e": dict(title="the same task and architecture from scratch", metric="val acc %", higher=True, run=run_from_scratch),
}


# ----------------------------------------------------------------------------------------------
# Summaries and the table


def summarise(curves, higher, target, report):
    finals, reach = [], []
    for curve in curves:
        values = [v for _, v in curve]
        pick = (max if higher else min)(values, key=lambda v: v if math.isfinite(v) else (-math.inf if higher else math.inf))
        finals.append(pick if report == "best" else values[-1])
        hit = [it for it, v in curve if math.isfinite(v) and (v >= target if higher else v <= target)]
        reach.append(hit[0] if hit else None)
    ok = [f for f in finals if math.isfinite(f)]
    out = dict(values=finals, mean=statistics.fmean(ok) if len(ok) == len(finals) else float("nan"),
               std=statistics.pstdev(ok) if len(ok) == len(finals) and len(ok) > 1 else 0.0, steps_to_target=reach)
    out["steps_mean"] = statistics.fmean(reach) if all(r is not None for r in reach) else None
    return out


def fmt(s, digits):
    if not math.isfinite(s["mean"]):
        return "diverged"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def markdown(results, args):
    regs = [r for r in args.regimes if r in results]
    head = "| strategy | gen | " + " | ".join(f"{REGIMES[r]['metric']} ({r}) | steps to {args.targets[r]:g} ({r})" for r in regs) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(regs))]
    for name in args.strategies:
        row = [name, optim.STRATEGIES[name].generation]
        for r in regs:
            s = results[r].get(name)
            if s is None:
                row += ["", ""]
                continue
            row += [fmt(s, 2 if REGIMES[r]["higher"] else 3), "–" if s["steps_mean"] is None else f"{s['steps_mean']:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def work(job):
    regime, name, seed, args = job
    torch.set_num_threads(args.threads)
    t = time.time()
    curve = REGIMES[regime]["run"](name, seed, args)
    return regime, name, seed, curve, time.time() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--regimes", default="a", help="comma-separated subset of a,b,c,d,e")
    p.add_argument("--strategies", default="all", help="comma-separated names of optim.STRATEGIES, 'all' (optim.CATALOGUE: uniform, the 18, extras, muon) or 'paper' (the 18)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=6, help="regime a budget (the paper ran 80; 6 keeps all strategies × 3 seeds under 10 min on 2 cores)")
    p.add_argument("--steps", type=int, default=300, help="regime b budget; regime c pretrains this many steps and fine-tunes half as many")
    p.add_argument("--synthetic", choices=["code", "text"], default="code")
    p.add_argument("--report", choices=["final", "best"], default="final")
    p.add_argument("--faithful", action="store_true", help="reference quirks on (docs/strategies.md)")
    p.add_argument("--eval_every", type=int, default=40, help="regime a: evaluate every this many steps")
    p.add_argument("--eval_every_lm", type=int, default=25)
    p.add_argument("--targets", default="a=90,b=2.6,c=2.4,d=90,e=90", help="accuracy (a, d, e) or loss (b, c) to count steps to")
    p.add_argument("--finetune", default="configs/finetune_trec6.py",
                   help="regimes d and e: finetune.py's config files and --key=value, e.g. 'configs/finetune_rte.py --epochs=2'")
    p.add_argument("--ft_lr_scale", type=float, default=0.1, help="regimes d and e: each strategy's LR is its regime-a LR times this")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--out", default=os.path.join("out", "strategies"))
    args = p.parse_args(argv)
    args.regimes = [r for r in args.regimes.split(",") if r]
    if set(args.regimes) - set(REGIMES):
        raise SystemExit(f"--regimes takes a subset of {','.join(REGIMES)}, got {','.join(args.regimes)}")
    if args.strategies == "all":
        args.strategies = list(optim.CATALOGUE)
    elif args.strategies == "paper":
        args.strategies = list(optim.PAPER_18)
    else:
        args.strategies = args.strategies.split(",")
        bad = [n for n in args.strategies if n not in optim.STRATEGIES]
        if bad:
            raise SystemExit(f"unknown strategies {bad}; available: {', '.join(optim.STRATEGIES)}")
    for name in args.strategies:  # a family without an LR here stops the benchmark before any run
        family = optim.STRATEGIES[name].lr_family
        lm, paper = set(args.regimes) & {"b", "c"}, set(args.regimes) & {"a", "d", "e"} and name not in PAPER_HPARAMS
        for table, lrs, used in (("LM_LR", LM_LR, lm), ("PAPER_FAMILY", PAPER_FAMILY, paper)):
            if used and family not in lrs:
                raise SystemExit(f"strategy {name!r} is registered with lr_family={family!r}, which {table} has no LR "
                                 f"for: register one of {', '.join(lrs)}, or add {family!r} to {table}")
    bad = [r for r in args.regimes if r not in args.targets]
    if bad:
        raise SystemExit(f"--targets has no value for regime {', '.join(bad)}: add e.g. {bad[0]}=90")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.targets = {k: float(v) for k, v in (kv.split("=") for kv in args.targets.split(","))}
    if args.faithful:
        args.report = "best"

    for name in dict.fromkeys(n for r in args.regimes for n in CORPORA.get(r, [])):
        corpus(name)  # prepared once, before any worker process starts
    jobs = [(r, n, s, args) for r in args.regimes for n in args.strategies for s in args.seeds]
    jobs.sort(key=lambda j: (j[0], not optim.STRATEGIES[j[1]].slow))  # longest first keeps both processes busy
    curves, t0 = {}, time.time()
    if args.jobs > 1:
        import multiprocessing as mp
        # regime c's pretrained model is cached per process: order jobs so each process reuses it
        with mp.get_context("fork").Pool(args.jobs) as pool:
            for regime, name, seed, curve, dt in pool.imap_unordered(work, jobs):
                curves.setdefault(regime, {}).setdefault(name, {})[seed] = curve
                print(f"[{time.time() - t0:6.0f}s] {regime} {name:20s} seed {seed}: {curve[-1][1]:.4g} ({dt:.1f}s)", flush=True)
    else:
        for job in jobs:
            regime, name, seed, curve, dt = work(job)
            curves.setdefault(regime, {}).setdefault(name, {})[seed] = curve
            print(f"[{time.time() - t0:6.0f}s] {regime} {name:20s} seed {seed}: {curve[-1][1]:.4g} ({dt:.1f}s)", flush=True)

    results = {r: {n: summarise([curves[r][n][s] for s in args.seeds], REGIMES[r]["higher"], args.targets[r], args.report)
                   for n in args.strategies} for r in args.regimes}
    os.makedirs(args.out, exist_ok=True)
    meta = dict(regimes={r: REGIMES[r]["title"] for r in args.regimes}, seeds=args.seeds, epochs=args.epochs, steps=args.steps,
                synthetic=args.synthetic, report=args.report, faithful=args.faithful, targets=args.targets,
                seconds=round(time.time() - t0, 1), command="python eval/strategies.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    with open(os.path.join(args.out, "strategies.json"), "w") as f:
        json.dump(dict(meta=meta, results=results, curves=curves), f, indent=1)
    table = markdown(results, args)
    with open(os.path.join(args.out, "strategies.md"), "w") as f:
        f.write(f"{table}\n\nRegimes: " + "; ".join(f"{r} = {REGIMES[r]['title']}" for r in args.regimes)
                + f". Seeds {args.seeds}, {args.report} value, `{meta['command']}`, {meta['seconds']:.0f} s.\n")
    print(table)
    print(f"wrote {args.out}/strategies.md and strategies.json in {meta['seconds']:.0f}s")


if __name__ == "__main__":
    main()
