"""
The LR schedules of optim.py as plain functions of the 1-based update number t: the warmup + decay λ(t) that the
`schedule` key picks (schedule(cfg)), the published shapes some strategies keep (warm restarts, STLR), and the
fixed per-group multipliers of `lr_mult`. Pure: no project imports, so every optim module can use them.
"""
import fnmatch
import math
import re

# ----------------------------------------------------------------------------------------------
# The one error of the optim modules. It lives here, at the root of their import tree, so that a bad schedule and a
# bad hyperparameter raise the same class (optim.ConfigError) and train.py catches one thing.


class ConfigError(ValueError):
    """A hyperparameter outside its domain: raised before training starts."""


def check(ok, message):
    if not ok:
        raise ConfigError(message)


# ----------------------------------------------------------------------------------------------
# Shapes


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


# ----------------------------------------------------------------------------------------------
# λ(t) of the `schedule` key

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
    check(kind != "wsd" or W + D <= T, f"schedule='wsd': the warmup ({W} updates) and the decay (decay_frac·max_iters "
                                       f"= {D}) overlap in a run of {T}: lower decay_frac or the warmup")
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


# ----------------------------------------------------------------------------------------------
# lr_mult: fixed per-group LR multipliers on top of any strategy's schedule


def lr_mult_ok(rules):
    pair = lambda r: (isinstance(r, (list, tuple)) and len(r) == 2 and isinstance(r[0], str)
                      and isinstance(r[1], (int, float)) and not isinstance(r[1], bool) and 0 <= r[1] < math.inf)
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
        check(n > 0, f"lr_mult pattern {pattern!r} " + (
            "only matches groups an earlier pattern took (the first match wins): reorder or drop it" if shadowed
            else f"matches no parameter group; the groups are {abbreviated(names)}"))
    return mults
