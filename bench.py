"""
Throughput benchmarks, each a ratio against a peer measured side by side in the same run.

    python bench.py configs/llama_135m.py                    # train-step tok/s + MFU; fwd+bwd vs Hugging Face
    python bench.py configs/llama_135m.py --compile=True     # the same, compiled on both sides
    python bench.py configs/llama_135m_llr.py --llr          # LLR's extra wall time over uniform, same config and seed
    python bench.py configs/llama_135m.py --profile          # + the ops that take the train step's time
    python bench.py configs/llama_135m.py --ce               # LM head + loss: plain vs chunked (+ CUDA kernels), time and peak memory

Config files and --key=value overrides are train.py's; --steps=N timed steps per measurement (10),
--rounds=R interleaved rounds of the comparison (3). Inputs are random tokens (no dataset
needed); vocab_size 0 means the preset's. Absolute numbers mean something only on a GPU: the
output names the device and the date.
"""
import datetime
import sys
import time
import types

import torch

import configurator
import optim
import preflight
import train
from model import PRESETS, ModelConfig, Transformer


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


BENCH_FLAGS = {"steps": 10, "rounds": 3, "llr": False, "profile": False, "ce": False}  # bench.py's own, not train.py's


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
        else:
            try:
                flags[key] = int(value)
            except ValueError:
                flags[key] = 0
            if flags[key] <= 0:
                raise configurator.ConfigError(f"{arg}: expected a positive integer, e.g. --{key}={BENCH_FLAGS[key]}")
    return flags, rest


def main(argv):
    flags, argv = bench_flags(argv)
    mode_llr, mode_profile, mode_ce, steps, rounds = (flags[k] for k in ("llr", "profile", "ce", "steps", "rounds"))
    cfg = train.parse_config(argv)
    c = types.SimpleNamespace(**cfg)
    dev, device_type, use_bf16, ctx, use_compile = preflight.runtime(c)
    mcfg = preflight.model_config(c, c.vocab_size or PRESETS[c.model]["vocab_size"])
    B, T = c.batch_size, c.block_size
    x = torch.randint(0, mcfg.vocab_size, (B, T), device=dev)
    name = torch.cuda.get_device_name() if device_type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"# {' '.join(['python bench.py'] + sys.argv[1:])}")
    print(f"# {name}, {datetime.date.today()}, torch {torch.__version__}, {'bf16' if use_bf16 else 'fp32'}"
          f"{', compiled' if use_compile else ''}, batch {B}x{T}")

    torch.manual_seed(c.seed)
    model = Transformer(mcfg).to(dev)
    model.fused_ce = preflight.loss_path(c, device_type)  # the loss path train.py would run
    runner = torch.compile(model) if use_compile else model
    if mode_ce:
        return bench_ce(model, runner, x, ctx, steps, rounds, device_type)

    def fwd_bwd(m, hf=False):
        def run():
            with ctx:
                loss = m(input_ids=x, labels=x).loss if hf else m(x, x)[1]
            loss.backward()
        return run

    if mode_llr:
        return bench_llr(cfg, model, runner, fwd_bwd(runner), steps, device_type, B * T)

    strategy = optim.build(c.strategy, model, cfg)

    def train_step():
        fwd_bwd(runner)()
        strategy.step(0)
        strategy.zero_grad()
    dt = time_steps(train_step, steps, 3, device_type)
    tok_s = B * T / dt
    peak = preflight.peak_flops_of(device_type, c.peak_flops)
    mfu = f", MFU {100 * model.flops_per_token() * tok_s / peak:.1f}%" if peak else ""
    print(f"nanoLR {c.model} train step ({c.strategy}): {tok_s:,.0f} tok/s{mfu}")
    if mode_profile:
        profile(train_step, device_type)
    hf = hf_model(mcfg)
    if hf is None:
        print("fwd+bwd: transformers is not installed; pip install transformers for the comparison")
        return
    hf = hf.to(dev)
    hf_runner = torch.compile(hf) if use_compile else hf
    kind = "LlamaForCausalLM" if mcfg.arch == "llama" else "GPT2LMHeadModel"
    ours_run, theirs_run = fwd_bwd(runner), fwd_bwd(hf_runner, hf=True)
    ours_run(), theirs_run()  # warm-up (and compilation) outside the timed rounds
    ours, theirs = [], []
    for _ in range(rounds):   # interleaved, so drift in clocks, temperature or machine load hits both alike
        ours.append(B * T / time_steps(ours_run, steps, 1, device_type))
        theirs.append(B * T / time_steps(theirs_run, steps, 1, device_type))
    ratios = sorted(o / t for o, t in zip(ours, theirs))
    print(f"fwd+bwd nanoLR {max(ours):,.0f} tok/s | transformers {kind} {max(theirs):,.0f} tok/s | "
          f"ratio {max(ours) / max(theirs):.2f}x (best of {rounds} interleaved rounds of {steps} steps; "
          f"per-round ratios {ratios[0]:.2f}x to {ratios[-1]:.2f}x)")


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


def bench_ce(model, runner, x, ctx, steps, rounds, device_type):
    """The LM head and the loss, forward and backward, on the config's hidden-state shape: the plain path
    (logits, then F.cross_entropy), the chunked pure-PyTorch path and every installed CUDA kernel, timed
    interleaved, each with its peak memory; then a whole train step (fwd+bwd) with each path."""
    import torch.nn.functional as F
    from model import ce_chunk_rows, installed_kernels, linear_cross_entropy
    n, d, v = x.numel(), model.cfg.n_embd, model.cfg.vocab_size
    torch.manual_seed(0)
    h = torch.randn(n, d, device=x.device, requires_grad=True)
    w = (0.02 * torch.randn(v, d, device=x.device)).requires_grad_()
    t = torch.randint(0, v, (n,), device=x.device)
    t[::50] = -1  # a few ignored targets, as padding would give
    paths = ["off", "chunked"] + (installed_kernels() if device_type == "cuda" else [])
    label = {"off": "plain"}

    def head_loss(path):
        def run():
            with ctx:
                loss = (F.cross_entropy(F.linear(h, w).float(), t, ignore_index=-1) if path == "off"
                        else linear_cross_entropy(h, w, t, path, ignore_index=-1))
            loss.backward()
            h.grad = w.grad = None
        return run
    chunk = ce_chunk_rows(n, d, v)
    print(f"LM head + loss, fwd+bwd: {n:,} rows x {d} -> vocab {v:,}; chunked: {-(-n // chunk)} chunk(s) of {chunk:,} rows"
          f"{'' if device_type == 'cuda' else '; CUDA kernels: not on a CPU'}")
    runs = {p: head_loss(p) for p in paths}
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


if __name__ == "__main__":
    main(sys.argv[1:])
