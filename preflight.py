"""
What a run checks before it starts and what it runs on: the config against the model presets, the
strategies, the loss paths and the devices; the device, precision and compilation of a config (train.py and
bench.py run with the same); the data against the model and the memory the run needs. Every refusal is one
`config error:` line, before anything is allocated or written.
"""
import math
import os
import re
from contextlib import nullcontext

import torch

import optim
import spectral
from configurator import ConfigError
from data.loader import TokenData
from logger import spectral_metric_names
from model import FUSED_CE, ModelConfig, Transformer, PRESETS, resolve_fused_ce

PEAK_TFLOPS = {"A100": 312, "H100 NVL": 835, "H100 PCIe": 756, "H100": 989, "H200": 989, "B200": 2250}


def check_config(c, world_size):
    """train.py's run keys against their domains and each other (optim.build checks the strategy's own keys)."""
    if c.model not in PRESETS:
        raise ConfigError(f"model {c.model!r} is not a preset of model.py; choose one of: {', '.join(PRESETS)}")
    try:  # the model is built with these before any strategy checks them
        optim.check_parametrization(vars(c))
    except optim.ConfigError as e:
        raise ConfigError(str(e)) from None
    if c.init_from not in ("scratch", "resume") and not os.path.exists(c.init_from):
        raise ConfigError(f"init_from must be 'scratch', 'resume', or a run directory or checkpoint file to branch from; "
                          f"{c.init_from!r} does not exist")
    if c.init_from == "scratch" and (c.branch_at >= 0 or c.decay_iters > 0):
        raise ConfigError("branch_at and decay_iters start a cooldown branch: set --init_from=<run dir or checkpoint> too")
    if c.init_from not in ("scratch", "resume") and c.decay_iters <= 0:
        raise ConfigError(f"a branch from {c.init_from!r} decays over decay_iters updates from branch_at: set --decay_iters > 0")
    for key, low in (("branch_at", -1), ("decay_iters", 0), ("keep_ckpts", 0), ("ckpt_every", 0)):
        if getattr(c, key) < low:
            raise ConfigError(f"{key} must be >= {low}, got {getattr(c, key)}")
    if c.keep_ckpts > 0 and c.ckpt_every <= 0:
        raise ConfigError(f"keep_ckpts={c.keep_ckpts} keeps the ckpt_every checkpoints: set ckpt_every > 0 as well")
    for key in ("max_iters", "batch_size", "grad_accum", "block_size", "eval_interval", "log_interval", "eval_tokens"):
        if getattr(c, key) <= 0:
            raise ConfigError(f"{key} must be > 0, got {getattr(c, key)}")
    if c.grad_accum % world_size:
        raise ConfigError(f"grad_accum={c.grad_accum} is not divisible by the world size {world_size}: "
                          f"set grad_accum to a multiple of {world_size}")
    if not 0 <= c.dropout < 1:
        raise ConfigError(f"dropout must be in [0, 1), got {c.dropout}: a probability of dropping, e.g. --dropout=0.1")
    check_device(c.device)
    if c.dtype not in ("auto", "float32", "bfloat16"):
        raise ConfigError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {c.dtype!r}")
    if c.fused_ce not in FUSED_CE:
        raise ConfigError(f"fused_ce must be one of {', '.join(FUSED_CE)}, got {c.fused_ce!r}")
    if c.spectral_every < 0:
        raise ConfigError(f"spectral_every must be >= 0 (0: monitor off), got {c.spectral_every}: "
                          "set --spectral_every=0 or a positive interval such as --spectral_every=100")
    if c.update_every < 0:
        raise ConfigError(f"update_every must be >= 0 (0: monitor off), got {c.update_every}: "
                          "set --update_every=0 or a positive interval such as --update_every=10")
    names = spectral_metric_names(c.spectral_metrics)
    if not names or set(names) - set(spectral.METRICS):
        raise ConfigError(f"spectral_metrics={c.spectral_metrics!r}: unknown metric "
                          f"{', '.join(sorted(set(names) - set(spectral.METRICS))) or '(none given)'}; valid: {', '.join(spectral.METRICS)}")


def check_device(device):
    """device is 'auto', 'cpu', 'cuda' or 'cuda:N' of a GPU this torch can see."""
    if device in ("auto", "cpu"):
        return
    if not re.fullmatch(r"cuda(:\d+)?", device):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"device={device!r} but this torch ({torch.__version__}, {build}) sees no CUDA GPU: "
                          "use --device=auto (CUDA when present, else the CPU) or --device=cpu")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device={device!r} but this machine has {torch.cuda.device_count()} CUDA GPU(s): "
                          f"use cuda:0 ... cuda:{torch.cuda.device_count() - 1}")


def runtime(c, local_rank=None):
    """(device, device type, use_bf16, autocast context, use_compile) of a config: what train.py and
    bench.py run with. local_rank picks this process's GPU under DDP."""
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if c.device == "auto" else c.device
    if local_rank is not None and dev.startswith("cuda"):
        dev = f"cuda:{local_rank}"
    device_type = "cuda" if dev.startswith("cuda") else "cpu"
    use_bf16 = c.dtype == "bfloat16" or (c.dtype == "auto" and (device_type == "cuda" or cpu_has_bf16()))
    ctx = torch.autocast(device_type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
    use_compile = (device_type == "cuda") if c.compile is None else bool(c.compile)
    return dev, device_type, use_bf16, ctx, use_compile


def cpu_has_bf16():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def loss_path(c, device_type):
    """The model's loss path for fused_ce on this device type (model.resolve_fused_ce); 'on' without a kernel stops the run."""
    try:
        return resolve_fused_ce(c.fused_ce, device_type)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def build_strategy(c, cfg, model):
    try:
        return optim.build(c.strategy, model, cfg)
    except optim.ConfigError as e:
        raise ConfigError(str(e)) from None


def peak_flops_of(device_type, override):
    if override > 0:
        return override
    if device_type != "cuda":
        return None  # MFU is not reported on CPUs
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_TFLOPS.items():  # longest names first where they share a prefix
        if key in name:
            return tflops * 1e12
    return None


def open_data(c):
    """The run's TokenData; the embedded corpus is prepared on first use (by the caller's rank 0 under DDP)."""
    try:
        return TokenData(c.dataset)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None


def model_config(c, vocab):
    overrides = dict(block_size=c.block_size, dropout=c.dropout, qk_norm=c.qk_norm,
                     vocab_size=c.vocab_size or 64 * math.ceil(vocab / 64))
    overrides.update({k: getattr(c, k) for k in ("n_layer", "n_head", "n_embd", "ffn_hidden") if getattr(c, k) > 0})
    overrides.update({k: getattr(c, k) for k in optim.PARAMETRIZATION_KEYS})  # optim's keys: it scales the LRs by them
    overrides.update(scaled_widths(c))
    try:
        return ModelConfig(**{**PRESETS[c.model], **overrides})
    except ValueError as e:  # e.g. n_embd not divisible by n_head
        raise ConfigError(f"model {c.model} with these overrides: {e}") from None


def scaled_widths(c):
    """Under mup and completep, a width override (n_embd other than the preset's) scales the preset's other
    width-like dimensions with it, as muP's one multiplier m = n_embd/base_width assumes (then the mup package's
    per-matrix fan-in ratios are m too): n_head at the preset's head dim; ffn_hidden by n_embd/preset n_embd, exactly
    when that is a whole number, else rounded up to a multiple of 16 (ModelConfig's LLaMA rule) if that moves it by
    at most 5%. A key set explicitly (> 0) wins; one that cannot scale is refused by name. sp keeps the preset's
    values, as before, so earlier sp runs with a width override reproduce and resume."""
    preset, d = PRESETS[c.model], c.n_embd
    if c.parametrization == "sp" or d <= 0 or d == preset["n_embd"]:
        return {}
    d0, out = preset["n_embd"], {}
    why = f"parametrization={c.parametrization!r} scales {c.model}'s widths by n_embd {d}/{d0}"
    if c.n_head <= 0:
        heads, rest = divmod(preset["n_head"] * d, d0)
        if rest or heads < 1:  # the head dim of the preset does not divide the new width
            near = min((h for h in range(1, d + 1) if d % h == 0), key=lambda h: abs(h * d0 - preset["n_head"] * d))
            raise ConfigError(f"{why}, but n_head cannot scale: {preset['n_head']} x {d}/{d0} = "
                              f"{preset['n_head'] * d / d0:g} heads (head dim {d0 // preset['n_head']} does not divide {d}): "
                              f"set --n_head (e.g. --n_head={near}), and --base_head_dim if the head dim then differs "
                              f"from the base model's")
        out["n_head"] = heads
    if c.ffn_hidden <= 0 and preset.get("ffn_hidden", 0) > 0:
        exact = preset["ffn_hidden"] * d / d0
        ffn = preset["ffn_hidden"] * d // d0 if preset["ffn_hidden"] * d % d0 == 0 else 16 * math.ceil(exact / 16)
        if abs(ffn - exact) > 0.05 * exact:  # rounding would break the ratio that muP's multipliers assume
            raise ConfigError(f"{why}, but ffn_hidden cannot scale: {preset['ffn_hidden']} x {d}/{d0} = {exact:.2f} is "
                              f"not a whole number and a multiple of 16 ({ffn}) is {abs(ffn - exact) / exact:.0%} off: "
                              f"set --ffn_hidden (e.g. --ffn_hidden={max(1, round(exact))})")
        out["ffn_hidden"] = ffn
    return out


def preflight(c, data, dev, device_type, use_bf16, ce_path, procs_here=1, dry_run=False):
    """What a run checks before it allocates anything: the data against the model (vocabulary, a block of train
    tokens), the model config, and the memory it needs. Returns (model config, bytes needed). A dry run checks the
    same, but what depends on this machine (data not prepared yet, memory) is a note: its config may be meant for another."""
    if data is not None and c.vocab_size and c.vocab_size < data.vocab_size:
        raise ConfigError(f"vocab_size={c.vocab_size} is smaller than the vocabulary of dataset {c.dataset!r} "
                          f"({data.vocab_size} tokens): set --vocab_size >= {data.vocab_size}, or 0 for the dataset's, padded")
    longest = max(len(shard) for shard in data.splits["train"]) if data is not None else math.inf
    if longest < c.block_size + 1:
        raise ConfigError(f"block_size={c.block_size} needs {c.block_size + 1} tokens in a row, but the train split of "
                          f"{c.dataset!r} has {longest} at most: set --block_size <= {longest - 1}")
    mcfg = model_config(c, data.vocab_size if data is not None else PRESETS[c.model]["vocab_size"])
    if dry_run and scaled_widths(c):  # the values the width override chose: the printed config shows 0
        print(f"# {c.parametrization} width override: " + ", ".join(f"{k}={v}" for k, v in scaled_widths(c).items())
              + f", scaled from {c.model}'s with n_embd (set them to override)")
    with torch.device("meta"):  # the size without the memory
        n_params = Transformer(mcfg).num_params()[0]
    need, have = memory_needed(mcfg, n_params, c, use_bf16, ce_path), memory_available(dev, device_type, procs_here)
    if have is not None and need > have and dry_run:
        print(f"# note: about {gib(need)} per process, but {dev} has {gib(have)} available: this run would be refused here")
    elif have is not None and need > have:
        raise ConfigError(f"this run needs about {gib(need)} per process ({n_params:,} parameters, micro-batch "
                          f"{c.batch_size}x{c.block_size}) but {dev} has {gib(have)} available: lower batch_size "
                          f"(raise grad_accum to keep the tokens per step) or block_size, or pick a smaller model")
    return mcfg, need


def memory_needed(mcfg, n_params, c, use_bf16, ce_path):
    """Bytes one process needs, on the low side (a run refused on it could not have fit): fp32 weights, their
    grads and two optimizer states (AdamW's m and v); the activations autograd must keep for one micro-batch,
    at least the inputs of every matmul and of attention, 6·d + 3·ffn values per token and layer; fp32 logits
    unless the loss is fused or chunked; the RoPE tables."""
    T, act_bytes = c.block_size, 2 if use_bf16 else 4
    per_token = mcfg.n_layer * (6 * mcfg.n_embd + 3 * mcfg.ffn_hidden) * act_bytes + (4 * mcfg.vocab_size if ce_path == "off" else 0)
    return 16 * n_params + c.batch_size * T * per_token + 2 * 4 * T * mcfg.n_embd // mcfg.n_head


def memory_available(dev, device_type, procs_here):
    """Bytes this process may use: the GPU's memory, or the host's available memory (and the cgroup's limit,
    in a container) shared by the processes on this host; None when unknown."""
    if device_type == "cuda":
        return torch.cuda.get_device_properties(dev).total_memory
    try:
        with open("/proc/meminfo") as f:
            free = int(dict(line.split(":", 1) for line in f)["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    for limit, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            free = min(free, int(open(limit).read()) - int(open(used).read()))
        except (OSError, ValueError):  # no such cgroup file, or "max"
            pass
    return free // procs_here


def gib(n):
    return f"{n / 2 ** 30:.1f} GiB"
