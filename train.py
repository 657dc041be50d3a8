"""
Train a LLaMA or GPT with any learning-rate strategy of optim.py.

    python train.py                                   # the embedded default: small LLaMA, LLR, Shakespeare bytes, CPU ok
    python train.py configs/llama_135m_llr.py --max_iters=2000
    torchrun --standalone --nproc_per_node=8 train.py configs/llama_135m_llr.py
    python train.py configs/llama_135m_llr.py --init_from=resume

Positional arguments are Python config files (executed; they set the globals below), `--key=value`
overrides one global. Unknown keys and values of the wrong type stop the run before anything starts.
"""
import ast
import difflib
import json
import math
import os
import random
import sys
import time
import types
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np
import torch

import optim
from data.loader import TokenData, is_prepared
from eval.perplexity import evaluate_loss
from model import ModelConfig, Transformer, PRESETS, load_checkpoint

# -----------------------------------------------------------------------------------------------
# Config. The defaults are the embedded default run: it finishes in a few minutes on a 2-core CPU.
# I/O
out_dir = "out"
init_from = "scratch"         # 'scratch' or 'resume' (from out_dir/ckpt.pt)
eval_interval = 100           # evaluate on eval_tokens validation tokens and write ckpt.pt
eval_tokens = 65536
log_interval = 10             # one stdout line and one metrics.jsonl object every log_interval iterations
ckpt_every = 0                # > 0: also write ckpt.pt every ckpt_every iterations
seed = 1337
wandb_log = False             # offline unless an API key is configured; never blocks training
wandb_project = "nanolr"
wandb_run_name = ""
eval_zeroshot = False         # run eval/zeroshot.py on the final model (with eval_zeroshot_limit docs per task)
eval_zeroshot_limit = 200
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
# strategy (optim.py) and its common hyperparameters
strategy = "llr"              # heavy-tail guided layerwise LRs; 'uniform' is the plain AdamW baseline
learning_rate = 3e-3
max_iters = 400
llr_every = 20                # refit cadence and soft-switch length for a 400-step run (llr.py has the paper's)
llr_ramp = 10
warmup_frac = 0.1             # warmup length as a fraction of max_iters ...
warmup_iters = -1             # ... unless this is >= 0
min_lr_ratio = 0.1            # cosine floor as a fraction of the peak
weight_decay = 0.1
decay_norms = False           # True: weight decay on norms too (the LLR reference decays everything)
beta1 = 0.9
beta2 = 0.95
adam_eps = 1e-8
grad_clip = 1.0               # 0: off
fused = False                 # fused AdamW kernels (CUDA)
faithful = False              # reproduce the reference implementations' quirks (see optim.py)
# system
device = "auto"               # 'auto', 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"                # 'auto' (bf16 on CUDA and on CPUs with bf16 instructions), 'bfloat16', 'float32'
compile = None                # None: on for CUDA, off for CPU
peak_flops = 0.0              # bf16 dense peak per device for MFU; 0: from PEAK_TFLOPS by device name
# -----------------------------------------------------------------------------------------------
# every strategy's own hyperparameters (optim.py, llr.py) are config keys too; the values above win
DEFAULTS = {**optim.hyperparameters(),
            **{k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (bool, int, float, str, type(None)))}}

PEAK_TFLOPS = {"A100": 312, "H100 NVL": 835, "H100 PCIe": 756, "H100": 989, "H200": 989, "B200": 2250}


class ConfigError(SystemExit):
    def __init__(self, message):
        super().__init__(f"config error: {message}")


def coerce(key, value, default, from_text):
    """Cast a config value to the type of its default; text comes from --key=value."""
    kind = type(default)
    if from_text:
        if default is None:
            try:
                return ast.literal_eval(value)
            except (ValueError, SyntaxError):
                return value
        if kind is bool:
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
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
        raise ConfigError(f"--{key}={value}: expected {kind.__name__} like the default {default!r}")
    if default is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    raise ConfigError(f"{key} = {value!r}: expected {kind.__name__} like the default {default!r}")


def unknown_key(key, known):
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; see the globals at the top of train.py"
    return ConfigError(f"unknown config key {key!r}{hint}")


def parse_config(argv, defaults=DEFAULTS):
    """Config files (positional, executed in order) then --key=value overrides -> config dict."""
    cfg = dict(defaults)
    for arg in argv:
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            if not eq:
                raise ConfigError(f"{arg!r} has no value: write --{key}=VALUE")
            if key not in defaults:
                raise unknown_key(key, defaults)
            cfg[key] = coerce(key, value, defaults[key], from_text=True)
        else:
            if not os.path.isfile(arg):
                raise ConfigError(f"config file {arg!r} does not exist")
            namespace = dict(cfg)
            try:
                exec(open(arg).read(), namespace)
            except Exception as e:
                raise ConfigError(f"{arg} failed to run: {type(e).__name__}: {e}") from None
            for key, value in namespace.items():
                if key.startswith("_") or isinstance(value, (types.ModuleType, types.FunctionType, type)):
                    continue
                if key not in defaults:
                    raise unknown_key(key, defaults)
                cfg[key] = coerce(key, value, defaults[key], from_text=False)
    return cfg


def check_config(c, world_size):
    if c.model not in PRESETS:
        raise ConfigError(f"model {c.model!r} is not a preset of model.py; choose one of: {', '.join(PRESETS)}")
    if c.init_from not in ("scratch", "resume"):
        raise ConfigError(f"init_from must be 'scratch' or 'resume', got {c.init_from!r}")
    for key in ("max_iters", "batch_size", "grad_accum", "block_size", "eval_interval", "log_interval", "eval_tokens"):
        if getattr(c, key) <= 0:
            raise ConfigError(f"{key} must be > 0, got {getattr(c, key)}")
    if c.grad_accum % world_size:
        raise ConfigError(f"grad_accum={c.grad_accum} is not divisible by the world size {world_size}: "
                          f"set grad_accum to a multiple of {world_size}")
    if c.dtype not in ("auto", "float32", "bfloat16"):
        raise ConfigError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {c.dtype!r}")


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
    return ModelConfig(**{**PRESETS[c.model], **overrides})


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


def save_checkpoint(out_dir, ckpt):
    """Atomic: write a temporary file, then rename over ckpt.pt; a crash midway leaves the old one."""
    final = os.path.join(out_dir, "ckpt.pt")
    tmp = final + ".tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, final)
    with open(os.path.join(out_dir, "config.json.tmp"), "w") as f:
        json.dump(ckpt["config"], f, indent=1, default=str)
    os.replace(os.path.join(out_dir, "config.json.tmp"), os.path.join(out_dir, "config.json"))


def check_writable(out_dir):
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, ".write_test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"out_dir {out_dir!r} is not writable ({e.strerror}): choose another --out_dir")


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


def train(cfg):
    c = types.SimpleNamespace(**cfg)
    # distributed setup: torchrun sets RANK/WORLD_SIZE; plain python runs one process
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    check_config(c, world_size)
    dev, device_type, use_bf16, ctx, use_compile = runtime(c, local_rank if ddp else None)
    if ddp and device_type == "cuda":
        torch.cuda.set_device(dev)
    if ddp:
        torch.distributed.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    master = rank == 0
    torch.backends.cuda.matmul.allow_tf32 = True  # any fp32 matmul left outside autocast
    torch.backends.cudnn.allow_tf32 = True
    if master:
        check_writable(c.out_dir)

    # data; the embedded corpus is prepared on first use
    if c.dataset == "shakespeare" and not is_prepared("shakespeare"):
        if master:
            from data.shakespeare.prepare import prepare
            prepare()
        if ddp:
            torch.distributed.barrier()
    try:
        data = TokenData(c.dataset)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    cfg["tokenizer"] = data.tokenizer

    # model, strategy, resume
    mcfg = model_config(c, data.vocab_size)
    torch.manual_seed(c.seed)
    raw_model = Transformer(mcfg).to(dev)
    try:
        strategy = optim.build(c.strategy, raw_model, cfg)
    except optim.ConfigError as e:
        raise ConfigError(str(e)) from None
    iter_num, best_val, wandb_id = 0, float("inf"), None
    if c.init_from == "resume":
        try:
            ckpt = load_checkpoint(c.out_dir, map_location=dev)
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"cannot resume: {e}") from None
        mismatched = {k: (v, ckpt["model_config"].get(k)) for k, v in asdict(mcfg).items() if ckpt["model_config"].get(k) != v}
        if mismatched:
            fields = ", ".join(f"{k} (checkpoint {old!r}, config {new!r})" for k, (new, old) in mismatched.items())
            raise ConfigError(f"the checkpoint in {c.out_dir} is of another model config: {fields}")
        raw_model.load_state_dict(ckpt["model"])
        strategy.load_state_dict(ckpt["strategy"])
        iter_num, best_val, wandb_id = ckpt["iter_num"], ckpt.get("best_val_loss", best_val), ckpt.get("wandb_id")
        set_rng_state(ckpt["rng"])
        del ckpt
    model = torch.compile(raw_model) if use_compile else raw_model
    if ddp:
        # buffers (RoPE tables) are constants: no per-forward broadcast
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device_type == "cuda" else None,
                                                          broadcast_buffers=False)
    eval_model = model.module if ddp else model  # no DDP hooks in eval: ranks may run different window counts

    total_params, non_embedding = raw_model.num_params()
    accum = c.grad_accum // world_size
    tokens_per_iter = c.batch_size * c.block_size * c.grad_accum
    flops_per_token = raw_model.flops_per_token()
    peak = peak_flops_of(device_type, c.peak_flops)
    run = None
    if master:
        print(f"model {c.model} params total={total_params:,} non_embedding={non_embedding:,} | strategy {c.strategy} | "
              f"{tokens_per_iter:,} tokens/iter | device {dev} {'bf16' if use_bf16 else 'fp32'}"
              f"{' compiled' if use_compile else ''} | world {world_size}")
        run = start_wandb(c, cfg, wandb_id) if c.wandb_log else None
        metrics = open(os.path.join(c.out_dir, "metrics.jsonl"), "a")

    def micro_batches(it):
        """This rank's micro-batches of iteration it: global micro-steps rank*accum ... (rank+1)*accum-1."""
        pin = device_type == "cuda"  # pinned host memory makes the copy asynchronous
        return [tuple((t.pin_memory() if pin else t).to(dev, non_blocking=True)
                      for t in data.batch("train", c.seed, it, rank * accum + m, c.batch_size, c.block_size))
                for m in range(accum)]

    def forward_backward(batches):
        """Mean loss over the micro-batches; gradients summed (DDP syncs only on the last backward)."""
        total = torch.zeros((), device=dev)
        for m, (x, y) in enumerate(batches):
            sync = nullcontext() if not ddp or m == len(batches) - 1 else model.no_sync()
            with sync:
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
            raise SystemExit(f"training diverged: non-finite weights at iter {it}; ckpt.pt in {c.out_dir} was left as it was. "
                             "Lower learning_rate or set grad_clip.")
        strategy_state = strategy.state_dict()  # on every rank: sharded optimizer state (Muon) is gathered collectively
        if master:
            save_checkpoint(c.out_dir, dict(model=raw_model.state_dict(), model_config=asdict(mcfg), strategy=strategy_state,
                                            iter_num=it, best_val_loss=best_val, config=cfg, rng=rng_state(), tokenizer=data.tokenizer,
                                            wandb_id=run.id if run is not None else wandb_id))

    val_tokens = data.tokens("val")
    start_iter, t_last, tokens_since = iter_num, time.time(), 0
    for it in range(iter_num, c.max_iters + 1):
        record = {}
        if it % c.eval_interval == 0 or it == c.max_iters:
            val_loss, _ = evaluate_loss(eval_model, val_tokens, c.block_size, c.eval_tokens, c.batch_size, dev, ctx, rank, world_size)
            if not math.isfinite(val_loss):
                raise SystemExit(f"training diverged: validation loss is {val_loss} at iter {it}; ckpt.pt in {c.out_dir} "
                                 "(last good state) was left as it was. Lower learning_rate or set grad_clip.")
            best_val = min(best_val, val_loss)
            record["val_loss"] = val_loss
            if it > start_iter or it == 0:
                checkpoint(it)
            t_last, tokens_since = time.time(), 0  # keep eval out of the throughput figure
        elif c.ckpt_every > 0 and it % c.ckpt_every == 0 and it > start_iter:
            checkpoint(it)
        if it == c.max_iters:
            if master and record:
                print(f"iter {it} | val_loss {record['val_loss']:.4f}")
                metrics.write(json.dumps(dict(iter=it, tokens=it * tokens_per_iter, **record)) + "\n")
                if run is not None:
                    run.log(dict(iter=it, tokens=it * tokens_per_iter, **record), step=it)
            break

        batches = micro_batches(it)
        loss = forward_backward(batches)

        def closure():
            strategy.zero_grad()
            return forward_backward(batches)

        strategy.step(it, loss=global_mean(loss) if strategy.uses_loss else None, closure=closure)
        strategy.zero_grad()
        tokens_since += tokens_per_iter

        if it % c.log_interval == 0 or record:
            train_loss = global_mean(loss).item()
            if not math.isfinite(train_loss):
                raise SystemExit(f"training diverged: train loss is {train_loss} at iter {it}; ckpt.pt in {c.out_dir} "
                                 "(last good state) was left as it was. Lower learning_rate or set grad_clip.")
            if device_type == "cuda":
                torch.cuda.synchronize()
            dt = time.time() - t_last
            tok_per_s = tokens_since / dt if dt > 0 else 0.0
            t_last, tokens_since = time.time(), 0
            lrs = strategy.lrs()
            record.update(iter=it, tokens=(it + 1) * tokens_per_iter, train_loss=train_loss, lr=max(lrs.values()),
                          tok_per_s=tok_per_s, mfu=flops_per_token * tok_per_s / (peak * world_size) if peak else None)
            record.update(strategy.log_record())  # e.g. LLR's per-group alpha and LR at refits
            if master:
                extra = f" | val_loss {record['val_loss']:.4f}" if "val_loss" in record else ""
                mfu = f" | mfu {100 * record['mfu']:.1f}%" if record["mfu"] is not None else ""
                print(f"iter {it} | loss {train_loss:.4f}{extra} | lr {record['lr']:.2e} | {tok_per_s:,.0f} tok/s{mfu}")
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                if run is not None:
                    run.log({k: v for k, v in record.items() if v is not None}, step=it)

    if c.eval_zeroshot and master:
        from data.tokenizer import get_tokenizer
        from eval import zeroshot
        # the uncompiled model: zero-shot batches change length, a compiled one would keep recompiling
        results = zeroshot.evaluate(raw_model, get_tokenizer(data.tokenizer), tasks="all", limit=c.eval_zeroshot_limit or None,
                                    device=dev, ctx=ctx)
        metrics.write(json.dumps(dict(iter=c.max_iters, zeroshot=results)) + "\n")
        if run is not None:
            run.summary["zeroshot"] = results
        print(f"zero-shot 7-task acc {100 * results['avg7']['acc']:.2f}")
    if master:
        metrics.close()
        if run is not None:
            run.finish()
    if ddp:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    train(parse_config(sys.argv[1:]))
