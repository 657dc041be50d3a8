"""
Update rules torch lacks, as pure functions plus thin torch.optim.Optimizer classes: AdaBound, LARS,
LAMB, Lion, dampened SGD, DALS, Muon + AdamW (single device or DDP), and the wrappers SAM/ASAM,
Lookahead and the Grokfast gradient filters.

Strategies (optim.py) choose rule + schedule + parameter groups; this file only knows tensors. Each
optimizer reads `lr` from its param groups at every step: schedules are never inside an optimizer.
Each `*_update` function updates a parameter and its buffers in place; the formulas are in the
docstrings, their sources in docs/strategies.md.
"""
import math
from collections import deque

import torch
import torch.distributed as dist


def _norm(t):
    return t.detach().float().norm()


def _zeros(st, key, p, dtype=None):
    if key not in st:
        st[key] = torch.zeros_like(p, dtype=dtype)
    return st[key]


def _adam_state(st, p):
    """Advances the step count; returns (m, v, t)."""
    if not st:
        st["step"], st["exp_avg"], st["exp_avg_sq"] = 0, torch.zeros_like(p), torch.zeros_like(p)
    st["step"] += 1
    return st["exp_avg"], st["exp_avg_sq"], st["step"]


def _with_grad(opt):
    """(group, param, state) for every parameter that has a gradient."""
    for g in opt.param_groups:
        for p in g["params"]:
            if p.grad is not None:
                yield g, p, opt.state[p]


# ----------------------------------------------------------------------------------------------
# Pure update functions


def adam_moments_(m, v, grad, b1, b2):
    """m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², with torch AdamW's arithmetic."""
    m.lerp_(grad, 1 - b1)
    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)


def adamw_update(p, grad, m, v, t, lr, b1, b2, eps, weight_decay):
    """torch's AdamW: w ← w(1 − ηλ) − η·m̂/(√v̂ + ε), bias-corrected moments at step t."""
    adam_moments_(m, v, grad, b1, b2)
    denom = (v / (1 - b2 ** t)).sqrt_().add_(eps)
    p.mul_(1 - lr * weight_decay)
    p.addcdiv_(m, denom, value=-lr / (1 - b1 ** t))


def adabound_update(p, grad, m, v, t, lr, initial_lr, final_lr, gamma, b1, b2, eps, weight_decay):
    """AdaBound (Luo et al., ICLR 2019): g ← g + λw (L2); Adam moments; the per-coordinate step
    η√(1−β₂ᵗ)/(1−β₁ᵗ)/(√v + ε) is clipped to [f(1 − 1/(γt+1)), f(1 + 1/(γt))], f = final_lr·η/η₀,
    so the rule morphs from Adam into SGD at final_lr; w ← w − step⊙m."""
    if weight_decay != 0:
        grad = grad.add(p, alpha=weight_decay)
    adam_moments_(m, v, grad, b1, b2)
    final = final_lr * lr / initial_lr
    lower, upper = final * (1 - 1 / (gamma * t + 1)), final * (1 + 1 / (gamma * t))
    step_size = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    p.sub_((step_size / (v.sqrt() + eps)).clamp_(lower, upper) * m)


def lars_update(p, grad, buf, lr, momentum, weight_decay, trust, reference=False):
    """LARS (You, Gitman, Ginsburg 2017, arXiv 1708.03888).

    canonical: r = trust·‖w‖/(‖g‖ + λ‖w‖); v ← μv + η·r·(g + λw); w ← w − v. Tensors with ndim < 2
    skip the ratio and the decay; r = 1 when ‖w‖ or ‖g‖ is 0 (a zero-initialised tensor must move).
    reference=True (the strategies paper's code): d = g + λw; r = trust·‖w‖/(‖d‖ + 1e-8), r = trust
    when a norm is 0; v ← μv + d; w ← w − η·r·v. No exclusions; the ratio scales the whole buffer."""
    w_norm = _norm(p)
    if reference:
        d = grad.add(p, alpha=weight_decay)
        d_norm = _norm(d)
        r = trust * w_norm / (d_norm + 1e-8) if w_norm > 0 and d_norm > 0 else trust
        buf.mul_(momentum).add_(d)
        p.sub_(buf * (lr * float(r)))
        return
    if p.ndim < 2:
        buf.mul_(momentum).add_(grad, alpha=lr)
    else:
        g_norm = _norm(grad)
        r = trust * w_norm / (g_norm + weight_decay * w_norm) if w_norm > 0 and g_norm > 0 else 1.0
        buf.mul_(momentum).add_(grad.add(p, alpha=weight_decay), alpha=lr * float(r))
    p.sub_(buf)


def lamb_update(p, grad, m, v, t, lr, b1, b2, eps, weight_decay):
    """LAMB (You et al., ICLR 2020): u = m̂/(√v̂ + ε) + λw; w ← w − η·(‖w‖/‖u‖)·u. Tensors with
    ndim < 2 skip the decay and the ratio; the ratio is 1 when ‖w‖ or ‖u‖ is 0."""
    adam_moments_(m, v, grad, b1, b2)
    u = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
    ratio = 1.0
    if p.ndim >= 2:
        u.add_(p, alpha=weight_decay)
        w_norm, u_norm = _norm(p), _norm(u)
        ratio = float(w_norm / u_norm) if w_norm > 0 and u_norm > 0 else 1.0
    p.sub_(u, alpha=lr * ratio)


def lion_update(p, grad, m, lr, b1, b2, weight_decay):
    """Lion (Chen et al., NeurIPS 2023): c = β₁m + (1−β₁)g; w ← w(1 − ηλ) − η·sign(c);
    m ← β₂m + (1−β₂)g."""
    c = m.mul(b1).add_(grad, alpha=1 - b1)
    p.mul_(1 - lr * weight_decay).add_(c.sign_(), alpha=-lr)
    m.mul_(b2).add_(grad, alpha=1 - b2)


def dampened_sgd_update(p, grad, m, lr, momentum, weight_decay):
    """m ← μm + (1−μ)g from m = 0 (torch SGD's dampening skips the first step); w ← w − ηm;
    w ← w(1 − ηλ)."""
    m.mul_(momentum).add_(grad, alpha=1 - momentum)
    p.sub_(m, alpha=lr).mul_(1 - lr * weight_decay)


def dals_update(p, grad, e, m, lr, momentum, alpha, b, weight_decay, trust, clamp, raw=False, plain=False,
                decoupled=False):
    """One DALS tensor: e ← αe + (1−α)g; ĝ = b·g + (1−b)·e (raw=True: ĝ = g, e untouched);
    ĝ ← ĝ + λw unless decoupled; r = clamp(trust·‖w‖/‖ĝ‖, lo, hi), 1 when a norm is 0 or plain
    (plain also drops λ); m ← μm + ĝ; decoupled: w ← w(1 − ηλ); w ← w − η·r·m."""
    if raw:
        ghat = grad.clone()
    else:
        e.mul_(alpha).add_(grad, alpha=1 - alpha)
        ghat = grad.mul(b).add_(e, alpha=1 - b)
    wd = 0.0 if plain else weight_decay
    if not decoupled:
        ghat.add_(p, alpha=wd)
    w_norm, g_norm = _norm(p), _norm(ghat)
    lo, hi = clamp
    r = 1.0 if plain or w_norm == 0 or g_norm == 0 else min(max(float(trust * w_norm / g_norm), lo), hi)
    m.mul_(momentum).add_(ghat)
    if decoupled:
        p.mul_(1 - lr * wd)
    p.sub_(m, alpha=lr * r)


NS_COEFFS = (3.4445, -4.7750, 2.0315)
MUON_KINDS = ("attn_qk", "attn_vo", "mlp")


def zeropower_ns(G, coeffs=NS_COEFFS, steps=5, eps=1e-7):
    """Quintic Newton-Schulz on the last two dims, in bf16: X ← aX + (bS + cS²)X, S = XXᵀ. Singular
    values land roughly in [0.7, 1.2], not at 1: the coefficients maximise the slope at 0."""
    if G.ndim > 3:
        raise ValueError(f"zeropower_ns takes a matrix or a stack of matrices, got shape {tuple(G.shape)}")
    a, b, c = coeffs
    X = G.bfloat16()
    tall = G.size(-2) > G.size(-1)
    if tall:  # iterate on the small Gram matrix
        X = X.mT
    X = X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    mm = torch.addmm if X.ndim == 2 else torch.baddbmm  # fused a·X + P·X, bf16 rounding as torch's Muon
    for _ in range(steps):
        S = X @ X.mT
        P = mm(S, S, S, beta=b, alpha=c)
        X = mm(X, P, X, beta=a)
    return X.mT if tall else X


def lr_scale(shape, scale):
    """Muon's step multiplier for an A×B matrix (conv kernels flatten to out × in·kh·kw):
    √max(1, A/B) ('original', Keller Jordan) or 0.2·√max(A, B) ('match_rms_adamw', Moonlight)."""
    A, B = shape[0], math.prod(shape[1:])
    if scale == "original":
        return math.sqrt(max(1.0, A / B))
    if scale == "match_rms_adamw":
        return 0.2 * math.sqrt(max(A, B))
    raise ValueError(f"muon scale must be 'original' or 'match_rms_adamw', got {scale!r}")


def muon_update(p, grad, buf, lr, weight_decay, momentum, nesterov, ns_coeffs, ns_steps, scale):
    """Muon: buf ← βbuf + (1−β)G (fp32); U = (1−β)G + β·buf (Nesterov) or buf; O = NewtonSchulz(U);
    w ← w(1 − ηλ); w ← w − η·lr_scale·O."""
    g32 = grad.float()
    buf.lerp_(g32, 1 - momentum)
    u = g32.lerp(buf, momentum) if nesterov else buf
    o = zeropower_ns(u.reshape(p.shape[0], -1), ns_coeffs, ns_steps).view(p.shape)
    p.mul_(1 - lr * weight_decay)
    p.add_(o.to(p.dtype), alpha=-lr * lr_scale(p.shape, scale))


# ----------------------------------------------------------------------------------------------
# Optimizers: loop over parameters, call the rule


class AdaBound(torch.optim.Optimizer):
    """adabound_update; η₀ is each group's 'initial_lr' (set here, or by a scheduler attached later)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, final_lr=final_lr, gamma=gamma, eps=eps, weight_decay=weight_decay))
        for g in self.param_groups:
            g.setdefault("initial_lr", g["lr"])

    @torch.no_grad()
    def step(self, closure=None):
        for g, p, st in _with_grad(self):
            adabound_update(p, p.grad, *_adam_state(st, p), g["lr"], g["initial_lr"], g["final_lr"], g["gamma"],
                            *g["betas"], g["eps"], g["weight_decay"])


class LARS(torch.optim.Optimizer):
    """lars_update; reference=True follows the strategies paper's code."""

    def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=0.0, trust=0.001, reference=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust=trust, reference=reference))

    @torch.no_grad()
    def step(self, closure=None):
        for g, p, st in _with_grad(self):
            lars_update(p, p.grad, _zeros(st, "momentum_buffer", p), g["lr"], g["momentum"], g["weight_decay"],
                        g["trust"], g["reference"])


class LAMB(torch.optim.Optimizer):
    """lamb_update."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for g, p, st in _with_grad(self):
            lamb_update(p, p.grad, *_adam_state(st, p), g["lr"], *g["betas"], g["eps"], g["weight_decay"])


class Lion(torch.optim.Optimizer):
    """lion_update."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for g, p, st in _with_grad(self):
            lion_update(p, p.grad, _zeros(st, "exp_avg", p), g["lr"], *g["betas"], g["weight_decay"])


class DampenedSGD(torch.optim.Optimizer):
    """dampened_sgd_update: the base rule under the strategies paper's Grokfast."""

    def __init__(self, params, lr=0.01, momentum=0.9, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for g, p, st in _with_grad(self):
            dampened_sgd_update(p, p.grad, _zeros(st, "momentum_buffer", p), g["lr"], g["momentum"], g["weight_decay"])


DALS_VARIANTS = ("dals", "dals_fast", "dals_acc")


class DALS(torch.optim.Optimizer):
    """Discriminative Adaptive Layer Scaling: dals_update with a loss-driven phase P ∈ {0, 1, 2} that
    sets the EMA coefficient α (alpha()), and a blend b = 0.3 + 0.4·depth per group (each group needs
    a 'depth' in [0, 1]). Call observe(loss), write every group's lr, then step(). dals_fast uses the
    raw gradient in phase 0.

    min_dwell: steps a phase must last before it may change (0 = reference); exclude_1d: ndim < 2
    tensors get no decay and ratio 1; decoupled: w ← w(1 − ηλ) instead of L2."""

    def __init__(self, params, lr, variant="dals", momentum=0.9, alpha0=0.6, tau2=0.002, trust=0.02,
                 clamp=(0.2, 5.0), weight_decay=5e-4, min_dwell=0, exclude_1d=False, decoupled=False):
        assert variant in DALS_VARIANTS, variant
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, depth=0.5))
        self.variant, self.alpha0, self.tau2, self.trust, self.clamp = variant, alpha0, tau2, trust, clamp
        self.min_dwell, self.exclude_1d, self.decoupled = min_dwell, exclude_1d, decoupled
        self.glob = dict(ema=None, phase=0, dwell=0)  # loss EMA E, phase P, its age

    def observe(self, loss):
        """Phase detector, fed the step's (all-reduced, accumulation-averaged) loss before the update:
        E ← 0.95E + 0.05·loss, δ = (E_old − E)/|E_old|; P = 0 if δ > 0.01, 1 if δ > tau2, else 2."""
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

    def alpha(self, phase):
        """α(0) = max(0.3, α₀ − 0.3) (dals_acc: max(0.4, α₀ − 0.15)), α(1) = α₀, α(2) = min(0.9, α₀ + 0.1)."""
        a0 = self.alpha0
        if phase == 0:
            return max(0.4, a0 - 0.15) if self.variant == "dals_acc" else max(0.3, a0 - 0.3)
        return a0 if phase == 1 else min(0.9, a0 + 0.1)

    @torch.no_grad()
    def step(self, closure=None):
        phase = self.glob["phase"]
        alpha, raw = self.alpha(phase), phase == 0 and self.variant == "dals_fast"
        for g, p, st in _with_grad(self):
            dals_update(p, p.grad, _zeros(st, "ema", p), _zeros(st, "momentum_buffer", p), g["lr"], g["momentum"],
                        alpha, 0.3 + 0.4 * g["depth"], g["weight_decay"], self.trust, self.clamp, raw=raw,
                        plain=self.exclude_1d and p.ndim < 2, decoupled=self.decoupled)

    def state_dict(self):
        sd = super().state_dict()
        sd["dals"] = dict(self.glob)
        return sd

    def load_state_dict(self, sd):
        sd = dict(sd)
        self.glob = dict(sd.pop("dals"))
        super().load_state_dict(sd)


def muon_split(groups, kinds=MUON_KINDS):
    """Marks param-group dicts: hidden matrices (by 'kind', never by name) go to Muon; embed, head,
    norms and biases to AdamW. Returns the same list."""
    for g in groups:
        g["use_muon"] = g.get("kind") in kinds and all(p.ndim >= 2 for p in g["params"])
    return groups


def _dist():
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class MuonAdamW(torch.optim.Optimizer):
    """muon_update for groups with use_muon=True, adamw_update for the rest; every group carries its
    own lr and weight_decay, so a strategy may put one matrix per group and drive each group's lr:

        opt = MuonAdamW(muon_split(groups), lr=0.02, weight_decay=0.1, scale="match_rms_adamw")
        ... each step: write g["lr"] for every group, then opt.step()

    Under DDP (gradients already all-reduced) the Muon matrices of all groups form one list sorted by
    size, descending (stable: ties keep construction order). In blocks of world_size, rank r updates
    element base + r (only it holds that momentum buffer), then the block is all-gathered.
    state_dict() is a collective under DDP: call it on every rank; it returns every buffer, keyed by
    parameter name, so a checkpoint resumes under any world size. FSDP is not supported: Newton-Schulz
    needs whole matrices."""

    def __init__(self, params, lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True, ns_steps=5,
                 ns_coeffs=NS_COEFFS, scale="original", betas=(0.9, 0.95), eps=1e-8):
        lr_scale((2, 1), scale)  # validates the name
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                        ns_coeffs=tuple(ns_coeffs), scale=scale, betas=tuple(betas), eps=eps, use_muon=False)
        super().__init__(params, defaults)
        self.names = {}  # parameter -> stable name ('blocks.0.attn.q', or 'rest.3' inside multi-tensor groups)
        for i, g in enumerate(self.param_groups):
            base = g.get("name", f"group{i}")
            for j, p in enumerate(g["params"]):
                if g["use_muon"] and p.ndim < 2:
                    raise ValueError(f"Muon needs matrices; group {base!r} holds a tensor of shape {tuple(p.shape)}")
                self.names[p] = base if len(g["params"]) == 1 else f"{base}.{j}"

    def muon_list(self):
        """(param, group) for every Muon matrix, largest first; Python's sort is stable."""
        items = [(p, g) for g in self.param_groups if g["use_muon"] for p in g["params"]]
        return sorted(items, key=lambda pg: -pg[0].numel())

    def owner(self):
        """parameter -> owning rank under the current world size."""
        ws, _ = _dist()
        return {p: i % ws for i, (p, _) in enumerate(self.muon_list())}

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            if g["use_muon"]:
                continue
            for p in g["params"]:
                if p.grad is not None:
                    adamw_update(p, p.grad, *_adam_state(self.state[p], p), g["lr"], *g["betas"], g["eps"],
                                 g["weight_decay"])
        ws, rank = _dist()
        items = self.muon_list()
        for base in range(0, len(items), ws):
            block = items[base:base + ws]
            if base + rank < len(items):
                p, g = items[base + rank]
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                buf = _zeros(self.state[p], "momentum_buffer", p, torch.float32)
                muon_update(p, grad, buf, g["lr"], g["weight_decay"], g["momentum"], g["nesterov"], g["ns_coeffs"],
                            g["ns_steps"], g["scale"])
            if ws > 1:
                # pad to the block's largest matrix so every rank posts equal-sized tensors
                mine = torch.zeros(block[0][0].numel(), dtype=block[0][0].dtype, device=block[0][0].device)
                if base + rank < len(items):
                    p = items[base + rank][0]
                    mine[:p.numel()] = p.reshape(-1)
                out = [torch.empty_like(mine) for _ in range(ws)]
                dist.all_gather(out, mine)
                for r, (p, _) in enumerate(block):
                    if r != rank:
                        p.copy_(out[r][:p.numel()].view_as(p))

    def _gather_buffers(self):
        """Every Muon momentum buffer on every rank (collective under DDP)."""
        ws, rank = _dist()
        owner = self.owner()
        bufs = {}
        for p, _ in self.muon_list():
            st = self.state.get(p, {})
            if ws == 1:
                if "momentum_buffer" in st:
                    bufs[p] = st["momentum_buffer"]
                continue
            have = torch.tensor([1.0 if "momentum_buffer" in st else 0.0], device=p.device)
            dist.broadcast(have, src=owner[p])
            if have.item() == 0:
                continue
            t = st["momentum_buffer"].clone() if owner[p] == rank else torch.empty_like(p, dtype=torch.float32)
            dist.broadcast(t, src=owner[p])
            bufs[p] = t
        return bufs

    def state_dict(self):
        bufs = self._gather_buffers()
        state = {}
        muon_ids = {id(p) for p, _ in self.muon_list()}
        for p, name in self.names.items():
            if p in bufs:
                state[name] = {"momentum_buffer": bufs[p].clone()}
            elif self.state.get(p) and id(p) not in muon_ids:
                state[name] = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in self.state[p].items()}
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        for g, pg in zip(groups, self.param_groups):
            g["param_names"] = [self.names[p] for p in pg["params"]]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd):
        """Restores by parameter name: the saving run's world size and group order do not matter.
        Under DDP each rank keeps only the Muon buffers it owns."""
        by_name = {g.get("name"): g for g in sd["param_groups"]}
        for i, g in enumerate(self.param_groups):
            saved = by_name.get(g.get("name")) if g.get("name") is not None else sd["param_groups"][i]
            if saved is None:
                raise KeyError(f"optimizer state has no group named {g.get('name')!r}")
            g.update({k: v for k, v in saved.items() if k not in ("params", "param_names")})
        _, rank = _dist()
        owner = self.owner()
        self.state.clear()
        for p, name in self.names.items():
            if name in sd["state"] and owner.get(p, rank) == rank:
                self.state[p] = {k: (v.to(p.device).clone() if torch.is_tensor(v) else v) for k, v in sd["state"][name].items()}


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
    """Undoes sam_perturb."""
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
