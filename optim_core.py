"""
The strategy interface of optim.py and its one registry: config keys with their domains (key, COMMON_KEYS, validate),
the muP/CompleteP LR multipliers, Strategy, @register and STRATEGIES, build/update, and the optimizer builders the
strategies share. A strategy module (optim_catalogue.py, optim_layerwise.py, a forker's optim_<name>.py) imports
from here, never from optim.py, which imports them all.
"""
import collections
import contextlib
import math

import torch

import rules
from groups import unwrap
from schedules import DECAY_SHAPES, SCHEDULES, ConfigError, check, lr_mult_ok, lr_multipliers, schedule

# ----------------------------------------------------------------------------------------------
# Config keys: each declared once, with its default, its domain and one line of doc, where it is used


# a domain is a pair (test, text): test(value) is True inside it, text completes "<key> must be ..."
def interval(lo, hi, ends="[)"):
    inside = lambda v: (v > lo if ends[0] == "(" else v >= lo) and (v < hi if ends[1] == ")" else v <= hi)
    return inside, f"in {ends[0]}{lo}, {hi}{ends[1]}"


def integer(lo):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo, f"an integer >= {lo}"


def one_of(*choices):
    return lambda v: v in choices, f"one of {', '.join(map(str, choices))}"


INF = math.inf
PROB, POS, NONNEG, UNIT = interval(0, 1), interval(0, INF, "()"), interval(0, INF), interval(0, 1, "[]")
BOOL = (lambda v: isinstance(v, bool), "True or False")
REAL = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), "a finite number")

Key = collections.namedtuple("Key", "default domain doc quirk", defaults=(False,))


def key(default, domain, doc):
    """A config key: its default (train.py's default too), its domain and what it does, in one line."""
    return Key(default, domain, doc)


def quirk(doc):
    """A reference-code quirk of the strategies paper: a boolean key, off by default, on with faithful=True."""
    return Key(False, BOOL, doc, quirk=True)


def inside(domain, value):
    try:
        return bool(domain[0](value))
    except TypeError:
        return False


KEYS = {}  # key name -> Key, every declared key: COMMON_KEYS, then each strategy's as it registers


def declare(owner, keys):
    """Add keys to KEYS, all or none. A key without a domain, a default outside its domain, or a default or domain
    that differs from an earlier declaration of the same key is an error here, at import, naming owner and key."""
    for k, d in keys.items():
        if not isinstance(d, Key):
            raise TypeError(f"{owner}: key {k!r} has no domain: declare it as {k}=key({d!r}, <domain>, '<what it "
                            f"does>') (domains: optim_core.POS, UNIT, BOOL, integer(0), one_of(...), ...)")
        if not inside(d.domain, d.default):
            raise ValueError(f"{owner}: key {k!r} has default {d.default!r}, which is not {d.domain[1]}")
        old = KEYS.get(k, d)
        if (old.default, old.domain[1], old.quirk) != (d.default, d.domain[1], d.quirk):  # domain tests are lambdas
            raise ValueError(f"{owner}: key {k!r} is declared with default {d.default!r} ({d.domain[1]}), but another "
                             f"declaration has {old.default!r} ({old.domain[1]}): share one declaration, or rename it")
    for k, d in keys.items():
        KEYS.setdefault(k, d)


def defaults_of(keys):
    return {k: d.default for k, d in keys.items()}


def validate(cfg, keys):
    """ConfigError for the first key whose value is outside its domain; the same message for every strategy."""
    for k in keys:
        check(inside(KEYS[k].domain, cfg[k]), f"{k} must be {KEYS[k].domain[1]}, got {cfg[k]!r}")


# Keys every strategy reads; train.py's config (and default_config) start from these.
COMMON_KEYS = dict(
    learning_rate=key(3e-3, POS, "the peak LR η (each strategy says which groups run at it)"),
    max_iters=key(1000, integer(1), "updates in the run; schedules end here"),
    warmup_frac=key(0.1, UNIT, "warmup length as a fraction of max_iters, when warmup_iters < 0"),
    warmup_iters=key(-1, integer(-1), "warmup length in updates (-1: warmup_frac·max_iters)"),
    min_lr_ratio=key(0.1, UNIT, "the LR at the end of the decay, as a fraction of the peak"),
    weight_decay=key(0.1, NONNEG, "weight decay of the matrices (and of norms with decay_norms)"),
    decay_norms=key(False, BOOL, "decay norm gains and biases too"),
    beta1=key(0.9, PROB, "Adam's β₁ (schedule-free: the interpolation β)"),
    beta2=key(0.95, PROB, "Adam's β₂"),
    adam_eps=key(1e-8, POS, "Adam's ε"),
    grad_clip=key(0.0, NONNEG, "clip the global gradient norm to this (0: off)"),
    fused=key(False, BOOL, "torch's fused AdamW kernel"),
    faithful=key(False, BOOL, "turn on every reference-code quirk of the strategies paper (optim.FAITHFUL_FLAGS)"),
    schedule=key("cosine", one_of(*SCHEDULES), "λ(t) of the strategies that follow it (schedules.schedule)"),
    decay_frac=key(0.2, UNIT, "wsd: the decay's share of max_iters"),
    decay_shape=key("1-sqrt", one_of(*DECAY_SHAPES), "wsd and cooldown branches: the decay's shape"),
    decay_power=key(2.0, POS, "decay_shape='power': the exponent"),
    lr_mult=key((), (lr_mult_ok, 'a list of (pattern, multiplier >= 0) pairs, e.g. [("embed", 10.0), '
                                 '("blocks.*.attn.[qk]", 8.0)]'), "(group pattern, LR multiplier) pairs, first match"),
    parametrization=key("sp", one_of("sp", "mup", "completep"), "width/depth parametrization (docs/mup.md)"),
    base_width=key(0, integer(0), "muP/CompleteP: n_embd of the tuned base model"),
    base_depth=key(0, integer(0), "CompleteP: n_layer of the tuned base model"),
    base_head_dim=key(0, integer(0), "the base model's head dimension, for muP's attention scale (0: this model's)"),
)
declare("COMMON", COMMON_KEYS)
COMMON = defaults_of(COMMON_KEYS)


def flag(cfg, name):
    return bool(cfg.get(name, False) or cfg.get("faithful", False))


# ----------------------------------------------------------------------------------------------
# Width and depth parametrization: muP (Yang et al. 2022, arXiv 2203.03466) and CompleteP (Dey et al. 2025,
# arXiv 2505.01618). model.py applies the init and forward multipliers; here each group's LR, weight decay and
# Adam eps are scaled relative to the base model (docs/mup.md has every rule and its source).

PARAMETRIZATION_KEYS = ("parametrization", "base_width", "base_depth", "base_head_dim")  # also ModelConfig fields
HIDDEN_KINDS = ("attn_qk", "attn_vo", "mlp")  # muP's matrix-like (hidden) weights; embed, head, norms are vector-like
COMPLETEP_ALPHA = 1.0  # model.COMPLETEP_ALPHA (optim does not import model)
SGD_OPTIMIZERS = (torch.optim.SGD, rules.DampenedSGD)  # muP's SGD rule; every other optimizer here is Adam-like


def check_parametrization(cfg):
    """ConfigError for a parametrization without the base shape it is relative to."""
    validate(cfg, PARAMETRIZATION_KEYS)
    p = cfg["parametrization"]
    check(p == "sp" or cfg["base_width"] > 0, f"parametrization={p!r} needs base_width: set --base_width=<n_embd of "
                                              f"the tuned base model, e.g. 128>, or parametrization='sp'")
    check(p != "completep" or cfg["base_depth"] > 0, "parametrization='completep' needs base_depth: set "
                                                     "--base_depth=<n_layer of the tuned base model, e.g. 4>")


def parametrization_mults(model, optimizer, cfg, no_rule=None):
    """{group name: LR multiplier} of cfg's parametrization for the optimizer's groups ({} under sp). Sets each
    group's weight_decay (× 1/width part of its LR multiplier, so lr·wd stays the base's, as mup's MuAdam/MuSGD)
    and Adam eps (CompleteP's rule) in place, once, when the strategy is built. m = n_embd/base_width,
    m_L = n_layer/base_depth (completep), α = 1:
      Adam-like: hidden LR 1/m · m_L^(α−1), embed/head/norms 1 (norms m_L^(α−1)); eps 1/m (hidden and norms · m_L^−α);
      Muon matrices: 'original' 1 (its √(fan_out/fan_in) is already muP's spectral scaling), 'match_rms_adamw'
        m^−1/2 (its 0.2·√max(A, B) grows like √m: this keeps the base's factor); both · m_L^(α−1);
      SGD: hidden 1, embed/head/norms m (mup's MuSGD); CompleteP's depth rules are derived for Adam only.
    no_rule: the name of a strategy registered with supports_mup=False (per-tensor trust ratios), refused here."""
    check_parametrization(cfg)
    net = unwrap(model)
    mcfg = getattr(net, "cfg", None)
    built = {k: getattr(mcfg, k, None) for k in PARAMETRIZATION_KEYS}
    if cfg["parametrization"] == "sp" and built["parametrization"] in (None, "sp"):
        return {}
    check(built == {k: cfg[k] for k in PARAMETRIZATION_KEYS},
          f"the model was built with {built} but the strategy config has "
          f"{ {k: cfg[k] for k in PARAMETRIZATION_KEYS} }: build both from the same keys")
    check(no_rule is None, f"parametrization={cfg['parametrization']!r} has no rule for {no_rule!r}'s per-tensor trust "
                           f"ratio: use an Adam-, Muon- or SGD-based strategy")
    inner = getattr(optimizer, "inner", optimizer)  # Lookahead wraps its AdamW
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
    rank and save on one.

    The class attributes below are the strategy's family facts; @register sets them, and everything that needs to
    know a family (train.py, eval/, tests) reads them here."""

    name = generation = rule = reference = ""
    keys = {}           # the strategy's own config keys: name -> Key (set by @register)
    defaults = {}       # the same as name -> default; each is a train.py config key
    uses_loss = False   # True: the loop passes the (all-reduced) loss of the step to step()
    uses_schedule = False  # True: the LR follows `schedule` (self.lam), not a schedule of the strategy's own
    layerwise = False   # True: the LLR paper's family (LLR, its baselines, the HT-SR relatives; docs/llr.md)
    lr_family = None    # eval/strategies.py's LR family (LM_LR); unset: 'sgd' if it reads sgd_momentum, else 'adam'
    decoupled_wd = False  # True: eval/strategies.py gives it decoupled weight decay (0.1), else 0
    supports_mup = True   # False: no muP/CompleteP rule derived for it (per-tensor trust ratios); refused at build
    slow = False        # True: eval/strategies.py starts it first (a long job last would leave a worker idle)
    scheduler = None

    def __init__(self, model, cfg):
        validate(cfg, [*COMMON, *self.defaults])
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
        scaled = parametrization_mults(model, self.optimizer, cfg, None if self.supports_mup else self.name)
        given = self.group_lr_mults(cfg)
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


STRATEGIES = {}  # name -> Strategy class, in catalogue order; filled by @register
FAMILY_FACTS = ("uses_loss", "uses_schedule", "layerwise", "lr_family", "decoupled_wd", "supports_mup", "slow")
PAPER_GENERATIONS = ("Gen1", "Gen2", "Gen3", "Gen4", "Gen5", "SOTA")  # the 18 of the strategies paper (optim.PAPER_18)


def register(name, generation, rule, reference, **keys_and_facts):
    """Add a strategy: a function (model, cfg) -> (optimizer, scheduler) or a Strategy subclass.
    generation: its place in the catalogue ('baseline', 'Gen1'...'Gen5' and 'SOTA' for the strategies paper's 18,
    'extra', 'LLR', 'HT-SR', ...); rule and reference: one line each for `python optim.py --list`.
    The family facts (FAMILY_FACTS, documented on Strategy) are keyword arguments; one not given keeps the value of
    the class it subclasses. Every other keyword is one of its config keys, declared as key(default, domain, doc)
    (or a Key shared through a dict such as SGD). A second strategy of the same name, a key without a domain, or a
    default that disagrees with another declaration of the key fails here, when the module is imported."""
    facts = {f: keys_and_facts.pop(f) for f in FAMILY_FACTS if f in keys_and_facts}
    if name in STRATEGIES:
        raise ValueError(f"@register({name!r}): a strategy of that name is already registered "
                         f"({STRATEGIES[name].__module__}): pick another name")
    declare(f"@register({name!r})", keys_and_facts)

    def add(obj):
        cls = obj if isinstance(obj, type) else type(name, (Strategy,), {"build": lambda self, m, c: obj(m, c)})
        cls.name, cls.generation, cls.rule, cls.reference = name, generation, rule, reference
        cls.keys, cls.defaults = dict(keys_and_facts), defaults_of(keys_and_facts)
        for f, v in facts.items():
            setattr(cls, f, v)
        if cls.lr_family is None:
            cls.lr_family = "sgd" if "sgd_momentum" in cls.keys else "adam"
        STRATEGIES[name] = cls
        return obj
    return add


def hyperparameters():
    """COMMON and every strategy's own hyperparameter with its default (train.py's config keys)."""
    merged = dict(COMMON)
    for cls in STRATEGIES.values():
        merged.update(cls.defaults)  # one default per key: declare() refused a second one
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


# ----------------------------------------------------------------------------------------------
# Builders and keys shared by the strategy modules

SGD = dict(sgd_momentum=key(0.9, PROB, "heavy-ball momentum of the SGD-based strategies"))
MUON = dict(
    muon_lr=key(0.0, NONNEG, "Muon's LR on the hidden matrices (0: learning_rate)"),
    muon_momentum=key(0.95, PROB, "Muon's momentum"),
    muon_nesterov=key(True, BOOL, "Nesterov momentum in Muon"),
    muon_ns_steps=key(5, integer(1), "Newton-Schulz iterations of the orthogonalisation"),
    muon_scale=key("match_rms_adamw", one_of("original", "match_rms_adamw"),
                   "update scale: √(fan_out/fan_in) (Jordan) or 0.2·√max(A, B) to match AdamW's RMS (Moonlight)"),
)
EPOCH = dict(epoch_iters=key(0, integer(0), "updates per 'epoch' for rules defined in epochs (0: max_iters/10)"))


def adam_args(cfg):
    return dict(betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["adam_eps"])


def adamw(groups, cfg):
    return torch.optim.AdamW(groups, lr=cfg["learning_rate"], fused=cfg["fused"] or None, **adam_args(cfg))


def sgd(groups, cfg):
    return torch.optim.SGD(groups, lr=cfg["learning_rate"], momentum=cfg["sgd_momentum"])


def muon_adamw(groups, cfg):
    """Muon on the hidden matrices at muon_lr (0: learning_rate), AdamW on the rest at learning_rate;
    with match_rms_adamw scaling one LR serves both sides (Moonlight). Sets each group's base_lr."""
    check(not cfg["fused"], "fused=True is for torch's AdamW; MuonAdamW has no fused kernel: set fused=False")
    for g in rules.muon_split(groups):
        g["lr"] = g["base_lr"] = (cfg["muon_lr"] or cfg["learning_rate"]) if g["use_muon"] else cfg["learning_rate"]
    return rules.MuonAdamW(groups, lr=cfg["learning_rate"], momentum=cfg["muon_momentum"],
                           nesterov=cfg["muon_nesterov"], ns_steps=cfg["muon_ns_steps"], scale=cfg["muon_scale"],
                           **adam_args(cfg))

