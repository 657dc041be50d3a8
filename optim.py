"""
Learning-rate strategies. Each is a plain class with one interface (see Strategy):

    strategy = optim.build(name, model, config)
    strategy.step(it, loss=None, closure=None)   # sets every group's LR for update it+1, then updates
    strategy.zero_grad(); strategy.state_dict(); strategy.load_state_dict(sd); strategy.lrs()

`it` is the 0-based index of the update about to be made; schedules are pure functions of it, so a
resumed run continues exactly. Hyperparameters come from the train.py config dict; those that belong
to one strategy are declared in its class's `defaults` and become train.py config keys.
"""
import math

import torch
import torch.nn as nn

# ----------------------------------------------------------------------------------------------
# Parameter groups shared by every layerwise strategy: one group per weight matrix plus a rest group.


def matrix_kind(name):
    """Kind of a weight matrix from its module name (model.py naming)."""
    leaf = name.rsplit(".", 1)[-1]
    if name in ("embed", "pos_embed"):
        return "embed"
    if name == "head":
        return "head"
    if leaf in ("q", "k"):
        return "attn_qk"
    if leaf in ("v", "o"):
        return "attn_vo"
    if leaf in ("gate", "up", "down"):
        return "mlp"
    raise ValueError(f"cannot tell the kind of weight matrix {name!r}")


def param_groups(model, rest_by_depth=False):
    """One dict per weight matrix (nn.Linear / nn.Embedding weight), in module order, plus the rest
    (norms, biases) in one group named 'rest' or, with rest_by_depth, one group per depth level.

    Each dict: name ('blocks.3.attn.q'), params ([tensor]), kind (embed/head/attn_qk/attn_vo/mlp/norm),
    depth in [0, 1] (embeddings 0, block i at (i+1)/(L+1), final norm and head 1), decay (True for
    matrices). A tied matrix (GPT's embed/head) appears once, as 'embed'. Works on DDP- or
    compile-wrapped models.
    """
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    n_layer = len(model.blocks)

    def depth_of(name):
        if name.startswith("blocks."):
            return (int(name.split(".")[1]) + 1) / (n_layer + 1)
        return 0.0 if "embed" in name else 1.0

    groups, seen, rest = [], set(), {}
    for mod_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            groups.append(dict(name=mod_name, params=[module.weight], kind=matrix_kind(mod_name),
                               depth=depth_of(mod_name), decay=True))
    for pname, p in model.named_parameters():
        if id(p) in seen:
            continue
        depth = depth_of(pname)
        key = f"rest.{depth:.4f}" if rest_by_depth else "rest"
        rest.setdefault(key, dict(name=key, params=[], kind="norm", depth=depth, decay=False))["params"].append(p)
    return groups + list(rest.values())


# ----------------------------------------------------------------------------------------------
# Schedules


def warmup_cosine(t, max_iters, warmup_iters, min_lr_ratio):
    """LR multiplier for update number t (1-based): linear warmup t/W, then cosine to min_lr_ratio at
    t = max_iters. λ(0) = 0 as in the LLR reference."""
    if t < warmup_iters:
        return t / warmup_iters
    progress = min((t - warmup_iters) / max(1, max_iters - warmup_iters), 1.0)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_iters_of(cfg):
    return int(cfg["warmup_frac"] * cfg["max_iters"]) if cfg.get("warmup_iters", -1) < 0 else cfg["warmup_iters"]


# ----------------------------------------------------------------------------------------------
# The strategy interface


class ConfigError(ValueError):
    """A hyperparameter outside its domain: raised before training starts."""


def check(ok, message):
    if not ok:
        raise ConfigError(message)


class Strategy:
    """Base class: owns self.optimizer (a torch optimizer over param_groups) and an optional
    self.scheduler (a torch lr_scheduler stepped once per update). Subclasses set both in __init__
    and override step() only when the rule needs more than optimizer.step()."""

    name = ""
    generation = ""
    rule = ""
    reference = ""
    defaults = {}       # strategy-specific hyperparameters; each becomes a train.py config key
    uses_loss = False   # True: train.py passes the (all-reduced) loss of the step to step()
    scheduler = None

    def __init__(self, model, cfg):
        self.cfg = cfg
        self.grad_clip = cfg.get("grad_clip", 0.0)
        self.params = [p for p in model.parameters() if p.requires_grad]

    def clip_grads(self):
        if self.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)

    def step(self, it, loss=None, closure=None):
        self.clip_grads()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def zero_grad(self):
        self.optimizer.zero_grad(set_to_none=True)

    def lrs(self):
        return {g["name"]: g["lr"] for g in self.optimizer.param_groups}

    def state_dict(self):
        sd = {"optimizer": self.optimizer.state_dict()}
        if self.scheduler is not None:
            sd["scheduler"] = self.scheduler.state_dict()
        return sd

    def load_state_dict(self, sd):
        self.optimizer.load_state_dict(sd["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(sd["scheduler"])


class WarmupCosine:
    """LambdaLR multiplier: warmup_cosine of the 1-based update number (LambdaLR counts from 0)."""

    def __init__(self, cfg):
        self.max_iters, self.warmup, self.min_ratio = cfg["max_iters"], warmup_iters_of(cfg), cfg["min_lr_ratio"]

    def __call__(self, step):
        return warmup_cosine(step + 1, self.max_iters, self.warmup, self.min_ratio)


class Uniform(Strategy):
    name = "uniform"
    generation = "baseline"
    rule = "AdamW, one LR for every group: linear warmup, cosine to min_lr_ratio"
    reference = "Loshchilov & Hutter, ICLR 2019; Goyal et al. 2017"

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        check(cfg["learning_rate"] > 0, f"learning_rate must be > 0, got {cfg['learning_rate']}")
        check(0 <= cfg["beta1"] < 1 and 0 <= cfg["beta2"] < 1, f"beta1, beta2 must be in [0, 1), got {cfg['beta1']}, {cfg['beta2']}")
        check(cfg["weight_decay"] >= 0, f"weight_decay must be >= 0, got {cfg['weight_decay']}")
        groups = param_groups(model)
        for g in groups:
            g["weight_decay"] = cfg["weight_decay"] if (g["decay"] or cfg["decay_norms"]) else 0.0
        self.optimizer = torch.optim.AdamW(groups, lr=cfg["learning_rate"], betas=(cfg["beta1"], cfg["beta2"]),
                                           eps=cfg["adam_eps"], fused=cfg.get("fused", None))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, WarmupCosine(cfg))


# name -> class; `python optim.py --list` prints them in this order
STRATEGIES = {
    "uniform": Uniform,
}


def hyperparameters():
    """Every strategy-specific hyperparameter with its default (train.py exposes them as config keys)."""
    merged = {}
    for cls in STRATEGIES.values():
        for k, v in cls.defaults.items():
            if k in merged and merged[k] != v:
                raise RuntimeError(f"strategies disagree on the default of {k!r}: {merged[k]!r} vs {v!r}")
            merged[k] = v
    return merged


def build(name, model, cfg):
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; available: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](model, cfg)


if __name__ == "__main__":
    import sys
    if sys.argv[1:] != ["--list"]:
        raise SystemExit("usage: python optim.py --list")
    for key, cls in STRATEGIES.items():
        print(f"{key:<22} {cls.generation:<10} {cls.rule}  [{cls.reference}]")
