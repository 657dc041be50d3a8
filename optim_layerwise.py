"""
The layerwise family of optim.py: heavy-tail guided layerwise LRs (LLR; He et al., ICML 2026), its baselines and its
HT-SR relatives (TempBalance, model balancing, AlphaDecay). Every weight matrix is its own group at
lr_i(t) = base_i · m_i(t), m_i(t) = peak_i · λ(t), λ = the chosen `schedule` (warmup + cosine by default); base_i is
learning_rate, or muon_lr for Muon's hidden matrices. docs/llr.md.
"""
import math
import re

import torch

import spectral
from groups import decayed_groups
from optim_core import (BOOL, EPOCH, INF, MUON, POS, REAL, UNIT, Strategy, adamw, check, flag, integer, key,
                        muon_adamw, one_of, quirk, register)
from schedules import epoch_iters, warmup_iters_of

LAYERWISE = dict(  # the keys of every layerwise strategy (Muon's too: any of them may run on Muon)
    MUON, wd_follows_lr=key(True, BOOL, "weight decay follows each group's LR (False: lr·wd stays at base_lr·λ(t)·wd)"),
    alpha_correction=key("none", one_of("none", "shape"), "'shape': α with its aspect-ratio bias taken out "
                                                          "(spectral.shape_corrected_alpha)"))
MAPS = ("linear", "sqrt", "log2", "sigmoid")
EMBED_RULES = ("max", "fixed", "data", "base")
EMBED_KINDS = ("embed", "head")
HTSR_FIT = dict(method="median", metric="alpha", min_evals=50, xmin_pos=2, label="htsr")  # the HT-SR family's fit


def check_range(cfg, prefix):
    """ConfigError unless <prefix>_s1 <= <prefix>_s2 (both > 0 by their domains)."""
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
        below, above = (torch.tensor(float(s), dtype=torch.float64) for s in (s1, s2))
        s = torch.where(d < 0, below, above)
        m = 10 ** (s * (torch.sigmoid(tau * d) - 0.5))
    else:
        raise ValueError(f"unknown llr_map {kind!r}; choose one of {', '.join(MAPS)}")
    return dict(zip(names, m.tolist()))


class Layerwise(Strategy):
    """Per-matrix groups on AdamW (or Muon + AdamW with use_muon), each at base_i · m_i(t). Subclasses
    decide the peaks (initial_peaks) and may change them during training (LLR's refits)."""

    use_muon = False
    uses_schedule = True  # λ(t) = self.lam, the chosen `schedule`
    layerwise = True
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
                g["weight_decay"] = (wd_g if follows else wd_g * self.base_mult(t) / mult[name] if mult[name] > 0
                                     else wd_g)
        self.current = mult

    # --- refits: shared by LLR and the HT-SR family (TempBalance, tempbalance_block, AlphaDecay) ---

    def fit_args(self):
        """spectral.analyze settings of fit(): PL_Alpha_Hill with xmin at the median (LLR: its llr_* keys)."""
        return dict(HTSR_FIT)

    def fit(self):
        """{name: metric} for every fitted matrix this refit (identical on every rank under DDP)."""
        return self.fit_alphas(**self.fit_args())

    def fit_alphas(self, method, metric, min_evals, xmin_pos, label, reference=False):
        """Fit `metric` of every group's matrix; a skipped or non-finite one is left out (it keeps its previous
        multiplier), with one warning per degenerate matrix (too few eigenvalues is quiet). reference: fix-finger's
        window as the released code has it (spectral.analyze)."""
        rows = spectral.analyze(self.model, method=method, metrics=(metric,), min_evals=min_evals, xmin_pos=xmin_pos,
                                filter_zeros=False, reference=reference)
        values = {}
        for row in rows:
            if row["name"] not in self.kinds:
                continue
            value = row.get(metric)
            if row["skipped"] or value is None or not math.isfinite(value):
                if row["name"] not in self.warned and row["N"] * row["M"] > 0 and row["M"] >= min_evals:
                    print(f"{label}: {row['name']} not refitted ({row['skipped'] or 'no finite fit'}); it keeps its "
                          f"previous LR")
                    self.warned.add(row["name"])
                continue
            if self.cfg["alpha_correction"] == "shape" and metric == "alpha":  # the aspect-ratio bias taken out
                value = spectral.shape_corrected_alpha(value, row["N"], row["M"], method, xmin_pos)
            values[row["name"]] = value
        if not values and "no fit" not in self.warned:  # every matrix below min_evals: the method would do nothing
            where = "--llr_min_evals" if label == "llr" else "min_evals in optim.HTSR_FIT"
            print(f"{label}: no matrix has {min_evals} eigenvalues or more, so none is fitted and every LR stays at "
                  f"its previous multiplier: lower {where} for matrices this small")
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
        # alphas and last_refit are absent in checkpoints from before the HT-SR family
        self.alphas, self.last_refit = dict(sd.get("alphas", {})), sd.get("last_refit", 0)
        self.wd_mults = dict(sd.get("wd_mults", self.wd_mults))


def released_cosine(t, T, W, f):
    """λ(t) of the LLR reference code's scheduler: warmup_cosine for t < T, but cyclical with period T, so at
    t = T it starts over in its warmup, where every cycle after the first reads 1e-7 at its first two steps."""
    c = t % T
    if c < W:
        return 1e-7 if t != c and c < 2 else c / W
    progress = (c - W) / max(1, T - W)
    return f + (1 - f) * 0.5 * (1.0 + math.cos(math.pi * progress))


LLR_KEYS = dict(
    LAYERWISE,
    llr_s1=key(1.0, POS, "the peak multiplier of the smallest α (heaviest tail)"),
    llr_s2=key(5.0, POS, "the peak multiplier of the largest α (lightest tail)"),
    llr_every=key(100, integer(1), "updates between refits during the refit phase"),
    llr_ramp=key(50, integer(0), "updates over which a refit's new peaks are reached (0: at once)"),
    llr_ratio=key(0.2, UNIT, "the refit phase's share of max_iters; the peaks are frozen after it"),
    llr_method=key("median", one_of(*spectral.METHODS), "how the power-law fit picks xmin (spectral.METHODS)"),
    llr_xmin_pos=key(2, integer(1), "median rule: the tail is the top 1/xmin_pos of the spectrum"),
    llr_map=key("linear", one_of(*MAPS), "α → peak map: linear over [s1, s2], or n·f(α)/Σf(α) (alpha_to_peak)"),
    llr_embed=key("max", one_of(*EMBED_RULES), "embedding and head peaks: top of the range, fixed, from their α, or 1"),
    llr_embed_lr=key(-1.0, REAL, "> 0: embedding and head at this LR (llr_embed='fixed'); <= 0: llr_embed decides"),
    llr_metric=key("alpha", one_of(*spectral.METRICS), "the HT-SR metric mapped to peaks (spectral.METRICS)"),
    llr_min_evals=key(50, integer(0), "matrices with fewer eigenvalues are not fitted (they keep their peak)"),
    llr_drop_late_refits=quirk("the released code's schedule: no refit after the phase, one whose ramp reaches its "
                               "end is undone there and the cosine lags; fix-finger with its window"),
    llr_normalize=key(False, BOOL, "divide the matrix peaks by their parameter-weighted mean after each refit"),
)


@register("llr", "LLR", "per-matrix peak LR from the PL_Alpha_Hill of its ESD, linear in α over [s1, s2]·η; refit "
          "early, then frozen", "He, Wang, Yin, Liu, Tu, ICML 2026 (arXiv 2605.22297)", slow=True, **LLR_KEYS)
class LLR(Layerwise):
    """At update t = 1 and every llr_every updates while t ≤ llr_ratio·max_iters: fit α of every matrix,
    map it onto peaks (light tail = large α = large LR; embedding and head per llr_embed), and ramp each
    group linearly from its current multiplier to new_peak·λ(t + llr_ramp) over llr_ramp updates
    (0: switch at once). Then the peaks are frozen and follow λ(t) to the end.

    llr_drop_late_refits (faithful): the released code's schedule. No refit after the phase P (so llr_ratio = 0
    stays uniform); the first ramp is one update shorter; a refit whose ramp does not end before the phase does
    (t0 + ramp + 1 > P) runs only until the phase ends, then the peaks of the last refit before it come back
    (1 if none) on a λ that lags by the updates the dropped ramp ran (floor(P) − t0 + 1); λ is the released
    cyclical cosine (released_cosine); fix-finger uses the released window. llr_normalize: after each refit, all
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

    def base_mult(self, t):
        if not self.drop_late:
            return self.lam(t)
        # the released code: its cosine scheduler is not stepped while a dropped ramp runs, so after the phase it
        # lags by that many updates; with the default schedule it is the released cyclical cosine
        c, t = self.cfg, t - self.lag()
        if c["schedule"] == "cosine" and not c.get("branch"):
            return released_cosine(t, c["max_iters"], warmup_iters_of(c), c["min_lr_ratio"])
        return self.lam(t)

    def lag(self):
        """Updates by which λ lags once dropped refits are undone: those from the first dropped refit to floor(P)."""
        return math.floor(self.phase_end) - self.late[0] + 1 if self.late and self.kept is None else 0

    def ramp_length(self, t):
        """llr_ramp; with llr_drop_late_refits the first ramp (from 0) is one update shorter, as released."""
        length = self.cfg["llr_ramp"]
        return max(length - 1, 0) if self.drop_late and t == 1 else length

    def fit_args(self):
        c = self.cfg
        return dict(method=c["llr_method"], metric=c["llr_metric"], min_evals=c["llr_min_evals"],
                    xmin_pos=c["llr_xmin_pos"], label="llr", reference=self.drop_late)

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
        length = self.ramp_length(t)
        # late, as released: the scheduler with the new peaks is made on the update after the ramp, which must still
        # be in the phase, so a ramp that ends exactly at the phase end is late too
        if self.drop_late and t + length + 1 > self.phase_end:
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


@register("llr_muon", "LLR", "LLR multipliers on Muon (hidden matrices, muon_lr) and AdamW (embed, head, norms; "
          "learning_rate)", "He, Wang, Yin, Liu, Tu, ICML 2026 (arXiv 2605.22297)", lr_family="muon", **LLR_KEYS)
class LLRMuon(LLR):
    use_muon = True


@register("uniform_muon", "baseline", "Muon at muon_lr on hidden matrices, AdamW at learning_rate elsewhere; warmup + "
          "cosine", "Jordan et al. 2024; Liu et al. 2025 (arXiv 2502.16982)", lr_family="muon", slow=True, **LAYERWISE)
class UniformMuon(Layerwise):
    use_muon = True


@register("uniform_upbound", "baseline", "AdamW with llr_s2 × learning_rate for every group: LLR's top LR, uniformly",
          "He et al., ICML 2026 (baseline)", **LAYERWISE, llr_s2=LLR_KEYS["llr_s2"])
class UniformUpbound(Layerwise):
    def initial_peaks(self, cfg):
        return {name: cfg["llr_s2"] for name in self.names}


# Sharpness-disparity multipliers (Wang et al. 2025, arXiv 2502.19002) as the LLR paper runs them
BLOCKWISE = {"norm": 1.0, "attn_qk": 8.0, "attn_vo": 4.0, "mlp": 6.0, "embed": 10.0, "head": 10.0}


@register("blockwise", "baseline", "uniform AdamW with fixed lr_mult by kind: norm 1, q/k 8, v/o 4, mlp 6, "
          "embed/head 10 (× learning_rate)", "Wang et al. 2025, arXiv 2502.19002", uses_schedule=True, layerwise=True)
class Blockwise(Strategy):
    """`uniform` with each group's lr_mult set to BLOCKWISE of its kind: configs/blockwise.py spells the same
    as lr_mult patterns on `uniform`. An lr_mult given with it comes first (the first match wins)."""

    def build(self, model, cfg):
        return adamw(decayed_groups(model, cfg), cfg), None  # `uniform`'s optimizer

    def group_lr_mults(self, cfg):
        given = super().group_lr_mults(cfg)
        return {g["name"]: given.get(g["name"], BLOCKWISE[g["kind"]]) for g in self.optimizer.param_groups}


# The HT-SR family beside LLR: refit through all of training on Layerwise's fit and calendar (docs/llr.md).
# TempBalance (per matrix) and model balancing (per block) set LR multipliers, AlphaDecay weight-decay multipliers.
TB_EVERY = dict(tb_every=key(0, integer(0), "updates between refits (0: once per optim.epoch_iters)"), **EPOCH)
TB_KEYS = dict(LAYERWISE, tb_s1=key(0.5, POS, "the LR multiplier of the smallest α"),
               tb_s2=key(1.5, POS, "the LR multiplier of the largest α"), **TB_EVERY)
TBB_KEYS = dict(LAYERWISE, tbb_s1=key(1.25, POS, "s of the blocks below the mean α"),
                tbb_s2=key(1.25, POS, "s of the blocks above the mean α"),
                tbb_tau=key(10.0, POS, "τ, the sigmoid's temperature"), **TB_EVERY)
AD_KEYS = dict(LAYERWISE, ad_s1=key(0.67, POS, "the weight-decay multiplier of the smallest α"),
               ad_s2=key(1.5, POS, "the weight-decay multiplier of the largest α"),
               ad_every=key(500, integer(1), "updates between refits"))


@register("tempbalance", "HT-SR", "per-matrix LR = λ(t)·η·(s1 + (s2 − s1)(α − α_min)/(α_max − α_min)), "
          "s 0.5..1.5; PL_Alpha_Hill refit every epoch, all of training",
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


@register("alphadecay", "HT-SR", "uniform AdamW LR; per-matrix weight decay = wd·(s1 + (s2 − s1)(α − α_min)/"
          "(α_max − α_min)), s 0.67..1.5 (heavy tail, less decay); refit every 500 steps",
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
        wd = {g["name"]: g["weight_decay"] for g in self.optimizer.param_groups}
        return dict(super().refit_record(it), wd=wd)

