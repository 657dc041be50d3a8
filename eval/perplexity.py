"""
Validation loss and perplexity over a fixed token budget (the number nanoLR reports).

The first `eval_tokens` targets of the held-out split, cut into windows of block_size + 1 tokens with
stride block_size, so every token after the first is a target exactly once; window j goes to rank
j mod world_size; cross-entropy is summed in fp32 and divided by the number of targets
(token-weighted), after an all-reduce of both sums. The same for every run, eval point and world size.
"""
import math
import os
import sys
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def windows(n_tokens, block_size, eval_tokens):
    """(start, length) of each window of the canonical split; length counts inputs + 1 target shift."""
    n_targets = min(eval_tokens, n_tokens - 1)
    starts = range(0, n_targets, block_size)
    return [(s, min(block_size, n_targets - s) + 1) for s in starts]


@torch.no_grad()
def evaluate_loss(model, tokens, block_size, eval_tokens, batch_size=8, device="cpu", ctx=nullcontext(),
                  rank=0, world_size=1):
    """Token-weighted mean cross-entropy (nats/token) of `model` on the first eval_tokens targets of
    `tokens` (1-D array or memmap). Returns (loss, n_targets); identical on every rank."""
    was_training = model.training
    model.eval()
    mine = windows(len(tokens), block_size, eval_tokens)[rank::world_size]
    ce_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    # equal-length windows are batched; the (at most one) short final window runs alone
    for length in sorted({n for _, n in mine}, reverse=True):
        starts = [s for s, n in mine if n == length]
        for i in range(0, len(starts), batch_size):
            chunk = np.stack([np.asarray(tokens[s:s + length], dtype=np.int64) for s in starts[i:i + batch_size]])
            w = torch.from_numpy(chunk).to(device)
            with ctx:
                logits, _ = model(w[:, :-1])
            ce = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1), reduction="sum")
            ce_sum += ce.double()
            count += w[:, 1:].numel()
    if world_size > 1:
        stats = torch.stack([ce_sum, count])
        torch.distributed.all_reduce(stats)
        ce_sum, count = stats[0], stats[1]
    if was_training:
        model.train()
    return (ce_sum / count).item(), int(count.item())


def perplexity(loss):
    return math.exp(loss)
