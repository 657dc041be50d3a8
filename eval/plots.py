"""
The LLR paper's figures for one run, from its metrics.jsonl alone (the per-module peaks and α are the
last refit record there; ckpt.pt is not read), the HT-SR monitor's (train.py --spectral_every) and the
effective-LR monitor's (train.py --update_every):

    python eval/plots.py out/llama_135m_llr           # writes PNGs into the run directory (or --out DIR)
    python eval/plots.py out/a --compare out/b        # + alpha_compare.png, update_ratio_compare.png: both runs per kind
    python eval/plots.py out/a --esd embed,blocks.0.mlp.up --at 0,1000,2000   # + esd.png from ckpt_<iter>.pt

  peak_lrs.png        per-module peak LR (bars) with the fitted α (line) at the last refit
  alpha_by_kind.png   mean α per module kind at every refit
  lr_by_kind.png      LR per module kind over training, with the uniform schedule's range for reference
  loss.png            train and validation loss
  alpha_monitor.png   mean α per module kind over training from the monitor's `spectral` records (when the
                      run has them: --spectral_every > 0 with alpha among --spectral_metrics)
  alpha_compare.png   --compare OTHER_RUN: the same for both runs, this one solid, OTHER_RUN dashed
  update_ratio.png    the relative update ‖ΔW‖_F/‖W‖_F per module kind over training (log scale), from the
                      `update_ratio_kind` records (when the run has them: --update_every > 0)
  update_ratio_compare.png  --compare OTHER_RUN: the same for both runs, this one solid, OTHER_RUN dashed
  esd.png             --esd NAMES: the log-log ESD (eigenvalues of WᵀW, spectral.esd) of each named matrix with
                      the fitted xmin (median rule, as the monitor) marked, from the ckpt_<iter>.pt of each
                      --at ITERS (kept with --ckpt_every and --keep_ckpts) or from ckpt.pt without --at
"""
import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import groups  # noqa: E402

KIND_ORDER = ["embed", "attn_qk", "attn_vo", "mlp", "head", "norm"]


def kind_of(name):
    """The kind of a logged group name; a name groups.py places by its generic rule (it sees the model, this only
    the name): in a layer mlp, else head."""
    if name.startswith("rest"):
        return "norm"
    try:
        return groups.matrix_kind(name)
    except ValueError:
        return "mlp" if groups.layer_index(name) is not None else "head"


def monitor_alpha(records):
    """[(iter, {kind: mean α})] of the HT-SR monitor's records (train.py --spectral_every), in iteration order."""
    series = []
    for r in records:
        by_kind = {}
        for name, values in (r.get("spectral") or {}).items():
            if "alpha" in values:
                by_kind.setdefault(kind_of(name), []).append(values["alpha"])
        if by_kind:
            series.append((r["iter"], {k: sum(v) / len(v) for k, v in by_kind.items()}))
    return series


def monitor_update_ratio(records):
    """[(iter, {kind: mean ‖ΔW‖/‖W‖})] of the effective-LR monitor's records (train.py --update_every)."""
    return [(r["iter"], r["update_ratio_kind"]) for r in records if r.get("update_ratio_kind")]


def draw_monitor(ax, series, ls="-", label=True):
    """One line per kind, coloured as in peak_lrs.png."""
    for i, k in enumerate(KIND_ORDER):
        pts = [(it, means[k]) for it, means in series if k in means]
        if pts:
            ax.plot(*zip(*pts), ls, marker="o", ms=3, color=f"C{i}", label=k if label else None)


def iters_list(text):
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated iterations such as 0,1000,2000, got {text!r}") from None


def esd_checkpoints(run_dir, iters):
    """[(label, checkpoint dict)] for --esd: ckpt_<iter>.pt for each of iters (ckpt.pt if it is at that
    iteration), or ckpt.pt when iters is None. A missing one stops with the list of those there are."""
    import re
    from model import load_checkpoint
    latest = os.path.join(run_dir, "ckpt.pt")
    if iters is None:
        if not os.path.isfile(latest):
            raise SystemExit(f"error: --esd: no ckpt.pt in {run_dir}")
        ckpt = load_checkpoint(latest)
        return [(f"iter {ckpt['iter_num']}", ckpt)]
    names = os.listdir(run_dir) if os.path.isdir(run_dir) else []
    kept = sorted(int(m.group(1)) for m in (re.fullmatch(r"ckpt_(\d+)\.pt", n) for n in names) if m)
    latest_iter = load_checkpoint(latest)["iter_num"] if os.path.isfile(latest) else None
    missing = [it for it in iters if it not in kept and it != latest_iter]
    if missing:
        have = [f"ckpt_{i}.pt" for i in kept] + ([f"ckpt.pt (iter {latest_iter})"] if latest_iter is not None else [])
        raise SystemExit(f"error: --at: no checkpoint of iteration {', '.join(map(str, missing))} in {run_dir}; there are: "
                         f"{', '.join(have) or 'none'} (a run keeps ckpt_<iter>.pt with --ckpt_every and --keep_ckpts)")
    return [(f"iter {it}", load_checkpoint(os.path.join(run_dir, f"ckpt_{it}.pt") if it in kept else latest)) for it in iters]


def draw_esd(plt, run_dir, names, iters):
    """esd.png's figure: one panel per matrix, one histogram per checkpoint (shared log-spaced bins) and a
    dashed line at its fitted xmin."""
    import numpy as np
    import spectral
    ckpts = esd_checkpoints(run_dir, iters)
    mats = [dict(spectral.named_matrices(ckpt)) for _, ckpt in ckpts]
    unknown = [n for n in names if n not in mats[0]]
    if unknown:
        raise SystemExit(f"error: --esd: no weight matrix named {', '.join(map(repr, unknown))}; names: {', '.join(mats[0])}")
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        spectra = [spectral.esd(m[name].float()).double().cpu() for m in mats]
        positive = [lam[lam > spectral.EVALS_THRESH].numpy() for lam in spectra]
        pooled = np.concatenate(positive)
        if pooled.size == 0:
            ax.set_title(f"{name}: every eigenvalue is 0")
            continue
        edges = np.logspace(np.log10(pooled.min()), np.log10(pooled.max()), min(60, max(8, len(positive[0]) // 10)) + 1)
        mids = np.sqrt(edges[1:] * edges[:-1])
        for i, ((label, _), lam, pos) in enumerate(zip(ckpts, spectra, positive)):
            try:
                fit = spectral.powerlaw_fit(lam)
                label += f": α={fit['alpha']:.2f}"
                ax.axvline(fit["xmin"], color=f"C{i}", ls="--", lw=0.8)
            except ValueError as e:  # a degenerate matrix: no fit, the histogram still shows
                label += f": no fit ({e})"
            dens, _ = np.histogram(pos, bins=edges, density=True)
            ax.loglog(mids[dens > 0], dens[dens > 0], ".-", color=f"C{i}", lw=0.8, label=label)
        ax.set(xlabel="eigenvalue of WᵀW", ylabel="density", title=f"{name} (dashed: xmin, median rule)")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # log-axis minor labels overlap on a narrow range
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    return fig


def read_metrics(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise SystemExit(f"error: {path} does not exist: pass the out_dir of a train.py run")
    records = {}
    for line in open(path):
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill or a full disk
        if "iter" in rec:
            records.setdefault(rec["iter"], {}).update(rec)  # a resumed run's lines replace the earlier ones
    return [records[k] for k in sorted(records)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="directory for the PNGs (default: the run directory)")
    p.add_argument("--compare", metavar="OTHER_RUN", help="alpha_compare.png and update_ratio_compare.png: this run's and "
                                                          "OTHER_RUN's monitored α and update ratio per kind")
    p.add_argument("--esd", metavar="NAMES", help="esd.png: the ESD of these comma-separated matrices (e.g. embed,blocks.0.mlp.up)")
    p.add_argument("--at", metavar="ITERS", type=iters_list, help="--esd from ckpt_<iter>.pt of these iterations (default: ckpt.pt)")
    a = p.parse_args(argv)
    if a.at is not None and not a.esd:
        p.error("--at picks the checkpoints of --esd: pass --esd NAMES too")
    esd_names = [n.strip() for n in (a.esd or "").split(",") if n.strip()]
    if a.esd is not None and not esd_names:
        p.error("--esd needs matrix names, e.g. --esd embed,blocks.0.mlp.up")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("error: plots need matplotlib: pip install matplotlib") from None
    records = read_metrics(a.run_dir)
    out = a.out or a.run_dir
    os.makedirs(out, exist_ok=True)
    refits = [r for r in records if "alpha" in r]
    written = []
    monitored, updates = monitor_alpha(records), monitor_update_ratio(records)
    if a.compare:
        other_records = read_metrics(a.compare)
        other, other_updates = monitor_alpha(other_records), monitor_update_ratio(other_records)
        for run, has in ((a.run_dir, monitored or updates), (a.compare, other or other_updates)):
            if not has:
                raise SystemExit(f"error: --compare: {run} has no monitor records with alpha or update_ratio: train it "
                                 "with --spectral_every > 0 or --update_every > 0")
        if not (monitored and other) and not (updates and other_updates):
            raise SystemExit(f"error: --compare: {a.run_dir} and {a.compare} have no monitor in common (one logged α, the "
                             "other the update ratio): train both with the same --spectral_every or --update_every")
    if esd_names:  # checked before anything is drawn: a missing checkpoint or matrix stops the run first
        esd_fig = draw_esd(plt, a.run_dir, esd_names, a.at)

    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(r["iter"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["iter"], r["val_loss"]) for r in records if "val_loss" in r]
    if train:
        ax.plot(*zip(*train), label="train", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation")
    ax.set(xlabel="iteration", ylabel="loss (nats/token)", title=os.path.basename(os.path.normpath(a.run_dir)))
    ax.legend()
    written.append(save(fig, out, "loss.png"))

    scored = [r for r in records if "val_acc" in r]  # finetune.py's classification runs
    if scored:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([r["iter"] for r in scored], [100 * r["val_acc"] for r in scored], "o-", label="accuracy")
        if all("val_f1" in r for r in scored):  # classification; a multiple-choice run has accuracy only
            ax.plot([r["iter"] for r in scored], [100 * r["val_f1"] for r in scored], "s--", label="macro-F1")
        ax.set(xlabel="iteration", ylabel="% on the validation rows", title="validation accuracy and macro-F1")
        ax.legend()
        written.append(save(fig, out, "accuracy.png"))

    lr_kind = [r for r in records if "lr_kind" in r]
    if lr_kind:
        fig, ax = plt.subplots(figsize=(7, 4))
        kinds = [k for k in KIND_ORDER if k in lr_kind[0]["lr_kind"]]
        for k in kinds:
            ax.plot([r["iter"] for r in lr_kind], [r["lr_kind"][k] for r in lr_kind], label=k)
        for r in refits:
            ax.axvline(r["refit_iter"], color="grey", lw=0.5, ls=":")
        ax.set(xlabel="iteration", ylabel="learning rate (mean over the kind)", title="LR per module kind (dotted: refits)")
        ax.legend()
        written.append(save(fig, out, "lr_by_kind.png"))

    if refits:
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in KIND_ORDER:
            pts = [(r["refit_iter"], sum(v for n, v in r["alpha"].items() if kind_of(n) == k) /
                    max(1, sum(1 for n in r["alpha"] if kind_of(n) == k))) for r in refits
                   if any(kind_of(n) == k for n in r["alpha"])]
            if pts:
                ax.plot(*zip(*pts), "o-", label=k)
        ax.set(xlabel="iteration of the refit", ylabel="PL_Alpha_Hill (mean over the kind)", title="α per module kind")
        ax.legend()
        written.append(save(fig, out, "alpha_by_kind.png"))

        last = refits[-1]
        names = [n for n in last["lrs"] if not n.startswith("rest")]
        fig, ax = plt.subplots(figsize=(max(7, 0.18 * len(names)), 4))
        colors = {k: f"C{i}" for i, k in enumerate(KIND_ORDER)}
        ax.bar(range(len(names)), [last["lrs"][n] for n in names], color=[colors[kind_of(n)] for n in names])
        ax.set(ylabel=f"LR at the refit of iter {last['refit_iter']}", title="per-module LR (bars) and α (line)")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        twin = ax.twinx()
        twin.plot(range(len(names)), [last["alpha"].get(n, float("nan")) for n in names], "k.-", lw=0.8)
        twin.set_ylabel("PL_Alpha_Hill")
        handles = [plt.Rectangle((0, 0), 1, 1, color=colors[k]) for k in KIND_ORDER[:5]]
        ax.legend(handles, KIND_ORDER[:5], fontsize=7, loc="upper center", ncol=5)
        written.append(save(fig, out, "peak_lrs.png"))
    else:
        print("no refit records in metrics.jsonl (not an LLR run): no peak_lrs.png or alpha_by_kind.png")

    def run_name(d):
        """The run directory's name; a sweep's seed<k> directory with its parent's (uniform_lr0.003/seed0)."""
        parts = os.path.normpath(d).split(os.sep)
        return "/".join(parts[-2:]) if re.fullmatch(r"seed\d+", parts[-1]) and len(parts) > 1 else parts[-1]
    if monitored:
        fig, ax = plt.subplots(figsize=(7, 4))
        draw_monitor(ax, monitored)
        ax.set(xlabel="iteration", ylabel="PL_Alpha_Hill (mean over the kind)", title=f"monitored α per module kind: {run_name(a.run_dir)}")
        ax.legend()
        written.append(save(fig, out, "alpha_monitor.png"))
    if updates:
        fig, ax = plt.subplots(figsize=(7, 4))
        draw_monitor(ax, updates)
        ax.set(xlabel="iteration", ylabel="‖ΔW‖/‖W‖ (mean over the kind)", yscale="log",
               title=f"relative update per module kind: {run_name(a.run_dir)}")
        ax.legend()
        written.append(save(fig, out, "update_ratio.png"))
    if a.compare:
        from matplotlib.lines import Line2D

        def compare(mine, theirs, ylabel, title, name, yscale="linear"):
            """Both runs' series per kind: this run solid, OTHER_RUN dashed."""
            fig, ax = plt.subplots(figsize=(7, 4))
            draw_monitor(ax, mine, "-")
            draw_monitor(ax, theirs, "--", label=False)
            ax.set(xlabel="iteration", ylabel=ylabel, title=title, yscale=yscale)
            kinds = ax.legend(loc="upper left", fontsize=8)
            ax.add_artist(kinds)
            ax.legend([Line2D([], [], color="k", ls=ls) for ls in ("-", "--")], [run_name(a.run_dir), run_name(a.compare)],
                      loc="upper right", fontsize=8)
            written.append(save(fig, out, name))
        if monitored and other:
            compare(monitored, other, "PL_Alpha_Hill (mean over the kind)", "monitored α per module kind", "alpha_compare.png")
        if updates and other_updates:
            compare(updates, other_updates, "‖ΔW‖/‖W‖ (mean over the kind)", "relative update per module kind",
                    "update_ratio_compare.png", "log")
    if esd_names:
        written.append(save(esd_fig, out, "esd.png"))
    print("wrote " + ", ".join(written))


def save(fig, out, name):
    """Write fig to out/name (out created if missing) and close it; returns the path."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    os.makedirs(out or ".", exist_ok=True)
    path = os.path.join(out, name)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
