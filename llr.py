"""
Heavy-tail guided layerwise learning rates (LLR; He et al., ICML 2026) and the baselines it is
compared with. Every weight matrix is its own parameter group with

    lr_i(t) = base_i · m_i(t),   m_i(t) = peak_i · λ(t)  (λ = linear warmup, cosine to min_lr_ratio)

base_i is learning_rate, or muon_lr for Muon's hidden matrices (0: learning_rate, which with the
default match_rms_adamw scaling serves both sides). LLR sets peak_i from the
power-law exponent α_i (PL_Alpha_Hill, spectral.py) of matrix i: at update t = 1 and every llr_every
updates while t ≤ llr_ratio·max_iters it refits α for every matrix and maps it linearly onto
[llr_s1, llr_s2] over the model's α range (light tail = large α = large LR). Embedding and head take
the top of the range. A refit ramps each group linearly from its current multiplier to
new_peak·λ(t + llr_ramp) over llr_ramp steps (llr_ramp = 0 switches at once). After the refit phase the
peaks are frozen and keep following λ(t) to the end: LLR never returns to a uniform LR.

Documented deviations from the released code (specs/llr.md): equal α everywhere maps to s1, not s2;
a refit on the last step of the phase stays in force; on resume the saved peaks, ramps and alphas
are restored instead of forcing a refit; every ramp ends at t0 + llr_ramp (the reference ends the
first one a step earlier); norms and biases (the rest group) stay at multiplier 1 and ramp with the
others.

Strategies here: llr, llr_muon, uniform_muon, uniform_upbound, blockwise.
"""
import math

import torch

import muon
import spectral
from optim import STRATEGIES, Strategy, check, in_range, param_groups, warmup_cosine, warmup_iters_of

MAPS = ("linear", "sqrt", "log2", "sigmoid")
EMBED_RULES = ("max", "fixed", "data", "base")
EMBED_KINDS = ("embed", "head")


def alpha_to_peak(alphas, s1, s2, kind="linear"):
    """Peak multipliers (× base LR) from a {name: α} dict (specs/llr.md §4, §9)."""
    names, a = list(alphas), torch.tensor(list(alphas.values()), dtype=torch.float64)
    n = len(a)
    if kind == "linear":
        lo, hi = a.min(), a.max()
        m = torch.full_like(a, s1) if hi == lo else s1 + (s2 - s1) * (a - lo) / (hi - lo)
    elif kind == "sqrt":
        m = n * a.sqrt() / a.sqrt().sum()
    elif kind == "log2":
        m = n * a.log2() / a.log2().sum()
    elif kind == "sigmoid":  # z-scored α through 2σ(4z): multipliers in (0, 2), mean α at 1
        std = a.std() if n > 1 else torch.tensor(0.0, dtype=torch.float64)
        z = (a - a.mean()) / std if std > 0 else torch.zeros_like(a)
        m = 2 / (1 + torch.exp(-4 * z))
    else:
        raise ValueError(f"unknown llr_map {kind!r}; choose one of {', '.join(MAPS)}")
    return dict(zip(names, m.tolist()))


class Layerwise(Strategy):
    """Per-matrix groups on AdamW or Muon+AdamW, each at base_i · m_i(t). Subclasses decide the peaks
    (initial_peaks) and may change them during training (refit)."""

    # the muon_* keys and their defaults are shared with optim.py's `muon` strategy (muon_lr 0: learning_rate)
    defaults = dict(muon_lr=0.0, muon_momentum=0.95, muon_nesterov=True, muon_ns_steps=5, muon_scale="match_rms_adamw",
                    wd_follows_lr=True)
    use_muon = False

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.max_iters, self.warmup, self.min_ratio = cfg["max_iters"], warmup_iters_of(cfg), cfg["min_lr_ratio"]
        self.wd, self.wd_follows_lr = cfg["weight_decay"], cfg["wd_follows_lr"]
        groups = param_groups(model)
        for g in groups:
            g["weight_decay"] = self.wd if (g["decay"] or cfg["decay_norms"]) else 0.0
        if self.use_muon:
            in_range(cfg, "muon_lr", 0, math.inf)
            in_range(cfg, "muon_momentum", 0, 1)
            muon.split(groups)
            for g in groups:
                g["base_lr"] = (cfg["muon_lr"] or self.lr) if g["use_muon"] else self.lr
            self.optimizer = muon.MuonAdamW(groups, lr=self.lr, momentum=cfg["muon_momentum"], nesterov=cfg["muon_nesterov"],
                                            ns_steps=int(cfg["muon_ns_steps"]), scale=cfg["muon_scale"],
                                            betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["adam_eps"])
        else:
            for g in groups:
                g["base_lr"] = self.lr
            self.optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["adam_eps"],
                                               fused=cfg.get("fused") or None)
        self.names = [g["name"] for g in self.optimizer.param_groups]
        self.kinds = {g["name"]: g["kind"] for g in self.optimizer.param_groups}
        self.peaks = self.initial_peaks(cfg)
        self.current = {name: 0.0 for name in self.names}  # m_i of the last update
        self.pending_log = None  # refit details waiting for the next metrics line
        # a ramp moves m_i linearly from `start` (at update t0 - 1) to `target` (at update t0 + length)
        self.ramp = None

    def initial_peaks(self, cfg):
        return {name: 1.0 for name in self.names}

    def base_mult(self, t):
        return warmup_cosine(t, self.max_iters, self.warmup, self.min_ratio)

    def multipliers(self, t):
        """m_i for update t (1-based)."""
        lam = self.base_mult(t)
        if self.ramp is not None and t <= self.ramp["t0"] + self.ramp["length"]:
            r = self.ramp
            frac = (t - r["t0"] + 1) / (r["length"] + 1)
            return {n: r["start"][n] + (r["target"][n] - r["start"][n]) * frac for n in self.names}
        return {n: self.peaks[n] * lam for n in self.names}

    def set_lrs(self, t):
        mult = self.multipliers(t)
        lam = self.base_mult(t)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * mult[g["name"]]
            if not self.wd_follows_lr and g["weight_decay"] > 0:
                # keep lr·wd at base_lr·λ(t)·weight_decay whatever the group's multiplier
                g["weight_decay"] = self.wd * lam / mult[g["name"]] if mult[g["name"]] > 0 else self.wd
        self.current = mult

    def step(self, it, loss=None, closure=None):
        self.set_lrs(it + 1)
        self.clip_grads()
        self.optimizer.step()

    def log_record(self):
        """Mean LR per kind on every log line; the last refit's alphas and LRs once after each refit."""
        by_kind = {}
        for g in self.optimizer.param_groups:
            by_kind.setdefault(g["kind"], []).append(g["lr"])
        record, self.pending_log = self.pending_log or {}, None
        return dict(record, lr_kind={k: sum(v) / len(v) for k, v in by_kind.items()})

    def state_dict(self):
        return dict(optimizer=self.optimizer.state_dict(), peaks=dict(self.peaks), ramp=self.ramp, current=self.current)

    def load_state_dict(self, sd):
        self.optimizer.load_state_dict(sd["optimizer"])
        self.peaks, self.ramp, self.current = dict(sd["peaks"]), sd["ramp"], sd["current"]


class LLR(Layerwise):
    name = "llr"
    generation = "LLR"
    rule = "per-matrix peak LR from the PL_Alpha_Hill of its ESD, linear in α over [s1, s2]·η; refit early, then frozen"
    reference = "He, Wang, Yin, Liu, Tu, ICML 2026 (arXiv 2605.22297)"
    defaults = dict(Layerwise.defaults, llr_s1=1.0, llr_s2=5.0, llr_every=100, llr_ramp=50, llr_ratio=0.2,
                    llr_method="median", llr_xmin_pos=2, llr_map="linear", llr_embed="max", llr_embed_lr=-1.0,
                    llr_metric="alpha", llr_min_evals=50)

    def __init__(self, model, cfg):
        self.s1, self.s2 = cfg["llr_s1"], cfg["llr_s2"]
        check(0 < self.s1 <= self.s2, f"llr_s1 must be in (0, llr_s2], got llr_s1={self.s1}, llr_s2={self.s2}")
        check(cfg["llr_every"] > 0, f"llr_every must be > 0, got {cfg['llr_every']}")
        check(cfg["llr_ramp"] >= 0, f"llr_ramp must be >= 0 (0 = hard switch), got {cfg['llr_ramp']}")
        in_range(cfg, "llr_ratio", 0, 1, hi_open=False)
        check(cfg["llr_map"] in MAPS, f"unknown llr_map {cfg['llr_map']!r}; choose one of {', '.join(MAPS)}")
        check(cfg["llr_method"] in ("median", "ks", "fix-finger"),
              f"unknown llr_method {cfg['llr_method']!r}; choose median, ks or fix-finger")
        check(cfg["llr_metric"] in spectral.METRICS, f"unknown llr_metric {cfg['llr_metric']!r}; choose one of {', '.join(spectral.METRICS)}")
        embed = "fixed" if cfg["llr_embed_lr"] > 0 else cfg["llr_embed"]
        check(embed in EMBED_RULES, f"unknown llr_embed {embed!r}; choose one of {', '.join(EMBED_RULES)}")
        self.embed_rule = embed
        self.every, self.length, self.phase_end = cfg["llr_every"], cfg["llr_ramp"], cfg["llr_ratio"] * cfg["max_iters"]
        self.model = model
        super().__init__(model, cfg)
        self.alphas, self.last_refit, self.pending_log = {}, 0, None
        self.warned = set()

    def due(self, t):
        return t == 1 or (t % self.every == 0 and t <= self.phase_end)

    def fit(self):
        """{name: metric} for every fitted matrix this refit (identical on every rank under DDP)."""
        c = self.cfg
        rows = spectral.analyze(self.model, method=c["llr_method"], metrics=(c["llr_metric"],), min_evals=c["llr_min_evals"],
                                xmin_pos=c["llr_xmin_pos"], filter_zeros=False)
        values = {}
        for row in rows:
            if row["name"] not in self.kinds:
                continue
            value = row.get(c["llr_metric"])
            if row["skipped"] or value is None or not math.isfinite(value):
                if row["name"] not in self.warned and row["N"] * row["M"] > 0 and row["M"] >= c["llr_min_evals"]:
                    print(f"llr: {row['name']} not refitted ({row['skipped'] or 'no finite fit'}); it keeps its previous LR")
                    self.warned.add(row["name"])
                continue
            values[row["name"]] = value
        return values

    def new_peaks(self, alphas):
        peaks = dict(self.peaks)
        mapped = {n: a for n, a in alphas.items() if self.embed_rule == "data" or self.kinds[n] not in EMBED_KINDS}
        if mapped:
            if self.embed_rule == "max":  # embedding and head take the top of the range
                top = max(mapped.values())
                mapped.update({n: top for n in alphas if self.kinds[n] in EMBED_KINDS})
            peaks.update(alpha_to_peak(mapped, self.s1, self.s2, self.cfg["llr_map"]))
        for n in self.names:
            if self.kinds[n] in EMBED_KINDS and self.embed_rule in ("fixed", "base"):
                peaks[n] = self.cfg["llr_embed_lr"] / self.lr if self.embed_rule == "fixed" else 1.0
        for n in self.names:
            if self.kinds[n] == "norm":
                peaks[n] = 1.0
        return peaks

    def refit(self, t):
        self.alphas = self.fit()
        start = {n: 0.0 for n in self.names} if t == 1 else dict(self.current)
        self.peaks = self.new_peaks(self.alphas)
        lam_end = self.base_mult(t + self.length)
        self.ramp = dict(t0=t, length=self.length, start=start, target={n: self.peaks[n] * lam_end for n in self.names})
        self.last_refit = t

    def step(self, it, loss=None, closure=None):
        t = it + 1
        if self.due(t):
            self.refit(t)
            self.set_lrs(t)
            self.pending_log = dict(refit_iter=it, alpha=dict(self.alphas), lrs=self.lrs())
        else:
            self.set_lrs(t)
        self.clip_grads()
        self.optimizer.step()


    def state_dict(self):
        return dict(super().state_dict(), alphas=self.alphas, last_refit=self.last_refit)

    def load_state_dict(self, sd):
        super().load_state_dict(sd)
        self.alphas, self.last_refit = sd["alphas"], sd["last_refit"]


class LLRMuon(LLR):
    name = "llr_muon"
    rule = "LLR multipliers on Muon (hidden matrices, muon_lr) and AdamW (embed, head, norms; learning_rate)"
    use_muon = True


class UniformMuon(Layerwise):
    name = "uniform_muon"
    generation = "baseline"
    rule = "Muon at muon_lr on hidden matrices, AdamW at learning_rate elsewhere; warmup + cosine"
    reference = "Jordan et al. 2024; Liu et al. 2025 (arXiv 2502.16982)"
    use_muon = True


class UniformUpbound(Layerwise):
    name = "uniform_upbound"
    generation = "baseline"
    rule = "AdamW with llr_s2 × learning_rate for every group: LLR's top LR, uniformly"
    reference = "He et al., ICML 2026 (baseline)"

    def initial_peaks(self, cfg):
        return {name: cfg["llr_s2"] for name in self.names}


# Sharpness-disparity multipliers (Wang et al. 2025, arXiv 2502.19002) as the LLR paper runs them
BLOCKWISE = {"norm": 1.0, "attn_qk": 8.0, "attn_vo": 4.0, "mlp": 6.0, "embed": 10.0, "head": 10.0}


class Blockwise(Layerwise):
    name = "blockwise"
    generation = "baseline"
    rule = "AdamW with fixed multipliers by kind: norm 1, q/k 8, v/o 4, mlp 6, embed/head 10 (× learning_rate)"
    reference = "Wang et al. 2025, arXiv 2502.19002"

    def initial_peaks(self, cfg):
        return {name: BLOCKWISE[self.kinds[name]] for name in self.names}


LLR_STRATEGIES = {cls.name: cls for cls in (LLR, LLRMuon, UniformMuon, UniformUpbound, Blockwise)}
STRATEGIES.update(LLR_STRATEGIES)
