"""
Update rules that torch.optim does not ship, written from their papers (formulas in
specs/strategies.md): AdaBound, LARS, LAMB, Lion, dampened SGD (the Grokfast reference base), DALS,
plus three wrappers that act around any optimizer: SAM/ASAM, Lookahead and the Grokfast gradient
filters. optim.py picks rule + schedule + parameter groups; this file only knows tensors.

Every optimizer reads `lr` from its param groups at each step, so torch lr_schedulers (or a strategy
writing group['lr']) drive it as usual.
"""
import math
from collections import deque

import torch


def _norm(t):
    return t.detach().float().norm()


class AdaBound(torch.optim.Optimizer):
    """Luo et al., ICLR 2019. Adam moments; the per-coordinate step η√(1−β₂ᵗ)/(1−β₁ᵗ)/(√v+ε) is
    clipped to [f(1 − 1/(γt+1)), f(1 + 1/(γt))], f = final_lr·η_now/η_initial, so it morphs from
    Adam into SGD at final_lr. weight_decay is L2 (added to the gradient)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, final_lr=final_lr, gamma=gamma, eps=eps, weight_decay=weight_decay))
        for g in self.param_groups:
            g.setdefault("initial_lr", g["lr"])  # a scheduler attached later sets the same value

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            b1, b2 = g["betas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if g["weight_decay"] == 0 else p.grad.add(p, alpha=g["weight_decay"])
                st = self.state[p]
                if not st:
                    st["step"], st["exp_avg"], st["exp_avg_sq"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["step"] += 1
                t, m, v = st["step"], st["exp_avg"], st["exp_avg_sq"]
                m.mul_(b1).add_(grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                final = g["final_lr"] * g["lr"] / g["initial_lr"]
                lower, upper = final * (1 - 1 / (g["gamma"] * t + 1)), final * (1 + 1 / (g["gamma"] * t))
                step_size = g["lr"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                s = (step_size / (v.sqrt() + g["eps"])).clamp_(lower, upper)
                p.sub_(s * m)


class LARS(torch.optim.Optimizer):
    """You, Gitman, Ginsburg 2017 (arXiv 1708.03888).

    canonical: λ_l = trust·‖w‖/(‖g‖ + β‖w‖); v ← μv + η·λ_l·(g + βw); w ← w − v. Tensors with ndim < 2
    (norms, biases) skip the ratio and the decay; the ratio is 1 when ‖w‖ or ‖g‖ is 0 (otherwise a
    zero-initialised tensor never moves).
    reference=True (the strategies paper's code): d = g + βw; r = trust·‖w‖/(‖d‖ + 1e-8), r = trust
    when a norm is 0; m ← μm + d; w ← w − η·r·m. No exclusions; the ratio scales the whole buffer."""

    def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=0.0, trust=0.001, reference=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust=trust, reference=reference))

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            lr, mu, wd, trust = g["lr"], g["momentum"], g["weight_decay"], g["trust"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if "momentum_buffer" not in st:
                    st["momentum_buffer"] = torch.zeros_like(p)
                buf = st["momentum_buffer"]
                w_norm = _norm(p)
                if g["reference"]:
                    d = p.grad.add(p, alpha=wd)
                    d_norm = _norm(d)
                    r = trust * w_norm / (d_norm + 1e-8) if w_norm > 0 and d_norm > 0 else trust
                    buf.mul_(mu).add_(d)
                    p.sub_(buf * (lr * float(r)))
                    continue
                if p.ndim < 2:
                    buf.mul_(mu).add_(p.grad, alpha=lr)
                else:
                    g_norm = _norm(p.grad)
                    ratio = trust * w_norm / (g_norm + wd * w_norm) if w_norm > 0 and g_norm > 0 else 1.0
                    buf.mul_(mu).add_(p.grad.add(p, alpha=wd), alpha=lr * float(ratio))
                p.sub_(buf)


class LAMB(torch.optim.Optimizer):
    """You et al., ICLR 2020. u = m̂/(√v̂ + ε) + λw; w ← w − η·(‖w‖/‖u‖)·u. ndim < 2 tensors skip the
    ratio and the decay; the ratio is 1 when ‖w‖ or ‖u‖ is 0 (as LARS)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            b1, b2 = g["betas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"], st["exp_avg"], st["exp_avg_sq"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["step"] += 1
                t, m, v = st["step"], st["exp_avg"], st["exp_avg_sq"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                u = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + g["eps"])
                ratio = 1.0
                if p.ndim >= 2:
                    u.add_(p, alpha=g["weight_decay"])
                    w_norm, u_norm = _norm(p), _norm(u)
                    ratio = float(w_norm / u_norm) if w_norm > 0 and u_norm > 0 else 1.0
                p.sub_(u, alpha=g["lr"] * ratio)


class Lion(torch.optim.Optimizer):
    """Chen et al., NeurIPS 2023. c = β₁m + (1−β₁)g; w ← w − η(sign(c) + λw); m ← β₂m + (1−β₂)g."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            b1, b2 = g["betas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["exp_avg"] = torch.zeros_like(p)
                m = st["exp_avg"]
                c = m.mul(b1).add_(p.grad, alpha=1 - b1)
                p.mul_(1 - g["lr"] * g["weight_decay"]).add_(c.sign_(), alpha=-g["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)


class DampenedSGD(torch.optim.Optimizer):
    """The base rule under the strategies paper's Grokfast: m ← μm + (1−μ)g from m = 0 (torch SGD's
    dampening skips the first step, so it cannot stand in), w ← w − ηm, then w ← w − ηλw."""

    def __init__(self, params, lr=0.01, momentum=0.9, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["momentum_buffer"] = torch.zeros_like(p)
                m = st["momentum_buffer"]
                m.mul_(g["momentum"]).add_(p.grad, alpha=1 - g["momentum"])
                p.sub_(m, alpha=g["lr"]).mul_(1 - g["lr"] * g["weight_decay"])


# ----------------------------------------------------------------------------------------------
# DALS (Discriminative Adaptive Layer Scaling), specs/strategies.md §2

DALS_VARIANTS = ("dals", "dals_fast", "dals_acc")


class DALS(torch.optim.Optimizer):
    """Momentum SGD with a loss-driven phase P ∈ {0, 1, 2}, a per-tensor gradient EMA e blended by
    depth d (b = 0.3 + 0.4d), coupled L2 and a clamped per-tensor trust ratio. Each group needs a
    'depth'. Call observe(loss) before step(); the optimizer writes every group's lr itself
    (warmup + cosine, or SGDR for dals_acc), so no external scheduler may be attached.

    Hyperparameters beyond torch's: variant, alpha0, tau2, trust, clamp, warmup_frac, max_iters,
    t0 (dals_acc's first cycle in steps), zero_first_lr (reference: first update at lr 0),
    min_dwell (steps a phase must last before it may change; 0 = reference), exclude_1d (ndim < 2
    tensors get no decay and ratio 1), decoupled (w ← w(1 − ηλ) instead of L2)."""

    def __init__(self, params, lr, max_iters, variant="dals", momentum=0.9, alpha0=0.6, tau2=0.002, trust=0.02,
                 clamp=(0.2, 5.0), weight_decay=5e-4, warmup_frac=0.05, t0=10, zero_first_lr=False, min_dwell=0,
                 exclude_1d=False, decoupled=False):
        assert variant in DALS_VARIANTS, variant
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, depth=0.5))
        self.base_lr, self.max_iters, self.variant = lr, max_iters, variant
        self.alpha0, self.tau2, self.trust, self.clamp = alpha0, tau2, trust, clamp
        self.warmup_frac, self.t0, self.zero_first_lr = warmup_frac, t0, zero_first_lr
        self.min_dwell, self.exclude_1d, self.decoupled = min_dwell, exclude_1d, decoupled
        # global state: step k, loss EMA E, phase P, its age, and dals_acc's SGDR counter c, cycle i
        self.glob = dict(k=0, ema=None, phase=0, dwell=0, c=0, cycle=0, cycle_len=t0)

    def observe(self, loss):
        """Phase detector, fed the step's (all-reduced, accumulation-averaged) loss before the update."""
        s = self.glob
        loss = float(loss)
        if s["ema"] is None:
            s["ema"] = loss
            return
        new = 0.95 * s["ema"] + 0.05 * loss
        delta = (s["ema"] - new) / max(abs(s["ema"]), 1e-8)
        s["ema"] = new
        phase = 0 if delta > 0.01 else 1 if delta > self.tau2 else 2
        s["dwell"] += 1
        if phase != s["phase"] and s["dwell"] >= self.min_dwell:
            s["phase"], s["dwell"] = phase, 0

    def current_lr(self):
        """LR of the next update; advances k (and dals_acc's cycle counter)."""
        s = self.glob
        if self.variant == "dals_acc":
            s["c"] += 1
            if s["c"] >= s["cycle_len"]:
                s["c"], s["cycle"] = 0, s["cycle"] + 1
                s["cycle_len"] = int(self.t0 * 2 ** s["cycle"])
            scale = 0.5 * (1 + math.cos(math.pi * min(s["c"] / s["cycle_len"], 1.0)))
        else:
            k, T = s["k"], self.max_iters
            W = int(self.warmup_frac * T)
            if k < W:
                scale = (k if self.zero_first_lr else k + 1) / max(1, W)
            else:
                scale = 0.5 * (1 + math.cos(math.pi * min((k - W) / max(1, T - W), 1.0)))
        s["k"] += 1
        return self.base_lr * scale

    def alpha(self, phase):
        a0 = self.alpha0
        if phase == 0:
            return max(0.4, a0 - 0.15) if self.variant == "dals_acc" else max(0.3, a0 - 0.3)
        return a0 if phase == 1 else min(0.9, a0 + 0.1)

    @torch.no_grad()
    def step(self, closure=None):
        lr = self.current_lr()
        phase = self.glob["phase"]
        alpha = self.alpha(phase)
        lo, hi = self.clamp
        for g in self.param_groups:
            g["lr"] = lr
            b = 0.3 + 0.4 * g["depth"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["ema"], st["momentum_buffer"] = torch.zeros_like(p), torch.zeros_like(p)
                e, m = st["ema"], st["momentum_buffer"]
                if phase == 0 and self.variant == "dals_fast":
                    ghat = p.grad.clone()  # fast variant: raw gradient in phase 0, EMA untouched
                else:
                    e.mul_(alpha).add_(p.grad, alpha=1 - alpha)
                    ghat = p.grad.mul(b).add_(e, alpha=1 - b)
                plain = self.exclude_1d and p.ndim < 2
                wd = 0.0 if plain else g["weight_decay"]
                if not self.decoupled:
                    ghat.add_(p, alpha=wd)
                w_norm, g_norm = _norm(p), _norm(ghat)
                r = 1.0 if plain or w_norm == 0 or g_norm == 0 else min(max(float(self.trust * w_norm / g_norm), lo), hi)
                m.mul_(g["momentum"]).add_(ghat)
                if self.decoupled:
                    p.mul_(1 - lr * wd)
                p.sub_(m, alpha=lr * r)

    def state_dict(self):
        sd = super().state_dict()
        sd["dals"] = dict(self.glob)
        return sd

    def load_state_dict(self, sd):
        sd = dict(sd)
        self.glob = dict(sd.pop("dals"))
        super().load_state_dict(sd)


# ----------------------------------------------------------------------------------------------
# Wrappers around any optimizer


class Lookahead:
    """Zhang, Lucas, Hinton, Ba, NeurIPS 2019: every k inner steps slow ← slow + α(fast − slow) and
    fast ← slow. Slow weights start at the initial weights (lazy=True: copied after the first fast
    step, as the strategies paper's code does). Schedulers attach to .inner (torch schedulers reject
    objects that are not Optimizers)."""

    def __init__(self, inner, k=5, alpha=0.5, lazy=False):
        self.inner, self.k, self.alpha, self.lazy = inner, k, alpha, lazy
        self.params = [p for g in inner.param_groups for p in g["params"]]
        self.slow = None if lazy else [p.detach().clone() for p in self.params]
        self.count = 0

    @property
    def param_groups(self):
        return self.inner.param_groups

    @torch.no_grad()
    def step(self):
        self.inner.step()
        self.count += 1
        if self.slow is None:
            self.slow = [p.detach().clone() for p in self.params]
        if self.count % self.k == 0:
            for p, s in zip(self.params, self.slow):
                s.add_(p - s, alpha=self.alpha)
                p.copy_(s)

    def zero_grad(self, set_to_none=True):
        self.inner.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return dict(inner=self.inner.state_dict(), slow=self.slow, count=self.count)

    def load_state_dict(self, sd):
        self.inner.load_state_dict(sd["inner"])
        self.slow = None if sd["slow"] is None else [s.clone() for s in sd["slow"]]
        self.count = sd["count"]


@torch.no_grad()
def sam_perturb(params, rho, adaptive=False):
    """SAM (Foret et al., ICLR 2021): e = ρg/‖g‖; ASAM (Kwon et al., ICML 2021): e = ρ·w²⊙g/‖|w|⊙g‖.
    Adds e to each parameter with a gradient and returns the list of e (None where no gradient)."""
    grads = [p.grad if p.grad is None else (p.grad * p.abs() if adaptive else p.grad) for p in params]
    norm = torch.linalg.vector_norm(torch.stack([_norm(g) for g in grads if g is not None]))
    scale = rho / (norm + 1e-12)
    eps = []
    for p, g in zip(params, grads):
        e = None if g is None else (g * p.abs() if adaptive else g) * scale
        if e is not None:
            p.add_(e)
        eps.append(e)
    return eps


@torch.no_grad()
def sam_restore(params, eps):
    for p, e in zip(params, eps):
        if e is not None:
            p.sub_(e)


class GrokfastEMA:
    """Lee, Kang, Kim, Lee 2024 (arXiv 2405.20233), EMA form: μ ← αμ + (1−α)g, g ← g + λμ. Canonical
    μ₀ = the first gradient; zero_init=True starts from 0 (the strategies paper's code). Apply once per
    optimizer step, after the DDP all-reduce and before clipping."""

    def __init__(self, params, alpha=0.98, lamb=2.0, zero_init=False):
        self.params, self.alpha, self.lamb, self.zero_init = list(params), alpha, lamb, zero_init
        self.ema = [None] * len(self.params)

    @torch.no_grad()
    def apply(self):
        grads = [p.grad for p in self.params if p.grad is not None]
        if not all(torch.isfinite(g).all() for g in grads):
            return  # an inf/NaN step must not poison the filter
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            if self.ema[i] is None:
                self.ema[i] = torch.zeros_like(p.grad) if self.zero_init else p.grad.detach().clone()
                if not self.zero_init:
                    p.grad.add_(self.ema[i], alpha=self.lamb)
                    continue
            self.ema[i].mul_(self.alpha).add_(p.grad, alpha=1 - self.alpha)
            p.grad.add_(self.ema[i], alpha=self.lamb)

    def state_dict(self):
        return dict(ema=self.ema)

    def load_state_dict(self, sd):
        self.ema = [None if e is None else e.clone() for e in sd["ema"]]


class GrokfastMA:
    """Grokfast-MA: once the queue of the last `window` gradients is full, g ← g + λ·mean(queue).
    A running sum keeps the cost per step independent of the window."""

    def __init__(self, params, window=100, lamb=5.0):
        self.params, self.window, self.lamb = list(params), window, lamb
        self.queues = [deque() for _ in self.params]
        self.sums = [None] * len(self.params)

    @torch.no_grad()
    def apply(self):
        for i, (p, q) in enumerate(zip(self.params, self.queues)):
            if p.grad is None:
                continue
            g = p.grad.detach().clone()
            q.append(g)
            self.sums[i] = g.clone() if self.sums[i] is None else self.sums[i].add_(g)
            if len(q) > self.window:
                self.sums[i].sub_(q.popleft())
            if len(q) == self.window:
                p.grad.add_(self.sums[i], alpha=self.lamb / self.window)

    def state_dict(self):
        return dict(queues=[list(q) for q in self.queues], sums=self.sums)

    def load_state_dict(self, sd):
        self.queues = [deque(t.clone() for t in q) for q in sd["queues"]]
        self.sums = [None if s is None else s.clone() for s in sd["sums"]]
