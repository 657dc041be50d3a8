# AdamW exactly as the LLR reference code builds it: torch's default betas and eps, weight decay 0.1 on
# every parameter (norms too), no clipping, warmup 10% then cosine to 10%. Included by the LLaMA size files.
beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
weight_decay = 0.1
decay_norms = True
grad_clip = 0.0                # the reference never clips
warmup_frac = 0.1
min_lr_ratio = 0.1
fused = True                   # torch's fused AdamW kernel (a no-op for the result)
