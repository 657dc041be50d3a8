"""
Muon for hidden matrices and AdamW for everything else, in one torch Optimizer, single device or
DDP (specs/muon.md). Every group carries `use_muon` and its own `lr` and `weight_decay`, so a
strategy can put one matrix per group and drive each group's LR itself:

    groups = muon.split(optim.param_groups(model))        # sets use_muon by kind (hidden 2-D matrices)
    for g in groups: g["lr"] = ...                         # any per-group LR
    opt = muon.MuonAdamW(groups, lr=0.02, weight_decay=0.1, scale="match_rms_adamw", betas=(0.9, 0.95))
    ... each step: write g["lr"] for every group, then opt.step()

Muon update of one matrix W (A×B) with gradient G: buf ← β·buf + (1−β)G; U = (1−β)G + β·buf
(Nesterov) or buf; O = NewtonSchulz5(U) in bf16; W ← W(1 − lr·wd); W ← W − lr·scale·O, with scale
√max(1, A/B) ('original', Keller Jordan) or 0.2·√max(A, B) ('match_rms_adamw', Moonlight).
The AdamW side is torch's AdamW rule (decoupled decay lr·wd, bias-corrected moments).

Under DDP (gradients already all-reduced) the Muon matrices of ALL groups form one flat list
sorted by size, descending (stable, so ties keep construction order). In blocks of world_size,
rank r updates element base + r (only it holds that momentum buffer), then the block's new
weights are all-gathered. state_dict() is therefore a collective under DDP: call it on every rank;
it returns every buffer on every rank, keyed by parameter name, so a checkpoint resumes under any
world size. FSDP is not supported: Newton-Schulz needs whole matrices.
"""
import math

import torch
import torch.distributed as dist

NS_COEFFS = (3.4445, -4.7750, 2.0315)
MUON_KINDS = ("attn_qk", "attn_vo", "mlp")


def zeropower_ns(G, coeffs=NS_COEFFS, steps=5, eps=1e-7):
    """Quintic Newton-Schulz on the last two dims, in bf16. Singular values land roughly in
    [0.7, 1.2], not at 1: the coefficients maximise the slope at 0, which is the point."""
    a, b, c = coeffs
    X = G.bfloat16()
    tall = G.size(-2) > G.size(-1)
    if tall:  # iterate on the small Gram matrix
        X = X.mT
    X = X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    mm = torch.addmm if X.ndim == 2 else torch.baddbmm  # fused a·X + P·X, bf16 rounding as torch's Muon
    if X.ndim > 3:
        raise ValueError(f"zeropower_ns takes a matrix or a stack of matrices, got shape {tuple(G.shape)}")
    for _ in range(steps):
        S = X @ X.mT
        P = mm(S, S, S, beta=b, alpha=c)
        X = mm(X, P, X, beta=a)
    return X.mT if tall else X


def lr_scale(shape, scale):
    A, B = shape[0], math.prod(shape[1:])  # conv kernels flatten to (out, in·kh·kw)
    if scale == "original":
        return math.sqrt(max(1.0, A / B))
    if scale == "match_rms_adamw":
        return 0.2 * math.sqrt(max(A, B))
    raise ValueError(f"muon scale must be 'original' or 'match_rms_adamw', got {scale!r}")


def split(groups, kinds=MUON_KINDS):
    """Mark optim.param_groups() dicts: hidden matrices (by kind, never by name) go to Muon; embed,
    head, norms and biases to AdamW. Returns the same list."""
    for g in groups:
        g["use_muon"] = g.get("kind") in kinds and all(p.ndim >= 2 for p in g["params"])
    return groups


def _dist():
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class MuonAdamW(torch.optim.Optimizer):
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
            if not g["use_muon"]:
                self._adamw(g)
        ws, rank = _dist()
        items = self.muon_list()
        for base in range(0, len(items), ws):
            block = items[base:base + ws]
            if base + rank < len(items):
                self._muon(*items[base + rank])
            if ws > 1:
                # pad to the block's largest matrix so every rank posts equal-sized tensors
                size = block[0][0].numel()
                mine = torch.zeros(size, dtype=block[0][0].dtype, device=block[0][0].device)
                if base + rank < len(items):
                    p = items[base + rank][0]
                    mine[:p.numel()] = p.reshape(-1)
                out = [torch.empty_like(mine) for _ in range(ws)]
                dist.all_gather(out, mine)
                for r, (p, _) in enumerate(block):
                    if r != rank:
                        p.copy_(out[r][:p.numel()].view_as(p))

    def _muon(self, p, g):
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        st = self.state[p]
        if "momentum_buffer" not in st:
            st["momentum_buffer"] = torch.zeros_like(p, dtype=torch.float32)
        buf, beta = st["momentum_buffer"], g["momentum"]
        buf.lerp_(grad.float(), 1 - beta)
        u = grad.float().lerp(buf, beta) if g["nesterov"] else buf
        shape = p.shape
        o = zeropower_ns(u.reshape(shape[0], -1), g["ns_coeffs"], g["ns_steps"]).view(shape)
        p.mul_(1 - g["lr"] * g["weight_decay"])
        p.add_(o.to(p.dtype), alpha=-g["lr"] * lr_scale(shape, g["scale"]))

    def _adamw(self, g):
        b1, b2 = g["betas"]
        for p in g["params"]:
            if p.grad is None:
                continue
            st = self.state[p]
            if not st:
                st["step"] = 0
                st["exp_avg"], st["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
            st["step"] += 1
            t, m, v = st["step"], st["exp_avg"], st["exp_avg_sq"]
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v / (1 - b2 ** t)).sqrt_().add_(g["eps"])
            p.mul_(1 - g["lr"] * g["weight_decay"])
            p.addcdiv_(m, denom, value=-g["lr"] / (1 - b1 ** t))

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
