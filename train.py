"""
Train a LLaMA or GPT with any learning-rate strategy of optim.py.

    python train.py                                   # the embedded default (configs/default.py): small LLaMA, LLR, CPU ok
    python train.py configs/llama_135m.py configs/llr.py --max_iters=2000
    torchrun --standalone --nproc_per_node=8 train.py configs/llama_135m_llr.py
    python train.py configs/llama_135m_llr.py --init_from=resume
    python train.py configs/llama_135m_llr.py --init_from=out/llama_135m_llr --branch_at=2000 --decay_iters=500 \
                    --out_dir=out/llama_135m_llr_cd2000      # a cooldown branch from its kept ckpt_2000.pt
    python train.py configs/llama_135m.py configs/llr.py --dry_run      # print the resolved config and exit

Positional arguments are Python config files, run in order (each sees the values set before it; a file
may include("other.py", ...) relative to itself); with none, configs/default.py runs. `--key=value`
overrides one key (`--flag` alone means True for booleans). The keys are the globals below plus the
strategy keys of optim.py (optim.COMMON: learning_rate, max_iters, warmup, betas, weight decay, ...,
and each strategy's own, see `python optim.py --list`). Unknown keys and values of the wrong type or
outside their domain stop the run before anything starts.
"""
import ast
import builtins
import difflib
import json
import math
import os
import random
import re
import shutil
import sys
import time
import types
from contextlib import contextmanager, nullcontext
from dataclasses import asdict

import numpy as np
import torch

import optim
import spectral
from data.loader import PREPARE, TokenData, dataset_dir, is_prepared
from eval.perplexity import evaluate_loss
from model import FUSED_CE, ModelConfig, Transformer, PRESETS, load_checkpoint, resolve_fused_ce

# -----------------------------------------------------------------------------------------------
# Run config (the strategy's keys, learning_rate included, live with the strategies in optim.py)
# I/O
out_dir = "out"
init_from = "scratch"         # 'scratch' (out_dir must not hold a run), 'resume' (from out_dir/ckpt.pt), or a run dir or
                              # checkpoint file to branch a cooldown from into a fresh out_dir (with decay_iters)
branch_at = -1                # a branch starts at init_from's ckpt_<branch_at>.pt (-1: at its ckpt.pt's iteration)
decay_iters = 0               # a branch decays over this many updates from branch_at: max_iters = branch_at + decay_iters
allow_schedule_change = False # resume (or branch) although keys that define the LR schedule differ from the checkpoint's
eval_interval = 100           # evaluate on eval_tokens validation tokens and write ckpt.pt
eval_tokens = 65536
log_interval = 10             # one stdout line and one metrics.jsonl object every log_interval iterations
ckpt_every = 0                # > 0: also write ckpt.pt every ckpt_every iterations
keep_ckpts = 0                # > 0: keep each ckpt_every checkpoint as ckpt_<iter>.pt too, the newest keep_ckpts of them
spectral_every = 0            # > 0: every spectral_every iterations (and at max_iters) log per-matrix HT-SR metrics; 0: off
spectral_metrics = "alpha"    # comma-separated names of spectral.METRICS that spectral_every logs (docs/htsr.md)
seed = 1337
wandb_log = False             # offline unless an API key is configured; never blocks training
wandb_project = "nanolr"
wandb_run_name = ""
eval_zeroshot = False         # run eval/zeroshot.py on the final model (with eval_zeroshot_limit docs per task)
eval_zeroshot_limit = 200
dry_run = False               # print the resolved config and the model size, then exit
# data
dataset = "shakespeare"       # a directory under data/ (or a path) prepared by its prepare.py
batch_size = 16               # micro-batch per process
grad_accum = 1                # micro-batches per update, summed over all processes
# model
model = "llama_tiny"          # a preset of model.py
block_size = 256
vocab_size = 0                # 0: the dataset's vocabulary padded to a multiple of 64
n_layer = 0                   # 0: the preset's value (same for the next three)
n_head = 0
n_embd = 0
ffn_hidden = 0
dropout = 0.0
# strategy
strategy = "llr"              # a name of optim.STRATEGIES; 'uniform' is the plain AdamW baseline
# system
device = "auto"               # 'auto', 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"                # 'auto' (bf16 on CUDA and on CPUs with bf16 instructions), 'bfloat16', 'float32'
compile = None                # None: on for CUDA, off for CPU
fused_ce = "auto"             # LM head + loss: 'off' (logits, then F.cross_entropy), 'on' (a fused CUDA kernel: liger-kernel or
                              # cut-cross-entropy), 'auto' (that kernel when installed, else plain), 'chunked' (PyTorch, bounded
                              # logits memory, any device); docs/performance.md
peak_flops = 0.0              # bf16 dense peak per device for MFU; 0: from PEAK_TFLOPS by device name
# -----------------------------------------------------------------------------------------------
RUN_KEYS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (bool, int, float, str, type(None)))}
assert not set(RUN_KEYS) & set(optim.hyperparameters()), "a run key shadows a strategy key"
DEFAULTS = {**RUN_KEYS, **optim.hyperparameters()}
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py")

PEAK_TFLOPS = {"A100": 312, "H100 NVL": 835, "H100 PCIe": 756, "H100": 989, "H200": 989, "B200": 2250}


class ConfigError(SystemExit):
    def __init__(self, message):
        super().__init__(f"config error: {message}")


BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def coerce(key, value, default, from_text):
    """Cast a config value to the type of its default; text comes from --key=value."""
    kind = type(default)
    if kind is tuple:  # lr_mult: a Python literal on the command line, a list or tuple in a file; optim checks its shape
        if from_text:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise ConfigError(f"--{key}={value}: not a Python literal; write a list such as "
                                  f"--{key}='[(\"embed\", 10.0), (\"blocks.*.attn.[qk]\", 8.0)]'") from None
        return tuple(value) if isinstance(value, list) else value
    if default is None:  # a boolean with an automatic default (compile): None, or what the text or file says
        if from_text and value.lower() in BOOL_WORDS:
            return BOOL_WORDS[value.lower()]
        if from_text and value.lower() in ("none", "auto"):
            return None
        if value is None or isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected true or false ({'/'.join(BOOL_WORDS)}), or auto for the default")
    if from_text:
        if kind is bool:
            if value.lower() in BOOL_WORDS:
                return BOOL_WORDS[value.lower()]
        elif kind is str:
            return value
        else:
            try:
                number = float(value)
                if kind is float:
                    return number
                if number.is_integer():
                    return int(number)
            except ValueError:
                pass
        words = f" ({'/'.join(BOOL_WORDS)})" if kind is bool else ""
        raise ConfigError(f"--{key}={value}: expected {kind.__name__}{words} like the default {default!r}")
    if default is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    raise ConfigError(f"{key} = {value!r}: expected {kind.__name__} like the default {default!r}")


def unknown_key(key, known):
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; see train.py's globals and `python optim.py --list`"
    return ConfigError(f"unknown config key {key!r}{hint}")


def run_config_file(path, namespace):
    """Execute a config file in namespace; include(*files) inside it runs files relative to it."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")

    def include(*files):
        for f in files:
            run_config_file(os.path.join(os.path.dirname(path), f), namespace)
        namespace["include"] = include  # the nested file bound its own

    namespace["include"] = include
    try:
        exec(builtins.compile(open(path).read(), path, "exec"), namespace)  # train.py's `compile` is a config key
    except SystemExit:
        raise
    except Exception as e:
        raise ConfigError(f"{path} failed to run: {type(e).__name__}: {e}") from None


def parse_config(argv, defaults=DEFAULTS, default_files=(DEFAULT_CONFIG,), names=None):
    """Config files (positional, in order; default_files if none) and --key=value overrides -> config dict.
    names(cfg) -> {name: value}: read-only names the files see besides the keys (finetune.py's `model`)."""
    files = [a for a in argv if not a.startswith("--")] or list(default_files)
    cfg = dict(defaults)
    for arg in files + [a for a in argv if a.startswith("--")]:
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            if key not in defaults:
                raise unknown_key(key, defaults)
            if not eq and not isinstance(defaults[key], (bool, type(None))):
                raise ConfigError(f"{arg!r} has no value: write --{key}=VALUE")
            cfg[key] = coerce(key, value if eq else "true", defaults[key], from_text=True)
            continue
        extra = names(cfg) if names else {}
        namespace = {**extra, **cfg}
        run_config_file(arg, namespace)
        for key, value in namespace.items():
            if key.startswith("_") or key == "include" or isinstance(value, (types.ModuleType, types.FunctionType, type)):
                continue
            if key in extra and key not in defaults and value == extra[key]:
                continue
            if key not in defaults:
                raise unknown_key(key, defaults)
            cfg[key] = coerce(key, value, defaults[key], from_text=False)
    return cfg


def check_config(c, world_size):
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


def open_data(c):
    """The run's TokenData; the embedded corpus is prepared on first use (by the caller's rank 0 under DDP)."""
    try:
        return TokenData(c.dataset)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None


def spectral_metric_names(text):
    return tuple(m.strip() for m in text.split(",") if m.strip())


def spectral_record(model, metrics):
    """The HT-SR monitor's part of a metrics.jsonl record: spectral {name: {metric: value}}, spectral_skipped
    {name: reason} (degenerate matrices; never an error) and spectral_s. Collective under DDP: every rank calls
    it and gets the same rows. It only reads the weights: no RNG, no grads, no writes."""
    t0 = time.time()
    with torch.no_grad():
        rows = spectral.analyze(model, metrics=metrics)
    return dict(spectral={r["name"]: {m: r[m] for m in metrics} for r in rows if not r["skipped"]},
                spectral_skipped={r["name"]: r["skipped"] for r in rows if r["skipped"]}, spectral_s=time.time() - t0)


def spectral_summary(record):
    """'spectral: mean alpha 2.45 over 26 matrices' (the stdout form of a monitor record)."""
    fits = record["spectral"]
    logged = [m for v in fits.values() for m in v]
    metric = "alpha" if "alpha" in logged else (logged[0] if logged else None)
    vals = [v[metric] for v in fits.values() if metric in v]
    text = f"spectral: mean {metric} {sum(vals) / len(vals):.2f} over {len(vals)} matrices" if vals else "spectral: no matrix fitted"
    skipped = len(record.get("spectral_skipped") or {})
    return text + (f" ({skipped} skipped)" if skipped else "")


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


def cpu_has_bf16():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


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


def model_config(c, vocab):
    overrides = dict(block_size=c.block_size, dropout=c.dropout, vocab_size=c.vocab_size or 64 * math.ceil(vocab / 64))
    overrides.update({k: getattr(c, k) for k in ("n_layer", "n_head", "n_embd", "ffn_hidden") if getattr(c, k) > 0})
    overrides.update({k: getattr(c, k) for k in optim.PARAMETRIZATION_KEYS})  # optim's keys: it scales the LRs by them
    try:
        return ModelConfig(**{**PRESETS[c.model], **overrides})
    except ValueError as e:  # e.g. n_embd not divisible by n_head
        raise ConfigError(f"model {c.model} with these overrides: {e}") from None


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


def rng_state():
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def kept_checkpoints(run_dir):
    """Iterations of the ckpt_<iter>.pt files in run_dir, ascending."""
    names = os.listdir(run_dir) if os.path.isdir(run_dir) else []
    return sorted(int(m.group(1)) for m in (re.fullmatch(r"ckpt_(\d+)\.pt", n) for n in names) if m)


def save_checkpoint(out_dir, ckpt, keep=0):
    """Atomic: write a temporary file, then rename over ckpt.pt; a crash midway leaves the old one. keep > 0:
    the same checkpoint also becomes ckpt_<iter>.pt (a branch point), and only the newest `keep` of those stay."""
    final = os.path.join(out_dir, "ckpt.pt")
    with failed_write(final + ".tmp", out_dir):
        torch.save(ckpt, final + ".tmp")
    os.replace(final + ".tmp", final)
    if keep > 0:
        kept = os.path.join(out_dir, f"ckpt_{ckpt['iter_num']}.pt")
        with failed_write(kept + ".tmp", out_dir):
            try:  # a hard link costs no copy: the next ckpt.pt is a new file renamed over the name, this one stays
                os.link(final, kept + ".tmp")
            except FileExistsError:  # a stale .tmp of a killed run
                os.remove(kept + ".tmp")
                os.link(final, kept + ".tmp")
            except OSError:  # no hard links on this file system: copy
                shutil.copyfile(final, kept + ".tmp")
        os.replace(kept + ".tmp", kept)
        for old in kept_checkpoints(out_dir)[:-keep]:
            os.remove(os.path.join(out_dir, f"ckpt_{old}.pt"))
    with failed_write(os.path.join(out_dir, "config.json.tmp"), out_dir):
        write_config(out_dir, ckpt["config"])


@contextmanager
def failed_write(tmp, out_dir):
    """A write that fails (a full disk: torch.save says 'unexpected pos', the OS says ENOSPC) removes its
    temporary file, which would keep the disk full, and stops the run with one line; the previous file stays."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        free = shutil.disk_usage(out_dir).free
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "the write failed (a full disk or a file size limit)"
        raise SystemExit(f"checkpoint: cannot write {tmp}: {reason}; {gib(free)} free in {out_dir}. The partial file was "
                         "removed and the previous checkpoint kept: free some space (or move --out_dir) and continue with "
                         "--init_from=resume") from None


def write_config(out_dir, cfg):
    """out_dir/config.json, atomically: the run's resolved config, readable without torch."""
    with open(os.path.join(out_dir, "config.json.tmp"), "w") as f:
        json.dump(cfg, f, indent=1, default=str)
    os.replace(os.path.join(out_dir, "config.json.tmp"), os.path.join(out_dir, "config.json"))


def prepare_out_dir(c):
    """out_dir must be writable; a fresh run never writes over another run's checkpoint or log."""
    try:
        os.makedirs(c.out_dir, exist_ok=True)
        probe = os.path.join(c.out_dir, ".write_test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"out_dir {c.out_dir!r} is not writable ({e.strerror}): choose another --out_dir")
    held = [f for f in ("ckpt.pt",) if os.path.exists(os.path.join(c.out_dir, f))] + \
        [f"ckpt_{i}.pt" for i in kept_checkpoints(c.out_dir)]
    if c.init_from != "resume" and held:
        fix = "a branch starts a new run: choose a fresh --out_dir" if c.init_from != "scratch" else \
            "continue it with --init_from=resume, or choose another --out_dir (or delete that one)"
        raise ConfigError(f"out_dir {c.out_dir!r} already holds a run ({', '.join(held)}): {fix}")
    if c.init_from != "resume" and os.path.exists(os.path.join(c.out_dir, "metrics.jsonl")):
        print(f"{c.out_dir}: its run stopped before its first checkpoint, so it cannot be resumed; starting over "
              "(its metrics.jsonl is replaced)")
        os.remove(os.path.join(c.out_dir, "metrics.jsonl"))


def load_start(c, map_location):
    """(checkpoint, its run directory) a run starts from; (None, None) for a fresh run. A resume reads
    out_dir/ckpt.pt; a branch reads init_from's ckpt_<branch_at>.pt, or its ckpt.pt (or the file given)
    when that is at branch_at, or branch_at is -1."""
    if c.init_from == "scratch":
        return None, None
    branch = c.init_from != "resume"
    src = c.init_from if branch else c.out_dir
    run_dir = src if os.path.isdir(src) else os.path.dirname(src)
    kept = os.path.join(run_dir, f"ckpt_{c.branch_at}.pt")
    if not branch and not os.path.exists(os.path.join(src, "ckpt.pt")) and os.path.exists(os.path.join(src, "metrics.jsonl")):
        raise ConfigError(f"cannot resume: the run in {src!r} stopped before its first checkpoint (no ckpt.pt): "
                          "start it again without --init_from=resume, which reuses the directory")
    try:
        ckpt = load_checkpoint(kept if branch and c.branch_at >= 0 and os.path.isfile(kept) else src, map_location=map_location)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"cannot {'branch' if branch else 'resume'}: {e}") from None
    it = ckpt["iter_num"]
    if branch and c.branch_at > it:
        raise ConfigError(f"branch_at={c.branch_at} is beyond the checkpoint in {src!r}, which is at iteration {it}: "
                          f"branch at {it} or before (--branch_at=-1 branches at {it})")
    if branch and 0 <= c.branch_at < it:
        have = ", ".join(f"ckpt_{i}.pt" for i in kept_checkpoints(run_dir)) or "none"
        raise ConfigError(f"branch_at={c.branch_at}: no ckpt_{c.branch_at}.pt in {run_dir!r} (kept: {have}): branch at "
                          f"a kept iteration or at -1 (iteration {it}); a run keeps them with keep_ckpts > 0 and ckpt_every")
    return ckpt, run_dir


# batches are a function of (seed, iteration, micro-step) of this data: a resume or branch keeps all of them
DATA_KEYS = ("dataset", "seed", "batch_size", "grad_accum", "block_size")


def same_data(key, value):
    """A dataset compared by the directory it names, so a relative and an absolute path agree."""
    return os.path.realpath(dataset_dir(value)) if key == "dataset" else value


BRANCH_OWN = ("max_iters", "decay_iters", "decay_shape", "decay_power", "min_lr_ratio")  # a branch chooses its cooldown


def schedule_keys(old, cfg):
    """The keys that define the LR of every update, for the strategies of both configs."""
    own = [k for name in (old.get("strategy"), cfg["strategy"]) if name in optim.STRATEGIES for k in optim.STRATEGIES[name].defaults]
    return list(dict.fromkeys(["strategy", "learning_rate", "lr_mult", "faithful", *optim.SCHEDULE_KEYS, "decay_iters", *own]))


def continue_config(cfg, ckpt, run_dir):
    """A resumed or branched run's config, in place. A branch gets max_iters = its iteration + decay_iters and
    cfg['branch'], which optim.schedule reads: its parent's schedule keys up to the branch point, its own
    cooldown after it. Keys that define the schedule must match the checkpoint's (allow_schedule_change: not)."""
    old, it = ckpt["config"], ckpt["iter_num"]
    plain = lambda v: tuple(map(plain, v)) if isinstance(v, (list, tuple)) else v  # lr_mult: lists and tuples alike
    resume = cfg["init_from"] == "resume"
    if resume and "branch" in old:  # resuming a branch: its branch point and parent stay
        if cfg["decay_iters"] <= 0:
            raise ConfigError(f"{cfg['out_dir']} is a branch (at iteration {old['branch']['at']}): resume it with its "
                              f"--decay_iters={old['branch']['iters']}")
        cfg["branch"], cfg["max_iters"] = old["branch"], old["branch"]["at"] + cfg["decay_iters"]
    elif resume and cfg["decay_iters"] > 0:
        raise ConfigError("decay_iters > 0 is for a branch: start one with --init_from=<this run dir> and a fresh --out_dir")
    elif not resume:
        parent = {k: old.get(k, DEFAULTS[k]) for k in optim.SCHEDULE_KEYS}
        if "branch" in old:  # a branch of a branch
            parent["branch"] = old["branch"]
        cfg["branch"] = dict(at=it, iters=cfg["decay_iters"], parent=parent, source=run_dir)
        cfg["max_iters"] = it + cfg["decay_iters"]
    data_changed = {k: (old.get(k, DEFAULTS[k]), cfg[k]) for k in DATA_KEYS if same_data(k, old.get(k, DEFAULTS[k])) != same_data(k, cfg[k])}
    if data_changed:
        fields = ", ".join(f"{k} (checkpoint {a!r}, config {b!r})" for k, (a, b) in data_changed.items())
        raise ConfigError(f"the checkpoint in {run_dir} was trained on other batches: {fields}. These keys set the "
                          "data order or the tokens per step: pass the checkpoint's values, or start a new run in another --out_dir")
    changed = {k: (old.get(k, DEFAULTS[k]), cfg[k]) for k in schedule_keys(old, cfg)
               if (resume or k not in BRANCH_OWN) and plain(old.get(k, DEFAULTS[k])) != plain(cfg[k])}
    if changed and not cfg["allow_schedule_change"]:
        fields = ", ".join(f"{k} (checkpoint {a!r}, config {b!r})" for k, (a, b) in changed.items())
        raise ConfigError(f"the checkpoint in {run_dir} has other values of keys that define the LR schedule: {fields}. "
                          "Pass the checkpoint's values, or --allow_schedule_change=True to continue under the new ones")


def check_same_model(mcfg, ckpt, run_dir):
    saved = asdict(ModelConfig(**ckpt["model_config"]))  # fields added since the checkpoint: their defaults
    mismatched = {k: (v, saved.get(k)) for k, v in asdict(mcfg).items() if saved.get(k) != v}
    if mismatched:
        fields = ", ".join(f"{k} (checkpoint {old!r}, config {new!r})" for k, (new, old) in mismatched.items())
        raise ConfigError(f"the checkpoint in {run_dir} is of another model config: {fields}")


def diverged(what, it, out_dir):
    return SystemExit(f"training diverged: {what} at iter {it}; ckpt.pt in {out_dir} (the last good state) was left "
                      "as it was. Lower learning_rate or set grad_clip.")


def start_wandb(c, cfg, run_id=None):
    """A wandb run: online with an API key, offline without one, and offline too when the server cannot
    be reached in WANDB_INIT_TIMEOUT seconds (30), so a run never waits on the network. A resumed
    training run continues the wandb run of its checkpoint (run_id)."""
    import wandb  # optional dependency, imported only when asked for
    mode = os.environ.get("WANDB_MODE") or ("online" if wandb.login(prompt=False, verify=False) else "offline")
    kw = dict(project=c.wandb_project, name=c.wandb_run_name or None, config=cfg, dir=c.out_dir,
              id=run_id, resume="allow" if run_id else None)
    try:
        timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", 30))
        return wandb.init(mode=mode, settings=wandb.Settings(init_timeout=timeout), **kw)
    except Exception as e:  # wandb raises its own CommError and friends; training goes on regardless
        print(f"wandb: {mode} start failed ({type(e).__name__}); logging offline instead, `wandb sync` the run later")
        return wandb.init(mode="offline", **kw)


def read_metrics(path):
    """The records of a metrics.jsonl. A cut-off last line (what a full disk or a kill mid-write leaves) is
    dropped with a message; any other line that is not JSON stops with its line number."""
    with open(path) as f:
        lines = [(n, l) for n, l in enumerate(f, 1) if l.strip()]
    records = []
    for n, line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n != lines[-1][0]:
                raise ConfigError(f"{path} line {n} is not JSON: repair or delete that line, then resume") from None
            print(f"{path}: dropped its cut-off last line {n} ({len(line.rstrip())} characters), the rest is kept")
    return records


class Logger:
    """One place every record goes: stdout, out_dir/metrics.jsonl (one JSON object per line) and wandb.
    A resumed run first drops the rows its checkpoint does not cover, so no iteration is logged twice."""

    def __init__(self, c, cfg, resume_iter=None, wandb_id=None, parent_log=None):
        path = os.path.join(c.out_dir, "metrics.jsonl")
        src = parent_log or path  # a branch starts with its parent's rows before the branch point
        if resume_iter is not None and os.path.exists(src):
            kept = [json.dumps(r) + "\n" for r in read_metrics(src) if r.get("iter", 0) < resume_iter]
            with open(path + ".tmp", "w") as f:
                f.writelines(kept)
            os.replace(path + ".tmp", path)
        self.file = open(path, "a")
        self.run = start_wandb(c, cfg, wandb_id) if c.wandb_log else None

    def log(self, record):
        parts = [f"iter {record['iter']}"]
        parts += [f"loss {record['train_loss']:.4f}"] if "train_loss" in record else []
        parts += [f"val_loss {record['val_loss']:.4f}"] if "val_loss" in record else []
        parts += [f"val_acc {100 * record['val_acc']:.2f}%"] if "val_acc" in record else []  # finetune.py's
        parts += [f"f1 {100 * record['val_f1']:.2f}%"] if "val_f1" in record else []
        parts += [f"lr {record['lr']:.2e}", f"{record['tok_per_s']:,.0f} tok/s"] if "lr" in record else []
        parts += [f"mfu {100 * record['mfu']:.1f}%"] if record.get("mfu") is not None else []
        parts += [spectral_summary(record)] if "spectral" in record else []  # the per-matrix values go to the file
        parts += [record["eta"]] if "eta" in record else []
        print(" | ".join(parts))
        self.file.write(json.dumps({k: v for k, v in record.items() if k != "eta"}) + "\n")
        self.file.flush()
        if self.run is not None:
            flat = {k: v for k, v in record.items() if v is not None and k not in ("eta", "spectral", "spectral_skipped")}
            flat.update({f"{m}/{name}": v for name, vals in record.get("spectral", {}).items() for m, v in vals.items()})
            self.run.log(flat, step=record["iter"])  # the monitor's values as alpha/<name>, ...

    def close(self, summary=None):
        self.file.close()
        if self.run is not None:
            self.run.summary.update(summary or {})
            self.run.finish()


def eta(seconds):
    s = int(seconds)
    return f"eta {s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"eta {s // 60}m{s % 60:02d}s"


def evals_after(it, c):
    """How many evals come after iteration it: every eval_interval, and at max_iters."""
    return c.max_iters // c.eval_interval - it // c.eval_interval + (c.max_iters % c.eval_interval != 0)


def dry_run_report(c, cfg):
    """The resolved config, checked as a real run checks it before it starts, the model's size and the memory
    it needs. Only the embedded corpus is prepared (as a run would); nothing else is written. Data not prepared
    yet and memory short on this machine are notes, not errors (preflight)."""
    check_config(c, 1)
    dev, device_type, use_bf16, _, _ = runtime(c)
    ce_path = loss_path(c, device_type)
    if c.dataset == "shakespeare" and not is_prepared("shakespeare"):
        from data.shakespeare.prepare import prepare
        prepare()
    data = open_data(c) if is_prepared(c.dataset) else None
    mcfg, need = preflight(c, data, dev, device_type, use_bf16, ce_path, dry_run=True)
    with torch.device("meta"):  # no memory, even for 3B
        net = Transformer(mcfg)
    build_strategy(c, cfg, net)
    if c.init_from != "scratch":  # the checkpoint's model, schedule and data keys, as the run compares them
        start, run_dir = load_start(c, "cpu")
        check_same_model(mcfg, start, run_dir)
        continue_config(dict(cfg), start, run_dir)
    total, non_embedding = net.num_params()
    print(json.dumps({k: v for k, v in cfg.items() if k != "dry_run"}, indent=1, default=str))
    print(f"# model {c.model}: {total:,} parameters ({non_embedding:,} non-embedding); strategy {c.strategy}; "
          f"about {gib(need)} of memory per process on {dev}")
    if data is None:
        print(f"# note: dataset {c.dataset!r} is not prepared, so vocab_size and block_size were not checked against it; "
              f"the run needs `{PREPARE.get(c.dataset, 'its prepare.py')}` first")


def train(cfg):
    c = types.SimpleNamespace(**cfg)
    # --- setup: processes (torchrun sets RANK/WORLD_SIZE), device, precision, output directory
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, local_rank, world_size = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)))
    master = rank == 0
    check_config(c, world_size)
    dev, device_type, use_bf16, ctx, use_compile = runtime(c, local_rank if ddp else None)
    ce_path = loss_path(c, device_type)
    if ddp and device_type == "cuda":
        torch.cuda.set_device(dev)
    if ddp:
        torch.distributed.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    torch.backends.cuda.matmul.allow_tf32 = True  # any fp32 matmul left outside autocast
    torch.backends.cudnn.allow_tf32 = True
    start, run_dir = load_start(c, dev)  # the checkpoint to resume or branch from

    # --- data; the embedded corpus is prepared on first use
    if c.dataset == "shakespeare" and not is_prepared("shakespeare"):
        if master:
            from data.shakespeare.prepare import prepare
            prepare()
        if ddp:
            torch.distributed.barrier()
    data = open_data(c)
    cfg["tokenizer"] = data.tokenizer
    val_tokens = data.tokens("val")
    accum = c.grad_accum // world_size
    tokens_per_iter = c.batch_size * c.block_size * c.grad_accum

    def micro_batches(it):
        """This rank's micro-batches of iteration it: global micro-steps rank*accum ... (rank+1)*accum-1."""
        pin = device_type == "cuda"  # pinned host memory makes the copy asynchronous
        return [tuple((t.pin_memory() if pin else t).to(dev, non_blocking=True)
                      for t in data.batch("train", c.seed, it, rank * accum + m, c.batch_size, c.block_size))
                for m in range(accum)]

    # --- model, strategy, resume: everything is checked before the first allocation or write
    mcfg, _ = preflight(c, data, dev, device_type, use_bf16, ce_path, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    if start is not None:
        check_same_model(mcfg, start, run_dir)
        continue_config(cfg, start, run_dir)  # a branch's max_iters and schedule; refuses a changed schedule or data
        c = types.SimpleNamespace(**cfg)
    torch.manual_seed(c.seed)
    raw_model = Transformer(mcfg).to(dev)
    raw_model.fused_ce = ce_path  # training's loss; eval passes no targets and gets logits
    strategy = build_strategy(c, cfg, raw_model)
    if master:  # the first write, once every check has passed
        prepare_out_dir(c)
    iter_num, best_val, wandb_id = 0, float("inf"), None
    if start is not None:  # weights, strategy state, RNG and iteration; batches are a function of the iteration
        raw_model.load_state_dict(start["model"])
        strategy.load_state_dict(start["strategy"])
        iter_num, best_val = start["iter_num"], start.get("best_val_loss", best_val)
        wandb_id = start.get("wandb_id") if c.init_from == "resume" else None  # a branch is a new wandb run
        set_rng_state(start["rng"])
        start = None
    model = torch.compile(raw_model) if use_compile else raw_model
    if ddp:  # buffers (RoPE tables) are constants: no per-forward broadcast
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device_type == "cuda" else None,
                                                          broadcast_buffers=False)
    eval_model = model.module if ddp else model  # no DDP hooks in eval: ranks may run different window counts

    def forward_backward(batches):
        """Mean loss over the micro-batches; gradients summed (DDP syncs only on the last backward)."""
        total = torch.zeros((), device=dev)
        for m, (x, y) in enumerate(batches):
            with nullcontext() if not ddp or m == len(batches) - 1 else model.no_sync():
                with ctx:
                    _, loss = model(x, y)
                (loss / len(batches)).backward()
            total += loss.detach()
        return total / len(batches)

    def global_mean(value):
        if ddp:
            value = value.clone()
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.AVG)
        return value

    def checkpoint(it):
        if not all(torch.isfinite(p).all() for p in raw_model.parameters()):
            raise diverged("non-finite weights", it, c.out_dir)
        strategy_state = strategy.state_dict()  # on every rank: sharded optimizer state (Muon) is gathered collectively
        if master:
            save_checkpoint(c.out_dir, dict(model=raw_model.state_dict(), model_config=asdict(mcfg), strategy=strategy_state,
                                            iter_num=it, best_val_loss=best_val, config=cfg, rng=rng_state(), tokenizer=data.tokenizer,
                                            wandb_id=logger.run.id if logger and logger.run else wandb_id),
                            keep=c.keep_ckpts if c.ckpt_every > 0 and it % c.ckpt_every == 0 else 0)

    total, non_embedding = raw_model.num_params()
    flops_per_token, peak = raw_model.flops_per_token(), peak_flops_of(device_type, c.peak_flops)
    logger = None
    if master:
        print(f"model {c.model} params total={total:,} non_embedding={non_embedding:,} | strategy {c.strategy} | "
              f"{tokens_per_iter:,} tokens/iter | device {dev} {'bf16' if use_bf16 else 'fp32'}"
              f"{' compiled' if use_compile else ''} | loss {'plain' if ce_path == 'off' else ce_path} | world {world_size}")
        branched = c.init_from not in ("scratch", "resume")
        logger = Logger(c, cfg, iter_num if c.init_from != "scratch" else None, wandb_id,
                        os.path.join(run_dir, "metrics.jsonl") if branched else None)

    # --- the loop: evaluate and checkpoint on schedule, one update, one log line
    start_iter, t_last, tokens_since = iter_num, time.time(), 0
    t_run, spectral_s, spectral_names = time.time(), 0.0, spectral_metric_names(c.spectral_metrics)  # the HT-SR monitor
    eval_s, eval_times, first = 0.0, [], None  # seconds in evals; first: (end, eval_s then, seconds) of this run's first update

    def time_left(it):
        """Updates and evals timed apart, so that the first log line has an estimate too: from the first update
        (eager only: a compiled one pays compilation) until there are others, which leave the first out. A
        compiled run's first eval pays compilation too: until a second one, an eval counts as a third of the
        updates its tokens would take (a forward alone)."""
        if it > start_iter:
            per_update = (time.time() - first[0] - (eval_s - first[1])) / (it - start_iter)
        elif not use_compile:
            per_update = first[2]
        else:
            return None
        timed = eval_times[1:] if use_compile else eval_times
        per_eval = sum(timed) / len(timed) if timed else c.eval_tokens / tokens_per_iter * per_update / 3
        return per_update * (c.max_iters - 1 - it) + per_eval * evals_after(it, c)

    for it in range(iter_num, c.max_iters + 1):
        record = {}
        if c.spectral_every > 0 and (it % c.spectral_every == 0 or it == c.max_iters):  # the weights after `it` updates
            record.update(spectral_record(raw_model, spectral_names))  # on every rank: collective under DDP
            spectral_s += record["spectral_s"]
            t_last += record["spectral_s"]  # kept out of the throughput figure, as eval is
        if it % c.eval_interval == 0 or it == c.max_iters:
            t_eval = time.time()
            with strategy.eval_weights():  # the weights a strategy returns (schedule-free: its average x)
                val_loss, _ = evaluate_loss(eval_model, val_tokens, c.block_size, c.eval_tokens, c.batch_size, dev, ctx,
                                            rank, world_size)
                if not math.isfinite(val_loss):
                    raise diverged(f"validation loss is {val_loss}", it, c.out_dir)
                best_val = min(best_val, val_loss)
                record["val_loss"] = val_loss
                if it > start_iter or it == 0:
                    checkpoint(it)
            t_last, tokens_since = time.time(), 0  # keep eval out of the throughput figure
            eval_s += t_last - t_eval
            eval_times.append(t_last - t_eval)
        elif c.ckpt_every > 0 and it % c.ckpt_every == 0 and it > start_iter:
            with strategy.eval_weights():
                checkpoint(it)
        if it == c.max_iters:
            if master:
                logger.log(dict(iter=it, tokens=it * tokens_per_iter, **record))
            break

        t_update = time.time()
        batches = micro_batches(it)
        loss = optim.update(strategy, it, lambda: forward_backward(batches), reduce=global_mean)
        tokens_since += tokens_per_iter
        if it == start_iter:
            if device_type == "cuda":
                torch.cuda.synchronize()
            first = (time.time(), eval_s, time.time() - t_update)

        if it % c.log_interval == 0 or record:
            train_loss = global_mean(loss).item()
            if not math.isfinite(train_loss):
                raise diverged(f"train loss is {train_loss}", it, c.out_dir)
            if device_type == "cuda":
                torch.cuda.synchronize()
            dt, t_last = time.time() - t_last, time.time()
            tok_per_s, tokens_since = tokens_since / dt if dt > 0 else 0.0, 0
            record.update(iter=it, tokens=(it + 1) * tokens_per_iter, train_loss=train_loss, lr=max(strategy.lrs().values()),
                          tok_per_s=tok_per_s, mfu=flops_per_token * tok_per_s / (peak * world_size) if peak else None,
                          **strategy.log_record())  # e.g. LLR's per-group alpha and LR at refits
            left = time_left(it)  # evals included: what the rest of the run will really take
            if left is not None:
                record["eta"] = eta(left)
            if master:
                logger.log(record)

    if master and c.spectral_every > 0:
        run_s = time.time() - t_run
        print(f"spectral monitor: {spectral_s:.1f} s, {100 * spectral_s / max(run_s, 1e-9):.1f} % of the run "
              f"(spectral_every={c.spectral_every})")
    summary = {}
    if c.eval_zeroshot and master:
        from data.tokenizer import get_tokenizer
        from eval import zeroshot
        # the uncompiled model: zero-shot batches change length, a compiled one would keep recompiling
        with strategy.eval_weights():
            summary["zeroshot"] = zeroshot.evaluate(raw_model, get_tokenizer(data.tokenizer), tasks="all",
                                                    limit=c.eval_zeroshot_limit or None, device=dev, ctx=ctx)
        logger.file.write(json.dumps(dict(iter=c.max_iters, zeroshot=summary["zeroshot"])) + "\n")
        print(f"zero-shot 7-task acc {100 * summary['zeroshot']['avg7']['acc']:.2f}")
    if master:
        logger.close(summary)
    if ddp:  # every rank here before any tears down: a gloo rank that leaves early can abort in its exit
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def main(argv):
    config = parse_config(argv)
    if config["dry_run"]:
        dry_run_report(types.SimpleNamespace(**config), config)
    else:
        train(config)


if __name__ == "__main__":
    main(sys.argv[1:])
