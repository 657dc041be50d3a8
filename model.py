"""
LLaMA and GPT-2 in one file, with the size presets nanoLR trains.

Module names are chosen so that layer groups are obvious and identical across both architectures:
  embed, pos_embed (GPT only), blocks.{i}.attn_norm, blocks.{i}.attn.{q,k,v,o},
  blocks.{i}.mlp_norm, blocks.{i}.mlp.{gate,up,down} (GPT has no gate), norm, head.
GPT keeps q, k, v as separate matrices (mathematically the same as GPT-2's fused c_attn) so that
every weight matrix is its own layerwise-LR group; export_hf.py fuses them back.

python model.py <preset>   prints the parameter count and a per-module table (a config: train.py --dry_run).
"""
import math
import pickle
import sys
import zipfile
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    arch: str = "llama"       # 'llama' (RMSNorm, RoPE, SwiGLU, untied) or 'gpt' (LayerNorm, learned positions, GELU, tied)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    ffn_hidden: int = 0       # MLP width; 0 means 4*n_embd for GPT and 8/3*n_embd rounded to 16 for LLaMA
    vocab_size: int = 256
    block_size: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 0.0     # 0 means 1e-6 for LLaMA (RMSNorm) and 1e-5 for GPT (LayerNorm)
    init_std: float = 0.02
    dropout: float = 0.0
    qk_norm: bool = False     # normalize each head's q and k before RoPE (OLMo 2, Qwen3): bounded attention logits
    # width/depth parametrization (docs/mup.md): 'sp' (standard, the rules above), 'mup' (Yang et al. 2022) or
    # 'completep' (muP + depth, Dey et al. 2025), relative to a tuned base model of n_embd = base_width,
    # n_layer = base_depth and head dim base_head_dim (0: this model's head dim)
    parametrization: str = "sp"
    base_width: int = 0
    base_depth: int = 0
    base_head_dim: int = 0

    def __post_init__(self):
        if self.arch not in ("llama", "gpt"):
            raise ValueError(f"model arch must be 'llama' or 'gpt', got {self.arch!r}")
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {', '.join(PARAMETRIZATIONS)}, got {self.parametrization!r}")
        if self.parametrization != "sp" and self.base_width <= 0:
            raise ValueError(f"parametrization={self.parametrization!r} needs base_width > 0 (the n_embd of the tuned base model)")
        if self.parametrization == "completep" and self.base_depth <= 0:
            raise ValueError("parametrization='completep' needs base_depth > 0 (the n_layer of the tuned base model)")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.ffn_hidden == 0:
            self.ffn_hidden = 4 * self.n_embd if self.arch == "gpt" else 16 * math.ceil(8 * self.n_embd / 3 / 16)
        if self.norm_eps == 0.0:
            self.norm_eps = 1e-6 if self.arch == "llama" else 1e-5

    def width_mult(self):
        """m = n_embd / base_width under mup and completep; 1 under sp."""
        return self.n_embd / self.base_width if self.parametrization != "sp" else 1.0

    def depth_mult(self):
        """m_L = n_layer / base_depth under completep; 1 otherwise."""
        return self.n_layer / self.base_depth if self.parametrization == "completep" else 1.0

    def attn_scale(self):
        """Attention score scale for SDPA: None (its 1/sqrt(d_head)) under sp, or where d_head is the base's;
        else muP's 1/d_head, times sqrt(base_head_dim) so that a model of the base's head dim keeps its value."""
        head_dim = self.n_embd // self.n_head
        base = self.base_head_dim or head_dim
        return None if self.parametrization == "sp" or base == head_dim else math.sqrt(base) / head_dim


PARAMETRIZATIONS = ("sp", "mup", "completep")
COMPLETEP_ALPHA = 1.0  # residual branches scaled by m_L^-alpha; alpha = 1 is CompleteP (Dey et al. 2025, Table 1)


# Dimensions: docs/models.md. LLaMA presets use GPT-2 BPE (50257 padded to 50304); the paper's
# T5 vocab (32128) can be set with vocab_size. Small presets are for CPUs and tests (byte tokens).
PRESETS = {
    "llama_60m": dict(arch="llama", n_layer=6, n_head=12, n_embd=768, ffn_hidden=1512, vocab_size=50304, block_size=1024),
    "llama_135m": dict(arch="llama", n_layer=12, n_head=12, n_embd=768, ffn_hidden=2048, vocab_size=50304, block_size=1024),
    "llama_350m": dict(arch="llama", n_layer=24, n_head=16, n_embd=1024, ffn_hidden=2736, vocab_size=50304, block_size=1024),
    "llama_1b": dict(arch="llama", n_layer=24, n_head=32, n_embd=2048, ffn_hidden=5461, vocab_size=50304, block_size=1024),
    "llama_3b": dict(arch="llama", n_layer=32, n_head=32, n_embd=2560, ffn_hidden=6848, vocab_size=50304, block_size=1024),
    "llama_60m_galore": dict(arch="llama", n_layer=8, n_head=8, n_embd=512, ffn_hidden=1376, vocab_size=50304, block_size=256),
    "gpt_nano": dict(arch="gpt", n_layer=12, n_head=12, n_embd=768, ffn_hidden=3072, vocab_size=50304, block_size=1024),
    # CPU presets, byte-level vocab
    "llama_tiny": dict(arch="llama", n_layer=4, n_head=4, n_embd=256, ffn_hidden=688, vocab_size=256, block_size=256),
    "llama_mini": dict(arch="llama", n_layer=4, n_head=4, n_embd=128, ffn_hidden=352, vocab_size=256, block_size=256),
    "llama_nano": dict(arch="llama", n_layer=2, n_head=2, n_embd=64, ffn_hidden=176, vocab_size=256, block_size=64),
    "gpt_tiny": dict(arch="gpt", n_layer=4, n_head=4, n_embd=256, ffn_hidden=1024, vocab_size=256, block_size=256),
    "gpt_micro": dict(arch="gpt", n_layer=2, n_head=2, n_embd=64, ffn_hidden=256, vocab_size=256, block_size=64),
}


def config_from_preset(name, **overrides):
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


def rope_tables(head_dim, length, theta):
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)  # rotate-half layout, as Hugging Face's LLaMA uses
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg.n_embd
        self.n_head, self.rope, self.dropout = cfg.n_head, cfg.arch == "llama", cfg.dropout
        self.scale = cfg.attn_scale()  # None: SDPA's 1/sqrt(d_head)
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.qk_norm = cfg.qk_norm  # one norm per head dim, shared by the heads (Wortsman et al. 2023, arXiv 2309.14322)
        if self.qk_norm:
            self.q_norm, self.k_norm = make_norm(cfg, d // cfg.n_head), make_norm(cfg, d // cfg.n_head)

    def forward(self, x, cos=None, sin=None):
        B, T, C = x.shape
        q, k, v = (proj(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for proj in (self.q, self.k, self.v))
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope:
            q, k = apply_rope(q, cos[:T], sin[:T]), apply_rope(k, cos[:T], sin[:T])
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0,
                                           scale=self.scale)
        return self.o(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, h = cfg.n_embd, cfg.ffn_hidden
        self.swiglu = cfg.arch == "llama"
        if self.swiglu:
            self.gate = nn.Linear(d, h, bias=False)
        self.up = nn.Linear(d, h, bias=False)
        self.down = nn.Linear(h, d, bias=False)

    def forward(self, x):
        if self.swiglu:
            return self.down(F.silu(self.gate(x)) * self.up(x))
        return self.down(F.gelu(self.up(x)))


def make_norm(cfg, dim=None):
    if cfg.arch == "llama":
        return nn.RMSNorm(dim or cfg.n_embd, eps=cfg.norm_eps)
    return nn.LayerNorm(dim or cfg.n_embd, eps=cfg.norm_eps, bias=False)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn_norm, self.attn = make_norm(cfg), Attention(cfg)
        self.mlp_norm, self.mlp = make_norm(cfg), MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.branch_mult = cfg.depth_mult() ** -COMPLETEP_ALPHA  # CompleteP: (base_depth / L) on each residual branch

    def forward(self, x, cos=None, sin=None):
        if self.branch_mult != 1.0:
            x = x + self.branch_mult * self.drop(self.attn(self.attn_norm(x), cos, sin))
            return x + self.branch_mult * self.drop(self.mlp(self.mlp_norm(x)))
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


FUSED_CE = ("auto", "on", "off", "chunked")  # train.py's fused_ce: how the LM head and the loss are computed
FUSED_KERNELS = ("liger", "cce")         # CUDA kernels, in the order auto and on prefer them
KERNEL_PACKAGES = {"liger": "liger-kernel", "cce": "cut-cross-entropy"}
CPU_AUTO = "off"                         # what fused_ce='auto' picks on a CPU: docs/performance.md has the measurement


_KERNELS = {}


def _fused_kernel(name):
    """The loss function (h, w, targets, ignore_index) of an installed CUDA kernel, or None; imported lazily, once."""
    if name not in _KERNELS:
        _KERNELS[name] = _import_kernel(name)
    return _KERNELS[name]


def _import_kernel(name):
    try:
        if name == "liger":
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
            return lambda h, w, t, ignore_index: LigerFusedLinearCrossEntropyLoss(ignore_index=ignore_index)(w, h, t)
        from cut_cross_entropy import linear_cross_entropy
        return lambda h, w, t, ignore_index: linear_cross_entropy(h, w, t, ignore_index=ignore_index)
    except Exception:  # not installed, or installed without a working Triton
        return None


def installed_kernels():
    """Names of the fused linear + cross-entropy CUDA kernels that import here."""
    return [k for k in FUSED_KERNELS if _fused_kernel(k) is not None]


def resolve_fused_ce(setting, device_type):
    """fused_ce ('auto' | 'on' | 'off' | 'chunked') on a device type -> the loss path a model runs: 'off'
    (the plain head and F.cross_entropy), 'chunked' (pure PyTorch, any device) or a kernel of
    FUSED_KERNELS (CUDA). 'on' without an installed kernel raises ValueError naming what to install."""
    if setting not in FUSED_CE:
        raise ValueError(f"fused_ce must be one of {', '.join(FUSED_CE)}, got {setting!r}")
    if setting in ("off", "chunked"):
        return setting
    kernels = installed_kernels() if device_type == "cuda" else []
    if kernels:
        return kernels[0]
    if setting == "on":
        need = "fused_ce='on' needs a fused linear + cross-entropy CUDA kernel"
        if device_type == "cuda":
            raise ValueError(f"{need} and none is installed: pip install liger-kernel (or pip install cut-cross-entropy), "
                             "or set fused_ce='auto' or 'off'")
        raise ValueError(f"{need} (pip install liger-kernel or cut-cross-entropy, on a CUDA machine); this run is on "
                         f"{device_type}: set fused_ce='auto' or 'off'")
    return CPU_AUTO if device_type == "cpu" else "off"


def ce_chunk_rows(n_rows, n_embd, vocab_size):
    """Rows per chunk of the chunked loss: one chunk of logits about the size of the hidden states (at least 64 rows)."""
    return max(64, min(n_rows, -(-n_rows * n_embd // vocab_size)))


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of h @ w.T against targets (rows with ignore_index left out), computed over
    `chunk` rows at a time: the full rows x vocab logits never exist. The gradients wrt h and w are
    computed in the same pass, chunk by chunk, and backward only scales them. Logits and the softmax
    are fp32; the matmuls run in the autocast dtype when autocast is on, as the plain head does."""

    @staticmethod
    def forward(ctx, h, w, targets, chunk, ignore_index, grad_enabled):
        device = h.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
        need_h, need_w = grad_enabled and ctx.needs_input_grad[0], grad_enabled and ctx.needs_input_grad[1]
        with torch.autocast(device, enabled=False):
            hc, wc = h.to(dtype), w.to(dtype)
            valid = targets != ignore_index
            safe = torch.where(valid, targets, 0)
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            grad_h = torch.empty_like(h) if need_h else None
            grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_w else None
            for s in range(0, h.shape[0], chunk):
                hs, ts, vs = hc[s:s + chunk], safe[s:s + chunk], valid[s:s + chunk]
                logits = (hs @ wc.t()).float()
                lse = torch.logsumexp(logits, dim=-1)
                total += torch.where(vs, lse - logits.gather(1, ts[:, None]).squeeze(1), 0.0).sum()
                if need_h or need_w:
                    g = logits.sub_(lse[:, None]).exp_()  # softmax, in the logits' memory
                    g[torch.arange(len(ts), device=g.device), ts] -= 1.0
                    g = g.mul_(vs[:, None]).to(dtype)     # d(sum of losses)/d(logits); ignored rows 0
                    if need_h:
                        grad_h[s:s + chunk] = g @ wc
                    if need_w:
                        if dtype == torch.float32:
                            grad_w.addmm_(g.t(), hs)
                        else:
                            grad_w += g.t() @ hs
            count = valid.sum()
            loss = total / count
            if need_h:
                grad_h /= count
            if need_w:
                grad_w = grad_w.div_(count).to(w.dtype)
        ctx.save_for_backward(grad_h, grad_w)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors  # scaled in place: no second copy (a second backward is refused)
        return (None if grad_h is None else grad_h.mul_(grad_loss.to(grad_h.dtype)),
                None if grad_w is None else grad_w.mul_(grad_loss.to(grad_w.dtype)), None, None, None, None)


def linear_cross_entropy(h, w, targets, impl="chunked", ignore_index=-1, chunk=0):
    """Mean cross-entropy of the logits h @ w.T (h: rows x d, w: vocab x d, targets: rows) without the
    logits: impl 'chunked' (chunk rows at a time, 0 for ce_chunk_rows) or an installed CUDA kernel."""
    if impl == "chunked":
        chunk = chunk or ce_chunk_rows(h.shape[0], h.shape[1], w.shape[0])
        return ChunkedLinearCrossEntropy.apply(h, w, targets, chunk, ignore_index, torch.is_grad_enabled())
    kernel = _fused_kernel(impl)
    if kernel is None:
        raise ValueError(f"the fused loss kernel {impl!r} is not installed: pip install {KERNEL_PACKAGES.get(impl, impl)}")
    device = h.device.type
    if torch.is_autocast_enabled(device):  # the kernels take one dtype; the casts carry the gradients back
        h, w = h.to(torch.get_autocast_dtype(device)), w.to(torch.get_autocast_dtype(device))
    return kernel(h, w, targets, ignore_index)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        if cfg.arch == "gpt":
            self.pos_embed = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.norm = make_norm(cfg)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.arch == "gpt":
            self.head.weight = self.embed.weight  # tied: one matrix, counted once (as the embedding)
        else:
            cos, sin = rope_tables(cfg.n_embd // cfg.n_head, cfg.block_size, cfg.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.fused_ce = "off"  # the loss path ('off', 'chunked' or a CUDA kernel); not part of cfg, so not of checkpoints
        self.ce_chunk = 0      # rows per chunk of the chunked path; 0: ce_chunk_rows
        # muP's output multiplier on the head's input (MuReadout semantics: the head keeps the base's init and LR)
        self.output_mult = 1.0 / cfg.width_mult()
        # muP: hidden matrices (attn, mlp) at init_std * m^-1/2, i.e. variance ∝ 1/fan_in relative to the base;
        # embeddings and head keep init_std. Under sp the factor is 1 and the random draws are today's.
        hidden = {id(m) for block in self.blocks for m in (*block.attn.children(), *block.mlp.children())}
        hidden_mult = cfg.width_mult() ** -0.5
        self.apply(lambda module: self._init_weights(module, hidden_mult if id(module) in hidden else 1.0))
        if cfg.arch == "gpt":  # GPT-2: residual output projections scaled down with depth (CompleteP: the base's depth)
            init_depth = cfg.base_depth if cfg.parametrization == "completep" else cfg.n_layer
            for name, p in self.named_parameters():
                if name.endswith(("attn.o.weight", "mlp.down.weight")):
                    nn.init.normal_(p, mean=0.0, std=cfg.init_std / math.sqrt(2 * init_depth) * hidden_mult)

    def _init_weights(self, module, std_mult=1.0):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std * std_mult)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(f"sequence of length {T} is longer than block_size={self.cfg.block_size}")
        x = self.embed(idx)
        cos = sin = None
        if self.cfg.arch == "gpt":
            x = x + self.pos_embed(torch.arange(T, device=idx.device))
        else:
            cos, sin = self.rope_cos, self.rope_sin
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, cos, sin)
        x = self.norm(x)
        if self.output_mult != 1.0:
            x = x * self.output_mult
        if targets is not None and self.fused_ce != "off":  # the loss without the logits
            return None, linear_cross_entropy(x.reshape(B * T, -1), self.head.weight, targets.reshape(-1),
                                              self.fused_ce, ignore_index=-1, chunk=self.ce_chunk)
        logits = self.head(x)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def num_params(self):
        """(total, non_embedding); non-embedding excludes token and position embeddings and the head."""
        total = sum(p.numel() for p in self.parameters())  # parameters() yields a tied matrix once
        excluded = {id(self.embed.weight), id(self.head.weight)}
        if hasattr(self, "pos_embed"):
            excluded.add(id(self.pos_embed.weight))
        non_embedding = sum(p.numel() for p in self.parameters() if id(p) not in excluded)
        return total, non_embedding

    def flops_per_token(self):
        """6N + 12·L·H·Q·T (PaLM appendix B); N counts matmul weights: every Linear, the head once,
        no untied input embedding and no position embedding."""
        c = self.cfg
        n_matmul = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        return 6 * n_matmul + 12 * c.n_layer * c.n_embd * c.block_size


def checkpoint_path(path):
    """A run directory or a checkpoint file -> the checkpoint file, with a clear error if absent."""
    import os
    file = os.path.join(path, "ckpt.pt") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"no checkpoint at {file!r}: pass a run directory holding ckpt.pt or a .pt file written by train.py")
    return file


def read_checkpoint_file(file, map_location="cpu"):
    """torch.load of a checkpoint file; a corrupt or truncated file (an interrupted copy, a full disk) raises
    one ValueError that names it, whichever of torch's, pickle's or zipfile's errors it gave."""
    try:
        return torch.load(file, map_location=map_location, weights_only=False)
    except PermissionError as e:  # not the content's fault (torch raises other OSErrors for truncated files)
        raise ValueError(f"cannot read {file!r}: {e.strerror}") from None
    except Exception as e:
        why = (str(e).strip().splitlines() or [""])[0].split(". ")[0]  # torch's messages run to several sentences
        # only what a damaged file gives is called corrupt: an out-of-memory error must not get a good file deleted
        if isinstance(e, (EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile)) or "PytorchStreamReader" in str(e):
            raise ValueError(f"{file!r} is corrupt or truncated ({type(e).__name__}: {why}): replace it with a "
                             "kept ckpt_<iter>.pt of the run if there is one, or start fresh") from None
        raise ValueError(f"{file!r} is not a readable checkpoint ({type(e).__name__}: {why})") from None


def load_checkpoint(path, map_location="cpu"):
    """The checkpoint dict written by train.py: model (state dict), model_config, strategy, iter_num,
    config, rng, tokenizer, wandb_id (None without wandb)."""
    file = checkpoint_path(path)
    ckpt = read_checkpoint_file(file, map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise ValueError(f"{file!r} is not a nanoLR checkpoint (no 'model' and 'model_config' entries)")
    return ckpt


def model_from_checkpoint(path, device="cpu"):
    """(model in eval mode on device, checkpoint dict)."""
    ckpt = load_checkpoint(path, map_location=device)
    model = Transformer(ModelConfig(**ckpt["model_config"])).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def param_table(model):
    rows = [(name, tuple(p.shape), p.numel()) for name, p in model.named_parameters()]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'module':<{width}}  {'shape':>14}  {'params':>12}"]
    lines += [f"{n:<{width}}  {str(s):>14}  {c:>12,}" for n, s, c in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in PRESETS:
        raise SystemExit(f"usage: python model.py PRESET (one of: {', '.join(PRESETS)})\n"
                         "the size of a config: python train.py CONFIG_FILES --dry_run")
    cfg = config_from_preset(sys.argv[1])
    with torch.device("meta"):  # counting needs no memory, even for 3B
        model = Transformer(cfg)
    total, non_embedding = model.num_params()
    print(param_table(model))
    print(asdict(cfg))
    print(f"params total={total} non_embedding={non_embedding}")
