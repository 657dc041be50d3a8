"""
Run train.py over strategies x learning rates x seeds, several runs at a time, and tabulate the final
validation loss as mean ± std over seeds (Markdown and JSON). The tables in the README come from here.

    python eval/sweep.py --strategies uniform,llr --seeds 3
    python eval/sweep.py --strategies uniform_muon,llr_muon --seeds 3
    python eval/sweep.py --strategies uniform,llr,llr:llr_embed=data --lrs 1e-3,3e-3,1e-2,3e-2 --seeds 1
    python eval/sweep.py --strategies uniform,llr --seeds 3 -- configs/llama_60m.py --max_iters=1000

A strategy may carry overrides after a colon (`llr:llr_embed=data,llr_s2=3`); everything after `--`
goes to every train.py run (config files, --key=value). Runs land in --out/<tag>/seed<k>.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def final_val_loss(out_dir):
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    vals = [json.loads(l)["val_loss"] for l in open(path) if '"val_loss"' in l]
    return vals[-1] if vals else None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategies", default="uniform,llr")
    p.add_argument("--lrs", default="", help="comma-separated learning rates (default: the config's)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="runs at a time")
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS per run (0: cpu_count // jobs)")
    p.add_argument("--out", default="out/sweep")
    p.add_argument("--md", default="", help="also write the table here")
    argv = sys.argv[1:]
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    a = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if a.seeds < 1 or a.jobs < 1:
        raise SystemExit("error: --seeds and --jobs must be >= 1")
    lrs = [float(x) for x in a.lrs.split(",") if x] or [None]
    runs = []
    for spec in a.strategies.split(","):
        name, _, extra = spec.partition(":")
        overrides = [f"--{kv}" for kv in extra.split(",") if kv] if extra else []
        for lr in lrs:
            for seed in range(a.seeds):
                tag = spec.replace(":", "_").replace("=", "-").replace(",", "_") + (f"_lr{lr:g}" if lr else "")
                out = os.path.join(a.out, tag, f"seed{seed}")
                args = passthrough + [f"--strategy={name}", f"--seed={1337 + seed}", f"--out_dir={out}", *overrides]
                args += [f"--learning_rate={lr}"] if lr else []
                runs.append(dict(spec=spec, lr=lr, seed=seed, out=out, args=args))
    threads = a.threads or max(1, (os.cpu_count() or 2) // a.jobs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))

    def launch(run):
        os.makedirs(run["out"], exist_ok=True)
        t0 = time.time()
        with open(os.path.join(run["out"], "stdout.txt"), "w") as log:
            rc = subprocess.run([sys.executable, "train.py", *run["args"]], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT).returncode
        run.update(rc=rc, seconds=time.time() - t0, val_loss=final_val_loss(os.path.join(ROOT, run["out"])))
        status = f"{run['val_loss']:.4f}" if rc == 0 and run["val_loss"] is not None else f"FAILED (see {run['out']}/stdout.txt)"
        print(f"{run['spec']:<28} lr={run['lr'] or 'config'} seed={run['seed']}: {status} ({run['seconds']:.0f}s)", flush=True)
        return run

    print(f"{len(runs)} runs, {a.jobs} at a time, {threads} threads each")
    with ThreadPoolExecutor(a.jobs) as pool:
        runs = list(pool.map(launch, runs))

    def cell(spec, lr):
        vals = [r["val_loss"] for r in runs if r["spec"] == spec and r["lr"] == lr and r["rc"] == 0 and r["val_loss"] is not None]
        if not vals:
            return "failed", vals
        return (f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}" if len(vals) > 1 else f"{vals[0]:.4f}"), vals

    specs = list(dict.fromkeys(r["spec"] for r in runs))
    command = " ".join(["python eval/sweep.py"] + argv)
    header = "| strategy | " + " | ".join(f"lr {lr:g}" if lr else "final val loss" for lr in lrs) + " |"
    lines = [f"`{command}` ({a.seeds} seed{'s' if a.seeds > 1 else ''}, mean ± std)", "", header,
             "|" + "---|" * (len(lrs) + 1)]
    lines += [f"| {spec} | " + " | ".join(cell(spec, lr)[0] for lr in lrs) + " |" for spec in specs]
    table = "\n".join(lines)
    print("\n" + table)
    with open(os.path.join(ROOT, a.out, "results.json"), "w") as f:
        json.dump(dict(command=command, runs=runs), f, indent=1)
    if a.md:
        with open(a.md, "w") as f:
            f.write(table + "\n")
    if any(r["rc"] != 0 for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
