"""
The muP coordinate check (Yang et al. 2022, arXiv 2203.03466, appendix D): train llama_mini-shaped models
(4 layers, head dim 32, n_head = width / 32) of several widths for a few AdamW steps on the embedded
Shakespeare bytes, under each parametrization, and record the mean |activation| of every layer type at
every step. Under mup the curves against width are flat; under sp the attention, MLP and logit scales grow
with width once training has moved the weights.

    python eval/coord_check.py                                   # widths 64..1024, sp and mup -> out/coord_check.png
    python eval/coord_check.py --widths 32,64,128 --steps 5 --lr 1e-2 --out out/cc.png

It prints one fitted log-log slope per parametrization and layer type (d log2 scale / d log2 width at the
last step): near 0 means the scale is width-independent. A run at the default widths takes about
a minute on one CPU core.
"""
import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import optim  # noqa: E402
from eval.plots import save  # noqa: E402
from data.loader import TokenData, is_prepared  # noqa: E402
from model import ModelConfig, Transformer  # noqa: E402

LAYER_TYPES = ("embed", "attn", "mlp", "logits")  # embedding output, attention output, MLP output, logits
HEAD_DIM, N_LAYER = 32, 4                         # llama_mini's; n_head grows with the width


def build_model(width, parametrization="sp", base_width=64, vocab_size=256, block_size=64, n_layer=N_LAYER,
                base_depth=0, seed=0):
    """A llama_mini-shaped model of n_embd = width (n_head = width / 32) under a parametrization."""
    torch.manual_seed(seed)
    cfg = ModelConfig(arch="llama", n_layer=n_layer, n_head=max(1, width // HEAD_DIM), n_embd=width, vocab_size=vocab_size,
                      block_size=block_size, parametrization=parametrization,
                      base_width=base_width if parametrization != "sp" else 0,
                      base_depth=base_depth if parametrization == "completep" else 0)
    return Transformer(cfg)


def strategy_config(net, **overrides):
    """default_config with the model's parametrization keys (the strategy scales the LRs by them)."""
    return optim.default_config(**{k: getattr(net.cfg, k) for k in optim.PARAMETRIZATION_KEYS}, **overrides)


def shakespeare():
    if not is_prepared("shakespeare"):
        from data.shakespeare.prepare import prepare
        prepare()
    return TokenData("shakespeare")


def record_hooks(net, sink):
    """Forward hooks that add each layer type's mean |activation| into sink[type] (a list per forward)."""
    def hook(kind):
        def add(module, inputs, output):
            sink.setdefault(kind, []).append(output.detach().float().abs().mean().item())
        return add
    handles = [net.embed.register_forward_hook(hook("embed")), net.head.register_forward_hook(hook("logits"))]
    for block in net.blocks:
        handles += [block.attn.register_forward_hook(hook("attn")), block.mlp.register_forward_hook(hook("mlp"))]
    return handles


def coord_data(widths, parametrizations=("sp", "mup"), steps=8, lr=1e-2, batch_size=4, block_size=64, base_width=64,
               strategy="adamw", seed=0, data=None):
    """{parametrization: {layer type: [[mean |act| at step 0..steps-1] for each width]}}: each step's scale is
    measured in the forward pass before that step's update (step 0: at init); layers of a type are averaged."""
    data = data or shakespeare()
    out = {}
    for p in parametrizations:
        out[p] = {k: [] for k in LAYER_TYPES}
        for width in widths:
            net = build_model(width, p, base_width, data.vocab_size, block_size, seed=seed)
            strat = optim.build(strategy, net, strategy_config(net, learning_rate=lr, max_iters=steps, weight_decay=0.0))
            per_step = {k: [] for k in LAYER_TYPES}
            for it in range(steps):
                sink = {}
                handles = record_hooks(net, sink)
                x, y = data.batch("train", seed, it, 0, batch_size, block_size)

                def forward_backward():
                    _, loss = net(x, y)
                    loss.backward()
                    return loss.detach()
                optim.update(strat, it, forward_backward)
                for h in handles:
                    h.remove()
                for k in LAYER_TYPES:
                    per_step[k].append(sum(sink[k]) / len(sink[k]))
            for k in LAYER_TYPES:
                out[p][k].append(per_step[k])
    return out


def slope(widths, values):
    """Least-squares slope of log2(values) against log2(widths)."""
    xs, ys = [math.log2(w) for w in widths], [math.log2(v) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def slopes(widths, data, step=-1):
    """{parametrization: {layer type: log-log slope at `step`}}."""
    return {p: {k: slope(widths, [row[step] for row in rows]) for k, rows in kinds.items()} for p, kinds in data.items()}


def plot(widths, data, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ps = list(data)
    fig, axes = plt.subplots(len(ps), len(LAYER_TYPES), figsize=(4 * len(LAYER_TYPES), 3.2 * len(ps)), squeeze=False)
    for i, p in enumerate(ps):
        steps = len(data[p][LAYER_TYPES[0]][0])
        for j, k in enumerate(LAYER_TYPES):
            ax = axes[i][j]
            for t in range(steps):
                ax.plot(widths, [row[t] for row in data[p][k]], marker="o", ms=3,
                        color=plt.cm.viridis(t / max(1, steps - 1)), label=f"step {t}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{p}: {k}")
            ax.set_xlabel("width (n_embd)")
            if j == 0:
                ax.set_ylabel("mean |activation|")
    axes[0][-1].legend(fontsize=7)
    save(fig, os.path.dirname(path), os.path.basename(path))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="64,128,256,512,1024", help="comma-separated n_embd values (multiples of 32)")
    p.add_argument("--parametrizations", default="sp,mup")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-2, help="AdamW's LR at base_width (constant, no weight decay)")
    p.add_argument("--base_width", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--block_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/coord_check.png")
    a = p.parse_args()
    widths = [int(w) for w in a.widths.split(",")]
    data = coord_data(widths, a.parametrizations.split(","), a.steps, a.lr, a.batch_size, a.block_size, a.base_width,
                      seed=a.seed)
    plot(widths, data, a.out)
    print(f"log-log slope of mean |activation| vs width at step {a.steps - 1} (0 = width-independent)")
    print(f"{'':10}" + "".join(f"{k:>9}" for k in LAYER_TYPES))
    for name, row in slopes(widths, data).items():
        print(f"{name:10}" + "".join(f"{row[k]:9.2f}" for k in LAYER_TYPES))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
