"""
The catalogue of optim.py: the baseline, the 18 strategies of "Learning Rate Engineering" (arXiv 2604.27295) in the
paper's order, the extras it discusses, Muon and schedule-free AdamW. Each is one @register(...) with its own keys;
docs/strategies.md has every rule with its reference quirks (faithful=True).
"""
import contextlib

import torch

import rules
from groups import decayed_groups, depth_levels
from optim_core import (BOOL, EPOCH, INF, MUON, NONNEG, POS, PROB, SGD, UNIT, ConfigError, Strategy, adam_args, adamw,
                        check, flag, integer, interval, key, muon_adamw, one_of, quirk, register, sgd)
from schedules import epoch_iters, schedule, stlr, warm_restarts, warmup_cosine

# Where the paper gives a rule and no schedule (Adam, Lion, ...) it runs at constant LR, as the paper ran it.
LR_SCHED = torch.optim.lr_scheduler
DISC = dict(disc_factor=key(2.6, POS, "discriminative LR: each level down divides the LR by this (δ)"),
            disc_levels=key(0, integer(0), "depth levels K of the discriminative rules (0: one per block, plus "
                                           "embedding and head)"))
SAM_KEYS = dict(sam_rho=key(0.05, POS, "SAM's radius ρ of the ascent step"),
                sam_adaptive=quirk("ASAM: the perturbation scaled per coordinate by |w|"))


def discriminative_groups(model, cfg, power=1):
    """Groups (norms per depth) at η_top / δ^(power·(K−1−l)), δ = disc_factor, with their level l."""
    groups = decayed_groups(model, cfg, rest_by_depth=True)
    ls, K = depth_levels(model, groups, cfg["disc_levels"])
    for g, l in zip(groups, ls):
        g["lr"], g["level"] = cfg["learning_rate"] / cfg["disc_factor"] ** (power * (K - 1 - l)), l
    return groups


def cosine_eta_min(cfg):
    """η_min of cosine/SGDR: min_lr_ratio·η (canonical) or 1e-5 (the paper's code)."""
    return 1e-5 if flag(cfg, "sgdr_t0_steps") else cfg["min_lr_ratio"] * cfg["learning_rate"]


@register("uniform", "baseline", "AdamW, one LR for every group: linear warmup, then `schedule` (cosine to "
          "min_lr_ratio)", "Loshchilov & Hutter, ICLR 2019; Goyal et al. 2017", uses_schedule=True, decoupled_wd=True)
def uniform(model, cfg):
    return adamw(decayed_groups(model, cfg), cfg), None


# ----------------------------------------------------------------------------------------------
# The 18 of the paper


@register("fixed_sgd", "Gen1", "SGD, heavy-ball momentum, coupled L2; constant LR", "Robbins & Monro 1951; Polyak 1964",
          **SGD)
def fixed_sgd(model, cfg):
    return sgd(decayed_groups(model, cfg), cfg), None


@register("cosine_sgd", "Gen2", "SGD + cosine decay from η to η_min over max_iters (CosineAnnealingLR)",
          "Loshchilov & Hutter, ICLR 2017", **SGD)
def cosine_sgd(model, cfg):
    opt = sgd(decayed_groups(model, cfg), cfg)
    return opt, LR_SCHED.CosineAnnealingLR(opt, T_max=cfg["max_iters"], eta_min=cosine_eta_min(cfg))


@register("sgdr", "Gen2", "SGD + cosine with warm restarts, cycle i lasts T₀·T_mult^i steps "
          "(CosineAnnealingWarmRestarts)", "Loshchilov & Hutter, ICLR 2017", **SGD,
          sgdr_t0=key(0, integer(0), "the first cycle's length T₀ in updates (0: epoch_iters)"),
          sgdr_t_mult=key(2, integer(1), "each cycle is this many times longer than the one before"),
          sgdr_t0_steps=quirk("T₀ = 10 updates, not an epoch; η_min = 1e-5 for sgdr and cosine_sgd"), **EPOCH)
def sgdr(model, cfg):
    t0 = 10 if flag(cfg, "sgdr_t0_steps") else cfg["sgdr_t0"] or epoch_iters(cfg)
    opt = sgd(decayed_groups(model, cfg), cfg)
    return opt, LR_SCHED.CosineAnnealingWarmRestarts(opt, T_0=t0, T_mult=cfg["sgdr_t_mult"],
                                                     eta_min=cosine_eta_min(cfg))


@register("adam", "Gen3", "Adam, bias-corrected moments, coupled L2 (weight_decay; the paper used 0); constant LR",
          "Kingma & Ba, ICLR 2015")
def adam(model, cfg):
    return torch.optim.Adam(decayed_groups(model, cfg), lr=cfg["learning_rate"], **adam_args(cfg)), None


@register("adamw", "Gen3", "Adam + decoupled weight decay; constant LR", "Loshchilov & Hutter, ICLR 2019",
          decoupled_wd=True)
def adamw_constant(model, cfg):
    return torch.optim.AdamW(decayed_groups(model, cfg), lr=cfg["learning_rate"], **adam_args(cfg)), None


@register("adabound", "Gen3", "Adam step clipped per coordinate to bounds converging to final_lr (Adam → SGD); "
          "constant LR", "Luo, Xiong, Liu, Sun, ICLR 2019",
          adabound_final_lr=key(0.01, POS, "the SGD LR the bounds converge to"),
          adabound_gamma=key(1e-3, POS, "how fast the bounds close"))
def adabound(model, cfg):
    return rules.AdaBound(decayed_groups(model, cfg), lr=cfg["learning_rate"], final_lr=cfg["adabound_final_lr"],
                          gamma=cfg["adabound_gamma"], **adam_args(cfg)), None


@register("lars", "Gen4", "momentum SGD with a per-tensor trust ratio ‖w‖/(‖g‖+λ‖w‖); 1-D tensors excluded; "
          "constant LR", "You, Gitman, Ginsburg 2017, arXiv 1708.03888", lr_family="lars", supports_mup=False,
          **SGD, lars_trust=key(0.001, POS, "the trust coefficient η of the ratio"),
          lars_ref=quirk("trust 0.02, ratio 0.02·‖w‖/(‖g + λw‖ + 1e-8) on the whole buffer, no exclusions"))
def lars(model, cfg):
    ref = flag(cfg, "lars_ref")  # LARS owns its exclusions (ndim < 2); the reference decays everything
    return rules.LARS(decayed_groups(model, cfg, decay_all=True), lr=cfg["learning_rate"],
                      momentum=cfg["sgd_momentum"], trust=0.02 if ref else cfg["lars_trust"], reference=ref), None


@register("discriminative", "Gen4", "SGD, level l of K gets η/δ^(K−1−l) (input layers slower), δ 2.6; constant LR",
          "Howard & Ruder (ULMFiT), ACL 2018", **SGD, **DISC)
def discriminative(model, cfg):
    return sgd(discriminative_groups(model, cfg), cfg), None


@register("radam", "Gen5", "Adam with variance rectification r_t (plain momentum while ρ_t ≤ 5); constant LR",
          "Liu, Jiang, He, Chen, Liu, Gao, Han, ICLR 2020", decoupled_wd=True)
def radam(model, cfg):
    return torch.optim.RAdam(decayed_groups(model, cfg), lr=cfg["learning_rate"], decoupled_weight_decay=True,
                             **adam_args(cfg)), None


@register("lion", "Gen5", "w ← w − η(sign(β₁m + (1−β₁)g) + λw); m ← β₂m + (1−β₂)g; constant LR",
          "Chen, Liang, Huang, Real, ..., Le, NeurIPS 2023", lr_family="lion", decoupled_wd=True,
          lion_beta1=key(0.9, PROB, "Lion's β₁ (the update's interpolation)"),
          lion_beta2=key(0.99, PROB, "Lion's β₂ (the momentum)"))
def lion(model, cfg):
    return rules.Lion(decayed_groups(model, cfg), lr=cfg["learning_rate"],
                      betas=(cfg["lion_beta1"], cfg["lion_beta2"])), None


@register("lookahead_adamw", "Gen5", "AdamW fast weights; every k steps slow ← slow + α(fast − slow), fast ← slow; "
          "constant LR", "Zhang, Lucas, Hinton, Ba, NeurIPS 2019", decoupled_wd=True,
          lookahead_k=key(5, integer(1), "fast steps between synchronisations"),
          lookahead_alpha=key(0.5, interval(0, 1, "(]"), "the slow weights' step α toward the fast ones"),
          lookahead_lazy_slow=quirk("the slow weights are copied after the first fast step, not the initial ones"))
def lookahead_adamw(model, cfg):
    inner = torch.optim.AdamW(decayed_groups(model, cfg), lr=cfg["learning_rate"], **adam_args(cfg))
    return rules.Lookahead(inner, k=cfg["lookahead_k"], alpha=cfg["lookahead_alpha"],
                           lazy=flag(cfg, "lookahead_lazy_slow")), None


@register("sam", "Gen5", "SGD on the gradient at w + ρg/‖g‖ (ASAM with sam_adaptive); constant LR",
          "Foret, Kleiner, Mobahi, Neyshabur, ICLR 2021; ASAM: Kwon, Kim, Park, Choi, ICML 2021", slow=True,
          **SGD, **SAM_KEYS)
class SAM(Strategy):
    """Two forward-backward passes per step: the loop's gradient at w gives the ascent direction,
    closure() recomputes every micro-step at w + e, the base SGD step uses that gradient at w."""

    def build(self, model, cfg):
        return sgd(self.groups(model, cfg), cfg), None

    def groups(self, model, cfg):
        return decayed_groups(model, cfg)

    def step(self, it, loss=None, closure=None):
        if closure is None:
            raise RuntimeError(f"{self.name} needs closure(): it recomputes the loss and gradients at the perturbed "
                               f"weights")
        eps = rules.sam_perturb(self.params, self.cfg["sam_rho"], flag(self.cfg, "sam_adaptive"))
        closure()
        rules.sam_restore(self.params, eps)
        super().step(it)


@register("grokfast", "Gen5", "SGD on g + λ·EMA(g) (slow-gradient amplification), filter before clipping; "
          "constant LR", "Lee, Kang, Kim, Lee 2024, arXiv 2405.20233", lr_family="grokfast", **SGD,
          grokfast_alpha=key(0.98, PROB, "the EMA rate of the slow gradient"),
          grokfast_lamb=key(2.0, NONNEG, "λ, the slow gradient's amplification"),
          grokfast_ref=quirk("zero-initialised EMA, λ 1, dampened momentum, decay after the step"))
class Grokfast(Strategy):
    def build(self, model, cfg):
        if flag(cfg, "grokfast_ref"):  # zero-init EMA, λ 1, dampened momentum, decay after the step
            self.filter = rules.GrokfastEMA(self.params, cfg["grokfast_alpha"], 1.0, zero_init=True)
            return rules.DampenedSGD(decayed_groups(model, cfg), lr=self.lr, momentum=cfg["sgd_momentum"]), None
        self.filter = rules.GrokfastEMA(self.params, cfg["grokfast_alpha"], cfg["grokfast_lamb"])
        return sgd(decayed_groups(model, cfg), cfg), None

    def step(self, it, loss=None, closure=None):
        self.filter.apply()
        super().step(it)

    def extra_state(self):
        return {"filter": self.filter.state_dict()}

    def load_extra_state(self, sd):
        self.filter.load_state_dict(sd["filter"])


@register("stlr_discriminative", "Gen5", "discriminative levels × slanted triangular LR: linear up for cut_frac·T, "
          "linear down, ratio 32", "Howard & Ruder (ULMFiT), ACL 2018", **SGD, **DISC,
          stlr_cut_frac=key(0.1, interval(0, 1, "()"), "the share of the run spent rising"),
          stlr_ratio=key(32.0, interval(1, INF), "how much smaller the lowest LR is than the peak"),
          stlr_double_decay=quirk("the reference divides each level's LR by δ twice"),
          stlr_per_epoch=quirk("the reference steps the schedule once per epoch (LR constant within one)"), **EPOCH)
def stlr_discriminative(model, cfg):
    T, cut_frac, ratio, lr = cfg["max_iters"], cfg["stlr_cut_frac"], cfg["stlr_ratio"], cfg["learning_rate"]
    groups = discriminative_groups(model, cfg)
    peak = [g["lr"] for g in groups]
    if flag(cfg, "stlr_double_decay"):  # the reference divides by δ twice
        peak = [lr / (lr / p) ** 2 for p in peak]
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
    opt = sgd(groups, cfg)
    return opt, LR_SCHED.LambdaLR(opt, fns)


@register("sam_discriminative", "SOTA", "SAM (ASAM with sam_adaptive) around discriminative-LR SGD; constant LR",
          "Foret et al. 2021 + Howard & Ruder 2018 (paper's combination)", **SGD, **DISC, **SAM_KEYS)
class SAMDiscriminative(SAM):
    def groups(self, model, cfg):
        return discriminative_groups(model, cfg)


DALS_KEYS = dict(
    dals_alpha0=key(0.6, PROB, "the base EMA rate α₀ of the gradient blend"),
    dals_tau2=key(0.002, POS, "the relative loss drop below which the phase is 'plateau'"),
    dals_momentum=key(0.9, PROB, "heavy-ball momentum μ"),
    dals_warmup_frac=key(0.05, PROB, "warmup share of max_iters before the cosine"),
    dals_trust=key(0.02, POS, "the trust coefficient of the clamped ratio"),
    dals_zero_first_lr=quirk("the schedule at the 0-based step, so the first update runs at LR 0"),
    dals_min_dwell=key(0, integer(0), "updates a phase lasts at least before it may change"),
    dals_exclude_1d=key(False, BOOL, "no trust ratio and no decay for 1-D tensors"),
    dals_decoupled_wd=key(False, BOOL, "decoupled weight decay instead of the paper's coupled L2"),
)


@register("dals", "SOTA", "SGD on depth-blended g/EMA(g) with loss-phase EMA rate, clamped trust ratio; warmup + "
          "cosine", "Yao et al., arXiv 2604.27295", uses_loss=True, lr_family="dals", supports_mup=False, **DALS_KEYS)
class DALS(Strategy):
    """DALS and its two variants: rules.DALS with every group's LR set here from the schedule."""
    variant_keys = dict(alpha0="dals_alpha0", tau2="dals_tau2", momentum="dals_momentum", warmup="dals_warmup_frac")

    def build(self, model, cfg):
        k = self.variant_keys
        self.warmup = int(cfg[k["warmup"]] * cfg["max_iters"]) if k["warmup"] else 0
        groups = decayed_groups(model, cfg, rest_by_depth=True, decay_all=True)  # coupled L2 on everything (paper)
        return rules.DALS(groups, lr=self.lr, variant=self.name, momentum=cfg[k["momentum"]], alpha0=cfg[k["alpha0"]],
                          tau2=cfg[k["tau2"]], trust=cfg["dals_trust"], weight_decay=cfg["weight_decay"],
                          min_dwell=cfg["dals_min_dwell"], exclude_1d=cfg["dals_exclude_1d"],
                          decoupled=cfg["dals_decoupled_wd"]), None

    def scale(self, it):
        """warmup_cosine of the update number; the reference evaluates it at the 0-based step (first LR 0)."""
        t = it if flag(self.cfg, "dals_zero_first_lr") else it + 1
        return warmup_cosine(t, self.max_iters, self.warmup, 0.0)

    def step(self, it, loss=None, closure=None):
        if loss is not None:
            self.optimizer.observe(loss)
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr * self.scale(it)
        super().step(it)

    def phase(self):
        return self.optimizer.glob["phase"]


@register("dals_fast", "SOTA", "DALS with raw gradient in phase 0, μ 0.85, short warmup",
          "Yao et al., arXiv 2604.27295", **DALS_KEYS, dals_fast_momentum=key(0.85, PROB, "dals_fast's momentum μ"),
          dals_fast_warmup_frac=key(0.02, PROB, "dals_fast's warmup share of max_iters"))
class DALSFast(DALS):
    variant_keys = dict(alpha0="dals_alpha0", tau2="dals_tau2", momentum="dals_fast_momentum",
                        warmup="dals_fast_warmup_frac")


@register("dals_acc", "SOTA", "DALS with α₀ 0.7, τ₂ 0.001 and warm restarts (T₀ = 10 epochs, doubling) instead of "
          "warmup + cosine", "Yao et al., arXiv 2604.27295", **DALS_KEYS,
          dals_acc_alpha0=key(0.7, PROB, "dals_acc's α₀"), dals_acc_tau2=key(0.001, POS, "dals_acc's τ₂"),
          dals_acc_t0=key(0, integer(0), "the first restart cycle in updates (0: 10 epochs)"), **EPOCH)
class DALSAcc(DALS):
    variant_keys = dict(alpha0="dals_acc_alpha0", tau2="dals_acc_tau2", momentum="dals_momentum", warmup=None)

    def scale(self, it):
        return warm_restarts(it + 1, self.cfg["dals_acc_t0"] or 10 * epoch_iters(self.cfg))


# ----------------------------------------------------------------------------------------------
# Extras the paper discusses (not in its 18). Pure schedules run on momentum SGD, as the paper
# frames them; the rule-only extras run at constant LR.


@register("step_decay", "extra", "SGD, η·γ^⌊t/every⌋, γ 0.1, every max_iters/3 by default (StepLR)",
          "Krizhevsky et al. 2012; He et al. 2016", **SGD,
          step_decay_gamma=key(0.1, interval(0, 1, "(]"), "the factor γ of each step down"),
          step_decay_every=key(0, integer(0), "updates between steps (0: max_iters/3)"))
def step_decay(model, cfg):
    opt = sgd(decayed_groups(model, cfg), cfg)
    every = cfg["step_decay_every"] or max(1, cfg["max_iters"] // 3)
    return opt, LR_SCHED.StepLR(opt, step_size=every, gamma=cfg["step_decay_gamma"])


@register("exponential", "extra", "SGD, η·γ^t; γ 0 means min_lr_ratio^(1/max_iters) (ExponentialLR)",
          "classical; see Bengio 2012", **SGD,
          exp_decay_gamma=key(0.0, UNIT, "the factor γ per update (0: min_lr_ratio at max_iters)"))
def exponential(model, cfg):
    gamma = cfg["exp_decay_gamma"] or cfg["min_lr_ratio"] ** (1 / cfg["max_iters"])
    check(gamma > 0, "exp_decay_gamma 0 derives γ from min_lr_ratio, which must then be > 0")
    opt = sgd(decayed_groups(model, cfg), cfg)
    return opt, LR_SCHED.ExponentialLR(opt, gamma=gamma)


@register("warmup_cosine", "extra", "SGD, linear warmup t/W, then `schedule` (cosine to min_lr_ratio·η)",
          "Goyal et al. 2017 + Loshchilov & Hutter 2017", uses_schedule=True, **SGD)
def warmup_cosine_sgd(model, cfg):
    return sgd(decayed_groups(model, cfg), cfg), None


@register("cyclical", "extra", "SGD, triangular cycles between min_lr_ratio·η and η, momentum cycled inversely "
          "(CyclicLR)", "Smith, WACV 2017", **SGD,
          cyclic_half=key(0, integer(0), "updates of a half cycle (0: max_iters/8)"),
          cyclic_mode=key("triangular", one_of("triangular", "triangular2", "exp_range"), "CyclicLR's mode"))
def cyclical(model, cfg):
    opt, mu = sgd(decayed_groups(model, cfg), cfg), cfg["sgd_momentum"]
    return opt, LR_SCHED.CyclicLR(opt, base_lr=cfg["min_lr_ratio"] * cfg["learning_rate"], max_lr=cfg["learning_rate"],
                                  step_size_up=cfg["cyclic_half"] or max(1, cfg["max_iters"] // 8),
                                  mode=cfg["cyclic_mode"], base_momentum=min(0.8, mu), max_momentum=mu)


@register("one_cycle", "extra", "SGD, one cycle: cosine up to η over 30 %, down to η/(25·1e4), momentum inverse "
          "(OneCycleLR)", "Smith 2018; Smith & Topin 2019", **SGD,
          onecycle_pct=key(0.3, interval(0, 1, "()"), "the share of the run spent rising"),
          onecycle_div=key(25.0, POS, "the first LR is η divided by this"),
          onecycle_final_div=key(1e4, POS, "the last LR is the first divided by this"))
def one_cycle(model, cfg):
    opt, mu = sgd(decayed_groups(model, cfg), cfg), cfg["sgd_momentum"]
    return opt, LR_SCHED.OneCycleLR(opt, max_lr=cfg["learning_rate"], total_steps=cfg["max_iters"],
                                    pct_start=cfg["onecycle_pct"], div_factor=cfg["onecycle_div"],
                                    final_div_factor=cfg["onecycle_final_div"], base_momentum=min(0.85, mu),
                                    max_momentum=mu)


@register("adagrad", "extra", "per-coordinate η/√(Σg²); constant LR", "Duchi, Hazan, Singer, JMLR 2011",
          lr_family="adagrad")
def adagrad(model, cfg):
    return torch.optim.Adagrad(decayed_groups(model, cfg), lr=cfg["learning_rate"], eps=1e-10), None


@register("rmsprop", "extra", "η·g/(√EMA(g²) + ε), EMA rate 0.99; constant LR",
          "Tieleman & Hinton 2012 (Coursera lecture 6.5)",
          rmsprop_alpha=key(0.99, PROB, "the EMA rate of g²"))
def rmsprop(model, cfg):
    return torch.optim.RMSprop(decayed_groups(model, cfg), lr=cfg["learning_rate"], alpha=cfg["rmsprop_alpha"],
                               eps=cfg["adam_eps"]), None


@register("lamb", "extra", "Adam step + λw, scaled per tensor by ‖w‖/‖u‖; 1-D tensors excluded; constant LR",
          "You et al., ICLR 2020", lr_family="lamb", decoupled_wd=True, supports_mup=False,
          lamb_eps=key(1e-6, POS, "LAMB's ε"))
def lamb(model, cfg):  # LAMB owns its exclusions (ndim < 2)
    return rules.LAMB(decayed_groups(model, cfg, decay_all=True), lr=cfg["learning_rate"],
                      betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["lamb_eps"]), None


@register("adafactor", "extra", "factored second moments (row/column), relative step off; constant LR "
          "(torch Adafactor)", "Shazeer & Stern, ICML 2018", lr_family="adafactor")
def adafactor(model, cfg):
    return torch.optim.Adafactor(decayed_groups(model, cfg), lr=cfg["learning_rate"]), None


@register("llrd", "extra", "AdamW, level l of K gets η·ξ^(K−1−l), ξ 0.95; constant LR", "Sun, Qiu, Xu, Huang 2019",
          decoupled_wd=True, llrd_xi=key(0.95, interval(0, 1, "(]"), "each level down multiplies the LR by ξ"),
          disc_levels=DISC["disc_levels"])
def llrd(model, cfg):
    groups = decayed_groups(model, cfg, rest_by_depth=True)
    ls, K = depth_levels(model, groups, cfg["disc_levels"])
    for g, l in zip(groups, ls):
        g["lr"] = cfg["learning_rate"] * cfg["llrd_xi"] ** (K - 1 - l)
    return torch.optim.AdamW(groups, lr=cfg["learning_rate"], **adam_args(cfg)), None


@register("gradual_unfreezing", "extra", "AdamW; top level trains first, one more level every unfreeze_every steps "
          "(frozen = LR 0)", "Howard & Ruder (ULMFiT), ACL 2018", decoupled_wd=True,
          unfreeze_every=key(0, integer(0), "updates between unfreezing levels (0: epoch_iters)"),
          disc_levels=DISC["disc_levels"], **EPOCH)
def gradual_unfreezing(model, cfg):
    every = cfg["unfreeze_every"] or epoch_iters(cfg)
    groups = decayed_groups(model, cfg, rest_by_depth=True)
    ls, K = depth_levels(model, groups, cfg["disc_levels"])
    # LR 0 rather than requires_grad toggling: no DDP unused-parameter errors, no recompiles
    fns = [lambda s, start=(K - 1 - l) * every: 1.0 if s >= start else 0.0 for l in ls]
    opt = torch.optim.AdamW(groups, lr=cfg["learning_rate"], **adam_args(cfg))
    return opt, LR_SCHED.LambdaLR(opt, fns)


@register("grokfast_ma", "extra", "SGD on g + λ·mean(last w grads) once w grads are queued, w 100, λ 5; constant LR",
          "Lee, Kang, Kim, Lee 2024, arXiv 2405.20233", lr_family="sgd", slow=True, **SGD,
          grokfast_ma_window=key(100, integer(1), "the number w of queued gradients"),
          grokfast_ma_lamb=key(5.0, NONNEG, "λ, the queued mean's amplification"))
class GrokfastMA(Grokfast):
    def build(self, model, cfg):
        self.filter = rules.GrokfastMA(self.params, cfg["grokfast_ma_window"], cfg["grokfast_ma_lamb"])
        return sgd(decayed_groups(model, cfg), cfg), None


@register("muon", "extra", "Muon (Newton-Schulz-orthogonalised momentum) on hidden matrices, AdamW on the rest; "
          "warmup + `schedule`", "Jordan et al. 2024; Liu et al. 2025, arXiv 2502.16982", uses_schedule=True,
          lr_family="muon", decoupled_wd=True, slow=True, **MUON)
def muon(model, cfg):
    return muon_adamw(decayed_groups(model, cfg), cfg), None


@register("schedule_free", "extra", "schedule-free AdamW: gradient at y = (1−β₁)z + β₁x, z takes the AdamW step, x is "
          "the LR²-weighted average of z; warmup, then constant; eval and checkpoints at x",
          "Defazio et al., NeurIPS 2024 (arXiv 2405.15682)", decoupled_wd=True,
          sf_r=key(0.0, NONNEG, "the averaging weight's power of t"),
          sf_weight_lr_power=key(2.0, NONNEG, "the averaging weight's power of the LR"))
class ScheduleFree(Strategy):
    """The schedulefree package's AdamWScheduleFree (Defazio et al.'s own implementation) over the shared groups.
    The model holds y during training; eval_weights() swaps in x, the point the method returns, for eval and
    checkpoints, so saved weights are x and a resume (x, back to y on load) continues exactly as the run that
    saved it. `schedule` does not apply: the LR warms up as t/W (the package's own warmup rule, run
    through λ so lr_mult and the logs see it) and stays at learning_rate, the averaging stands in for the decay.
    beta1 is the interpolation β (0.9), beta2 Adam's; weight decay is taken at y, as the package does."""

    def build(self, model, cfg):
        check(not cfg.get("branch"), "schedule_free has no decay to branch a cooldown from: branch a run of "
                                     "another strategy, or continue this one with --init_from=resume")
        try:
            from schedulefree import AdamWScheduleFree  # optional: only this strategy needs it
        except ImportError:
            raise ConfigError("strategy 'schedule_free' needs the schedulefree package: pip install schedulefree") \
                from None
        self.lam = schedule({**cfg, "schedule": "constant"})  # warmup, then 1
        opt = AdamWScheduleFree(decayed_groups(model, cfg), lr=cfg["learning_rate"], betas=(cfg["beta1"], cfg["beta2"]),
                                eps=cfg["adam_eps"], warmup_steps=0, r=cfg["sf_r"],
                                weight_lr_power=cfg["sf_weight_lr_power"])
        opt.train()  # y = x = z at the start
        return opt, None

    def load_state_dict(self, sd):
        """Call after the model holds the checkpoint's weights (x). They go back to y at once, as in the run
        that saved them (y = train(x) after its checkpoint); x is kept until the first update, for the eval
        that a resumed run makes at its first iteration."""
        super().load_state_dict(sd)
        self.loaded_x = [p.detach().clone() for p in self.params]
        self.optimizer.train()

    def step(self, it, loss=None, closure=None):
        self.loaded_x = None
        super().step(it, loss, closure)

    @contextlib.contextmanager
    def eval_weights(self):
        if getattr(self, "loaded_x", None) is not None:  # the checkpoint's x itself, not train(x) swapped back
            y = [p.detach().clone() for p in self.params]
            with torch.no_grad():
                for p, x in zip(self.params, self.loaded_x):
                    p.copy_(x)
            try:
                yield
            finally:
                with torch.no_grad():
                    for p, saved in zip(self.params, y):
                        p.copy_(saved)
            return
        swap = self.optimizer.param_groups[0]["train_mode"]  # nested (a checkpoint inside an eval): already at x
        if swap:
            self.optimizer.eval()
        try:
            yield
        finally:
            if swap:
                self.optimizer.train()
