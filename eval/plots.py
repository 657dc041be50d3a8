"""
The LLR paper's figures for one run, from its metrics.jsonl alone (the per-module peaks and α are the
last refit record there; ckpt.pt is not read):

    python eval/plots.py out/llama_135m_llr           # writes PNGs into the run directory (or --out DIR)

  peak_lrs.png        per-module peak LR (bars) with the fitted α (line) at the last refit
  alpha_by_kind.png   mean α per module kind at every refit
  lr_by_kind.png      LR per module kind over training, with the uniform schedule's range for reference
  loss.png            train and validation loss
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import groups  # noqa: E402

KIND_ORDER = ["embed", "attn_qk", "attn_vo", "mlp", "head", "norm"]


def kind_of(name):
    return "norm" if name.startswith("rest") else groups.matrix_kind(name)


def read_metrics(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise SystemExit(f"error: {path} does not exist: pass the out_dir of a train.py run")
    records = {}
    for line in open(path):
        rec = json.loads(line)
        if "iter" in rec:
            records.setdefault(rec["iter"], {}).update(rec)  # a resumed run's lines replace the earlier ones
    return [records[k] for k in sorted(records)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="directory for the PNGs (default: the run directory)")
    a = p.parse_args()
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
        print("no refit records in metrics.jsonl (not an LLR run): only loss.png" + (" and lr_by_kind.png" if lr_kind else ""))
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
