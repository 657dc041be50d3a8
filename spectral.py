"""
Heavy-tailed self-regularization (HT-SR) metrics of weight matrices (Martin & Mahoney), defined so that
the numbers agree with weightwatcher 0.7.7 and with the PL_Alpha_Hill estimator of LLR / TempBalance.
A library: it imports nothing of the project (the command-line tool is eval/htsr.py).

    lam = esd(W)                                  # eigenvalues of WᵀW, ascending, fp32, on W's device
    alpha = hill_alpha(lam, method='median')      # 'median' (LLR), 'ks' (weightwatcher), 'fix-finger'
    fit = powerlaw_fit(lam, method='ks')          # alpha, D, xmin, xmax, sigma, num_pl_spikes, n_fit
    m = spectrum_metrics(lam, n_rows=W.shape[0])  # the fit plus log_norm, stable_rank, entropy, ...
    rows = analyze(model, method='median', metrics=('alpha',), min_evals=50)   # one dict per matrix
    mats = named_matrices(model)                  # [(name, weight)] that analyze() fits
    lam = stack_eigvals(same_shape_mats, route)   # (B, M) batched eigenvalues by one route (ROUTES)

Inputs: analyze() and named_matrices() take an nn.Module (DDP- or torch.compile-wrapped is fine; Linear,
Embedding and Conv2d weights, a tied matrix once under its first name) or a dict: a state dict or
{name: tensor} ('.weight' suffixes and '_orig_mod.'/'module.' prefixes dropped, biases and 1-D gains left
out, tensors sharing storage counted once), or a checkpoint dict with 'model' and 'model_config' keys.
Loading a checkpoint file is the caller's job. Rows of analyze(): name, shape, N, M (larger dimension,
number of eigenvalues), skipped (None or the reason), xmin_method, scale and the requested METRICS.

Conventions (docs/htsr.md): no 1/N normalization; n counts xmin (Clauset's MLE, as weightwatcher and the
LLR code); fits in float64; eigenvalues <= 1e-5 are left out of fits unless filter_zeros=False; Conv2d
weights are kh*kw slices of shape (out, in) whose spectra are pooled and scaled by 0.5 (weightwatcher's
conv2d_norm). Under torch.distributed, analyze() splits the matrices across ranks and all-gathers the rows.
"""
import functools
import math
import time
import warnings

import torch
import torch.nn as nn

EVALS_THRESH = 1e-5         # weightwatcher's EVALS_THRESH: eigenvalues at or below it are not fitted
RANK1_FLOOR = 1e-5          # eigenvalues below λ_max·1e-5 can be fp32 noise of the Gram route
METHODS = ("median", "ks", "fix-finger")
FIT_METRICS = ("alpha", "D", "xmin", "xmax", "sigma", "num_pl_spikes", "alpha_weighted", "log_alpha_norm", "alphahat")
NORM_METRICS = ("norm", "log_norm", "spectral_norm", "log_spectral_norm", "stable_rank", "matrix_rank", "rank_loss",
                "entropy", "num_evals")
METRICS = FIT_METRICS + NORM_METRICS
ROUTES = ("auto", "gram", "gram64", "svd", "svd64", "gesvda")


# ----------------------------------------------------------------------------------------------
# Eigenvalues


def _check_weight(W):
    if not torch.is_tensor(W):
        raise ValueError(f"expected a tensor, got {type(W).__name__}")
    if W.ndim not in (2, 4):
        raise ValueError(f"a {W.ndim}-D tensor of shape {tuple(W.shape)} has no spectrum: need a 2-D matrix or a "
                         "4-D Conv2d weight (biases and norm gains are not fitted)")
    if W.numel() == 0:
        raise ValueError(f"empty matrix of shape {tuple(W.shape)}")


def stack_eigvals(mats, route):
    """Ascending eigenvalues of WᵀW for same-shape (rows >= cols) matrices: a (B, cols) tensor on their
    device, fp32 (fp64 for the *64 routes), NaN rows for non-finite matrices. Routes, chosen by measurement:
    'auto' = 'gesvda' on CUDA (rows < 8·cols), 'gram' elsewhere. 'gram': fp32 Gram + eigvalsh, ~5x cheaper
    than an fp64 SVD on 2 CPU cores; top half to ~1e-5 relative, the smallest eigenvalues of near-square
    matrices only to ~1e-7·λ_max. 'gram64': the same in fp64. 'svd'/'svd64': squared svdvals in fp32/fp64
    (weightwatcher's GPU/CPU numbers). 'gesvda': cuSOLVER's batched SVD, ~4x faster than eigvalsh on an
    H100, top half to ~1e-7; a stack it rejects (ill-conditioned, non-finite) takes the 'gram' route."""
    if route == "auto":
        route = auto_route(mats[0].device, *mats[0].shape)
    if route == "gesvda":  # cuSOLVER's batched SVD via the Gram matrix: ~5x faster than eigvalsh on a GPU
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # torch only warns when a batch element fails to converge
                stack = torch.stack([w.float() for w in mats])
                lam = torch.linalg.svdvals(stack, driver="gesvda").flip(-1) ** 2
            if torch.isfinite(lam).all():
                return lam.clamp_(min=0)
        except (RuntimeError, UserWarning):  # it refuses ill-conditioned or non-finite input: take the robust route
            pass
        route = "gram"
    if route in ("gram", "gram64"):
        dtype = torch.float32 if route == "gram" else torch.float64
        stack = torch.stack([_gram(w.to(dtype)) for w in mats])  # one cast copy at a time
    elif route in ("svd", "svd64"):
        stack = torch.stack([w.to(torch.float32 if route == "svd" else torch.float64) for w in mats])
    else:
        raise ValueError(f"unknown eigenvalue route {route!r}; choose one of {ROUTES}")
    finite = torch.isfinite(stack).all(-1).all(-1)            # a NaN/inf matrix gets NaN eigenvalues, no error
    eye = torch.eye(*stack.shape[1:], dtype=stack.dtype, device=stack.device)
    stack = torch.where(finite[:, None, None], stack, eye)
    if route.startswith("gram"):
        lam = torch.linalg.eigvalsh(stack)
    else:
        lam = torch.linalg.svdvals(stack).flip(-1) ** 2
    lam = torch.where(finite[:, None], lam, torch.full_like(lam, float("nan")))
    return lam.clamp_(min=0)


def auto_route(device, rows, cols):
    """gesvda on CUDA, except very tall matrices (embeddings), where a Gram matrix is cheaper; gram elsewhere."""
    return "gesvda" if torch.device(device).type == "cuda" and rows < 8 * cols else "gram"


def _gram(w, splits=4):
    """WᵀW. On a CPU only the upper block triangle is multiplied (5/8 of the flops, ~30% faster); the
    result is the same dot products, mirrored."""
    M = w.shape[1]
    if w.device.type != "cpu" or M < 256:
        return w.T @ w
    b = -(-M // splits)
    G = w.new_empty(M, M)
    for i in range(0, M, b):
        block = w[:, i:i + b].T @ w[:, i:]
        G[i:i + b, i:] = block
        G[i:, i:i + b] = block.T
    return G


def _slices(W):
    """2-D weight -> [W oriented rows >= cols]; Conv2d (out, in, kh, kw) -> kh*kw slices (out, in)."""
    mats = [W] if W.ndim == 2 else list(W.permute(2, 3, 0, 1).reshape(-1, W.shape[0], W.shape[1]))
    return [m.T if m.shape[0] < m.shape[1] else m for m in mats]


def esd(W, route="auto", pool=True):
    """Eigenvalues of WᵀW (the squared singular values), ascending, fp32, on W's device. Conv2d weights:
    pool=True gives one spectrum of M·kh·kw values scaled by 0.5, pool=False a (kh·kw, M) stack scaled
    by kh·kw/2 (weightwatcher's conventions). Raises ValueError for 1-D, empty or non-finite input."""
    _check_weight(W)
    with torch.no_grad(), _highest_matmul_precision():
        mats = _slices(W.detach())
        lam = stack_eigvals(mats, route)
    if not torch.isfinite(lam).all():
        raise ValueError(f"matrix of shape {tuple(W.shape)} contains NaN or inf (or overflows fp32)")
    if W.ndim == 2:
        return lam[0]
    rf = W.shape[2] * W.shape[3]
    return (lam.flatten().sort().values * 0.5) if pool else lam * (rf / 2)


class _highest_matmul_precision:
    """Training code may enable TF32; a Gram matrix in TF32 loses 3 digits of every eigenvalue."""

    def __enter__(self):
        self.saved = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")

    def __exit__(self, *exc):
        torch.set_float32_matmul_precision(self.saved)


# ----------------------------------------------------------------------------------------------
# Power-law fit of a batch of spectra (B, N), all in float64, no Python loop over xmin candidates.


def _ks_distance(logs, cand, alpha, col0=0):
    """D_i = max_{k<n_i} |1 - (λ_{i+k}/λ_i)^{1-α_i} - k/n_i| for candidate indices cand, (C,) shared by all
    rows or (B, C); columns before col0 lie below every candidate and are skipped. Cells with j < i have
    their ratio clamped to 1 and k to 0, so they add |1 - 1 - 0| = 0 and need no mask."""
    N = logs.shape[1]
    k = (torch.arange(col0, N, device=logs.device) - cand[..., None]).clamp_(min=0)
    empirical = k.to(logs.dtype) / (N - cand)[..., None]                        # (C or B·C, N - col0)
    logx = logs[:, cand] if cand.ndim == 1 else logs.gather(1, cand)
    dev = (logs[:, None, col0:] - logx[..., None]).clamp_(min=0).mul_((1 - alpha)[..., None]).exp_()
    return dev.neg_().add_(1).sub_(empirical).abs_().amax(-1)


def _fit_batch(lam, method="median", xmin_pos=2, filter_zeros=True, thresh=EVALS_THRESH, k_term=False,
               reference=False, block=None):
    """lam: (B, N) ascending eigenvalues. Returns a dict of (B,) float64 tensors (alpha, D, xmin, xmax,
    sigma, num_pl_spikes, n_fit) plus 'bad' (B,) bool for rows whose fitted set is too small. block: cells
    of the KS table computed at once; cache-sized on a CPU, large on a GPU, where each chunk costs launches."""
    if method not in METHODS:
        raise ValueError(f"unknown xmin method {method!r}; choose one of {METHODS}")
    lam = lam.to(torch.float64).clamp(min=0)
    B, N = lam.shape
    valid = lam > (thresh if filter_zeros else 0.0)           # a suffix of each sorted row
    start = N - valid.sum(1)                                   # first fitted index per row
    logs = lam.clamp(min=1e-300).log()
    logs = torch.where(valid, logs, logs.gather(1, start.clamp(max=N - 1)[:, None]))  # keep rows ascending
    idx = torch.arange(N, device=lam.device)
    n = (N - idx).to(torch.float64)
    tail_log_sum = logs.flip(1).cumsum(1).flip(1)              # Σ_{j>=i} ln λ_j
    alphas = 1 + (n - float(k_term)) / (tail_log_sum - n * logs)
    bad = (N - start) < 2
    last = N - 2                                               # the top eigenvalue is never xmin
    if method == "median":
        i = (start + torch.floor((N - start) / xmin_pos).long()).clamp(max=last)[:, None]
        a = alphas.gather(1, i)
        D = _ks_distance(logs, i, a)
    else:
        if method == "ks":
            window = (idx[None, :] >= start[:, None]) & (idx[None, :] <= last)
        else:  # fix-finger: p = left edge of the fullest of 100 bins of log10 λ over the fitted set
            l10 = torch.where(valid, lam.clamp(min=1e-300).log10(), torch.zeros_like(lam))
            lo, hi = l10.gather(1, start.clamp(max=N - 1)[:, None]), l10[:, -1:]
            width = ((hi - lo) / 100).clamp(min=1e-300)
            bins = ((l10 - lo) / width).floor().clamp(0, 99).long()
            counts = torch.zeros(B, 100, dtype=torch.long, device=lam.device).scatter_add_(1, bins, valid.long())
            p = 10 ** (lo + counts.argmax(1, keepdim=True) * width)
            low_ok = lam > torch.log10(0.95 * p) if reference else lam >= 0.95 * p   # reference: unit mix-up
            window = low_ok & (lam <= 1.5 * p) & valid & (idx[None, :] <= last)
            bad = bad | ~window.any(1)
        D_all = torch.full((B, N), float("inf"), dtype=torch.float64, device=lam.device)
        block = block or (1 << 24 if lam.device.type == "cuda" else 1 << 19)   # 128 MB or 4 MB of float64
        rows = max(1, block // max(1, B * N))
        for a0 in range(0, N - 1, rows):                       # chunks of candidate rows, not a loop over xmin
            cand = torch.arange(a0, min(a0 + rows, N - 1), device=lam.device)
            D_all[:, a0:a0 + len(cand)] = _ks_distance(logs, cand, alphas[:, a0:a0 + len(cand)], col0=a0)
        D_all = torch.where(alphas > 1, D_all, torch.ones_like(D_all))  # weightwatcher: D = 1 where α <= 1
        D_all = torch.where(window, D_all.nan_to_num(1.0), torch.full_like(D_all, float("inf")))
        i = D_all.argmin(1, keepdim=True)                      # first index on ties
        a, D = alphas.gather(1, i), D_all.gather(1, i)
    i = i[:, 0]
    xmin = lam.gather(1, i[:, None])[:, 0]
    n_fit = (N - i).to(torch.float64)
    alpha = a[:, 0]
    bad = bad | ~torch.isfinite(alpha)
    return dict(alpha=alpha, D=D[:, 0], xmin=xmin, xmax=lam[:, -1], sigma=(alpha - 1) / n_fit.sqrt(),
                num_pl_spikes=(lam >= xmin[:, None]).sum(1).to(torch.float64), n_fit=n_fit, bad=bad)


def _metrics_batch(lam, n_rows, fit, entropy_eps=1e-10, rank_eps_dtype=torch.float64):
    """Norm and shape metrics of (B, M) spectra; every eigenvalue counts (not just the tail)."""
    lam = lam.to(torch.float64).clamp(min=0)
    norm, lmax = lam.sum(1), lam[:, -1]
    sv = lam.sqrt()
    rank = (sv > sv[:, -1:] * n_rows * torch.finfo(rank_eps_dtype).eps).sum(1).to(torch.float64)
    p = lam / norm[:, None] + entropy_eps
    out = dict(norm=norm, log_norm=norm.log10(), spectral_norm=lmax, log_spectral_norm=lmax.log10(),
               stable_rank=norm / lmax, matrix_rank=rank, rank_loss=lam.shape[1] - rank,
               entropy=-(p * p.log()).sum(1) / (rank + entropy_eps).log(),
               num_evals=torch.full_like(norm, lam.shape[1]))
    if fit is not None:
        alpha = fit["alpha"]
        out["alpha_weighted"] = alpha * out["log_spectral_norm"]
        out["log_alpha_norm"] = (lam ** alpha[:, None]).sum(1).log10()
        out["alphahat"] = torch.logaddexp(torch.zeros_like(alpha), out["alpha_weighted"])  # TempBalance/LLR
    return out


def _degenerate(lam):
    """Reason string (or None) per row for spectra no power law can be fitted to."""
    lmax = lam[:, -1]
    above = (lam > lmax[:, None] * RANK1_FLOOR).sum(1)
    reasons = []
    for finite, zero, k in zip(torch.isfinite(lam).all(1).tolist(), (lmax <= 0).tolist(), above.tolist()):
        reasons.append("contains NaN or inf" if not finite else "all-zero matrix: every eigenvalue is 0" if zero
                       else "rank-1 matrix: a single nonzero eigenvalue has no tail to fit" if k <= 1 else None)
    return reasons


def powerlaw_fit(eigs, method="median", xmin_pos=2, filter_zeros=True, thresh=EVALS_THRESH, k_term=False,
                 reference=False):
    """PL_Alpha_Hill fit of one spectrum. method: 'median' (xmin = eigenvalue ⌊N/xmin_pos⌋, the LLR
    default), 'ks' (xmin with the smallest KS distance, weightwatcher's default fitter) or 'fix-finger'
    (ks restricted to [0.95p, 1.5p] around the ESD peak p; reference=True uses the public code's
    (log10(0.95p), 1.5p] window). k_term=True uses the papers' 1 + (n-1)/Σ ln(λ/xmin) instead of n.
    Returns dict(alpha, D, xmin, xmax, sigma, num_pl_spikes, n_fit, xmin_method)."""
    lam = _as_spectrum(eigs)
    reason = _degenerate(lam[None])[0]
    if reason:
        raise ValueError(reason)
    fit = _fit_batch(lam[None], method, xmin_pos, filter_zeros, thresh, k_term, reference)
    if fit.pop("bad")[0]:
        raise ValueError(f"no power law fits this spectrum with method={method!r}: fewer than 2 eigenvalues "
                         f"above {thresh if filter_zeros else 0}, an empty fix-finger window or a flat tail")
    out = {k: v[0].item() for k, v in fit.items()}
    out["num_pl_spikes"], out["n_fit"] = int(out["num_pl_spikes"]), int(out["n_fit"])
    out["xmin_method"] = _method_label(method, reference, k_term)
    return out


def hill_alpha(eigs, method="median", **kwargs):
    """PL_Alpha_Hill α of one spectrum (see powerlaw_fit for the options)."""
    return powerlaw_fit(eigs, method, **kwargs)["alpha"]


@functools.lru_cache(maxsize=None)
def random_alpha(n_rows, n_cols, method="median", xmin_pos=2, draws=3, seed=0):
    """Mean PL_Alpha_Hill of `draws` i.i.d. Gaussian n_rows×n_cols matrices (fixed seed): the α of that shape
    with nothing learned. It grows with the aspect ratio (the Marchenko–Pastur bulk of a tall matrix is
    narrower), which is why fresh rectangular MLP matrices read as lighter-tailed than square attention ones.
    Cached per shape; the baseline of the shape-corrected α (shape_corrected_alpha)."""
    g = torch.Generator().manual_seed(seed)
    n, m = max(n_rows, n_cols), min(n_rows, n_cols)
    return sum(hill_alpha(esd(torch.randn(n, m, generator=g)), method, xmin_pos=xmin_pos) for _ in range(draws)) / draws


def shape_corrected_alpha(alpha, n_rows, n_cols, method="median", xmin_pos=2):
    """α on the scale of a square matrix: α · random_alpha(M, M) / random_alpha(N, M), M the smaller side.
    A Gaussian matrix of any shape then reads as the square one does, so a difference in α between a square
    and a rectangular matrix is one the weights learned, not one of their shapes (docs/htsr.md)."""
    m = min(n_rows, n_cols)
    return alpha * random_alpha(m, m, method, xmin_pos) / random_alpha(n_rows, n_cols, method, xmin_pos)


def spectrum_metrics(eigs, n_rows=None, method="median", entropy_eps=1e-10, rank_eps_dtype=torch.float64, **fit_kwargs):
    """Every metric of METRICS for one spectrum. n_rows is the larger matrix dimension (the rank rule's
    N; default len(eigs)). weightwatcher's constants are device dependent: on a CPU host entropy_eps=1e-10
    and rank_eps_dtype=float64 (the defaults), on a CUDA host 6e-5 and float32."""
    lam = _as_spectrum(eigs)
    out = powerlaw_fit(lam, method, **fit_kwargs)
    fit = {k: torch.tensor([v], dtype=torch.float64, device=lam.device) for k, v in out.items() if k == "alpha"}
    more = _metrics_batch(lam[None], n_rows or lam.numel(), fit, entropy_eps, rank_eps_dtype)
    out.update({k: v[0].item() for k, v in more.items()})
    for k in ("matrix_rank", "rank_loss", "num_evals"):
        out[k] = int(out[k])
    return out


def _as_spectrum(eigs):
    lam = torch.as_tensor(eigs)
    if lam.ndim != 1 or lam.numel() < 2:
        raise ValueError(f"expected a 1-D vector of at least 2 eigenvalues, got shape {tuple(lam.shape)}")
    if not torch.isfinite(lam).all():
        raise ValueError("eigenvalues contain NaN or inf")
    if lam.device.type == "mps":  # no float64 there
        lam = lam.cpu()
    return lam.to(torch.float64).sort().values


def _method_label(method, reference, k_term):
    return method + ("-reference" if reference and method == "fix-finger" else "") + ("-kterm" if k_term else "")


# ----------------------------------------------------------------------------------------------
# analyze(): every weight matrix of a model, state dict, {name: tensor} or checkpoint dict


def named_matrices(obj):
    """[(name, tensor)] of the weight matrices of a module, state dict, {name: tensor} or train.py
    checkpoint dict. Module names drop '.weight' and match groups.param_groups (a tied matrix appears once,
    first name)."""
    if isinstance(obj, nn.Module):
        obj = getattr(obj, "module", obj)
        obj = getattr(obj, "_orig_mod", obj)
        seen, out = set(), []
        for name, mod in obj.named_modules():
            matrix = isinstance(mod, (nn.Linear, nn.Embedding, nn.Conv2d)) or type(mod).__name__ == "Conv1D"  # transformers GPT-2
            if matrix and id(mod.weight) not in seen:
                seen.add(id(mod.weight))
                out.append((name, mod.weight))
        return out
    if not isinstance(obj, dict):
        raise ValueError(f"cannot analyze a {type(obj).__name__}: pass a module, a state dict or {{name: tensor}} "
                         "(load a checkpoint file first, e.g. with model.load_checkpoint)")
    if "model" in obj and "model_config" in obj:   # a train.py checkpoint dict
        obj = obj["model"]
    seen, out = set(), []
    for key, t in obj.items():
        if not torch.is_tensor(t) or key.endswith(".bias") or (key.endswith(".weight") and t.ndim < 2):
            continue  # biases and norm gains are not matrices
        name = key.removeprefix("_orig_mod.").removeprefix("module.").removesuffix(".weight")
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else None
        if ptr is not None and ptr in seen:
            continue  # tied weights (GPT's head) share the embedding's storage
        seen.add(ptr)
        out.append((name, t))
    return out


def _plan(names_shapes, world):
    """Deterministic split of matrices across ranks, balanced by SVD cost ~ m·n·min(m, n)."""
    load, owner = [0] * world, {}
    order = sorted(range(len(names_shapes)), key=lambda k: -math.prod(names_shapes[k]) * min(names_shapes[k]))
    for k in order:
        r = load.index(min(load))
        owner[k] = r
        load[r] += math.prod(names_shapes[k]) * min(names_shapes[k])
    return owner


def analyze(obj, method="median", metrics=METRICS, min_evals=0, exclude=(), filter_zeros=True, xmin_pos=2,
            reference=False, k_term=False, route="auto", entropy_eps=1e-10, rank_eps_dtype=torch.float64,
            chunk_bytes=1 << 28, timings=None):
    """One row (dict) per weight matrix of obj (a module or dict, see named_matrices; anything else, a
    file path included, raises ValueError): name, shape, N, M, skipped (None or the reason), xmin_method,
    scale and the requested metrics. Same-shape matrices are decomposed in one batched call on their own
    device; only eigenvalue vectors and results move. Under torch.distributed the matrices are split across
    ranks and the rows all-gathered, so every rank returns identical numbers. Never raises for a bad
    matrix: its row says why it was skipped. timings, if a dict, receives eig_s and fit_s."""
    metrics = tuple(metrics)
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; available: {', '.join(METRICS)}")
    entries = [(n, t) for n, t in named_matrices(obj) if n not in set(exclude)]
    rows = []
    for name, t in entries:
        shape = tuple(t.shape)
        rf = shape[2] * shape[3] if t.ndim == 4 else 1
        big, small = (max(shape[:2]), min(shape[:2])) if t.ndim >= 2 else (0, 0)
        rows.append(dict(name=name, shape=list(shape), N=big, M=small * rf, skipped=None,
                         xmin_method=_method_label(method, reference, k_term), scale=0.5 if rf > 1 else 1.0))
        try:
            _check_weight(t)
            if small * rf < 2:  # 1xN or Nx1: one eigenvalue, a rank-1 matrix; the batched fit needs two
                rows[-1]["skipped"] = f"{'x'.join(map(str, shape))} matrix: a single eigenvalue has no tail to fit"
            elif small * rf < min_evals:
                rows[-1]["skipped"] = f"{small * rf} eigenvalues < min_evals={min_evals}"
        except ValueError as e:
            rows[-1]["skipped"] = str(e)
    todo = [k for k, r in enumerate(rows) if r["skipped"] is None]
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    world = torch.distributed.get_world_size() if distributed else 1
    if world > 1:
        owner = _plan([tuple(entries[k][1].shape) for k in todo], world)
        rank = torch.distributed.get_rank()
        todo = [k for j, k in enumerate(todo) if owner[j] == rank]
    groups = {}
    for k in todo:
        t = entries[k][1]
        key = (t.device, rows[k]["N"], rows[k]["M"]) if t.ndim == 2 else ("conv", k)
        groups.setdefault(key, []).append(k)
    t_eig = t_fit = 0.0
    results = {}
    with torch.no_grad(), _highest_matmul_precision():
        for key, ks in groups.items():
            N, M = rows[ks[0]]["N"], rows[ks[0]]["M"]
            picked = auto_route(key[0], N, M) if route == "auto" and key[0] != "conv" else route
            stacks_weights = picked in ("svd", "svd64", "gesvda")
            per = max(1, chunk_bytes // (4 * M * (N if stacks_weights else M)))
            for c in range(0, len(ks), per):
                chunk = ks[c:c + per]
                t0 = _clock(entries[chunk[0]][1].device)
                if key[0] == "conv":
                    try:
                        lam = esd(entries[chunk[0]][1].detach(), route=route)[None]
                    except (ValueError, RuntimeError) as e:
                        results[chunk[0]] = dict(skipped=str(e))
                        continue
                else:
                    mats = [entries[k][1].detach() for k in chunk]
                    lam = stack_eigvals([m.T if m.shape[0] < m.shape[1] else m for m in mats], route)
                if lam.device.type == "mps":
                    lam = lam.cpu()
                t1 = _clock(lam.device)
                fit = _fit_batch(lam, method, xmin_pos, filter_zeros, EVALS_THRESH, k_term, reference)
                more = _metrics_batch(lam, torch.tensor([rows[k]["N"] for k in chunk], device=lam.device)[:, None],
                                      fit, entropy_eps, rank_eps_dtype)
                host = {m: v.tolist() for m, v in {**fit, **more}.items()}   # one transfer of small vectors
                reasons = _degenerate(lam)
                t2 = _clock(lam.device)
                t_eig, t_fit = t_eig + t1 - t0, t_fit + t2 - t1
                for j, k in enumerate(chunk):
                    reason = reasons[j] or ("no power law fit (too few eigenvalues above threshold, empty "
                                            "fix-finger window or flat tail)" if host["bad"][j] else None)
                    vals = {m: host[m][j] for m in metrics}
                    for m in ("num_pl_spikes", "matrix_rank", "rank_loss", "num_evals"):
                        if m in vals:
                            vals[m] = int(vals[m])
                    results[k] = dict(skipped=reason) if reason else vals
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, results)
        results = {k: v for part in gathered for k, v in part.items()}
    for k, res in results.items():
        rows[k].update(res)
    if timings is not None:
        timings.update(eig_s=t_eig, fit_s=t_fit)
    return rows


def _clock(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
