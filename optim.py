"""
Learning-rate strategies: schedules, the strategy interface, one registry and every strategy of nanoLR,
from plain SGD to LLR, over the shared parameter groups of groups.py. A strategy owns its torch optimizer and its schedule:

    strategy = optim.build("llr", model, cfg)       # cfg: train.py's config dict, or optim.default_config(...)
    optim.update(strategy, it, forward_backward)   # one update (or strategy.step(it, loss, closure) by hand)
    strategy.lrs()          # group name -> LR of the last update, for logs
    strategy.log_record()   # extra fields for the metrics line (LLR: alphas and LRs after a refit)
    strategy.state_dict(); strategy.load_state_dict(sd); strategy.zero_grad()

`it` is the 0-based index of the update about to be made; schedules are functions of it (or torch
lr_schedulers whose state is in state_dict()), so a resumed run continues exactly. The strategies
registered with uses_schedule follow the one warmup + decay function chosen by the `schedule` key
(optim.schedule: cosine, wsd, linear, inv_sqrt, constant); the rest keep their published schedules.
`lr_mult` multiplies the LR of the groups its patterns match, on top of any strategy.

Adding a strategy: a function (model, cfg) -> (optimizer, lr_scheduler or None) under
@register(name, generation, rule, reference, **its_own_defaults). Write a Strategy subclass instead
only when step() differs (SAM, Grokfast, DALS, the layerwise family). Its defaults become train.py
config keys and are checked against DOMAINS when it is built. Update rules torch lacks are in
rules.py. docs/strategies.md has every rule with its reference quirks (faithful=True), docs/llr.md the
layerwise family. `python optim.py --list` prints the catalogue.
"""
import contextlib
import fnmatch
import math
import re

import torch
import torch.nn as nn

import rules
import spectral
from groups import decayed_groups, depth_levels, param_groups, unwrap

# ----------------------------------------------------------------------------------------------
# Schedules: multipliers of the base LR as plain functions of the 1-based update number t


def warmup_cosine(t, max_iters, warmup_iters, min_lr_ratio):
    """nanoLR's one warmup rule: t/W for t < W (λ(0) = 0, the first update runs at 1/W), then cosine
    from 1 to min_lr_ratio at t = max_iters."""
    if t < warmup_iters:
        return t / warmup_iters
    progress = min((t - warmup_iters) / max(1, max_iters - warmup_iters), 1.0)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warm_restarts(t, t0, t_mult=2):
    """Cosine from 1 to 0 in cycles of t0, t0·t_mult, ... updates, restarting at 1 (SGDR shape)."""
    length = t0
    while t >= length:
        t, length = t - length, length * t_mult
    return 0.5 * (1 + math.cos(math.pi * t / length))


def stlr(t, T, cut_frac, ratio):
    """Slanted triangular multiplier (Howard & Ruder 2018) for 0-based update t of T."""
    cut = max(1, int(T * cut_frac))
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return (1 + max(p, 0.0) * (ratio - 1)) / ratio


def warmup_iters_of(cfg):
    return int(cfg["warmup_frac"] * cfg["max_iters"]) if cfg["warmup_iters"] < 0 else cfg["warmup_iters"]


def epoch_iters(cfg):
    """Steps per 'epoch' for rules defined in epochs (SGDR's T₀, DALS-Acc, unfreezing, STLR per epoch);
    0 means a tenth of the run."""
    return cfg["epoch_iters"] if cfg["epoch_iters"] > 0 else max(1, cfg["max_iters"] // 10)


SCHEDULES = ("cosine", "wsd", "linear", "inv_sqrt", "constant")
DECAY_SHAPES = ("linear", "cosine", "1-sqrt", "power")
# the keys that define λ(t); a cooldown branch keeps its parent's values of them (cfg["branch"]["parent"])
SCHEDULE_KEYS = ("schedule", "max_iters", "warmup_iters", "warmup_frac", "decay_frac", "decay_shape", "decay_power",
                 "min_lr_ratio")


def decay(p, shape, power):
    """A decay shape from 1 at progress p = 0 to 0 at p = 1 (1-sqrt: Hägele et al. 2024)."""
    if shape == "linear":
        return 1 - p
    if shape == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if shape == "1-sqrt":
        return 1 - math.sqrt(p)
    return (1 - p) ** power


def schedule(cfg):
    """λ(t), the multiplier of the base LR at update t (1-based), for cfg's `schedule`; checked once, here.
    Every schedule warms up as t/W for t < W (λ(0) = 0, the first update at 1/W); then
      cosine:   warmup_cosine, to min_lr_ratio at t = max_iters;
      linear:   linear from 1 to min_lr_ratio at t = max_iters;
      wsd:      1 up to t = T − D (D = round(decay_frac·T)), then decay_shape down to min_lr_ratio at T;
      inv_sqrt: sqrt(W/t) (1 at t = W), never below min_lr_ratio;
      constant: 1.
    A cooldown branch (cfg["branch"] = dict(at=b, iters=D, parent=...), set by train.py) is its parent's λ
    up to t = b, then decay_shape from the parent's λ(b) down to min_lr_ratio at t = b + D (docs/strategies.md)."""
    f, shape, power = cfg["min_lr_ratio"], cfg["decay_shape"], cfg["decay_power"]
    branch = cfg.get("branch")
    if branch:
        parent, b, D = schedule(branch["parent"]), branch["at"], branch["iters"]
        top = parent(b)
        return lambda t: parent(t) if t <= b else f + (top - f) * decay(min((t - b) / D, 1.0), shape, power)
    kind, T, W = cfg["schedule"], cfg["max_iters"], warmup_iters_of(cfg)
    check(W <= T, f"the warmup ({W} updates) is longer than the run (max_iters={T}): lower warmup_iters "
                  f"(or warmup_frac) or raise max_iters")
    D = round(cfg["decay_frac"] * T)
    check(kind != "wsd" or W + D <= T, f"schedule='wsd': the warmup ({W} updates) and the decay (decay_frac·max_iters = "
                                       f"{D}) overlap in a run of {T}: lower decay_frac or the warmup")
    if kind == "cosine":  # the project's original rule, bit for bit
        return lambda t: warmup_cosine(t, T, W, f)

    def lam(t):
        if t < W:
            return t / W
        if kind == "constant":
            return 1.0
        if kind == "inv_sqrt":
            return max(f, math.sqrt(max(W, 1) / max(t, 1)))
        if kind == "linear":
            return f + (1 - f) * (1 - min((t - W) / max(1, T - W), 1.0))
        if t <= T - D:  # wsd: stable, then the decay
            return 1.0
        return f + (1 - f) * decay(min((t - (T - D)) / D, 1.0), shape, power)
    return lam


def lr_mult_ok(rules):
    pair = lambda r: (isinstance(r, (list, tuple)) and len(r) == 2 and isinstance(r[0], str)
                      and isinstance(r[1], (int, float)) and not isinstance(r[1], bool) and 0 <= r[1] < INF)
    return isinstance(rules, (list, tuple)) and all(pair(r) for r in rules)


def abbreviated(names):
    """Group names with block and depth indices as '*' (what a pattern would say), each once."""
    short = list(dict.fromkeys(re.sub(r"\.\d+(\.\d+)?(?=\.|$)", ".*", n) for n in names))
    return ", ".join(short[:16]) + (", ..." if len(short) > 16 else "")


def lr_multipliers(rules, names):
    """{group name: multiplier} of lr_mult's (pattern, multiplier) rules: fnmatch patterns over the group
    names, the first matching rule wins. A rule that applies to no group is a ConfigError."""
    mults, used = {}, [0] * len(rules)
    for name in names:
        for i, (pattern, m) in enumerate(rules):
            if fnmatch.fnmatchcase(name, pattern):
                mults[name], used[i] = float(m), used[i] + 1
                break
    for (pattern, _), n in zip(rules, used):
        shadowed = any(fnmatch.fnmatchcase(name, pattern) for name in names)
        check(n > 0, f"lr_mult pattern {pattern!r} " + ("only matches groups an earlier pattern took (the first match "
              "wins): reorder or drop it" if shadowed else f"matches no parameter group; the groups are {abbreviated(names)}"))
    return mults


# ----------------------------------------------------------------------------------------------
# Configuration: the keys every strategy reads, and the domain of every key


class ConfigError(ValueError):
    """A hyperparameter outside its domain: raised before training starts."""


def check(ok, message):
    if not ok:
        raise ConfigError(message)


# Keys every strategy reads; train.py's config (and default_config) start from these.
COMMON = dict(learning_rate=3e-3, max_iters=1000, warmup_frac=0.1, warmup_iters=-1, min_lr_ratio=0.1, weight_decay=0.1,
              decay_norms=False, beta1=0.9, beta2=0.95, adam_eps=1e-8, grad_clip=0.0, fused=False, faithful=False,
              schedule="cosine", decay_frac=0.2, decay_shape="1-sqrt", decay_power=2.0, lr_mult=(),
              parametrization="sp", base_width=0, base_depth=0, base_head_dim=0)  # muP/CompleteP: docs/mup.md

# Each quirk of the strategies paper's reference code has its own flag; faithful=True turns all on.
FAITHFUL_FLAGS = ("dals_zero_first_lr", "stlr_double_decay", "stlr_per_epoch", "lars_ref", "grokfast_ref",
                  "sam_adaptive", "lookahead_lazy_slow", "sgdr_t0_steps", "llr_drop_late_refits")


def flag(cfg, name):
    return bool(cfg.get(name, False) or cfg.get("faithful", False))


def interval(lo, hi, ends="[)"):
    inside = lambda v: (v > lo if ends[0] == "(" else v >= lo) and (v < hi if ends[1] == ")" else v <= hi)
    return inside, f"in {ends[0]}{lo}, {hi}{ends[1]}"


def integer(lo):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo, f"an integer >= {lo}"


def one_of(*choices):
    return lambda v: v in choices, f"one of {', '.join(map(str, choices))}"


INF = math.inf
PROB, POS, NONNEG, UNIT = interval(0, 1), interval(0, INF, "()"), interval(0, INF), interval(0, 1, "[]")
MAPS = ("linear", "sqrt", "log2", "sigmoid")
EMBED_RULES = ("max", "fixed", "data", "base")
DOMAINS = dict(
    learning_rate=POS, max_iters=integer(1), warmup_frac=UNIT, warmup_iters=integer(-1), min_lr_ratio=UNIT,
    schedule=one_of(*SCHEDULES), decay_frac=UNIT, decay_shape=one_of(*DECAY_SHAPES), decay_power=POS,
    lr_mult=(lr_mult_ok, 'a list of (pattern, multiplier >= 0) pairs, e.g. [("embed", 10.0), ("blocks.*.attn.[qk]", 8.0)]'),
    weight_decay=NONNEG, beta1=PROB, beta2=PROB, adam_eps=POS, grad_clip=NONNEG,
    sgd_momentum=PROB, epoch_iters=integer(0), sgdr_t0=integer(0), sgdr_t_mult=integer(1),
    adabound_final_lr=POS, adabound_gamma=POS, lars_trust=POS, disc_factor=POS, disc_levels=integer(0),
    lion_beta1=PROB, lion_beta2=PROB, lookahead_k=integer(1), lookahead_alpha=interval(0, 1, "(]"), sam_rho=POS,
    grokfast_alpha=PROB, grokfast_lamb=NONNEG, stlr_cut_frac=interval(0, 1, "()"), stlr_ratio=interval(1, INF),
    dals_alpha0=PROB, dals_tau2=POS, dals_momentum=PROB, dals_warmup_frac=PROB, dals_trust=POS,
    dals_min_dwell=integer(0), dals_fast_momentum=PROB, dals_fast_warmup_frac=PROB, dals_acc_alpha0=PROB,
    dals_acc_tau2=POS, dals_acc_t0=integer(0),
    step_decay_gamma=interval(0, 1, "(]"), step_decay_every=integer(0), exp_decay_gamma=UNIT,
    cyclic_half=integer(0), cyclic_mode=one_of("triangular", "triangular2", "exp_range"),
    onecycle_pct=interval(0, 1, "()"), onecycle_div=POS, onecycle_final_div=POS, rmsprop_alpha=PROB, lamb_eps=POS,
    llrd_xi=interval(0, 1, "(]"), unfreeze_every=integer(0), grokfast_ma_window=integer(1), grokfast_ma_lamb=NONNEG,
    sf_r=NONNEG, sf_weight_lr_power=NONNEG, tb_s1=POS, tb_s2=POS, tb_every=integer(0), tbb_s1=POS, tbb_s2=POS, tbb_tau=POS,
    ad_s1=POS, ad_s2=POS, ad_every=integer(1), alpha_correction=one_of("none", "shape"),
    muon_lr=NONNEG, muon_momentum=PROB, muon_ns_steps=integer(1), muon_scale=one_of("original", "match_rms_adamw"),
    llr_s1=POS, llr_s2=POS, llr_every=integer(1), llr_ramp=integer(0), llr_ratio=UNIT,
    llr_method=one_of(*spectral.METHODS), llr_xmin_pos=integer(1), llr_map=one_of(*MAPS), llr_embed=one_of(*EMBED_RULES),
    llr_metric=one_of(*spectral.METRICS), llr_min_evals=integer(0),
    parametrization=one_of("sp", "mup", "completep"), base_width=integer(0), base_depth=integer(0),
    base_head_dim=integer(0),
)


def validate(cfg, keys):
    """ConfigError for the first key whose value is outside its domain; the same message for every strategy."""
    for key in keys:
        if key not in DOMAINS:
            continue
        inside, text = DOMAINS[key]
        try:
            ok = inside(cfg[key])
        except TypeError:
            ok = False
        check(ok, f"{key} must be {text}, got {cfg[key]!r}")


# ----------------------------------------------------------------------------------------------
# Width and depth parametrization: muP (Yang et al. 2022, arXiv 2203.03466) and CompleteP (Dey et al. 2025,
# arXiv 2505.01618). model.py applies the init and forward multipliers; here each group's LR, weight decay and
# Adam eps are scaled relative to the base model (docs/mup.md has every rule and its source).

PARAMETRIZATION_KEYS = ("parametrization", "base_width", "base_depth", "base_head_dim")  # also ModelConfig fields
HIDDEN_KINDS = ("attn_qk", "attn_vo", "mlp")  # muP's matrix-like (hidden) weights; embed, head, norms are vector-like
COMPLETEP_ALPHA = 1.0  # model.COMPLETEP_ALPHA (optim does not import model)
SGD_OPTIMIZERS = (torch.optim.SGD, rules.DampenedSGD)  # muP's SGD rule; every other optimizer here is Adam-like
NO_MUP_RULE = (rules.LARS, rules.LAMB, rules.DALS)     # per-tensor trust ratios: no muP rule derived for them


def check_parametrization(cfg):
    """ConfigError for a parametrization without the base shape it is relative to."""
    validate(cfg, PARAMETRIZATION_KEYS)
    p = cfg["parametrization"]
    check(p == "sp" or cfg["base_width"] > 0, f"parametrization={p!r} needs base_width: set --base_width=<n_embd of "
                                              f"the tuned base model, e.g. 128>, or parametrization='sp'")
    check(p != "completep" or cfg["base_depth"] > 0, "parametrization='completep' needs base_depth: set "
                                                     "--base_depth=<n_layer of the tuned base model, e.g. 4>")


def parametrization_mults(model, optimizer, cfg):
    """{group name: LR multiplier} of cfg's parametrization for the optimizer's groups ({} under sp). Sets each
    group's weight_decay (× 1/width part of its LR multiplier, so lr·wd stays the base's, as mup's MuAdam/MuSGD)
    and Adam eps (CompleteP's rule) in place, once, when the strategy is built. m = n_embd/base_width,
    m_L = n_layer/base_depth (completep), α = 1:
      Adam-like: hidden LR 1/m · m_L^(α−1), embed/head/norms 1 (norms m_L^(α−1)); eps 1/m (hidden and norms · m_L^−α);
      Muon matrices: 'original' 1 (its √(fan_out/fan_in) is already muP's spectral scaling), 'match_rms_adamw'
        m^−1/2 (its 0.2·√max(A, B) grows like √m: this keeps the base's factor); both · m_L^(α−1);
      SGD: hidden 1, embed/head/norms m (mup's MuSGD); CompleteP's depth rules are derived for Adam only."""
    check_parametrization(cfg)
    net = unwrap(model)
    mcfg = getattr(net, "cfg", None)
    built = {k: getattr(mcfg, k, None) for k in PARAMETRIZATION_KEYS}
    if cfg["parametrization"] == "sp" and built["parametrization"] in (None, "sp"):
        return {}
    check(built == {k: cfg[k] for k in PARAMETRIZATION_KEYS},
          f"the model was built with {built} but the strategy config has "
          f"{ {k: cfg[k] for k in PARAMETRIZATION_KEYS} }: build both from the same keys")
    inner = getattr(optimizer, "inner", optimizer)  # Lookahead wraps its AdamW
    check(not isinstance(inner, NO_MUP_RULE), f"parametrization={cfg['parametrization']!r} has no rule for "
                                              f"{type(inner).__name__}'s trust ratio: use an Adam-, Muon- or SGD-based strategy")
    sgd_rule = isinstance(inner, SGD_OPTIMIZERS)
    check(not sgd_rule or cfg["parametrization"] == "mup", "parametrization='completep': its depth rules are derived "
                                                           "for Adam; use an Adam- or Muon-based strategy, or 'mup'")
    m, m_depth = mcfg.width_mult(), mcfg.depth_mult()
    depth_lr = m_depth ** (COMPLETEP_ALPHA - 1)  # 1 at α = 1: CompleteP's hidden and norm LRs keep the base's depth
    mults = {}
    for g in optimizer.param_groups:
        hidden = g["kind"] in HIDDEN_KINDS  # the rest (embed, head, norms) are muP's vector-like weights
        if g.get("use_muon"):
            width_lr = 1.0 if g["scale"] == "original" else m ** -0.5
        elif sgd_rule:
            width_lr = 1.0 if hidden else m
        else:
            width_lr = 1.0 / m if hidden else 1.0
        mults[g["name"]] = width_lr * (depth_lr if hidden or g["kind"] == "norm" else 1.0)
        g["wd_mult"] = 1.0 / width_lr  # kept for rules that reset weight_decay (Layerwise with wd_follows_lr=False)
        g["weight_decay"] = g.get("weight_decay", 0.0) * g["wd_mult"]
        if isinstance(g.get("eps"), float) and not sgd_rule:
            g["eps"] *= (1.0 / m) * (m_depth ** -COMPLETEP_ALPHA if hidden or g["kind"] == "norm" else 1.0)
    return mults


# ----------------------------------------------------------------------------------------------
# The strategy interface and its registry


class Strategy:
    """Owns self.optimizer (a torch optimizer, or a wrapper with param_groups/step/zero_grad/state_dict)
    over named param groups and an optional self.scheduler (a torch lr_scheduler stepped once per
    update), both from build(model, cfg). A strategy registered with uses_schedule has no scheduler:
    its LR follows self.lam = schedule(cfg), each group at base_lr·λ(t), set at every step from t alone
    (so a resume or a cooldown branch needs no schedule state). Subclasses override step() only when
    the rule needs more than clip + optimizer.step() (SAM, Grokfast, DALS, layerwise).

    lr_mult (any strategy): optimizer_step() multiplies each matched group's LR for the update itself
    and restores it after, so whatever sets the LR (a torch lr_scheduler, λ(t), LLR's peaks, DALS) is
    unchanged and the whole LR curve of that group is scaled.

    Under DDP, state_dict() may be a collective (Muon gathers its sharded buffers): call it on every
    rank and save on one."""

    name = generation = rule = reference = ""
    defaults = {}       # the strategy's own hyperparameters (set by @register); each is a train.py config key
    uses_loss = False   # True: the loop passes the (all-reduced) loss of the step to step()
    uses_schedule = False  # True: the LR follows `schedule` (self.lam), not a schedule of the strategy's own
    scheduler = None

    def __init__(self, model, cfg):
        validate(cfg, list(COMMON) + list(self.defaults))
        check(self.uses_schedule or cfg["schedule"] == COMMON["schedule"],
              f"strategy {self.name!r} keeps a schedule of its own, so schedule={cfg['schedule']!r} would be ignored: "
              f"drop --schedule, or pick a strategy that follows it "
              f"({', '.join(n for n, s in STRATEGIES.items() if s.uses_schedule)})")
        self.cfg, self.lr, self.grad_clip = cfg, cfg["learning_rate"], cfg["grad_clip"]
        self.max_iters = cfg["max_iters"]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.lam = schedule(cfg) if self.uses_schedule else None
        self.optimizer, self.scheduler = self.build(model, cfg)
        for g in self.optimizer.param_groups if self.lam else []:
            g.setdefault("base_lr", g["lr"])
        # muP/CompleteP multipliers compose with lr_mult by multiplication, applied the same way for every strategy
        scaled, given = parametrization_mults(model, self.optimizer, cfg), self.group_lr_mults(cfg)
        combined = {n: given.get(n, 1.0) * scaled.get(n, 1.0) for n in {**given, **scaled}}
        self.lr_mults = {n: m for n, m in combined.items() if m != 1.0}

    def group_lr_mults(self, cfg):
        """{group name: multiplier} from lr_mult."""
        return lr_multipliers(cfg["lr_mult"], [g["name"] for g in self.optimizer.param_groups])

    def build(self, model, cfg):
        raise NotImplementedError

    def clip_grads(self):
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)

    def step(self, it, loss=None, closure=None):
        if self.lam is not None:
            lam = self.lam(it + 1)
            for g in self.optimizer.param_groups:
                g["lr"] = g["base_lr"] * lam
        self.clip_grads()
        self.optimizer_step()
        self.applied = self.group_lrs()  # before the scheduler moves on to the next update's LR
        if self.scheduler is not None and it + 1 < self.max_iters:  # the last update needs no next LR
            self.scheduler.step()

    def optimizer_step(self):
        """optimizer.step() with each lr_mult group's LR multiplied for this update only."""
        scaled = [(g, g["lr"]) for g in self.optimizer.param_groups if g["name"] in self.lr_mults]
        for g, lr in scaled:
            g["lr"] = lr * self.lr_mults[g["name"]]
        self.optimizer.step()
        for g, lr in scaled:  # exactly the value before: schedulers and checkpoints never see the multiplier
            g["lr"] = lr

    def zero_grad(self):
        self.optimizer.zero_grad(set_to_none=True)

    def group_lrs(self):
        """group name -> LR in the optimizer now, lr_mult included (torch schedulers: the next update's)."""
        return {g["name"]: g["lr"] * self.lr_mults.get(g["name"], 1.0) for g in self.optimizer.param_groups}

    def lrs(self):
        """group name -> LR of the last update (for logs)."""
        return getattr(self, "applied", None) or self.group_lrs()

    def log_record(self):
        """Extra fields for this step's metrics line: with lr_mult, the mean LR per kind."""
        return dict(lr_kind=self.lr_by_kind()) if self.lr_mults else {}

    def lr_by_kind(self):
        by_kind, lrs = {}, self.lrs()
        for g in self.optimizer.param_groups:
            by_kind.setdefault(g["kind"], []).append(lrs[g["name"]])
        return {k: sum(v) / len(v) for k, v in by_kind.items()}

    def eval_weights(self):
        """Context in which the model holds the weights to evaluate and save; the loop enters it around
        eval and checkpoints. The identity here; schedule-free AdamW swaps its averaged point x in."""
        return contextlib.nullcontext()

    def extra_state(self):
        """Strategy state outside optimizer and scheduler (filters, refit state)."""
        return {}

    def load_extra_state(self, sd):
        pass

    def state_dict(self):
        sd = {"optimizer": self.optimizer.state_dict(), **self.extra_state()}
        if self.scheduler is not None:
            sd["scheduler"] = self.scheduler.state_dict()
        return sd

    def load_state_dict(self, sd):
        base = [g.get("base_lr") for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(sd["optimizer"])
        for g, b in zip(self.optimizer.param_groups, base):  # this run's learning_rate and muon_lr, not the saved ones
            if b is not None:
                g["base_lr"] = b
        if self.scheduler is not None:
            self.scheduler.load_state_dict(sd["scheduler"])
        self.load_extra_state(sd)


STRATEGIES = {}  # name -> Strategy class, in catalogue order; filled by @register below


def register(name, generation, rule, reference, uses_loss=False, uses_schedule=False, **defaults):
    """Add a strategy: a function (model, cfg) -> (optimizer, scheduler) or a Strategy subclass.
    uses_schedule: its LR follows `schedule` (the builder returns no scheduler)."""
    def add(obj):
        cls = obj if isinstance(obj, type) else type(name, (Strategy,), {"build": lambda self, m, c: obj(m, c)})
        cls.name, cls.generation, cls.rule, cls.reference = name, generation, rule, reference
        cls.defaults, cls.uses_loss = defaults, uses_loss or cls.uses_loss
        cls.uses_schedule = uses_schedule or cls.uses_schedule
        STRATEGIES[name] = cls
        return obj
    return add


def hyperparameters():
    """COMMON and every strategy's own hyperparameter with its default (train.py's config keys)."""
    merged = dict(COMMON)
    for cls in STRATEGIES.values():
        for k, v in cls.defaults.items():
            if k in merged and merged[k] != v:
                raise RuntimeError(f"strategies disagree on the default of {k!r}: {merged[k]!r} vs {v!r}")
            merged[k] = v
    return merged


def default_config(**overrides):
    """A complete strategy config outside train.py (tests, eval/): the defaults plus overrides."""
    cfg = hyperparameters()
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
    return {**cfg, **overrides}


def build(name, model, cfg):
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; available: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](model, cfg)


def update(strategy, it, forward_backward, reduce=None):
    """One update of any strategy. forward_backward() computes the loss, backpropagates it and returns
    it detached; SAM calls it again at the perturbed weights. Strategies that read the loss (DALS) get
    reduce(loss) (under DDP: the mean over ranks). Gradients are cleared afterwards. Returns the loss."""
    loss = forward_backward()

    def closure():
        strategy.zero_grad()
        return forward_backward()
    strategy.step(it, loss=(reduce(loss) if reduce else loss) if strategy.uses_loss else None, closure=closure)
    strategy.zero_grad()
    return loss


# builders shared by the strategies below

def adam_args(cfg):
    return dict(betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["adam_eps"])


def adamw(groups, cfg):
    return torch.optim.AdamW(groups, lr=cfg["learning_rate"], fused=cfg["fused"] or None, **adam_args(cfg))


def sgd(groups, cfg):
    return torch.optim.SGD(groups, lr=cfg["learning_rate"], momentum=cfg["sgd_momentum"])


MUON = dict(muon_lr=0.0, muon_momentum=0.95, muon_nesterov=True, muon_ns_steps=5, muon_scale="match_rms_adamw")


def muon_adamw(groups, cfg):
    """Muon on the hidden matrices at muon_lr (0: learning_rate), AdamW on the rest at learning_rate;
    with match_rms_adamw scaling one LR serves both sides (Moonlight). Sets each group's base_lr."""
    check(not cfg["fused"], "fused=True is for torch's AdamW; MuonAdamW has no fused kernel: set fused=False")
    for g in rules.muon_split(groups):
        g["lr"] = g["base_lr"] = (cfg["muon_lr"] or cfg["learning_rate"]) if g["use_muon"] else cfg["learning_rate"]
    return rules.MuonAdamW(groups, lr=cfg["learning_rate"], momentum=cfg["muon_momentum"], nesterov=cfg["muon_nesterov"],
                           ns_steps=cfg["muon_ns_steps"], scale=cfg["muon_scale"], **adam_args(cfg))


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


# ----------------------------------------------------------------------------------------------
# The baseline and the 18 of "Learning Rate Engineering" (arXiv 2604.27295), in the paper's order.
# Where the paper gives a rule and no schedule (Adam, Lion, ...) it runs at constant LR, as the paper ran it.

SGD = dict(sgd_momentum=0.9)
DISC = dict(disc_factor=2.6, disc_levels=0)
LR_SCHED = torch.optim.lr_scheduler


@register("uniform", "baseline", "AdamW, one LR for every group: linear warmup, then `schedule` (cosine to min_lr_ratio)",
          "Loshchilov & Hutter, ICLR 2019; Goyal et al. 2017", uses_schedule=True)
def uniform(model, cfg):
    return adamw(decayed_groups(model, cfg), cfg), None


@register("fixed_sgd", "Gen1", "SGD, heavy-ball momentum, coupled L2; constant LR", "Robbins & Monro 1951; Polyak 1964", **SGD)
def fixed_sgd(model, cfg):
    return sgd(decayed_groups(model, cfg), cfg), None


@register("cosine_sgd", "Gen2", "SGD + cosine decay from η to η_min over max_iters (CosineAnnealingLR)",
          "Loshchilov & Hutter, ICLR 2017", **SGD)
def cosine_sgd(model, cfg):
    opt = sgd(decayed_groups(model, cfg), cfg)
    return opt, LR_SCHED.CosineAnnealingLR(opt, T_max=cfg["max_iters"], eta_min=cosine_eta_min(cfg))


@register("sgdr", "Gen2", "SGD + cosine with warm restarts, cycle i lasts T₀·T_mult^i steps (CosineAnnealingWarmRestarts)",
          "Loshchilov & Hutter, ICLR 2017", **SGD, sgdr_t0=0, sgdr_t_mult=2, sgdr_t0_steps=False, epoch_iters=0)
def sgdr(model, cfg):
    t0 = 10 if flag(cfg, "sgdr_t0_steps") else cfg["sgdr_t0"] or epoch_iters(cfg)
    opt = sgd(decayed_groups(model, cfg), cfg)
    return opt, LR_SCHED.CosineAnnealingWarmRestarts(opt, T_0=t0, T_mult=cfg["sgdr_t_mult"], eta_min=cosine_eta_min(cfg))


@register("adam", "Gen3", "Adam, bias-corrected moments, coupled L2 (weight_decay; the paper used 0); constant LR",
          "Kingma & Ba, ICLR 2015")
def adam(model, cfg):
    return torch.optim.Adam(decayed_groups(model, cfg), lr=cfg["learning_rate"], **adam_args(cfg)), None


@register("adamw", "Gen3", "Adam + decoupled weight decay; constant LR", "Loshchilov & Hutter, ICLR 2019")
def adamw_constant(model, cfg):
    return torch.optim.AdamW(decayed_groups(model, cfg), lr=cfg["learning_rate"], **adam_args(cfg)), None


@register("adabound", "Gen3", "Adam step clipped per coordinate to bounds converging to final_lr (Adam → SGD); constant LR",
          "Luo, Xiong, Liu, Sun, ICLR 2019", adabound_final_lr=0.01, adabound_gamma=1e-3)
def adabound(model, cfg):
    return rules.AdaBound(decayed_groups(model, cfg), lr=cfg["learning_rate"], final_lr=cfg["adabound_final_lr"],
                          gamma=cfg["adabound_gamma"], **adam_args(cfg)), None


@register("lars", "Gen4", "momentum SGD with a per-tensor trust ratio ‖w‖/(‖g‖+λ‖w‖); 1-D tensors excluded; constant LR",
          "You, Gitman, Ginsburg 2017, arXiv 1708.03888", **SGD, lars_trust=0.001, lars_ref=False)
def lars(model, cfg):
    ref = flag(cfg, "lars_ref")  # LARS owns its exclusions (ndim < 2); the reference decays everything
    return rules.LARS(decayed_groups(model, cfg, decay_all=True), lr=cfg["learning_rate"], momentum=cfg["sgd_momentum"],
                      trust=0.02 if ref else cfg["lars_trust"], reference=ref), None


@register("discriminative", "Gen4", "SGD, level l of K gets η/δ^(K−1−l) (input layers slower), δ 2.6; constant LR",
          "Howard & Ruder (ULMFiT), ACL 2018", **SGD, **DISC)
def discriminative(model, cfg):
    return sgd(discriminative_groups(model, cfg), cfg), None


@register("radam", "Gen5", "Adam with variance rectification r_t (plain momentum while ρ_t ≤ 5); constant LR",
          "Liu, Jiang, He, Chen, Liu, Gao, Han, ICLR 2020")
def radam(model, cfg):
    return torch.optim.RAdam(decayed_groups(model, cfg), lr=cfg["learning_rate"], decoupled_weight_decay=True,
                             **adam_args(cfg)), None


@register("lion", "Gen5", "w ← w − η(sign(β₁m + (1−β₁)g) + λw); m ← β₂m + (1−β₂)g; constant LR",
          "Chen, Liang, Huang, Real, ..., Le, NeurIPS 2023", lion_beta1=0.9, lion_beta2=0.99)
def lion(model, cfg):
    return rules.Lion(decayed_groups(model, cfg), lr=cfg["learning_rate"], betas=(cfg["lion_beta1"], cfg["lion_beta2"])), None


@register("lookahead_adamw", "Gen5", "AdamW fast weights; every k steps slow ← slow + α(fast − slow), fast ← slow; constant LR",
          "Zhang, Lucas, Hinton, Ba, NeurIPS 2019", lookahead_k=5, lookahead_alpha=0.5, lookahead_lazy_slow=False)
def lookahead_adamw(model, cfg):
    inner = torch.optim.AdamW(decayed_groups(model, cfg), lr=cfg["learning_rate"], **adam_args(cfg))
    return rules.Lookahead(inner, k=cfg["lookahead_k"], alpha=cfg["lookahead_alpha"], lazy=flag(cfg, "lookahead_lazy_slow")), None


@register("sam", "Gen5", "SGD on the gradient at w + ρg/‖g‖ (ASAM with sam_adaptive); constant LR",
          "Foret, Kleiner, Mobahi, Neyshabur, ICLR 2021; ASAM: Kwon, Kim, Park, Choi, ICML 2021",
          **SGD, sam_rho=0.05, sam_adaptive=False)
class SAM(Strategy):
    """Two forward-backward passes per step: the loop's gradient at w gives the ascent direction,
    closure() recomputes every micro-step at w + e, the base SGD step uses that gradient at w."""

    def build(self, model, cfg):
        return sgd(self.groups(model, cfg), cfg), None

    def groups(self, model, cfg):
        return decayed_groups(model, cfg)

    def step(self, it, loss=None, closure=None):
        if closure is None:
            raise RuntimeError(f"{self.name} needs closure(): it recomputes the loss and gradients at the perturbed weights")
        eps = rules.sam_perturb(self.params, self.cfg["sam_rho"], flag(self.cfg, "sam_adaptive"))
        closure()
        rules.sam_restore(self.params, eps)
        super().step(it)


@register("grokfast", "Gen5", "SGD on g + λ·EMA(g) (slow-gradient amplification), filter before clipping; constant LR",
          "Lee, Kang, Kim, Lee 2024, arXiv 2405.20233", **SGD, grokfast_alpha=0.98, grokfast_lamb=2.0, grokfast_ref=False)
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


@register("stlr_discriminative", "Gen5", "discriminative levels × slanted triangular LR: linear up for cut_frac·T, linear down, ratio 32",
          "Howard & Ruder (ULMFiT), ACL 2018", **SGD, **DISC, stlr_cut_frac=0.1, stlr_ratio=32.0,
          stlr_double_decay=False, stlr_per_epoch=False, epoch_iters=0)
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
          "Foret et al. 2021 + Howard & Ruder 2018 (paper's combination)", **SGD, **DISC, sam_rho=0.05, sam_adaptive=False)
class SAMDiscriminative(SAM):
    def groups(self, model, cfg):
        return discriminative_groups(model, cfg)


DALS_KEYS = dict(dals_alpha0=0.6, dals_tau2=0.002, dals_momentum=0.9, dals_warmup_frac=0.05, dals_trust=0.02,
                 dals_zero_first_lr=False, dals_min_dwell=0, dals_exclude_1d=False, dals_decoupled_wd=False)


@register("dals", "SOTA", "SGD on depth-blended g/EMA(g) with loss-phase EMA rate, clamped trust ratio; warmup + cosine",
          "Yao et al., arXiv 2604.27295", uses_loss=True, **DALS_KEYS)
class DALS(Strategy):
    """DALS and its two variants: rules.DALS with every group's LR set here from the schedule."""
    keys = dict(alpha0="dals_alpha0", tau2="dals_tau2", momentum="dals_momentum", warmup="dals_warmup_frac")

    def build(self, model, cfg):
        k = self.keys
        self.warmup = int(cfg[k["warmup"]] * cfg["max_iters"]) if k["warmup"] else 0
        groups = decayed_groups(model, cfg, rest_by_depth=True, decay_all=True)  # coupled L2 on everything, as the paper
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


@register("dals_fast", "SOTA", "DALS with raw gradient in phase 0, μ 0.85, short warmup", "Yao et al., arXiv 2604.27295",
          uses_loss=True, **DALS_KEYS, dals_fast_momentum=0.85, dals_fast_warmup_frac=0.02)
class DALSFast(DALS):
    keys = dict(alpha0="dals_alpha0", tau2="dals_tau2", momentum="dals_fast_momentum", warmup="dals_fast_warmup_frac")


@register("dals_acc", "SOTA", "DALS with α₀ 0.7, τ₂ 0.001 and warm restarts (T₀ = 10 epochs, doubling) instead of warmup + cosine",
          "Yao et al., arXiv 2604.27295", uses_loss=True, **DALS_KEYS, dals_acc_alpha0=0.7, dals_acc_tau2=0.001,
          dals_acc_t0=0, epoch_iters=0)
class DALSAcc(DALS):
    keys = dict(alpha0="dals_acc_alpha0", tau2="dals_acc_tau2", momentum="dals_momentum", warmup=None)

    def scale(self, it):
        return warm_restarts(it + 1, self.cfg["dals_acc_t0"] or 10 * epoch_iters(self.cfg))


# ----------------------------------------------------------------------------------------------
# Extras the paper discusses (not in its 18). Pure schedules run on momentum SGD, as the paper
# frames them; the rule-only extras run at constant LR.


@register("step_decay", "extra", "SGD, η·γ^⌊t/every⌋, γ 0.1, every max_iters/3 by default (StepLR)",
          "Krizhevsky et al. 2012; He et al. 2016", **SGD, step_decay_gamma=0.1, step_decay_every=0)
def step_decay(model, cfg):
    opt = sgd(decayed_groups(model, cfg), cfg)
    every = cfg["step_decay_every"] or max(1, cfg["max_iters"] // 3)
    return opt, LR_SCHED.StepLR(opt, step_size=every, gamma=cfg["step_decay_gamma"])


@register("exponential", "extra", "SGD, η·γ^t; γ 0 means min_lr_ratio^(1/max_iters) (ExponentialLR)",
          "classical; see Bengio 2012", **SGD, exp_decay_gamma=0.0)
def exponential(model, cfg):
    gamma = cfg["exp_decay_gamma"] or cfg["min_lr_ratio"] ** (1 / cfg["max_iters"])
    check(gamma > 0, "exp_decay_gamma 0 derives γ from min_lr_ratio, which must then be > 0")
    opt = sgd(decayed_groups(model, cfg), cfg)
    return opt, LR_SCHED.ExponentialLR(opt, gamma=gamma)


@register("warmup_cosine", "extra", "SGD, linear warmup t/W, then `schedule` (cosine to min_lr_ratio·η)",
          "Goyal et al. 2017 + Loshchilov & Hutter 2017", uses_schedule=True, **SGD)
def warmup_cosine_sgd(model, cfg):
    return sgd(decayed_groups(model, cfg), cfg), None


@register("cyclical", "extra", "SGD, triangular cycles between min_lr_ratio·η and η, momentum cycled inversely (CyclicLR)",
          "Smith, WACV 2017", **SGD, cyclic_half=0, cyclic_mode="triangular")
def cyclical(model, cfg):
    opt, mu = sgd(decayed_groups(model, cfg), cfg), cfg["sgd_momentum"]
    return opt, LR_SCHED.CyclicLR(opt, base_lr=cfg["min_lr_ratio"] * cfg["learning_rate"], max_lr=cfg["learning_rate"],
                                  step_size_up=cfg["cyclic_half"] or max(1, cfg["max_iters"] // 8), mode=cfg["cyclic_mode"],
                                  base_momentum=min(0.8, mu), max_momentum=mu)


@register("one_cycle", "extra", "SGD, one cycle: cosine up to η over 30 %, down to η/(25·1e4), momentum inverse (OneCycleLR)",
          "Smith 2018; Smith & Topin 2019", **SGD, onecycle_pct=0.3, onecycle_div=25.0, onecycle_final_div=1e4)
def one_cycle(model, cfg):
    opt, mu = sgd(decayed_groups(model, cfg), cfg), cfg["sgd_momentum"]
    return opt, LR_SCHED.OneCycleLR(opt, max_lr=cfg["learning_rate"], total_steps=cfg["max_iters"], pct_start=cfg["onecycle_pct"],
                                    div_factor=cfg["onecycle_div"], final_div_factor=cfg["onecycle_final_div"],
                                    base_momentum=min(0.85, mu), max_momentum=mu)


@register("adagrad", "extra", "per-coordinate η/√(Σg²); constant LR", "Duchi, Hazan, Singer, JMLR 2011")
def adagrad(model, cfg):
    return torch.optim.Adagrad(decayed_groups(model, cfg), lr=cfg["learning_rate"], eps=1e-10), None


@register("rmsprop", "extra", "η·g/(√EMA(g²) + ε), EMA rate 0.99; constant LR", "Tieleman & Hinton 2012 (Coursera lecture 6.5)",
          rmsprop_alpha=0.99)
def rmsprop(model, cfg):
    return torch.optim.RMSprop(decayed_groups(model, cfg), lr=cfg["learning_rate"], alpha=cfg["rmsprop_alpha"],
                               eps=cfg["adam_eps"]), None


@register("lamb", "extra", "Adam step + λw, scaled per tensor by ‖w‖/‖u‖; 1-D tensors excluded; constant LR",
          "You et al., ICLR 2020", lamb_eps=1e-6)
def lamb(model, cfg):  # LAMB owns its exclusions (ndim < 2)
    return rules.LAMB(decayed_groups(model, cfg, decay_all=True), lr=cfg["learning_rate"], betas=(cfg["beta1"], cfg["beta2"]),
                      eps=cfg["lamb_eps"]), None


@register("adafactor", "extra", "factored second moments (row/column), relative step off; constant LR (torch Adafactor)",
          "Shazeer & Stern, ICML 2018")
def adafactor(model, cfg):
    return torch.optim.Adafactor(decayed_groups(model, cfg), lr=cfg["learning_rate"]), None


@register("llrd", "extra", "AdamW, level l of K gets η·ξ^(K−1−l), ξ 0.95; constant LR", "Sun, Qiu, Xu, Huang 2019",
          llrd_xi=0.95, disc_levels=0)
def llrd(model, cfg):
    groups = decayed_groups(model, cfg, rest_by_depth=True)
    ls, K = depth_levels(model, groups, cfg["disc_levels"])
    for g, l in zip(groups, ls):
        g["lr"] = cfg["learning_rate"] * cfg["llrd_xi"] ** (K - 1 - l)
    return torch.optim.AdamW(groups, lr=cfg["learning_rate"], **adam_args(cfg)), None


@register("gradual_unfreezing", "extra", "AdamW; top level trains first, one more level every unfreeze_every steps (frozen = LR 0)",
          "Howard & Ruder (ULMFiT), ACL 2018", unfreeze_every=0, disc_levels=0, epoch_iters=0)
def gradual_unfreezing(model, cfg):
    every = cfg["unfreeze_every"] or epoch_iters(cfg)
    groups = decayed_groups(model, cfg, rest_by_depth=True)
    ls, K = depth_levels(model, groups, cfg["disc_levels"])
    # LR 0 rather than requires_grad toggling: no DDP unused-parameter errors, no recompiles
    fns = [lambda s, start=(K - 1 - l) * every: 1.0 if s >= start else 0.0 for l in ls]
    opt = torch.optim.AdamW(groups, lr=cfg["learning_rate"], **adam_args(cfg))
    return opt, LR_SCHED.LambdaLR(opt, fns)


@register("grokfast_ma", "extra", "SGD on g + λ·mean(last w grads) once w grads are queued, w 100, λ 5; constant LR",
          "Lee, Kang, Kim, Lee 2024, arXiv 2405.20233", **SGD, grokfast_ma_window=100, grokfast_ma_lamb=5.0)
class GrokfastMA(Grokfast):
    def build(self, model, cfg):
        self.filter = rules.GrokfastMA(self.params, cfg["grokfast_ma_window"], cfg["grokfast_ma_lamb"])
        return sgd(decayed_groups(model, cfg), cfg), None


@register("muon", "extra", "Muon (Newton-Schulz-orthogonalised momentum) on hidden matrices, AdamW on the rest; warmup + `schedule`",
          "Jordan et al. 2024; Liu et al. 2025, arXiv 2502.16982", uses_schedule=True, **MUON)
def muon(model, cfg):
    return muon_adamw(decayed_groups(model, cfg), cfg), None


@register("schedule_free", "extra", "schedule-free AdamW: gradient at y = (1−β₁)z + β₁x, z takes the AdamW step, x is the "
          "LR²-weighted average of z; warmup, then constant; eval and checkpoints at x", "Defazio et al., NeurIPS 2024 "
          "(arXiv 2405.15682)", sf_r=0.0, sf_weight_lr_power=2.0)
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
            raise ConfigError("strategy 'schedule_free' needs the schedulefree package: pip install schedulefree") from None
        self.lam = schedule({**cfg, "schedule": "constant"})  # warmup, then 1
        opt = AdamWScheduleFree(decayed_groups(model, cfg), lr=cfg["learning_rate"], betas=(cfg["beta1"], cfg["beta2"]),
                                eps=cfg["adam_eps"], warmup_steps=0, r=cfg["sf_r"], weight_lr_power=cfg["sf_weight_lr_power"])
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


# ----------------------------------------------------------------------------------------------
# The layerwise family: heavy-tail guided layerwise LRs (LLR; He et al., ICML 2026) and its baselines.
# Every weight matrix is its own group at lr_i(t) = base_i · m_i(t), m_i(t) = peak_i · λ(t), λ = the
# chosen `schedule` (warmup + cosine by default); base_i is learning_rate, or muon_lr for Muon's hidden
# matrices. docs/llr.md.

LAYERWISE = dict(MUON, wd_follows_lr=True, alpha_correction="none")  # "shape": spectral.shape_corrected_alpha
EMBED_KINDS = ("embed", "head")
HTSR_FIT = dict(method="median", metric="alpha", min_evals=50, xmin_pos=2, label="htsr")  # the HT-SR family's fit


def check_range(cfg, prefix):
    """ConfigError unless <prefix>_s1 <= <prefix>_s2 (both > 0 by DOMAINS)."""
    s1, s2 = cfg[f"{prefix}_s1"], cfg[f"{prefix}_s2"]
    check(s1 <= s2, f"{prefix}_s1 must be in (0, {prefix}_s2], got {prefix}_s1={s1}, {prefix}_s2={s2}")


def alpha_to_peak(alphas, s1, s2, kind="linear", tau=10.0):
    """Peak multipliers (× base LR) from a {name: α} dict: linear over [s1, s2] across the α range,
    or n·f(α)/Σf(α) for f = sqrt, log2, or 2σ(4z) of the z-scored α (docs/llr.md); tb_sigmoid (model
    balancing, Liu et al. 2024): 10^φ, φ = s·(σ(τ(α − mean α)) − 1/2), s = s1 below the mean α, s2 above."""
    names, a = list(alphas), torch.tensor(list(alphas.values()), dtype=torch.float64)
    n = len(a)
    if kind == "linear":
        lo, hi = a.min(), a.max()
        m = torch.full_like(a, s1) if hi == lo else s1 + (s2 - s1) * (a - lo) / (hi - lo)
    elif kind == "sqrt":
        m = n * a.sqrt() / a.sqrt().sum()
    elif kind == "log2":
        m = n * a.log2() / a.log2().sum()
    elif kind == "sigmoid":  # multipliers in (0, 2), mean α at 1
        std = a.std() if n > 1 else torch.tensor(0.0, dtype=torch.float64)
        z = (a - a.mean()) / std if std > 0 else torch.zeros_like(a)
        m = 2 / (1 + torch.exp(-4 * z))
    elif kind == "tb_sigmoid":  # multipliers in (10^(−s1/2), 10^(s2/2)), 1 at the mean α
        d = a - a.mean()
        s = torch.where(d < 0, torch.tensor(float(s1), dtype=torch.float64), torch.tensor(float(s2), dtype=torch.float64))
        m = 10 ** (s * (torch.sigmoid(tau * d) - 0.5))
    else:
        raise ValueError(f"unknown llr_map {kind!r}; choose one of {', '.join(MAPS)}")
    return dict(zip(names, m.tolist()))


class Layerwise(Strategy):
    """Per-matrix groups on AdamW (or Muon + AdamW with use_muon), each at base_i · m_i(t). Subclasses
    decide the peaks (initial_peaks) and may change them during training (LLR's refits)."""

    use_muon = False
    uses_schedule = True  # λ(t) = self.lam, the chosen `schedule`
    scales_wd = False     # True: set_lrs sets each decayed group's weight_decay to weight_decay · wd_mults[name]

    def build(self, model, cfg):
        groups = decayed_groups(model, cfg)
        if self.use_muon:
            opt = muon_adamw(groups, cfg)
        else:
            opt = adamw(groups, cfg)
            for g in opt.param_groups:
                g["base_lr"] = self.lr
        self.names = [g["name"] for g in opt.param_groups]
        self.kinds = {g["name"]: g["kind"] for g in opt.param_groups}
        self.peaks = self.initial_peaks(cfg)
        self.current = {name: 0.0 for name in self.names}  # m_i of the last update
        self.ramp = None  # moves m_i linearly from `start` (at update t0 - 1) to `target` (at update t0 + length)
        self.pending_log = None  # refit details waiting for the next metrics line
        self.model, self.alphas, self.last_refit, self.warned = model, {}, 0, set()  # the refit state (fit, refit)
        self.wd_mults = {name: 1.0 for name in self.names}  # × each group's weight decay (scales_wd strategies only)
        return opt, None

    def initial_peaks(self, cfg):
        return {name: 1.0 for name in self.names}

    def base_mult(self, t):
        return self.lam(t)

    def multipliers(self, t):
        """m_i for update t (1-based)."""
        if self.ramp is not None and t <= self.ramp["t0"] + self.ramp["length"]:
            r = self.ramp
            frac = (t - r["t0"] + 1) / (r["length"] + 1)
            return {n: r["start"][n] + (r["target"][n] - r["start"][n]) * frac for n in self.names}
        lam = self.base_mult(t)
        return {n: self.peaks[n] * lam for n in self.names}

    def set_lrs(self, t):
        mult, wd, follows = self.multipliers(t), self.cfg["weight_decay"], self.cfg["wd_follows_lr"]
        for g in self.optimizer.param_groups:
            name = g["name"]
            g["lr"] = g["base_lr"] * mult[name]
            if (not follows or self.scales_wd) and g["weight_decay"] > 0:
                wd_g = wd * g.get("wd_mult", 1.0) * self.wd_mults[name]  # muP's width factor; AlphaDecay's multiplier
                # wd_follows_lr=False: keep lr·wd at base_lr·λ(t)·wd_g whatever the group's LR multiplier
                g["weight_decay"] = wd_g if follows else wd_g * self.base_mult(t) / mult[name] if mult[name] > 0 else wd_g
        self.current = mult

    # --- refits: shared by LLR and the HT-SR family (TempBalance, tempbalance_block, AlphaDecay) ---

    def fit_args(self):
        """spectral.analyze settings of fit(): PL_Alpha_Hill with xmin at the median (LLR: its llr_* keys)."""
        return dict(HTSR_FIT)

    def fit(self):
        """{name: metric} for every fitted matrix this refit (identical on every rank under DDP)."""
        return self.fit_alphas(**self.fit_args())

    def fit_alphas(self, method, metric, min_evals, xmin_pos, label):
        """Fit `metric` of every group's matrix; a skipped or non-finite one is left out (it keeps its previous
        multiplier), with one warning per degenerate matrix (too few eigenvalues is quiet)."""
        rows = spectral.analyze(self.model, method=method, metrics=(metric,), min_evals=min_evals, xmin_pos=xmin_pos,
                                filter_zeros=False)
        values = {}
        for row in rows:
            if row["name"] not in self.kinds:
                continue
            value = row.get(metric)
            if row["skipped"] or value is None or not math.isfinite(value):
                if row["name"] not in self.warned and row["N"] * row["M"] > 0 and row["M"] >= min_evals:
                    print(f"{label}: {row['name']} not refitted ({row['skipped'] or 'no finite fit'}); it keeps its previous LR")
                    self.warned.add(row["name"])
                continue
            if self.cfg["alpha_correction"] == "shape" and metric == "alpha":  # the aspect-ratio bias taken out
                value = spectral.shape_corrected_alpha(value, row["N"], row["M"], method, xmin_pos)
            values[row["name"]] = value
        if not values and "no fit" not in self.warned:  # every matrix below min_evals: the method would do nothing
            print(f"{label}: no matrix has {min_evals} eigenvalues or more, so none is fitted and every LR stays at its "
                  f"previous multiplier: lower {'--llr_min_evals' if label == 'llr' else 'min_evals in optim.HTSR_FIT'} for matrices this small")
            self.warned.add("no fit")
        return values

    def periodic(self, t, every, until=INF):
        """The refit calendar: t = 1 and every `every` updates while t <= until."""
        return t == 1 or (t % every == 0 and t <= until)

    def due(self, t):
        return False  # no refits (uniform_muon, uniform_upbound)

    def refit(self, t):
        raise NotImplementedError

    def refit_record(self, it):
        """The metrics-line fields of a refit made before update it (0-based)."""
        return dict(refit_iter=it, alpha=dict(self.alphas), lrs=self.lrs())

    def step(self, it, loss=None, closure=None):
        if self.due(it + 1):
            self.refit(it + 1)
            self.set_lrs(it + 1)
            self.pending_log = self.refit_record(it)
        self.set_lrs(it + 1)
        self.clip_grads()
        self.optimizer_step()

    def log_record(self):
        """Mean LR per kind on every log line; the last refit's alphas and LRs once after each refit."""
        record, self.pending_log = self.pending_log or {}, None
        return dict(record, lr_kind=self.lr_by_kind())

    def extra_state(self):
        return dict(peaks=dict(self.peaks), ramp=self.ramp, current=self.current, alphas=self.alphas,
                    last_refit=self.last_refit, wd_mults=dict(self.wd_mults))

    def load_extra_state(self, sd):
        self.peaks, self.ramp, self.current = dict(sd["peaks"]), sd["ramp"], sd["current"]
        self.alphas, self.last_refit = dict(sd.get("alphas", {})), sd.get("last_refit", 0)  # absent before the HT-SR family
        self.wd_mults = dict(sd.get("wd_mults", self.wd_mults))


LLR_KEYS = dict(LAYERWISE, llr_s1=1.0, llr_s2=5.0, llr_every=100, llr_ramp=50, llr_ratio=0.2, llr_method="median",
                llr_xmin_pos=2, llr_map="linear", llr_embed="max", llr_embed_lr=-1.0, llr_metric="alpha", llr_min_evals=50,
                llr_drop_late_refits=False, llr_normalize=False)


@register("llr", "LLR", "per-matrix peak LR from the PL_Alpha_Hill of its ESD, linear in α over [s1, s2]·η; refit early, then frozen",
          "He, Wang, Yin, Liu, Tu, ICML 2026 (arXiv 2605.22297)", **LLR_KEYS)
class LLR(Layerwise):
    """At update t = 1 and every llr_every updates while t ≤ llr_ratio·max_iters: fit α of every matrix,
    map it onto peaks (light tail = large α = large LR; embedding and head per llr_embed), and ramp each
    group linearly from its current multiplier to new_peak·λ(t + llr_ramp) over llr_ramp updates
    (0: switch at once). Then the peaks are frozen and follow λ(t) to the end.

    llr_drop_late_refits (faithful): no refit after the phase (so llr_ratio = 0 stays uniform), and a refit
    whose ramp would end after it (t + llr_ramp > llr_ratio·max_iters) runs only until the phase ends; then
    the peaks of the last refit before it come back (1 if none). llr_normalize: after each refit, all
    matrix peaks (embedding and head included, the rest group not) are divided by their parameter-weighted
    mean, so LLR redistributes the LR instead of raising it (docs/llr.md)."""

    def build(self, model, cfg):
        check_range(cfg, "llr")
        self.embed_rule = "fixed" if cfg["llr_embed_lr"] > 0 else cfg["llr_embed"]
        self.phase_end, self.drop_late = cfg["llr_ratio"] * cfg["max_iters"], flag(cfg, "llr_drop_late_refits")
        self.kept, self.late = None, []  # drop_late: the peaks to restore at the phase end, and the late refits
        built = super().build(model, cfg)
        self.sizes = {g["name"]: sum(p.numel() for p in g["params"]) for g in built[0].param_groups}
        return built

    def due(self, t):
        if self.drop_late and t > self.phase_end:
            return False
        return self.periodic(t, self.cfg["llr_every"], self.cfg["llr_ratio"] * self.max_iters)

    def fit_args(self):
        c = self.cfg
        return dict(method=c["llr_method"], metric=c["llr_metric"], min_evals=c["llr_min_evals"], xmin_pos=c["llr_xmin_pos"],
                    label="llr")

    def new_peaks(self, alphas):
        peaks, rule = dict(self.peaks), self.embed_rule
        mapped = {n: a for n, a in alphas.items() if rule == "data" or self.kinds[n] not in EMBED_KINDS}
        if mapped:
            if rule == "max":  # embedding and head take the top of the range
                top = max(mapped.values())
                mapped.update({n: top for n in alphas if self.kinds[n] in EMBED_KINDS})
            peaks.update(alpha_to_peak(mapped, self.cfg["llr_s1"], self.cfg["llr_s2"], self.cfg["llr_map"]))
        for n in self.names:
            if self.kinds[n] in EMBED_KINDS and rule in ("fixed", "base"):
                peaks[n] = self.cfg["llr_embed_lr"] / self.lr if rule == "fixed" else 1.0
            if self.kinds[n] == "norm":
                peaks[n] = 1.0
        return peaks

    def normalized(self, peaks):
        """Peaks with the parameter-weighted mean multiplier over all matrices (not the rest group) at 1."""
        matrices = [n for n in self.names if self.kinds[n] != "norm"]
        mean = sum(self.sizes[n] * peaks[n] for n in matrices) / sum(self.sizes[n] for n in matrices)
        return {n: p / mean if self.kinds[n] != "norm" else p for n, p in peaks.items()}

    def refit(self, t):
        self.alphas = self.fit()
        start = {n: 0.0 for n in self.names} if t == 1 else dict(self.current)
        length = self.cfg["llr_ramp"]
        if self.drop_late and t + length > self.phase_end:
            self.kept = dict(self.peaks) if self.kept is None else self.kept  # the last refit that completes
            self.late.append(t)
        self.peaks = self.new_peaks(self.alphas)
        if self.cfg["llr_normalize"]:
            self.peaks = self.normalized(self.peaks)
        lam_end = self.base_mult(t + length)
        self.ramp = dict(t0=t, length=length, start=start, target={n: self.peaks[n] * lam_end for n in self.names})
        self.last_refit = t

    def step(self, it, loss=None, closure=None):
        if self.kept is not None and it + 1 > self.phase_end:  # drop_late: the late refits are undone
            self.peaks, self.ramp, self.kept = self.kept, None, None
            self.pending_log = dict(dropped_refit_iters=[t - 1 for t in self.late])
        super().step(it)  # the refit when due (Layerwise.step), then the update

    def extra_state(self):
        return dict(super().extra_state(), kept=self.kept, late=self.late)

    def load_extra_state(self, sd):
        super().load_extra_state(sd)
        self.kept, self.late = sd.get("kept"), list(sd.get("late", []))  # absent in checkpoints before the flag


@register("llr_muon", "LLR", "LLR multipliers on Muon (hidden matrices, muon_lr) and AdamW (embed, head, norms; learning_rate)",
          "He, Wang, Yin, Liu, Tu, ICML 2026 (arXiv 2605.22297)", **LLR_KEYS)
class LLRMuon(LLR):
    use_muon = True


@register("uniform_muon", "baseline", "Muon at muon_lr on hidden matrices, AdamW at learning_rate elsewhere; warmup + cosine",
          "Jordan et al. 2024; Liu et al. 2025 (arXiv 2502.16982)", **LAYERWISE)
class UniformMuon(Layerwise):
    use_muon = True


@register("uniform_upbound", "baseline", "AdamW with llr_s2 × learning_rate for every group: LLR's top LR, uniformly",
          "He et al., ICML 2026 (baseline)", **LAYERWISE, llr_s2=5.0)
class UniformUpbound(Layerwise):
    def initial_peaks(self, cfg):
        return {name: cfg["llr_s2"] for name in self.names}


# Sharpness-disparity multipliers (Wang et al. 2025, arXiv 2502.19002) as the LLR paper runs them
BLOCKWISE = {"norm": 1.0, "attn_qk": 8.0, "attn_vo": 4.0, "mlp": 6.0, "embed": 10.0, "head": 10.0}


@register("blockwise", "baseline", "uniform AdamW with fixed lr_mult by kind: norm 1, q/k 8, v/o 4, mlp 6, embed/head 10 (× learning_rate)",
          "Wang et al. 2025, arXiv 2502.19002", uses_schedule=True)
class Blockwise(Strategy):
    """`uniform` with each group's lr_mult set to BLOCKWISE of its kind: configs/blockwise.py spells the same
    as lr_mult patterns on `uniform`. An lr_mult given with it comes first (the first match wins)."""

    def build(self, model, cfg):
        return uniform(model, cfg)

    def group_lr_mults(self, cfg):
        given = super().group_lr_mults(cfg)
        return {g["name"]: given.get(g["name"], BLOCKWISE[g["kind"]]) for g in self.optimizer.param_groups}


# The HT-SR family beside LLR: refit through all of training on Layerwise's fit and calendar (docs/llr.md).
# TempBalance (per matrix) and model balancing (per block) set LR multipliers, AlphaDecay weight-decay multipliers.
TB_KEYS = dict(LAYERWISE, tb_s1=0.5, tb_s2=1.5, tb_every=0, epoch_iters=0)  # tb_every 0: once per optim.epoch_iters
TBB_KEYS = dict(LAYERWISE, tbb_s1=1.25, tbb_s2=1.25, tbb_tau=10.0, tb_every=0, epoch_iters=0)
AD_KEYS = dict(LAYERWISE, ad_s1=0.67, ad_s2=1.5, ad_every=500)


@register("tempbalance", "HT-SR", "per-matrix LR = λ(t)·η·(s1 + (s2 − s1)(α − α_min)/(α_max − α_min)), s 0.5..1.5; "
          "PL_Alpha_Hill refit every epoch, all of training",
          "Zhou, Pang, Liu, Martin, Mahoney, Yang, NeurIPS 2023 (arXiv 2312.00359)", **TB_KEYS)
class TempBalance(Layerwise):
    """At t = 1 and every tb_every updates (0: optim.epoch_iters) to the end: fit α of every matrix (embedding
    and head included, as the paper treats the first and last layer) and set its peak to the linear map of α
    over [tb_s1, tb_s2] at once; the rest group (norms) stays at 1 and a skipped matrix keeps its peak."""

    def build(self, model, cfg):
        self.check_keys(cfg)
        self.every = cfg["tb_every"] or epoch_iters(cfg)
        return super().build(model, cfg)

    def check_keys(self, cfg):
        check_range(cfg, "tb")

    def due(self, t):
        return self.periodic(t, self.every)

    def mapped(self, alphas):
        """{name: peak} of the fitted matrices."""
        fitted = {n: a for n, a in alphas.items() if self.kinds[n] != "norm"}
        return alpha_to_peak(fitted, self.cfg["tb_s1"], self.cfg["tb_s2"]) if fitted else {}

    def refit(self, t):
        self.alphas = self.fit()
        self.peaks = {**self.peaks, **self.mapped(self.alphas)}
        self.ramp, self.last_refit = None, t  # the switch is immediate


@register("tempbalance_block", "HT-SR", "TempBalance per transformer block: block α = mean α of its matrices, LR × "
          "10^(s·(σ(τ(α_block − mean)) − 1/2)), τ 10, s 1.25",
          "Liu, Hu, Pang, Zhou, Ren, Yang, EMNLP 2024 (arXiv 2410.12178); Zhou et al., NeurIPS 2023 (arXiv 2312.00359)",
          **TBB_KEYS)
class TempBalanceBlock(TempBalance):
    """TempBalance's calendar with model balancing's TB_Sigmoid map over units: each 'blocks.<i>' is one unit
    (the mean α of its fitted matrices), the embedding and the head are one unit each; every matrix of a unit
    gets the unit's multiplier. tbb_s1 is s for units below the mean α, tbb_s2 above (the paper's (s1, s2))."""

    def check_keys(self, cfg):
        pass  # any s1, s2 > 0 (the paper's best pair is often (2, 1))

    @staticmethod
    def unit(name):
        m = re.match(r"blocks\.(\d+)\.", name)
        return f"blocks.{m.group(1)}" if m else name

    def mapped(self, alphas):
        by_unit = {}
        for n, a in alphas.items():
            if self.kinds[n] != "norm":
                by_unit.setdefault(self.unit(n), []).append(a)
        self.unit_alphas = {u: sum(v) / len(v) for u, v in by_unit.items()}
        if not self.unit_alphas:
            return {}
        c = self.cfg
        mult = alpha_to_peak(self.unit_alphas, c["tbb_s1"], c["tbb_s2"], "tb_sigmoid", tau=c["tbb_tau"])
        return {n: mult[self.unit(n)] for n in self.names if self.kinds[n] != "norm" and self.unit(n) in mult}

    def refit_record(self, it):
        return dict(super().refit_record(it), block_alpha=dict(self.unit_alphas))


@register("alphadecay", "HT-SR", "uniform AdamW LR; per-matrix weight decay = wd·(s1 + (s2 − s1)(α − α_min)/(α_max − α_min)), "
          "s 0.67..1.5 (heavy tail, less decay); refit every 500 steps",
          "He, Tu, Jaiswal, Shen, Yuan, Liu, Yin, NeurIPS 2025 (arXiv 2506.14562)", **AD_KEYS)
class AlphaDecay(Layerwise):
    """Every group at learning_rate·λ(t), as `uniform`. At t = 1 and every ad_every updates to the end: fit α of
    every matrix with weight decay (embedding and head included) and set its weight_decay to weight_decay times
    the linear map of α over [ad_s1, ad_s2] (smaller α, less decay); a skipped matrix keeps its multiplier."""

    scales_wd = True

    def build(self, model, cfg):
        check_range(cfg, "ad")
        built = super().build(model, cfg)
        self.decayed = {g["name"] for g in built[0].param_groups if g["weight_decay"] > 0}
        return built

    def due(self, t):
        return self.periodic(t, self.cfg["ad_every"])

    def refit(self, t):
        self.alphas = self.fit()
        fitted = {n: a for n, a in self.alphas.items() if n in self.decayed and self.kinds[n] != "norm"}
        if fitted:
            self.wd_mults.update(alpha_to_peak(fitted, self.cfg["ad_s1"], self.cfg["ad_s2"]))
        self.last_refit = t

    def refit_record(self, it):
        return dict(super().refit_record(it), wd={g["name"]: g["weight_decay"] for g in self.optimizer.param_groups})


# ----------------------------------------------------------------------------------------------

PAPER_18 = ("fixed_sgd", "cosine_sgd", "sgdr", "adam", "adamw", "adabound", "lars", "discriminative", "radam", "lion",
            "lookahead_adamw", "sam", "grokfast", "stlr_discriminative", "sam_discriminative", "dals", "dals_fast", "dals_acc")
LAYERWISE_FAMILY = ("llr", "llr_muon", "uniform_muon", "uniform_upbound", "blockwise", "tempbalance", "tempbalance_block",
                    "alphadecay")
CATALOGUE = tuple(n for n in STRATEGIES if n not in LAYERWISE_FAMILY)  # uniform, the 18, the extras, muon

if __name__ == "__main__":
    import sys
    if sys.argv[1:] != ["--list"]:
        raise SystemExit("usage: python optim.py --list")
    print(f"{'name':<20} {'gen':<9} rule  [reference]")
    for key, cls in STRATEGIES.items():
        print(f"{key:<20} {cls.generation:<9} {cls.rule}  [{cls.reference}]")
