"""
Throughput benchmarks, each a ratio against a peer measured side by side in the same run.

    python bench.py configs/llama_135m.py                    # train-step tok/s + MFU; fwd+bwd vs Hugging Face
    python bench.py configs/llama_135m.py --compile=True     # the same, compiled on both sides
    python bench.py configs/llama_135m_llr.py --llr          # LLR's extra wall time over uniform, same config and seed
    python bench.py configs/llama_135m.py --profile          # + the ops that take the train step's time
    python bench.py configs/llama_135m.py --ce               # LM head + loss: plain vs chunked (+ CUDA kernels), time and peak memory
    python bench.py --update_overhead --steps=50 --rounds=7  # the effective-LR monitor's cost at update_every=10, default run
    python bench.py --gpu_check --out out/gpu_check          # every CUDA path run, every GPU target measured: one report
    python bench.py --gpu_check --smoke                      # the same checks on a CPU in under a minute (CI)

Config files and --key=value overrides are train.py's; --steps=N timed steps per measurement (10),
--rounds=R interleaved rounds of the comparison (3). Inputs are random tokens (no dataset
needed); vocab_size 0 means the preset's. Absolute numbers mean something only on a GPU: the
output names the device and the date. --gpu_check runs the checks of GPU_CHECKS below (gpu_check.py: the harness,
the report and the checks of the training paths) and writes gpu_check.json and gpu_check.md to --out
(out/gpu_check); docs/performance.md#gpu-check says what each check does and holds.
"""
import contextlib
import datetime
import io
import os
import statistics
import sys
import time
import types

import torch

import configurator
import gpu_check
import optim
import preflight
import spectral
import train
from gpu_check import Skip
from logger import UpdateMonitor, spectral_metric_names, spectral_record
from model import KERNEL_PACKAGES, PRESETS, ModelConfig, Transformer, _fused_kernel


def clock(device_type):
    if device_type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def hf_model(cfg: ModelConfig):
    """The same network in Hugging Face transformers (optional dependency, benchmark only)."""
    try:
        import transformers
    except ImportError:
        return None
    if cfg.arch == "llama":
        hc = transformers.LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.ffn_hidden,
                                      num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                                      max_position_embeddings=cfg.block_size, rms_norm_eps=cfg.norm_eps,
                                      rope_theta=cfg.rope_theta, tie_word_embeddings=False, attn_implementation="sdpa")
        return transformers.LlamaForCausalLM(hc)
    hc = transformers.GPT2Config(vocab_size=cfg.vocab_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
                                 n_positions=cfg.block_size, n_inner=cfg.ffn_hidden, activation_function="gelu",
                                 attn_implementation="sdpa")
    return transformers.GPT2LMHeadModel(hc)


def time_steps(step, steps, warmup, device_type):
    for _ in range(warmup):
        step()
    t0 = clock(device_type)
    for _ in range(steps):
        step()
    return (clock(device_type) - t0) / steps


BENCH_FLAGS = {"steps": 10, "rounds": 3, "llr": False, "profile": False, "ce": False,  # bench.py's own, not train.py's
               "update_overhead": False, "gpu_check": False, "smoke": False, "out": "out/gpu_check"}


def bench_flags(argv):
    """argv -> (bench.py's flags, the rest for train.parse_config). A mistyped flag of either kind gets train.py's
    did-you-mean over both sets of names; counts must be positive integers."""
    flags, rest = dict(BENCH_FLAGS), []
    for arg in argv:
        key, eq, value = arg[2:].partition("=")
        if not arg.startswith("--") or key not in BENCH_FLAGS:
            if arg.startswith("--") and key not in train.DEFAULTS:
                raise configurator.unknown_key(key, [*train.DEFAULTS, *BENCH_FLAGS])
            rest.append(arg)
        elif isinstance(BENCH_FLAGS[key], bool):
            flags[key] = configurator.coerce(key, value if eq else "true", False, from_text=True)
        elif isinstance(BENCH_FLAGS[key], str):
            if not value:
                raise configurator.ConfigError(f"{arg}: expected a directory, e.g. --{key}={BENCH_FLAGS[key]}")
            flags[key] = value
        else:
            try:
                flags[key] = int(value)
            except ValueError:
                flags[key] = 0
            if flags[key] <= 0:
                raise configurator.ConfigError(f"{arg}: expected a positive integer, e.g. --{key}={BENCH_FLAGS[key]}")
    return flags, rest


def main(argv):
    command = " ".join(["python bench.py", *argv])
    flags, argv = bench_flags(argv)
    if flags["smoke"] and not flags["gpu_check"]:
        raise configurator.ConfigError("--smoke is the CPU smoke mode of --gpu_check: python bench.py --gpu_check --smoke")
    if flags["gpu_check"] and any(flags[k] for k in ("llr", "profile", "ce")):
        raise configurator.ConfigError("--gpu_check runs its own measurements (--llr and --ce among them): drop --llr, "
                                       "--profile and --ce")
    if flags["gpu_check"]:
        return run_gpu_check(flags, argv, command)
    mode_llr, mode_profile, mode_ce, steps, rounds = (flags[k] for k in ("llr", "profile", "ce", "steps", "rounds"))
    cfg = train.parse_config(argv)
    c = types.SimpleNamespace(**cfg)
    dev, device_type, use_bf16, ctx, use_compile = preflight.runtime(c)
    mcfg = preflight.model_config(c, c.vocab_size or PRESETS[c.model]["vocab_size"])
    B, T = c.batch_size, c.block_size
    x = torch.randint(0, mcfg.vocab_size, (B, T), device=dev)
    name = torch.cuda.get_device_name() if device_type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"# {command}")
    print(f"# {name}, {datetime.date.today()}, torch {torch.__version__}, {'bf16' if use_bf16 else 'fp32'}"
          f"{', compiled' if use_compile else ''}, batch {B}x{T}")

    torch.manual_seed(c.seed)
    model = Transformer(mcfg).to(dev)
    model.fused_ce = preflight.loss_path(c, device_type)  # the loss path train.py would run
    runner = torch.compile(model) if use_compile else model
    if mode_ce:
        return bench_ce(model, runner, x, ctx, steps, rounds, device_type)

    if mode_llr:
        return bench_llr(cfg, model, runner, fwd_bwd(runner, x, ctx), steps, device_type, B * T)
    if flags["update_overhead"]:
        return bench_update_overhead(cfg, model, runner, x, ctx, steps, rounds, device_type)

    strategy = optim.build(c.strategy, model, cfg)

    train_step = train_step_of(runner, x, ctx, strategy)
    dt = time_steps(train_step, steps, 3, device_type)
    tok_s = B * T / dt
    peak = preflight.peak_flops_of(device_type, c.peak_flops)
    mfu = f", MFU {100 * model.flops_per_token() * tok_s / peak:.1f}%" if peak else ""
    print(f"nanoLR {c.model} train step ({c.strategy}): {tok_s:,.0f} tok/s{mfu}")
    if mode_profile:
        profile(train_step, device_type)
    hf = versus_hf(mcfg, runner, x, ctx, dev, use_compile, steps, rounds, device_type)
    if hf is None:
        print("fwd+bwd: transformers is not installed; pip install transformers for the comparison")
        return
    print(f"fwd+bwd nanoLR {hf['ours']:,.0f} tok/s | transformers {hf['kind']} {hf['theirs']:,.0f} tok/s | "
          f"ratio {hf['ratio']:.2f}x (best of {rounds} interleaved rounds of {steps} steps; "
          f"per-round ratios {hf['ratios'][0]:.2f}x to {hf['ratios'][-1]:.2f}x)")


def fwd_bwd(m, x, ctx, hf=False):
    """One forward and backward of m on the batch x (inputs and targets alike: the throughput is the same)."""
    def run():
        with ctx:
            loss = m(input_ids=x, labels=x).loss if hf else m(x, x)[1]
        loss.backward()
    return run


def train_step_of(runner, x, ctx, strategy):
    def train_step():
        fwd_bwd(runner, x, ctx)()
        strategy.step(0)
        strategy.zero_grad()
    return train_step


def versus_hf(mcfg, runner, x, ctx, dev, use_compile, steps, rounds, device_type):
    """fwd+bwd tokens/s of nanoLR's runner and of the same network in transformers (compiled alike), interleaved
    rounds; None without transformers. The best round of each side, their ratio and the per-round ratios."""
    hf = hf_model(mcfg)
    if hf is None:
        return None
    hf = hf.to(dev)
    hf_runner = torch.compile(hf) if use_compile else hf
    ours_run, theirs_run = fwd_bwd(runner, x, ctx), fwd_bwd(hf_runner, x, ctx, hf=True)
    ours_run(), theirs_run()  # warm-up (and compilation) outside the timed rounds
    ours, theirs = [], []
    for _ in range(rounds):   # interleaved, so drift in clocks, temperature or machine load hits both alike
        ours.append(x.numel() / time_steps(ours_run, steps, 1, device_type))
        theirs.append(x.numel() / time_steps(theirs_run, steps, 1, device_type))
    return dict(ours=max(ours), theirs=max(theirs), ratio=max(ours) / max(theirs),
                ratios=sorted(o / t for o, t in zip(ours, theirs)),
                kind="LlamaForCausalLM" if mcfg.arch == "llama" else "GPT2LMHeadModel")


def peak_bytes(fn, device_type):
    """Peak memory that fn allocates above what was live before it: CUDA's allocator statistics, or on a
    CPU the running total of the CPU allocator as the profiler records it at every allocation."""
    if device_type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity
    from torch._C._profiler import _EventType
    with torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    nodes, allocs = list(prof.profiler.kineto_results.experimental_event_tree()), []
    while nodes:
        node = nodes.pop()
        nodes.extend(node.children)
        if node.tag == _EventType.Allocation:
            allocs.append(node)
    if not allocs:
        return 0
    first = min(allocs, key=lambda n: n.start_time_ns).extra_fields
    return max(n.extra_fields.total_allocated for n in allocs) - (first.total_allocated - first.alloc_size)


def head_inputs(n, d, v, device):
    """Hidden states (n x d) and a head (v x d) that need grads, and n targets: the LM head's inputs at a config's shape."""
    torch.manual_seed(0)
    h = torch.randn(n, d, device=device, requires_grad=True)
    w = (0.02 * torch.randn(v, d, device=device)).requires_grad_()
    t = torch.randint(0, v, (n,), device=device)
    t[::50] = -1  # a few ignored targets, as padding would give
    return h, w, t


def head_and_loss(h, w, t, path, ctx):
    """The mean loss of the LM head on one path: 'off' (logits, then F.cross_entropy), 'chunked' or a CUDA kernel."""
    import torch.nn.functional as F
    from model import linear_cross_entropy
    with ctx:
        return (F.cross_entropy(F.linear(h, w).float(), t, ignore_index=-1) if path == "off"
                else linear_cross_entropy(h, w, t, path, ignore_index=-1))


def bench_ce_run(h, w, t, path, ctx):
    """The LM head and the loss on one path, forward and backward: what --ce times."""
    def run():
        head_and_loss(h, w, t, path, ctx).backward()
        h.grad = w.grad = None
    return run


def bench_ce(model, runner, x, ctx, steps, rounds, device_type):
    """The LM head and the loss, forward and backward, on the config's hidden-state shape: the plain path
    (logits, then F.cross_entropy), the chunked pure-PyTorch path and every installed CUDA kernel, timed
    interleaved, each with its peak memory; then a whole train step (fwd+bwd) with each path."""
    from model import ce_chunk_rows, installed_kernels
    n, d, v = x.numel(), model.cfg.n_embd, model.cfg.vocab_size
    h, w, t = head_inputs(n, d, v, x.device)
    paths = ["off", "chunked"] + (installed_kernels() if device_type == "cuda" else [])
    label = {"off": "plain"}

    chunk = ce_chunk_rows(n, d, v)
    print(f"LM head + loss, fwd+bwd: {n:,} rows x {d} -> vocab {v:,}; chunked: {-(-n // chunk)} chunk(s) of {chunk:,} rows"
          f"{'' if device_type == 'cuda' else '; CUDA kernels: not on a CPU'}")
    runs = {p: bench_ce_run(h, w, t, p, ctx) for p in paths}
    for run in runs.values():
        run()  # warm-up (and Triton's compilation) outside the timed rounds
    peaks = {p: peak_bytes(run, device_type) for p, run in runs.items()}
    times = {p: [] for p in paths}
    for _ in range(rounds):  # interleaved, so drift in clocks or load hits every path alike
        for p, run in runs.items():
            times[p].append(time_steps(run, steps, 1, device_type))
    best = {p: min(ts) for p, ts in times.items()}
    for p in paths:
        print(f"  {label.get(p, p):<8} {1e3 * best[p]:9.2f} ms  peak {peaks[p] / 2**20:9.1f} MiB  |  "
              f"time {best[p] / best['off']:.2f}x, memory {peaks[p] / max(peaks['off'], 1):.2f}x of plain")

    def step(path):
        def run():
            model.fused_ce = path
            with ctx:
                loss = runner(x, x)[1]
            loss.backward()
            model.zero_grad(set_to_none=True)
        return run
    steps_ = {p: step(p) for p in paths}
    for run in steps_.values():
        run()
    totals = {p: [] for p in paths}
    for _ in range(rounds):
        for p, run in steps_.items():
            totals[p].append(time_steps(run, steps, 1, device_type))
    print("model fwd+bwd with each path (best of {} interleaved rounds of {} steps): ".format(rounds, steps) +
          ", ".join(f"{label.get(p, p)} {1e3 * min(totals[p]):.1f} ms ({min(totals[p]) / min(totals['off']):.2f}x)"
                    for p in paths))


def profile(step, device_type, rows=25):
    """The ops that take a train step's time, by their own (self) time on the device, over 3 steps."""
    from torch.profiler import ProfilerActivity
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device_type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(3):
            step()
        clock(device_type)
    key = "self_cuda_time_total" if device_type == "cuda" else "self_cpu_time_total"
    print(f"top {rows} ops of 3 train steps by {key}:")
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70))


def bench_llr(cfg, model, runner, fwd_bwd, steps, device_type, tokens):
    """Per-step cost of LLR vs uniform with identical model and config, plus the cost of one refit,
    projected onto the config's schedule: refits at t = 1 and every llr_every while t <= llr_ratio·T."""
    init = {k: v.clone() for k, v in model.state_dict().items()}
    results = {}
    for round_ in range(2):  # interleaved, so drift in clocks or temperature hits both alike
        for name in ("uniform", "llr"):
            model.load_state_dict(init)
            strategy = optim.build(name, model, cfg)
            it0 = 1 if name == "llr" else 0  # it = 1 is no refit step: time the per-step path here

            def step():
                fwd_bwd()
                strategy.step(it0)
                strategy.zero_grad()
            if name == "llr":
                strategy.step(0)  # the first refit
                strategy.zero_grad()
            results.setdefault(name, []).append(time_steps(step, steps, 2, device_type))
            if name == "llr":
                t0 = clock(device_type)
                for _ in range(3):
                    strategy.refit(2)
                results.setdefault("refit", []).append((clock(device_type) - t0) / 3)
    uni, per, refit = min(results["uniform"]), min(results["llr"]), min(results["refit"])
    fb = time_steps(fwd_bwd, steps, 1, device_type)  # one more micro-batch of a step with accumulation
    T, every, ratio = cfg["max_iters"], cfg["llr_every"], cfg["llr_ratio"]
    n_refits = 1 + int(ratio * T) // every
    print(f"step with one micro-batch: uniform {1e3 * uni:.1f} ms, llr {1e3 * per:.1f} ms ({100 * (per / uni - 1):+.2f}%), "
          f"{tokens / uni:,.0f} tok/s | one refit ({len(strategy.alphas)} matrices) {1e3 * refit:.1f} ms")
    figures = {"step uniform ms": 1e3 * uni, "step llr ms": 1e3 * per, "refit ms": 1e3 * refit,
               "matrices": len(strategy.alphas), "refits": n_refits}
    shown = set()
    for world in (1, 8):  # one device, and the paper's 8 GPUs
        accum = max(1, cfg["grad_accum"] // world)
        if accum in shown:
            continue
        shown.add(accum)
        step = uni + (accum - 1) * fb
        refits = n_refits * refit / (T * step)
        print(f"projected, {world} device(s), {accum} micro-batch(es) per step, {T} steps, {n_refits} refits "
              f"(llr_every={every}, llr_ratio={ratio}): refits {100 * refits:+.2f}%, "
              f"with the per-step difference {100 * (refits + (per - uni) / step):+.2f}%")
        figures[f"refits_pct_{world}dev"] = 100 * refits
    return figures


def bench_update_overhead(cfg, model, runner, x, ctx, steps, rounds, device_type, every=10):
    """The effective-LR monitor's cost at update_every=`every` (train.py --update_every) on this config: blocks of train
    steps without the monitor and with it (a snapshot before every `every`-th update, the ratios after it, as train.py
    runs it), timed in interleaved rounds. Two medians over the rounds: the monitor's own time over the plain block's
    (its share of the training time), and the monitored block's time over the plain block's (end to end: that share
    plus the machine's noise). The steps are all update it=1, which LLR does not refit at (as --llr), after it=0."""
    strategy = optim.build(cfg["strategy"], model, cfg)
    monitor = UpdateMonitor(model)
    n = every * -(-steps // every)  # whole monitoring periods
    step = fwd_bwd(runner, x, ctx)

    def block(watch):
        """(seconds of n train steps, the monitor's seconds among them)."""
        monitor.seconds = 0.0
        t0 = clock(device_type)
        for i in range(n):
            if watch and i % every == 0:
                monitor.snapshot()
            step()
            strategy.step(1)
            strategy.zero_grad()
            if watch and i % every == 0:
                monitor.record()
        return clock(device_type) - t0, monitor.seconds

    step(), strategy.step(0), strategy.zero_grad()  # the first update (LLR's first refit)
    block(True)  # warm-up of both paths (and compilation)
    off, on, own = [], [], []
    for r in range(rounds):  # interleaved, the order alternating, so drift in clocks or load hits both alike
        for watch in ((False, True) if r % 2 == 0 else (True, False)):
            seconds, monitor_s = block(watch)
            (on if watch else off).append(seconds)
            if watch:
                own.append(monitor_s)
    median = statistics.median
    share = median(m / t for m, t in zip(own, off))
    end_to_end = sorted(b / a - 1 for a, b in zip(off, on))
    print(f"update monitor on {cfg['model']} ({cfg['strategy']}), update_every={every}, {len(monitor.matrices)} matrices: "
          f"{1e3 * median(own) / (n // every):.2f} ms per monitored update, train step {1e3 * median(off) / n:.1f} ms | "
          f"share of the training time {100 * share:.2f} % (the monitor's own time; budget 1 %: "
          f"{'met' if share <= 0.01 else 'missed'})")
    print(f"end to end, {n} steps: {median(off):.3f} s off, {median(on):.3f} s on, {100 * median(end_to_end):+.2f} % "
          f"(median of {rounds} interleaved rounds; per round {100 * end_to_end[0]:+.2f} % to {100 * end_to_end[-1]:+.2f} %)")
    return dict(share_pct=100 * share, end_to_end_pct=100 * median(end_to_end), monitor_ms=1e3 * median(own) / (n // every),
                step_ms=1e3 * median(off) / n, matrices=len(monitor.matrices))


# ----------------------------------------------------------------------------------------------
# --gpu_check: the measurements against peers and targets (gpu_check.py: the harness and the training-path checks)


def run_gpu_check(flags, argv, command):
    """Every check of GPU_CHECKS, then the report; exit status 1 when one failed."""
    t0 = time.time()
    g = gpu_check.settings(argv, flags["smoke"], flags["out"], flags["steps"], flags["rounds"], command)
    print(f"# {command}\n# {g.device}, {datetime.date.today()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"{g.c.model} {g.c.batch_size}x{g.c.block_size}, {'bf16' if g.use_bf16 else 'fp32'}"
          f"{', compiled' if g.use_compile else ', eager'}", flush=True)
    results = gpu_check.run_checks(GPU_CHECKS, g, GPU_TARGETS)
    report = gpu_check.write_report(g, results, GPU_TARGETS, time.time() - t0)
    failed = [r["name"] for r in results if r["status"] == "fail"]
    print(f"gpu check: {len(results) - len(failed)} of {len(results)} passed or skipped, {len(failed)} failed"
          f"{' (' + ', '.join(failed) + ')' if failed else ''}; {report['wall_s']} s; report in {g.out}/gpu_check.md")
    if failed:
        raise SystemExit(1)


def shared(g):
    """The checked model as train.py runs it (compiled on CUDA, its loss path), its batch and the time of a uniform
    AdamW train step: built once, for the throughput, monitor, LLR and spectral checks."""
    if "model" not in g.cache:
        torch.manual_seed(g.c.seed)
        model = Transformer(g.mcfg).to(g.dev)
        model.fused_ce = preflight.loss_path(g.c, g.device_type)
        runner = torch.compile(model) if g.use_compile else model
        step = train_step_of(runner, g.x, g.ctx, optim.build("uniform", model, g.cfg))
        step_s = time_steps(step, g.steps, 3, g.device_type)
        g.cache.update(model=model, runner=runner, step=step, step_s=step_s)
    return types.SimpleNamespace(**g.cache)


def gpu_fused_loss(g, path):
    """The LM head + loss on one fused path against the plain one, on the config's hidden-state shape: loss and gradient
    differences (relative), time and peak memory of each, forward and backward."""
    if path != "chunked" and g.device_type != "cuda":
        raise Skip("needs CUDA")
    if path != "chunked" and _fused_kernel(path) is None:
        raise Skip(f"{KERNEL_PACKAGES[path]} is not installed (pip install {KERNEL_PACKAGES[path]})")
    h, w, t = head_inputs(g.x.numel(), g.mcfg.n_embd, g.mcfg.vocab_size, g.dev)
    tol = (1e-3, 2e-2) if g.use_bf16 else (1e-5, 1e-4)  # relative, loss and gradients: bf16 logits round differently

    def run_of(p):
        def run():
            loss = head_and_loss(h, w, t, p, g.ctx)
            loss.backward()
            out = loss.detach().float(), h.grad.float(), w.grad.float()
            h.grad = w.grad = None
            return out
        return run
    (l0, gh0, gw0), (l1, gh1, gw1) = run_of("off")(), run_of(path)()
    rel = lambda a, b: ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
    diffs = {"loss rel diff": abs(l1 - l0).item() / abs(l0).item(), "grad h rel diff": rel(gh1, gh0),
             "grad w rel diff": rel(gw1, gw0)}
    del gh0, gw0, gh1, gw1
    runs = {p: bench_ce_run(h, w, t, p, g.ctx) for p in ("off", path)}
    peaks = {p: peak_bytes(run, g.device_type) for p, run in runs.items()}
    times = {p: [] for p in runs}
    for _ in range(g.rounds):  # interleaved, as bench.py --ce
        for p, run in runs.items():
            times[p].append(time_steps(run, g.steps, 1, g.device_type))
    bad = [f"{k} {v:.2e} > {tol[k != 'loss rel diff']:g}" for k, v in diffs.items() if v > tol[k != "loss rel diff"]]
    if bad:
        raise AssertionError(f"{path} vs plain: " + ", ".join(bad))
    return {**diffs, "ms": 1e3 * min(times[path]), "plain ms": 1e3 * min(times["off"]),
            "peak MiB": peaks[path] / 2**20, "plain peak MiB": peaks["off"] / 2**20,
            "shape": f"{g.x.numel()}x{g.mcfg.n_embd} -> {g.mcfg.vocab_size}"}


def gpu_throughput(g):
    """Tokens/s and MFU of a train step (uniform AdamW, one micro-batch), and its peak memory."""
    s = shared(g)
    tok_s = g.x.numel() / s.step_s
    peak = preflight.peak_flops_of(g.device_type, g.c.peak_flops)
    return {"tok/s": tok_s, "mfu_pct": 100 * s.model.flops_per_token() * tok_s / peak if peak else None,
            "step ms": 1e3 * s.step_s, "peak MiB": peak_bytes(s.step, g.device_type) / 2**20,
            "loss path": s.model.fused_ce}


def gpu_versus_hf(g):
    """fwd+bwd tokens/s against Hugging Face transformers on the same network, compiled alike, interleaved rounds."""
    s = shared(g)
    hf = versus_hf(g.mcfg, s.runner, g.x, g.ctx, g.dev, g.use_compile, g.steps, g.rounds, g.device_type)
    if hf is None:
        raise Skip("transformers is not installed (pip install transformers)")
    return {"nanoLR tok/s": hf["ours"], f"{hf['kind']} tok/s": hf["theirs"], "vs_hf": hf["ratio"],
            "per-round ratios": f"{hf['ratios'][0]:.2f}-{hf['ratios'][-1]:.2f}"}


def gpu_monitor(g):
    """The HT-SR monitor's share of a run at spectral_every=100: one monitor call (logger.spectral_record, the metrics
    train.py logs) over 100 train steps of this config."""
    s = shared(g)
    names = spectral_metric_names(g.c.spectral_metrics)
    spectral_record(s.model, names)  # warm-up: the first call builds the eigenvalue plans
    calls = []
    for _ in range(3):
        t0 = clock(g.device_type)
        spectral_record(s.model, names)
        calls.append(clock(g.device_type) - t0)
    return {"monitor ms": 1e3 * min(calls), "step ms": 1e3 * s.step_s, "monitor_pct": 100 * min(calls) / (100 * s.step_s)}


def gpu_update_monitor(g):
    """The effective-LR monitor's share of a run at update_every=10 (train.py --update_every, logger.UpdateMonitor):
    its snapshot and ratios against this config's uniform AdamW train steps (bench.py --update_overhead)."""
    s = shared(g)
    with contextlib.redirect_stdout(io.StringIO()):
        figures = bench_update_overhead(dict(g.cfg, strategy="uniform"), s.model, s.runner, g.x, g.ctx, g.steps, g.rounds,
                                        g.device_type)
    return {"monitor ms": figures["monitor_ms"], "step ms": figures["step_ms"], "matrices": figures["matrices"],
            "update_pct": figures["share_pct"], "end to end %": figures["end_to_end_pct"]}


def gpu_llr_refit(g):
    """One LLR refit and the refits' share of the paper recipe's wall time (configs/llama_135m_llr.py's schedule: its
    max_iters, llr_every, llr_ratio, grad_accum), on this device's step (bench.py --llr)."""
    s = shared(g)
    paper = train.parse_config([os.path.join(gpu_check.ROOT, "configs", "llama_135m_llr.py"), *g.size_args])
    with contextlib.redirect_stdout(io.StringIO()):  # its lines say what the figures say: one line per check
        figures = bench_llr(paper, s.model, s.runner, fwd_bwd(s.runner, g.x, g.ctx), g.steps, g.device_type, g.x.numel())
    figures["llr_refits_pct"] = figures.get("refits_pct_8dev")  # the paper's 8 GPUs: 2 micro-batches per GPU and step
    return figures


def gpu_spectral(g):
    """spectral.analyze on every matrix of the model, every metric (the median fit LLR uses), after one warm-up call."""
    s = shared(g)
    spectral.analyze(s.model)
    best, timings = float("inf"), {}
    for _ in range(3):
        tm = {}
        t0 = clock(g.device_type)
        rows = spectral.analyze(s.model, timings=tm)
        dt = clock(g.device_type) - t0
        if dt < best:
            best, timings = dt, tm
    return {"spectral_ms": 1e3 * best, "matrices": len(rows), "eigenvalues ms": 1e3 * timings.get("eig_s", 0),
            "fits ms": 1e3 * timings.get("fit_s", 0)}


GPU_CHECKS = [  # (name, check) in the order they run; each returns its figures (gpu_check.py has the contract)
    ("strategies compiled vs eager", gpu_check.strategies),
    ("fused loss: chunked", lambda g: gpu_fused_loss(g, "chunked")),
    ("fused loss: liger-kernel", lambda g: gpu_fused_loss(g, "liger")),
    ("fused loss: cut-cross-entropy", lambda g: gpu_fused_loss(g, "cce")),
    ("torchrun train + checkpoint + resume", gpu_check.torchrun),
    ("throughput and MFU", gpu_throughput),
    ("vs Hugging Face transformers", gpu_versus_hf),
    ("HT-SR monitor at spectral_every=100", gpu_monitor),
    ("update-ratio monitor at update_every=10", gpu_update_monitor),
    ("LLR refit", gpu_llr_refit),
    ("spectral analyze, all matrices", gpu_spectral),
]
GPU_TARGETS = {"mfu_pct": (">=", 45), "vs_hf": (">=", 1.3), "spectral_ms": ("<=", 50), "monitor_pct": ("<=", 1.0),
               "update_pct": ("<=", 1.0), "llr_refits_pct": ("<=", 0.3)}  # issue #25's targets on one H100/H200


if __name__ == "__main__":
    main(sys.argv[1:])
