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
outside their domain stop the run before anything starts. The config machinery is configurator.py; what a run
checks before it starts and what it runs on, preflight.py; checkpoints and the run directory, checkpoint.py;
the log lines, metrics.jsonl and wandb, logger.py.
"""
import json
import math
import os
import sys
import time
import types
from contextlib import nullcontext
from dataclasses import asdict

import torch

import configurator
import optim
import scaling
from checkpoint import (Preemption, check_same_model, continue_config, diverged, load_start, prepare_out_dir, rng_state,
                        save_checkpoint, set_rng_state)
from data.loader import PREPARE, is_prepared
from eval.perplexity import evaluate_loss
from logger import Logger, TimeLeft, UpdateMonitor, eta, spectral_metric_names, spectral_record
from model import Transformer
from preflight import build_strategy, check_config, gib, loss_path, open_data, peak_flops_of, preflight, runtime

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
update_every = 0              # > 0: every update_every iterations log each matrix's ‖ΔW‖/‖W‖ over one update (docs/training.md); 0: off
seed = 1337
wandb_log = False             # offline unless an API key is configured; never blocks training
wandb_project = "nanolr"
wandb_run_name = ""
eval_zeroshot = False         # run eval/zeroshot.py on the final model (with eval_zeroshot_limit docs per task)
eval_zeroshot_limit = 200
dry_run = False               # print the resolved config and the model size, then exit
lr_law = ""                   # a law file of eval/lawfit.py: learning_rate = C·N^a·D^b at this run's N and D (scaling.py)
hparam_rules = ""             # published rules "batch,lr,wd@D_REF" (or "all@D_REF"): scale this config from D_REF tokens (scaling.py)
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
qk_norm = False               # normalize each head's q and k before RoPE (a model change behind a flag: docs/hacking.md)
# strategy
strategy = "llr"              # a name of optim.STRATEGIES; 'uniform' is the plain AdamW baseline
# system
device = "auto"               # 'auto', 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"                # 'auto' (bf16 on CUDA and on CPUs with bf16 instructions), 'bfloat16', 'float32'
compile = None                # None: on for CUDA, off for CPU
fused_ce = "auto"             # LM head + loss: 'off' (logits, then F.cross_entropy), 'on' (a fused CUDA kernel: liger-kernel or
                              # cut-cross-entropy), 'auto' (that kernel when installed, else plain), 'chunked' (PyTorch, bounded
                              # logits memory, any device); docs/performance.md
peak_flops = 0.0              # bf16 dense peak per device for MFU; 0: from preflight.PEAK_TFLOPS by device name
# -----------------------------------------------------------------------------------------------
RUN_KEYS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (bool, int, float, str, type(None)))}
assert not set(RUN_KEYS) & set(optim.hyperparameters()), "a run key shadows a strategy key"
DEFAULTS = {**RUN_KEYS, **optim.hyperparameters()}
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py")


def parse_config(argv):
    """train.py's config: its config files (configs/default.py when none) and --key=value over DEFAULTS."""
    return configurator.parse_config(argv, DEFAULTS, default_files=(DEFAULT_CONFIG,))


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
        continue_config(dict(cfg), start, run_dir, DEFAULTS)
    total, non_embedding = net.num_params()
    print(json.dumps({k: v for k, v in cfg.items() if k != "dry_run"}, indent=1, default=str))
    print(f"# model {c.model}: {total:,} parameters ({non_embedding:,} non-embedding); strategy {c.strategy}; "
          f"about {gib(need)} of memory per process on {dev}")
    if data is None:
        print(f"# note: dataset {c.dataset!r} is not prepared, so vocab_size and block_size were not checked against it; "
              f"the run needs `{PREPARE.get(c.dataset, 'its prepare.py')}` first")


def train(cfg):
    c = types.SimpleNamespace(**cfg)
    # --- setup: processes (torchrun sets RANK/WORLD_SIZE), device, precision, the checkpoint to start from
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, local_rank, world_size = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)))
    master = rank == 0
    check_config(c, world_size)
    dev, device_type, use_bf16, ctx, use_compile = runtime(c, local_rank if ddp else None)
    ce_path = loss_path(c, device_type)
    if ddp and device_type == "cuda":
        torch.cuda.set_device(dev)
    if ddp:
        import torch.distributed.nn as _dist_nn  # noqa: F401  before the group exists: see the teardown at the end
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
        continue_config(cfg, start, run_dir, DEFAULTS)  # a branch's max_iters and schedule; refuses a changed schedule or data
        c = types.SimpleNamespace(**cfg)
    torch.manual_seed(c.seed)
    raw_model = Transformer(mcfg).to(dev)
    raw_model.fused_ce = ce_path  # training's loss; eval passes no targets and gets logits
    strategy = build_strategy(c, cfg, raw_model)
    run_lock = prepare_out_dir(c) if master else None  # the first write, once every check has passed; its lock keeps
    # the run directory this process's until train() ends
    preemption = Preemption(dev if ddp else None, min(c.log_interval, 10))  # SIGTERM/SIGUSR1: a checkpoint, then exit
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

    # --- one update's parts: its micro-batches' loss and gradients, the mean over ranks, a checkpoint of the state
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

    # --- the log: one banner line, then metrics.jsonl (a resume or branch continues its rows) and wandb
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
    start_iter, t_last, tokens_since = iter_num, time.time(), 0  # t_last, tokens_since: the throughput since the last line
    t_run, spectral_s, spectral_names = time.time(), 0.0, spectral_metric_names(c.spectral_metrics)  # the HT-SR monitor
    update_monitor = UpdateMonitor(raw_model) if c.update_every > 0 else None  # the effective-LR monitor
    time_left = TimeLeft(c, start_iter, tokens_per_iter, use_compile)

    # --- the loop: evaluate and checkpoint on schedule, one update, one log line
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
            time_left.eval_took(t_last - t_eval)
        elif c.ckpt_every > 0 and it % c.ckpt_every == 0 and it > start_iter:
            with strategy.eval_weights():
                checkpoint(it)
        if it == c.max_iters:
            if master:
                logger.log(dict(iter=it, tokens=it * tokens_per_iter, **record))
            break

        watch_update = c.update_every > 0 and it % c.update_every == 0  # the effective-LR monitor: update it -> it+1
        if watch_update:
            update_monitor.snapshot()
        t_update = time.time()
        batches = micro_batches(it)
        loss = optim.update(strategy, it, lambda: forward_backward(batches), reduce=global_mean)
        tokens_since += tokens_per_iter
        if it == start_iter:
            if device_type == "cuda":
                torch.cuda.synchronize()
            time_left.first_update_took(time.time() - t_update)
        if watch_update:
            record.update(update_monitor.record())
            t_last += record["update_s"]  # kept out of the throughput figure, as the HT-SR monitor is

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
        if preemption.requested(it):  # every rank: the state after this update, then exit for a requeue
            with strategy.eval_weights():
                checkpoint(it + 1)
            preemption.stop(it + 1, c.out_dir, logger, run_lock)

    # --- end: the monitor's share of the run, zero-shot evaluation, the log closed
    if master and c.spectral_every > 0:
        run_s = time.time() - t_run
        print(f"spectral monitor: {spectral_s:.1f} s, {100 * spectral_s / max(run_s, 1e-9):.1f} % of the run "
              f"(spectral_every={c.spectral_every})")
    if master and c.update_every > 0:
        share = 100 * update_monitor.seconds / max(time.time() - t_run, 1e-9)
        print(f"update monitor: {update_monitor.seconds:.3f} s, {share:.2f} % of the run (update_every={c.update_every})")
    summary = {}
    if c.eval_zeroshot and master:
        from data.tokenizer import get_tokenizer
        from eval import zeroshot
        # the uncompiled model: zero-shot batches change length, a compiled one would keep recompiling
        with strategy.eval_weights():
            summary["zeroshot"] = zeroshot.evaluate(raw_model, get_tokenizer(data.tokenizer), tasks="all",
                                                    limit=c.eval_zeroshot_limit or None, device=dev, ctx=ctx)
        logger.file.write(json.dumps(dict(iter=c.max_iters, zeroshot=summary["zeroshot"])) + "\n")
        avg7 = summary["zeroshot"]["avg7"]
        print(f"zero-shot 7-task acc {100 * avg7['acc']:.2f} ({avg7.get('skipped', 0)} items longer than the block skipped)")
    if master:
        logger.close(summary)
    if ddp:
        # Free the group, which joins gloo's worker threads while the interpreter is still whole. A worker drops a
        # finished collective's tensors after wait() has returned, and that takes the GIL; one still waiting for it
        # when the interpreter starts finalizing is ended inside a C++ destructor and aborts the process (rank 1,
        # ~1 ms from its last all_reduce to exit). The DDP wrapper goes first (its reducer holds the group), so
        # destroy_process_group drops the last reference, in a destructor that releases the GIL for the join.
        # torch.distributed.nn is imported before init_process_group: imported later (by DDP), its functions'
        # default group= arguments would keep the group alive.
        import gc
        del model
        gc.collect()
        torch.distributed.destroy_process_group()


def main(argv):
    config = parse_config(argv)
    config = scaling.apply(config)  # lr_law and hparam_rules: learning_rate, batch and weight decay from N and D
    if config["dry_run"]:
        dry_run_report(types.SimpleNamespace(**config), config)
    else:
        train(config)


if __name__ == "__main__":
    main(sys.argv[1:])
