"""
muP's learning-rate transfer on CPU-sized widths: train llama_mini-shaped models (eval/coord_check.py's shape:
4 layers, head dim 32) of each width at each LR with `uniform` (AdamW, warmup + cosine) on the embedded
Shakespeare bytes, under sp and mup (base_width = the smallest width), and plot the validation loss against
the LR per width, and the best LR against the width. Under mup the best LR stays put as the model widens;
under sp it moves down.

    OMP_NUM_THREADS=1 python eval/lr_transfer.py                       # widths 64,128,256; 5 LRs; 100 steps
    python eval/lr_transfer.py --widths 64,128 --lrs 3e-3,1e-2,3e-2 --steps 50 --out out/t.png

Writes the PNG and a JSON of every final loss beside it, and prints the best LR per width and parametrization.
"""
import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import optim  # noqa: E402
from eval.plots import save  # noqa: E402
from eval.coord_check import build_model, shakespeare, strategy_config  # noqa: E402
from eval.perplexity import evaluate_loss  # noqa: E402


def final_loss(width, parametrization, lr, steps, base_width, data, batch_size=8, block_size=64, eval_tokens=16384,
               seed=0):
    """Validation loss (nats/byte, the first eval_tokens of val) after `steps` updates of `uniform` at LR lr."""
    net = build_model(width, parametrization, base_width, data.vocab_size, block_size, seed=seed)
    strat = optim.build("uniform", net, strategy_config(net, learning_rate=lr, max_iters=steps))
    for it in range(steps):
        x, y = data.batch("train", seed, it, 0, batch_size, block_size)

        def forward_backward():
            _, loss = net(x, y)
            loss.backward()
            return loss.detach()
        loss = optim.update(strat, it, forward_backward)
        if not math.isfinite(loss.item()):
            return float("nan")
    return evaluate_loss(net, data.tokens("val"), block_size, eval_tokens, batch_size)[0]


def best_lrs(lrs, losses):
    """{width: LR of the lowest finite loss} of one parametrization's {width: [loss per LR]}."""
    return {w: min((l, lr) for lr, l in zip(lrs, row) if math.isfinite(l))[1] for w, row in losses.items()}


def plot(lrs, results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ps = list(results)
    fig, axes = plt.subplots(1, len(ps) + 1, figsize=(4.5 * (len(ps) + 1), 3.6))
    for ax, p in zip(axes, ps):
        for w, row in results[p].items():
            ax.plot(lrs, row, marker="o", label=f"width {w}")
        ax.set_xscale("log")
        ax.set_xlabel("learning_rate (base)")
        ax.set_ylabel("val loss")
        ax.set_title(p)
        ax.legend(fontsize=8)
    ax = axes[-1]
    for p in ps:
        best = best_lrs(lrs, results[p])
        ax.plot(list(best), list(best.values()), marker="o", label=p)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width (n_embd)")
    ax.set_ylabel("best learning_rate")
    ax.set_title("optimal LR vs width")
    ax.legend()
    save(fig, os.path.dirname(path), os.path.basename(path))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="64,128,256")
    p.add_argument("--lrs", default="2e-3,4e-3,8e-3,1.6e-2,3.2e-2", help="comma-separated base LRs")
    p.add_argument("--parametrizations", default="sp,mup")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--base_width", type=int, default=0, help="0: the smallest width")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--block_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/lr_transfer.png")
    a = p.parse_args()
    widths, lrs = [int(w) for w in a.widths.split(",")], [float(v) for v in a.lrs.split(",")]
    base = a.base_width or min(widths)
    data, results, t0 = shakespeare(), {}, time.time()
    for par in a.parametrizations.split(","):
        results[par] = {}
        for w in widths:
            results[par][w] = [final_loss(w, par, lr, a.steps, base, data, a.batch_size, a.block_size, seed=a.seed)
                               for lr in lrs]
            print(f"{par:9} width {w:5}: " + "  ".join(f"{lr:.1e}→{l:.4f}" for lr, l in zip(lrs, results[par][w])) +
                  f"   ({time.time() - t0:.0f} s)", flush=True)
    plot(lrs, results, a.out)
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(dict(widths=widths, lrs=lrs, steps=a.steps, base_width=base, losses=results), f, indent=1)
    for par in results:
        print(f"best LR, {par}: " + ", ".join(f"width {w}: {lr:.1e}" for w, lr in best_lrs(lrs, results[par]).items()))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
