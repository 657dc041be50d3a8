# Schedule: warmup-stable-decay (WSD) for any strategy that follows `schedule` (uniform, muon, llr, ...):
# linear warmup, constant LR, then the last decay_frac of the run decays (1-sqrt shape) to min_lr_ratio.
# A stable run can be branched into cooldowns at several budgets: --init_from=<run> --branch_at=N
# --decay_iters=D (docs/strategies.md). Put it after a size or method file: train.py configs/llama_135m.py configs/wsd.py
schedule = "wsd"
decay_frac = 0.2
decay_shape = "1-sqrt"
out_dir = out_dir + "_wsd"
