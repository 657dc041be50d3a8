"""
Learning-rate strategies. Each is a plain class with one interface (see Strategy):

    strategy = optim.build(name, model, config)
    strategy.step(it, loss=None, closure=None)   # sets every group's LR for update it+1, then updates
    strategy.zero_grad(); strategy.state_dict(); strategy.load_state_dict(sd)
    strategy.lrs()          # group name -> LR of the last update, for logs
    strategy.log_record()   # extra fields for the metrics line (LLR: alphas and LRs after a refit)

`it` is the 0-based index of the update about to be made. Schedules are torch lr_schedulers (or
pure functions of the step count) whose state is in state_dict(), so a resumed run continues exactly.
Hyperparameters come from the train.py config dict; those that belong to one strategy are declared in
its class's `defaults` and become train.py config keys.

The catalogue: uniform (the baseline), the 18 strategies of "Learning Rate Engineering" (arXiv
2604.27295) in its order, the extras it discusses, and Muon; `python optim.py --list` prints them.
Rules are canonical (as published) by default; faithful=True turns on every quirk of the paper's
reference code (FAITHFUL_FLAGS, each also its own key; specs/strategies.md §3). Update rules that
torch lacks live in optimizers.py, Muon in muon.py; LLR in llr.py, which registers itself below.
"""
import math

import torch
import torch.nn as nn

import muon
from optimizers import (LAMB, LARS, AdaBound, DALS, DampenedSGD, GrokfastEMA, GrokfastMA, Lion, Lookahead,
                        sam_perturb, sam_restore)

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


def in_range(cfg, key, lo, hi, lo_open=False, hi_open=True):
    """ConfigError naming `key` unless lo <(=) cfg[key] <(=) hi."""
    v = cfg[key]
    ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    check(ok, f"{key} must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, got {v!r}")
    return v


# Each reference quirk of specs/strategies.md §3 has its own flag; faithful=True turns all of them on.
FAITHFUL_FLAGS = ("dals_zero_first_lr", "stlr_double_decay", "stlr_per_epoch", "lars_ref", "grokfast_ref",
                  "sam_adaptive", "lookahead_lazy_slow", "sgdr_t0_steps")


def flag(cfg, name):
    return bool(cfg.get(name, False) or cfg.get("faithful", False))


def epoch_iters(cfg):
    """Steps per 'epoch' for rules defined in epochs (SGDR's T₀, DALS-Acc, unfreezing, STLR per epoch);
    0 means a tenth of the run."""
    return cfg["epoch_iters"] if cfg["epoch_iters"] > 0 else max(1, cfg["max_iters"] // 10)


def unwrap(model):
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def with_decay(groups, cfg, wd=None):
    """Set each group's weight_decay: matrices decay, norms and biases only with decay_norms."""
    wd = cfg["weight_decay"] if wd is None else wd
    for g in groups:
        g["weight_decay"] = wd if (g["decay"] or cfg["decay_norms"]) else 0.0
    return groups


def depth_levels(model, groups, levels=0):
    """Integer level l of each group, input (0) to output (K−1), from its depth: l = round(d(L+1)),
    K = L+2; with levels > 0 the K levels are bucketed into that many (2.6¹³ ≈ 2.5e5 is too wide a
    spread for 12 blocks). Returns (list of l, K)."""
    n_layer = len(unwrap(model).blocks)
    K = n_layer + 2
    ls = [round(g["depth"] * (n_layer + 1)) for g in groups]
    if levels > 0:
        ls, K = [l * levels // K for l in ls], levels
    return ls, K


def stlr(t, T, cut_frac, ratio):
    """Slanted triangular multiplier (Howard & Ruder 2018) for 0-based update t of T."""
    cut = max(1, int(T * cut_frac))
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return (1 + max(p, 0.0) * (ratio - 1)) / ratio


class Strategy:
    """Base class: owns self.optimizer (a torch optimizer, or a wrapper with param_groups/step/
    zero_grad/state_dict) over named param groups and an optional self.scheduler (a torch
    lr_scheduler stepped once per update). Subclasses set both in __init__ and override step() only
    when the rule needs more than clip + optimizer.step() (SAM, Grokfast, DALS).

    Under DDP, state_dict() may be a collective (Muon gathers its sharded buffers): call it on every
    rank and save on one."""

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
        self.lr = in_range(cfg, "learning_rate", 0, math.inf, lo_open=True)
        in_range(cfg, "weight_decay", 0, math.inf)
        check(self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}")
        check(cfg["max_iters"] >= 1, f"max_iters must be >= 1, got {cfg['max_iters']}")

    def clip_grads(self):
        if self.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)

    def step(self, it, loss=None, closure=None):
        self.clip_grads()
        self.optimizer.step()
        self.applied = self.group_lrs()  # before the scheduler moves on to the next update's LR
        self.advance()

    def advance(self):
        if self.scheduler is not None:
            self.scheduler.step()

    def zero_grad(self):
        self.optimizer.zero_grad(set_to_none=True)

    def group_lrs(self):
        return {g["name"]: g["lr"] for g in self.optimizer.param_groups}

    def lrs(self):
        """group name -> LR of the last update (for logs)."""
        return getattr(self, "applied", None) or self.group_lrs()

    def log_record(self):
        """Extra fields for this step's metrics line (LLR: per-kind LRs, alphas after a refit)."""
        return {}

    def extra_state(self):
        """Strategy state outside optimizer and scheduler (filters, phase detectors)."""
        return {}

    def load_extra_state(self, sd):
        pass

    def state_dict(self):
        sd = {"optimizer": self.optimizer.state_dict(), **self.extra_state()}
        if self.scheduler is not None:
            sd["scheduler"] = self.scheduler.state_dict()
        return sd

    def load_state_dict(self, sd):
        self.optimizer.load_state_dict(sd["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(sd["scheduler"])
        self.load_extra_state(sd)

    # builders shared by the strategies below
    def adam_betas(self):
        b1, b2 = in_range(self.cfg, "beta1", 0, 1), in_range(self.cfg, "beta2", 0, 1)
        return (b1, b2)

    def sgd(self, groups, momentum=None, lr=None):
        mu = in_range(self.cfg, "sgd_momentum", 0, 1) if momentum is None else momentum
        return torch.optim.SGD(groups, lr=self.lr if lr is None else lr, momentum=mu)

    def discriminative_groups(self, model, factor_key="disc_factor", power=1):
        """Shared groups (norms per depth) with lr = η_top / δ^(power·(K−1−l))."""
        delta = in_range(self.cfg, factor_key, 0, math.inf, lo_open=True)
        groups = with_decay(param_groups(model, rest_by_depth=True), self.cfg)
        ls, K = depth_levels(model, groups, self.cfg["disc_levels"])
        for g, l in zip(groups, ls):
            g["lr"], g["level"] = self.lr / delta ** (power * (K - 1 - l)), l
        return groups, K


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
        groups = with_decay(param_groups(model), cfg)
        self.optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=self.adam_betas(), eps=cfg["adam_eps"],
                                           fused=cfg.get("fused", None) or None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, WarmupCosine(cfg))


# ----------------------------------------------------------------------------------------------
# The 18 of "Learning Rate Engineering" (arXiv 2604.27295), in the paper's order. Where the paper
# gives a rule no schedule (Adam, AdamW, Lion, ...), it runs at constant LR, as the paper ran it.
# The paper's per-strategy LRs and decays live in eval/strategies.py (PAPER_HPARAMS).

SGD_DEFAULTS = {"sgd_momentum": 0.9}


class FixedSGD(Strategy):
    name, generation = "fixed_sgd", "Gen1"
    rule = "SGD, heavy-ball momentum, coupled L2; constant LR"
    reference = "Robbins & Monro 1951; Polyak 1964"
    defaults = SGD_DEFAULTS

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.optimizer = self.sgd(with_decay(param_groups(model), cfg))


def cosine_eta_min(cfg):
    """η_min of cosine/SGDR: min_lr_ratio·η (canonical) or 1e-5 (the paper's code)."""
    return 1e-5 if flag(cfg, "sgdr_t0_steps") else cfg["min_lr_ratio"] * cfg["learning_rate"]


class CosineSGD(Strategy):
    name, generation = "cosine_sgd", "Gen2"
    rule = "SGD + cosine decay from η to η_min over max_iters (CosineAnnealingLR)"
    reference = "Loshchilov & Hutter, ICLR 2017"
    defaults = SGD_DEFAULTS

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.optimizer = self.sgd(with_decay(param_groups(model), cfg))
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg["max_iters"],
                                                                    eta_min=cosine_eta_min(cfg))


class SGDR(Strategy):
    name, generation = "sgdr", "Gen2"
    rule = "SGD + cosine with warm restarts, cycle i lasts T₀·T_mult^i steps (CosineAnnealingWarmRestarts)"
    reference = "Loshchilov & Hutter, ICLR 2017"
    defaults = {**SGD_DEFAULTS, "sgdr_t0": 0, "sgdr_t_mult": 2, "sgdr_t0_steps": False, "epoch_iters": 0}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        t0 = 10 if flag(cfg, "sgdr_t0_steps") else cfg["sgdr_t0"] if cfg["sgdr_t0"] > 0 else epoch_iters(cfg)
        check(cfg["sgdr_t_mult"] >= 1 and int(cfg["sgdr_t_mult"]) == cfg["sgdr_t_mult"], f"sgdr_t_mult must be an integer >= 1, got {cfg['sgdr_t_mult']}")
        self.optimizer = self.sgd(with_decay(param_groups(model), cfg))
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            self.optimizer, T_0=int(t0), T_mult=int(cfg["sgdr_t_mult"]), eta_min=cosine_eta_min(cfg))


class Adam(Strategy):
    name, generation = "adam", "Gen3"
    rule = "Adam, bias-corrected moments, coupled L2 (weight_decay; the paper used 0); constant LR"
    reference = "Kingma & Ba, ICLR 2015"

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.optimizer = torch.optim.Adam(with_decay(param_groups(model), cfg), lr=self.lr, betas=self.adam_betas(), eps=cfg["adam_eps"])


class AdamW(Strategy):
    name, generation = "adamw", "Gen3"
    rule = "Adam + decoupled weight decay; constant LR"
    reference = "Loshchilov & Hutter, ICLR 2019"

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.optimizer = torch.optim.AdamW(with_decay(param_groups(model), cfg), lr=self.lr, betas=self.adam_betas(), eps=cfg["adam_eps"])


class AdaBoundStrategy(Strategy):
    name, generation = "adabound", "Gen3"
    rule = "Adam step clipped per coordinate to bounds converging to final_lr (Adam → SGD); constant LR"
    reference = "Luo, Xiong, Liu, Sun, ICLR 2019"
    defaults = {"adabound_final_lr": 0.01, "adabound_gamma": 1e-3}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        final = in_range(cfg, "adabound_final_lr", 0, math.inf, lo_open=True)
        gamma = in_range(cfg, "adabound_gamma", 0, math.inf, lo_open=True)
        self.optimizer = AdaBound(with_decay(param_groups(model), cfg), lr=self.lr, betas=self.adam_betas(),
                                  final_lr=final, gamma=gamma, eps=cfg["adam_eps"])


class LARSStrategy(Strategy):
    name, generation = "lars", "Gen4"
    rule = "momentum SGD with a per-tensor trust ratio ‖w‖/(‖g‖+λ‖w‖); 1-D tensors excluded; constant LR"
    reference = "You, Gitman, Ginsburg 2017, arXiv 1708.03888"
    defaults = {**SGD_DEFAULTS, "lars_trust": 0.001, "lars_ref": False}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        ref = flag(cfg, "lars_ref")
        trust = 0.02 if ref else in_range(cfg, "lars_trust", 0, math.inf, lo_open=True)
        groups = param_groups(model)
        for g in groups:  # LARS owns its exclusions (ndim < 2); the reference decays everything
            g["weight_decay"] = cfg["weight_decay"]
        self.optimizer = LARS(groups, lr=self.lr, momentum=in_range(cfg, "sgd_momentum", 0, 1),
                              trust=trust, reference=ref)


class Discriminative(Strategy):
    name, generation = "discriminative", "Gen4"
    rule = "SGD, level l of K gets η/δ^(K−1−l) (input layers slower), δ 2.6; constant LR"
    reference = "Howard & Ruder (ULMFiT), ACL 2018"
    defaults = {**SGD_DEFAULTS, "disc_factor": 2.6, "disc_levels": 0}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        groups, _ = self.discriminative_groups(model)
        self.optimizer = self.sgd(groups)


class RAdam(Strategy):
    name, generation = "radam", "Gen5"
    rule = "Adam with variance rectification r_t (plain momentum while ρ_t ≤ 5); constant LR"
    reference = "Liu, Jiang, He, Chen, Liu, Gao, Han, ICLR 2020"

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.optimizer = torch.optim.RAdam(with_decay(param_groups(model), cfg), lr=self.lr, betas=self.adam_betas(),
                                           eps=cfg["adam_eps"], decoupled_weight_decay=True)


class LionStrategy(Strategy):
    name, generation = "lion", "Gen5"
    rule = "w ← w − η(sign(β₁m + (1−β₁)g) + λw); m ← β₂m + (1−β₂)g; constant LR"
    reference = "Chen, Liang, Huang, Real, ..., Le, NeurIPS 2023"
    defaults = {"lion_beta1": 0.9, "lion_beta2": 0.99}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        betas = (in_range(cfg, "lion_beta1", 0, 1), in_range(cfg, "lion_beta2", 0, 1))
        self.optimizer = Lion(with_decay(param_groups(model), cfg), lr=self.lr, betas=betas)


class LookaheadAdamW(Strategy):
    name, generation = "lookahead_adamw", "Gen5"
    rule = "AdamW fast weights; every k steps slow ← slow + α(fast − slow), fast ← slow; constant LR"
    reference = "Zhang, Lucas, Hinton, Ba, NeurIPS 2019"
    defaults = {"lookahead_k": 5, "lookahead_alpha": 0.5, "lookahead_lazy_slow": False}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        check(cfg["lookahead_k"] >= 1, f"lookahead_k must be >= 1, got {cfg['lookahead_k']}")
        alpha = in_range(cfg, "lookahead_alpha", 0, 1, lo_open=True, hi_open=False)
        inner = torch.optim.AdamW(with_decay(param_groups(model), cfg), lr=self.lr, betas=self.adam_betas(), eps=cfg["adam_eps"])
        self.optimizer = Lookahead(inner, k=int(cfg["lookahead_k"]), alpha=alpha, lazy=flag(cfg, "lookahead_lazy_slow"))


class SAM(Strategy):
    """Two forward-backward passes per step: the loop's gradient at w gives the ascent direction,
    closure() recomputes every micro-step at w + e, the base SGD step uses that gradient at w."""
    name, generation = "sam", "Gen5"
    rule = "SGD on the gradient at w + ρg/‖g‖ (ASAM with sam_adaptive); constant LR"
    reference = "Foret, Kleiner, Mobahi, Neyshabur, ICLR 2021; ASAM: Kwon, Kim, Park, Choi, ICML 2021"
    defaults = {**SGD_DEFAULTS, "sam_rho": 0.05, "sam_adaptive": False}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.rho = in_range(cfg, "sam_rho", 0, math.inf, lo_open=True)
        self.adaptive = flag(cfg, "sam_adaptive")
        self.optimizer = self.sgd(self.groups(model))

    def groups(self, model):
        return with_decay(param_groups(model), self.cfg)

    def step(self, it, loss=None, closure=None):
        if closure is None:
            raise RuntimeError(f"{self.name} needs closure(): it recomputes the loss and gradients at the perturbed weights")
        eps = sam_perturb(self.params, self.rho, self.adaptive)
        closure()
        sam_restore(self.params, eps)
        super().step(it)


class Grokfast(Strategy):
    name, generation = "grokfast", "Gen5"
    rule = "SGD on g + λ·EMA(g) (slow-gradient amplification), filter before clipping; constant LR"
    reference = "Lee, Kang, Kim, Lee 2024, arXiv 2405.20233"
    defaults = {**SGD_DEFAULTS, "grokfast_alpha": 0.98, "grokfast_lamb": 2.0, "grokfast_ref": False}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        alpha = in_range(cfg, "grokfast_alpha", 0, 1)
        mu = in_range(cfg, "sgd_momentum", 0, 1)
        if flag(cfg, "grokfast_ref"):  # zero-init EMA, λ 1, dampened momentum, decay after the step
            self.filter = GrokfastEMA(self.params, alpha, 1.0, zero_init=True)
            self.optimizer = DampenedSGD(with_decay(param_groups(model), cfg), lr=self.lr, momentum=mu)
        else:
            self.filter = GrokfastEMA(self.params, alpha, in_range(cfg, "grokfast_lamb", 0, math.inf))
            self.optimizer = self.sgd(with_decay(param_groups(model), cfg))

    def step(self, it, loss=None, closure=None):
        self.filter.apply()
        super().step(it)

    def extra_state(self):
        return {"filter": self.filter.state_dict()}

    def load_extra_state(self, sd):
        self.filter.load_state_dict(sd["filter"])


class STLRDiscriminative(Strategy):
    name, generation = "stlr_discriminative", "Gen5"
    rule = "discriminative levels × slanted triangular LR: linear up for cut_frac·T, linear down, ratio 32"
    reference = "Howard & Ruder (ULMFiT), ACL 2018"
    defaults = {**SGD_DEFAULTS, "disc_factor": 2.6, "disc_levels": 0, "stlr_cut_frac": 0.1, "stlr_ratio": 32.0,
                "stlr_double_decay": False, "stlr_per_epoch": False, "epoch_iters": 0}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        cut_frac = in_range(cfg, "stlr_cut_frac", 0, 1, lo_open=True)
        ratio = in_range(cfg, "stlr_ratio", 1, math.inf)
        T = cfg["max_iters"]
        single, _ = self.discriminative_groups(model)
        peak = [g["lr"] for g in single]
        if flag(cfg, "stlr_double_decay"):  # the reference divides by δ twice
            peak = [self.lr / (self.lr / p) ** 2 for p in peak]
        groups = single
        if flag(cfg, "stlr_per_epoch"):
            # reference: stepped S times at each epoch's end, so LR is constant within an epoch and
            # epoch 1 runs at the single-decayed peak, epoch e >= 2 at the peak × stlr((e−1)S)
            S = epoch_iters(cfg)
            fns = [lambda s, r=pk / g["lr"]: 1.0 if s < S else r * stlr((s // S) * S, T, cut_frac, ratio)
                   for g, pk in zip(groups, peak)]
        else:
            for g, pk in zip(groups, peak):
                g["lr"] = pk
            fns = lambda s: stlr(s, T, cut_frac, ratio)
        self.optimizer = self.sgd(groups)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, fns)


class SAMDiscriminative(SAM):
    name, generation = "sam_discriminative", "SOTA"
    rule = "SAM (ASAM with sam_adaptive) around discriminative-LR SGD; constant LR"
    reference = "Foret et al. 2021 + Howard & Ruder 2018 (paper's combination)"
    defaults = {**SGD_DEFAULTS, "sam_rho": 0.05, "sam_adaptive": False, "disc_factor": 2.6, "disc_levels": 0}

    def groups(self, model):
        return self.discriminative_groups(model)[0]


class DALSStrategy(Strategy):
    """DALS and its two variants; the optimizer sets every group's LR itself from its step counter."""
    name, generation = "dals", "SOTA"
    rule = "SGD on depth-blended g/EMA(g) with loss-phase EMA rate, clamped trust ratio; warmup + cosine"
    reference = "Yao et al., arXiv 2604.27295"
    uses_loss = True
    defaults = {"dals_alpha0": 0.6, "dals_tau2": 0.002, "dals_momentum": 0.9, "dals_warmup_frac": 0.05,
                "dals_trust": 0.02, "dals_zero_first_lr": False, "dals_min_dwell": 0, "dals_exclude_1d": False,
                "dals_decoupled_wd": False}
    variant = "dals"
    keys = dict(alpha0="dals_alpha0", tau2="dals_tau2", momentum="dals_momentum", warmup="dals_warmup_frac")

    def first_cycle(self, cfg):
        return 0

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        k = self.keys
        alpha0, mu = in_range(cfg, k["alpha0"], 0, 1), in_range(cfg, k["momentum"], 0, 1)
        tau2 = in_range(cfg, k["tau2"], 0, math.inf, lo_open=True)
        warmup = in_range(cfg, k["warmup"], 0, 1) if k["warmup"] else 0.0
        t0 = self.first_cycle(cfg)
        trust = in_range(cfg, "dals_trust", 0, math.inf, lo_open=True)
        check(cfg["dals_min_dwell"] >= 0, f"dals_min_dwell must be >= 0, got {cfg['dals_min_dwell']}")
        groups = param_groups(model, rest_by_depth=True)
        for g in groups:  # coupled L2 on everything, as the paper (dals_exclude_1d to spare norms)
            g["weight_decay"] = cfg["weight_decay"]
        self.optimizer = DALS(groups, lr=self.lr, max_iters=cfg["max_iters"], variant=self.variant, momentum=mu,
                              alpha0=alpha0, tau2=tau2, trust=trust, weight_decay=cfg["weight_decay"],
                              warmup_frac=warmup, t0=t0, zero_first_lr=flag(cfg, "dals_zero_first_lr"),
                              min_dwell=cfg["dals_min_dwell"], exclude_1d=cfg["dals_exclude_1d"],
                              decoupled=cfg["dals_decoupled_wd"])

    def step(self, it, loss=None, closure=None):
        if loss is not None:
            self.optimizer.observe(loss)
        super().step(it)

    def phase(self):
        return self.optimizer.glob["phase"]


class DALSFast(DALSStrategy):
    name, variant = "dals_fast", "dals_fast"
    rule = "DALS with raw gradient in phase 0, μ 0.85, short warmup"
    defaults = {**DALSStrategy.defaults, "dals_fast_momentum": 0.85, "dals_fast_warmup_frac": 0.02}
    keys = dict(alpha0="dals_alpha0", tau2="dals_tau2", momentum="dals_fast_momentum", warmup="dals_fast_warmup_frac")


class DALSAcc(DALSStrategy):
    name, variant = "dals_acc", "dals_acc"
    rule = "DALS with α₀ 0.7, τ₂ 0.001 and SGDR (T₀ = 10 epochs, doubling) instead of warmup + cosine"
    defaults = {**DALSStrategy.defaults, "dals_acc_alpha0": 0.7, "dals_acc_tau2": 0.001, "dals_acc_t0": 0, "epoch_iters": 0}

    keys = dict(alpha0="dals_acc_alpha0", tau2="dals_acc_tau2", momentum="dals_momentum", warmup=None)

    def first_cycle(self, cfg):
        return cfg["dals_acc_t0"] if cfg["dals_acc_t0"] > 0 else 10 * epoch_iters(cfg)


# ----------------------------------------------------------------------------------------------
# Extras the paper discusses (not in its 18). Pure schedules run on momentum SGD, as the paper
# frames them; the rule-only extras run at constant LR.


class StepDecay(Strategy):
    name, generation = "step_decay", "extra"
    rule = "SGD, η·γ^⌊t/every⌋, γ 0.1, every max_iters/3 by default (StepLR)"
    reference = "Krizhevsky et al. 2012; He et al. 2016"
    defaults = {**SGD_DEFAULTS, "step_decay_gamma": 0.1, "step_decay_every": 0}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        gamma = in_range(cfg, "step_decay_gamma", 0, 1, lo_open=True, hi_open=False)
        every = cfg["step_decay_every"] if cfg["step_decay_every"] > 0 else max(1, cfg["max_iters"] // 3)
        self.optimizer = self.sgd(with_decay(param_groups(model), cfg))
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=int(every), gamma=gamma)


class ExponentialDecay(Strategy):
    name, generation = "exponential", "extra"
    rule = "SGD, η·γ^t; γ 0 means min_lr_ratio^(1/max_iters) (ExponentialLR)"
    reference = "classical; see Bengio 2012"
    defaults = {**SGD_DEFAULTS, "exp_decay_gamma": 0.0}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        gamma = cfg["exp_decay_gamma"] or cfg["min_lr_ratio"] ** (1 / cfg["max_iters"])
        check(0 < gamma <= 1, f"exp_decay_gamma must be in (0, 1], got {gamma}")
        self.optimizer = self.sgd(with_decay(param_groups(model), cfg))
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=gamma)


class WarmupCosineSGD(Strategy):
    name, generation = "warmup_cosine", "extra"
    rule = "SGD, nanoGPT ramp η(t+1)/(W+1), then cosine to min_lr_ratio·η (LambdaLR)"
    reference = "Goyal et al. 2017 + Loshchilov & Hutter 2017"
    defaults = SGD_DEFAULTS

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        W, T, floor = warmup_iters_of(cfg), cfg["max_iters"], cfg["min_lr_ratio"]

        def fn(t):
            if t < W:
                return (t + 1) / (W + 1)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min((t - W) / max(1, T - W), 1.0)))
        self.optimizer = self.sgd(with_decay(param_groups(model), cfg))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, fn)


class Cyclical(Strategy):
    name, generation = "cyclical", "extra"
    rule = "SGD, triangular cycles between min_lr_ratio·η and η, momentum cycled inversely (CyclicLR)"
    reference = "Smith, WACV 2017"
    defaults = {**SGD_DEFAULTS, "cyclic_half": 0, "cyclic_mode": "triangular"}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        check(cfg["cyclic_mode"] in ("triangular", "triangular2", "exp_range"), f"cyclic_mode must be triangular, triangular2 or exp_range, got {cfg['cyclic_mode']!r}")
        half = cfg["cyclic_half"] if cfg["cyclic_half"] > 0 else max(1, cfg["max_iters"] // 8)
        mu = in_range(cfg, "sgd_momentum", 0, 1)
        self.optimizer = self.sgd(with_decay(param_groups(model), cfg))
        self.scheduler = torch.optim.lr_scheduler.CyclicLR(
            self.optimizer, base_lr=cfg["min_lr_ratio"] * self.lr, max_lr=self.lr, step_size_up=int(half),
            mode=cfg["cyclic_mode"], base_momentum=min(0.8, mu), max_momentum=mu)


class OneCycle(Strategy):
    name, generation = "one_cycle", "extra"
    rule = "SGD, one cycle: cosine up to η over 30 %, down to η/(25·1e4), momentum inverse (OneCycleLR)"
    reference = "Smith 2018; Smith & Topin 2019"
    defaults = {**SGD_DEFAULTS, "onecycle_pct": 0.3, "onecycle_div": 25.0, "onecycle_final_div": 1e4}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        pct = in_range(cfg, "onecycle_pct", 0, 1, lo_open=True)
        div = in_range(cfg, "onecycle_div", 0, math.inf, lo_open=True)
        fdiv = in_range(cfg, "onecycle_final_div", 0, math.inf, lo_open=True)
        mu = in_range(cfg, "sgd_momentum", 0, 1)
        self.optimizer = self.sgd(with_decay(param_groups(model), cfg))
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=self.lr, total_steps=cfg["max_iters"], pct_start=pct, div_factor=div,
            final_div_factor=fdiv, base_momentum=min(0.85, mu), max_momentum=mu)

    def advance(self):
        # OneCycleLR raises past total_steps; the loop's last update needs no next LR
        if self.scheduler.last_epoch < self.scheduler.total_steps - 1:
            self.scheduler.step()


class AdaGrad(Strategy):
    name, generation = "adagrad", "extra"
    rule = "per-coordinate η/√(Σg²); constant LR"
    reference = "Duchi, Hazan, Singer, JMLR 2011"

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.optimizer = torch.optim.Adagrad(with_decay(param_groups(model), cfg), lr=self.lr, eps=1e-10)


class RMSProp(Strategy):
    name, generation = "rmsprop", "extra"
    rule = "η·g/(√EMA(g²) + ε), EMA rate 0.99; constant LR"
    reference = "Tieleman & Hinton 2012 (Coursera lecture 6.5)"
    defaults = {"rmsprop_alpha": 0.99}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        alpha = in_range(cfg, "rmsprop_alpha", 0, 1)
        self.optimizer = torch.optim.RMSprop(with_decay(param_groups(model), cfg), lr=self.lr, alpha=alpha, eps=cfg["adam_eps"])


class LAMBStrategy(Strategy):
    name, generation = "lamb", "extra"
    rule = "Adam step + λw, scaled per tensor by ‖w‖/‖u‖; 1-D tensors excluded; constant LR"
    reference = "You et al., ICLR 2020"
    defaults = {"lamb_eps": 1e-6}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        eps = in_range(cfg, "lamb_eps", 0, math.inf, lo_open=True)
        groups = param_groups(model)
        for g in groups:  # LAMB owns its exclusions (ndim < 2)
            g["weight_decay"] = cfg["weight_decay"]
        self.optimizer = LAMB(groups, lr=self.lr, betas=self.adam_betas(), eps=eps)


class AdafactorStrategy(Strategy):
    name, generation = "adafactor", "extra"
    rule = "factored second moments (row/column), relative step off; constant LR (torch Adafactor)"
    reference = "Shazeer & Stern, ICML 2018"

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.optimizer = torch.optim.Adafactor(with_decay(param_groups(model), cfg), lr=self.lr)


class LayerwiseDecay(Strategy):
    name, generation = "llrd", "extra"
    rule = "AdamW, level l of K gets η·ξ^(K−1−l), ξ 0.95; constant LR"
    reference = "Sun, Qiu, Xu, Huang 2019"
    defaults = {"llrd_xi": 0.95, "disc_levels": 0}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        xi = in_range(cfg, "llrd_xi", 0, 1, lo_open=True, hi_open=False)
        groups = with_decay(param_groups(model, rest_by_depth=True), cfg)
        ls, K = depth_levels(model, groups, cfg["disc_levels"])
        for g, l in zip(groups, ls):
            g["lr"] = self.lr * xi ** (K - 1 - l)
        self.optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=self.adam_betas(), eps=cfg["adam_eps"])


class GradualUnfreezing(Strategy):
    name, generation = "gradual_unfreezing", "extra"
    rule = "AdamW; top level trains first, one more level every unfreeze_every steps (frozen = LR 0)"
    reference = "Howard & Ruder (ULMFiT), ACL 2018"
    defaults = {"unfreeze_every": 0, "disc_levels": 0, "epoch_iters": 0}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        every = cfg["unfreeze_every"] if cfg["unfreeze_every"] > 0 else epoch_iters(cfg)
        groups = with_decay(param_groups(model, rest_by_depth=True), cfg)
        ls, K = depth_levels(model, groups, cfg["disc_levels"])
        # LR 0 rather than requires_grad toggling: no DDP unused-parameter errors, no recompiles
        fns = [lambda s, start=(K - 1 - l) * every: 1.0 if s >= start else 0.0 for l in ls]
        self.optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=self.adam_betas(), eps=cfg["adam_eps"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, fns)


class GrokfastMAStrategy(Grokfast):
    name, generation = "grokfast_ma", "extra"
    rule = "SGD on g + λ·mean(last w grads) once w grads are queued, w 100, λ 5; constant LR"
    reference = "Lee, Kang, Kim, Lee 2024, arXiv 2405.20233"
    defaults = {**SGD_DEFAULTS, "grokfast_ma_window": 100, "grokfast_ma_lamb": 5.0}

    def __init__(self, model, cfg):
        Strategy.__init__(self, model, cfg)
        check(cfg["grokfast_ma_window"] >= 1, f"grokfast_ma_window must be >= 1, got {cfg['grokfast_ma_window']}")
        self.filter = GrokfastMA(self.params, int(cfg["grokfast_ma_window"]), in_range(cfg, "grokfast_ma_lamb", 0, math.inf))
        self.optimizer = self.sgd(with_decay(param_groups(model), cfg))


class MuonStrategy(Strategy):
    name, generation = "muon", "extra"
    rule = "Muon (Newton-Schulz-orthogonalised momentum) on hidden matrices, AdamW on the rest; warmup + cosine"
    reference = "Jordan et al. 2024; Liu et al. 2025, arXiv 2502.16982"
    defaults = {"muon_lr": 0.0, "muon_momentum": 0.95, "muon_nesterov": True, "muon_ns_steps": 5,
                "muon_scale": "match_rms_adamw"}

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        check(cfg["muon_lr"] >= 0, f"muon_lr must be >= 0 (0: learning_rate), got {cfg['muon_lr']}")
        mu = in_range(cfg, "muon_momentum", 0, 1)
        check(cfg["muon_ns_steps"] >= 1, f"muon_ns_steps must be >= 1, got {cfg['muon_ns_steps']}")
        check(cfg["muon_scale"] in ("original", "match_rms_adamw"), f"muon_scale must be 'original' or 'match_rms_adamw', got {cfg['muon_scale']!r}")
        groups = with_decay(muon.split(param_groups(model)), cfg)
        for g in groups:  # with match_rms_adamw one LR serves both sides (Moonlight)
            g["lr"] = (cfg["muon_lr"] or self.lr) if g["use_muon"] else self.lr
        self.optimizer = muon.MuonAdamW(groups, lr=self.lr, momentum=mu, nesterov=cfg["muon_nesterov"],
                                        ns_steps=int(cfg["muon_ns_steps"]), scale=cfg["muon_scale"],
                                        betas=self.adam_betas(), eps=cfg["adam_eps"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, WarmupCosine(cfg))


# name -> class; `python optim.py --list` prints them in this order
STRATEGIES = {cls.name: cls for cls in (
    Uniform,
    FixedSGD, CosineSGD, SGDR, Adam, AdamW, AdaBoundStrategy, LARSStrategy, Discriminative, RAdam, LionStrategy,
    LookaheadAdamW, SAM, Grokfast, STLRDiscriminative, SAMDiscriminative, DALSStrategy, DALSFast, DALSAcc,
    StepDecay, ExponentialDecay, WarmupCosineSGD, Cyclical, OneCycle, AdaGrad, RMSProp, LAMBStrategy,
    AdafactorStrategy, LayerwiseDecay, GradualUnfreezing, GrokfastMAStrategy, MuonStrategy,
)}
CATALOGUE = list(STRATEGIES)  # this file's strategies; llr.py adds its own below
PAPER_18 = CATALOGUE[1:19]


def hyperparameters():
    """Every strategy-specific hyperparameter with its default (train.py exposes them as config keys)."""
    merged = {}
    for cls in STRATEGIES.values():
        for k, v in cls.defaults.items():
            if k in merged and merged[k] != v:
                raise RuntimeError(f"strategies disagree on the default of {k!r}: {merged[k]!r} vs {v!r}")
            merged[k] = v
    return merged


# train.py's common keys, for building a strategy outside train.py (tests, eval/strategies.py)
COMMON_DEFAULTS = dict(learning_rate=3e-3, weight_decay=0.1, beta1=0.9, beta2=0.95, adam_eps=1e-8, grad_clip=0.0,
                       max_iters=1000, warmup_frac=0.1, warmup_iters=-1, min_lr_ratio=0.1, decay_norms=False,
                       fused=None, faithful=False, grad_accum=1, batch_size=16)


def default_config(**overrides):
    cfg = {**COMMON_DEFAULTS, **hyperparameters()}
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
    cfg.update(overrides)
    return cfg


def build(name, model, cfg):
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; available: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](model, cfg)


import llr  # noqa: E402,F401  LLR and its baselines live in llr.py, which adds them to STRATEGIES

if __name__ == "__main__":
    import sys
    if sys.argv[1:] != ["--list"]:
        raise SystemExit("usage: python optim.py --list")
    from optim import STRATEGIES  # the registry that llr.py extended (this script runs as __main__)
    print(f"{'name':<20} {'gen':<9} rule  [reference]")
    for key, cls in STRATEGIES.items():
        print(f"{key:<20} {cls.generation:<9} {cls.rule}  [{cls.reference}]")
