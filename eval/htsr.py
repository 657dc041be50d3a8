"""
HT-SR metrics (spectral.py) of every weight matrix of a nanoLR checkpoint, from the command line.

    python eval/htsr.py out/run                          # per-module table (median xmin, as LLR)
    python eval/htsr.py out/run --method ks --json a.json --csv a.csv
    python eval/htsr.py out/run --plot plots --modules embed,blocks.0.attn.q   # alpha by kind; log-log ESD, fit
    python eval/htsr.py --compare out/uniform out/llr    # per-kind mean alpha of two checkpoints
    python eval/htsr.py --bench [--device cuda] [--no-ww] [--route gram]   # vs weightwatcher 0.7.7; route table

A checkpoint is a train.py ckpt.pt or the run directory holding it (model.load_checkpoint). Rows are
spectral.analyze()'s plus kind (groups.matrix_kind; 'other' for a name it does not know). The estimator
conventions are in docs/htsr.md.
"""
import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import groups  # noqa: E402
import model as model_lib  # noqa: E402
import spectral  # noqa: E402

KIND_ORDER = ("embed", "attn_qk", "attn_vo", "mlp", "head", "other")
DEFAULT_METRICS = "alpha,D,num_pl_spikes,log_norm,log_spectral_norm,stable_rank,entropy"


# ----------------------------------------------------------------------------------------------
# Checkpoints and module kinds


def load_weights(path, device="cpu"):
    """The model state dict of a train.py checkpoint (file or run directory), loaded straight onto device.
    FileNotFoundError if there is none, ValueError if it is not a nanoLR checkpoint."""
    return model_lib.load_checkpoint(path, map_location=device)["model"]


def matrix_kind(name):
    """groups.matrix_kind, or 'other' for a matrix that model.py's naming does not cover."""
    try:
        return groups.matrix_kind(name)
    except ValueError:
        return "other"


def with_kinds(rows):
    """spectral.analyze() rows with 'kind' added after 'shape' (new dicts; the rows are not changed)."""
    out = []
    for r in rows:
        row = {}
        for key, value in r.items():
            row[key] = value
            if key == "shape":
                row["kind"] = matrix_kind(r["name"])
        out.append(row)
    return out


def analyze(weights, **kwargs):
    """spectral.analyze(weights, **kwargs) with each row's kind."""
    return with_kinds(spectral.analyze(weights, **kwargs))


# ----------------------------------------------------------------------------------------------
# Table, per-kind means, CSV, plots


def format_table(rows, metrics):
    width = max([len(r["name"]) for r in rows] + [6])
    lines = [f"{'module':<{width}}  {'kind':<8} {'N':>6} {'M':>5}  " + " ".join(f"{m:>12}" for m in metrics)]
    for r in rows:
        vals = f"skipped: {r['skipped']}" if r["skipped"] else " ".join(f"{r[m]:>12.4g}" for m in metrics)
        lines.append(f"{r['name']:<{width}}  {r['kind']:<8} {r['N']:>6} {r['M']:>5}  {vals}")
    return "\n".join(lines)


def kind_means(rows, metric="alpha"):
    """{kind: (mean of metric over the fitted matrices of that kind, their count)}, in KIND_ORDER."""
    out = {}
    for kind in KIND_ORDER:
        vals = [r[metric] for r in rows if r["kind"] == kind and not r["skipped"]]
        if vals:
            out[kind] = (sum(vals) / len(vals), len(vals))
    return out


def format_compare(means_a, means_b, method):
    lines = [f"mean alpha ({method})", f"{'kind':<8} {'A':>12} {'B':>12}"]
    for kind in KIND_ORDER:
        if kind in means_a or kind in means_b:
            a, b = (m.get(kind, (float("nan"), 0))[0] for m in (means_a, means_b))
            lines.append(f"{kind:<8} {a:>12.4f} {b:>12.4f}")
    return "\n".join(lines)


def write_csv(rows, path):
    import csv
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def plot(rows, weights, out_dir, modules=(), route="auto", **fit_kwargs):
    """alpha_by_kind.png: alpha per module grouped by kind; esd_<module>.png: the log-log ESD of each chosen
    module with its fitted power-law tail (fit_kwargs go to spectral.powerlaw_fit)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    import numpy as np
    os.makedirs(out_dir, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(6, 0.12 * len(rows)), 4))
    for kind in KIND_ORDER:
        pts = [(i, r["alpha"]) for i, r in enumerate(rows) if r["kind"] == kind and not r["skipped"]]
        if pts:
            ax.scatter(*zip(*pts), label=kind, s=14)
    ax.set(xlabel="module (model order)", ylabel="alpha", title=f"PL alpha per module ({rows[0]['xmin_method']})")
    ax.legend()
    fig.savefig(os.path.join(out_dir, "alpha_by_kind.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)
    mats = dict(spectral.named_matrices(weights))
    for name in modules:
        if name not in mats:
            raise SystemExit(f"--modules: no weight matrix named {name!r}; names: {', '.join(mats)}")
        lam = spectral.esd(mats[name].float(), route=route).double().cpu()
        fit = spectral.powerlaw_fit(lam, **fit_kwargs)
        lam = lam[lam > spectral.EVALS_THRESH].numpy()
        fig, ax = plt.subplots(figsize=(5, 4))
        edges = np.logspace(np.log10(lam.min()), np.log10(lam.max()), min(60, max(8, len(lam) // 10)) + 1)
        dens, _ = np.histogram(lam, bins=edges, density=True)
        mids = np.sqrt(edges[1:] * edges[:-1])
        ax.loglog(mids[dens > 0], dens[dens > 0], "b.", label="ESD")
        x = np.logspace(np.log10(fit["xmin"]), np.log10(lam.max()), 50)
        frac = fit["n_fit"] / len(lam)  # the tail holds this share of the density
        a = fit["alpha"]
        ax.loglog(x, frac * (a - 1) / fit["xmin"] * (x / fit["xmin"]) ** (-a), "r--", label=f"PL alpha={a:.2f}")
        ax.axvline(fit["xmin"], color="r", lw=0.8)
        ax.set(xlabel="eigenvalue", ylabel="density", title=f"{name} ({fit['xmin_method']}, D={fit['D']:.3f})")
        ax.legend()
        fig.savefig(os.path.join(out_dir, f"esd_{name}.png"), dpi=120, bbox_inches="tight")
        plt.close(fig)
    print(f"wrote plots to {out_dir}")


# ----------------------------------------------------------------------------------------------
# Benchmark: spectral.analyze() against weightwatcher, and every eigenvalue route


def _clock(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def bench(device, model_name, use_ww, route="auto"):
    """Times spectral.analyze() on a randomly initialised model_name preset (median and ks, the LLR call),
    prints the route table, and with use_ww times weightwatcher 0.7.7 on the same model (CPU) and prints
    the speed-ups and the largest metric differences."""
    import datetime
    torch.manual_seed(0)
    net = model_lib.Transformer(model_lib.config_from_preset(model_name)).to(device)
    min_evals = 50
    print(f"$ python {' '.join(sys.argv)}")
    print(f"date {datetime.datetime.now().isoformat(timespec='seconds')}  device {device}"
          f"{' (' + torch.cuda.get_device_name() + ')' if device.startswith('cuda') else ''}  torch {torch.__version__}"
          f"  threads {torch.get_num_threads()}  model {model_name} (random init)")
    spectral.analyze({"warmup": torch.randn(96, 64, device=device)}, method="ks")
    ours = {}
    for method in ("median", "ks"):
        if device.startswith("cuda"):
            spectral.analyze(net, method=method, min_evals=min_evals, route=route)
        tm = {}
        t0, c0 = _clock(device), time.process_time()
        rows = spectral.analyze(net, method=method, min_evals=min_evals, timings=tm, route=route)
        ours[method] = (_clock(device) - t0, time.process_time() - c0, {r["name"]: r for r in rows})
        print(f"spectral.py {method:<6}: {ours[method][0]:.3f} s wall, {ours[method][1]:.3f} s CPU for {len(rows)} "
              f"matrices (eigenvalues {tm['eig_s']:.3f} s, fits+metrics {tm['fit_s']:.3f} s = "
              f"{100 * tm['fit_s'] / tm['eig_s']:.1f}% of eig)")
    t0 = _clock(device)
    spectral.analyze(net, method="median", metrics=("alpha",), min_evals=min_evals, route=route)
    print(f"LLR path analyze(model, method='median', metrics=('alpha',), min_evals=50): {_clock(device) - t0:.3f} s")
    route_table(net, device)
    if not use_ww:
        return
    try:
        import logging
        logging.getLogger("weightwatcher").setLevel(logging.ERROR)  # its import logs the SVD backend it picked
        import weightwatcher
    except ImportError:
        print("weightwatcher not installed: skipping the comparison (pip install weightwatcher==0.7.7 powerlaw==1.5)")
        return
    net = net.cpu()
    t0, c0 = time.perf_counter(), time.process_time()
    df = weightwatcher.WeightWatcher(model=net).analyze(min_evals=min_evals, max_N=10 ** 6, pl_package="ww")
    t_ww, c_ww = time.perf_counter() - t0, time.process_time() - c0
    print(f"weightwatcher {weightwatcher.__version__} analyze(min_evals={min_evals}, max_N=1e6, pl_package='ww'): "
          f"{t_ww:.3f} s wall, {c_ww:.3f} s CPU for {len(df)} matrices (CPU, scipy float64 SVD)")
    for method in ("median", "ks"):
        print(f"speed-up {method}: {t_ww / ours[method][0]:.1f}x wall, {c_ww / ours[method][1]:.1f}x CPU time")
    rows = ours["ks"][2]
    rel = max(abs(r["alpha"] - rows[r["longname"]]["alpha"]) / abs(r["alpha"]) for _, r in df.iterrows())
    print(f"max relative |Δalpha| ks vs weightwatcher: {rel:.2e}")
    for metric in ("alpha", "D", "log_norm", "log_spectral_norm", "alpha_weighted", "log_alpha_norm", "stable_rank",
                   "entropy", "matrix_rank"):
        delta = max(abs(r[metric] - rows[r["longname"]][metric]) for _, r in df.iterrows())
        print(f"max |Δ{metric}| ks vs weightwatcher: {delta:.2e}")


def route_table(net, device):
    """Milliseconds per same-shape group for every eigenvalue route on this device, so the 'auto' choice can
    be checked by measurement on new hardware (the best of two runs after a warm-up)."""
    groups = {}
    for _, w in spectral.named_matrices(net):
        w = w.detach()
        w = w.T if w.shape[0] < w.shape[1] else w
        groups.setdefault(tuple(w.shape), []).append(w)
    routes = [r for r in spectral.ROUTES if r != "auto" and (r != "gesvda" or device.startswith("cuda"))]
    print("eigenvalue routes, ms per same-shape group (auto picks: " +
          ", ".join(f"{n}x{m} {spectral.auto_route(device, n, m)}" for (n, m), ws in groups.items()) + ")")
    print(f"{'group':<18}" + "".join(f"{r:>10}" for r in routes))
    total = dict.fromkeys(routes, 0.0)
    for (n, m), ws in groups.items():
        line = f"{len(ws):>3} x {n}x{m}".ljust(18)
        for r in routes:
            spectral.stack_eigvals(ws, r)
            best = math.inf
            for _ in range(2):
                t0 = _clock(device)
                spectral.stack_eigvals(ws, r)
                best = min(best, _clock(device) - t0)
            total[r] += best
            line += f"{1e3 * best:>10.1f}"
        print(line)
    print(f"{'all':<18}" + "".join(f"{1e3 * total[r]:>10.1f}" for r in routes))


# ----------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None):
    summary, _, commands = __doc__.strip().partition("\n\n")
    p = argparse.ArgumentParser(prog="eval/htsr.py", description=summary, epilog=commands.split("\n\nA ")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="?", help="train.py checkpoint file, or the run directory holding ckpt.pt")
    p.add_argument("--method", default="median", choices=spectral.METHODS,
                   help="xmin rule: median (LLR's top half), ks (weightwatcher), fix-finger (default: median)")
    p.add_argument("--metrics", default=DEFAULT_METRICS,
                   help=f"comma-separated columns of the table (all are in --json/--csv); any of: "
                        f"{','.join(spectral.METRICS)} (default: {DEFAULT_METRICS})")
    p.add_argument("--min-evals", type=int, default=0, help="skip matrices with fewer eigenvalues (default: 0)")
    p.add_argument("--route", default="auto", choices=spectral.ROUTES,
                   help="eigenvalue route (default: auto = gesvda on CUDA, fp32 Gram elsewhere)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where the weights are loaded and decomposed (default: cuda if available, else cpu)")
    p.add_argument("--json", metavar="FILE", help="write every row, all metrics, as JSON")
    p.add_argument("--csv", metavar="FILE", help="write every row, all metrics, as CSV")
    p.add_argument("--plot", metavar="DIR", help="write alpha_by_kind.png (and esd_<module>.png for --modules)")
    p.add_argument("--modules", default="", help="comma-separated module names for ESD plots, e.g. embed,blocks.0.attn.q")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="per-kind mean alpha of two checkpoints")
    p.add_argument("--bench", action="store_true",
                   help="time analyze() on a random --model against weightwatcher, and every eigenvalue route")
    p.add_argument("--model", default="llama_135m", help="--bench: model.py preset (default: llama_135m)")
    p.add_argument("--no-ww", action="store_true", help="--bench: skip the weightwatcher comparison")
    args = p.parse_args(argv)
    args.metrics = tuple(m for m in args.metrics.split(",") if m)
    unknown = set(args.metrics) - set(spectral.METRICS)
    if unknown:
        p.error(f"unknown metrics {sorted(unknown)}; available: {','.join(spectral.METRICS)}")
    if not (args.bench or args.compare or args.path):
        p.error("give a checkpoint path or run directory (or --compare A B, or --bench)")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.bench:
        return bench(args.device, args.model, not args.no_ww, args.route)
    kw = dict(method=args.method, min_evals=args.min_evals, route=args.route)
    try:
        if args.compare:
            means = [kind_means(analyze(load_weights(path, args.device), **kw)) for path in args.compare]
            print(format_compare(*means, args.method))
            return
        weights = load_weights(args.path, args.device)
        rows = analyze(weights, metrics=spectral.METRICS, **kw)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"eval/htsr.py: {e}") from None
    print(format_table(rows, args.metrics))
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.csv:
        write_csv(rows, args.csv)
    if args.plot:
        plot(rows, weights, args.plot, [m for m in args.modules.split(",") if m], route=args.route, method=args.method)


if __name__ == "__main__":
    main()
