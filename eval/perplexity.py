"""
Validation loss and perplexity over a fixed token budget (the number nanoLR reports), and the GaLore/LLR
papers' convention beside it so that our numbers can be set next to their tables.

canonical (default; what train.py logs)        | --galore_compat (GaLore evaluate_model, LLR eval)
-----------------------------------------------+------------------------------------------------------
one stream, documents joined by EOT            | each document alone + EOT, truncated to max_length
                                               | (text past it dropped), right-padded, pad masked
windows of block_size + 1, stride block_size:  | one row per document, no packing
every token after the first is a target once   |
first eval_tokens targets                      | stop before a batch once tokens_seen > eval_tokens
                                               | (tokens_seen += non-pad tokens x world_size; 10M)
window j -> rank j mod world_size              | document i -> rank i mod world_size
loss = sum CE / number of targets              | loss = sum of per-batch mean CE / (n_batches + 1):
(token-weighted)                               | batches weighted equally, and the papers' counter
                                               | starts at 1, which lowers the loss (~0.015 nats at
                                               | ~150 batches)
ppl = exp(loss); bits/byte = sum CE / (ln 2 x UTF-8 bytes of the targets, EOT counted as 0 bytes)

Numbers compare only at equal tokenizer and data (the papers use the T5 tokenizer on C4 / FineWeb).

python eval/perplexity.py --ckpt out/run                       # data/<dataset>/val.bin of the run
python eval/perplexity.py --ckpt out/run --galore_compat --max_length 256 --eval_tokens 10000000
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


def documents(tokens, eot):
    """The documents of an EOT-joined stream, each ending in EOT (the analogue of T5's </s>)."""
    tokens = np.asarray(tokens)
    ends = np.flatnonzero(tokens == eot).tolist()
    docs, start = [], 0
    for end in ends + [len(tokens)]:
        if end > start:  # skip empty documents (consecutive EOTs, a leading EOT)
            docs.append(np.append(tokens[start:end], eot) if end == len(tokens) else tokens[start:end + 1])
        start = end + 1
    return docs


@torch.no_grad()
def evaluate_loss_galore(model, tokens, eot, max_length, batch_size=8, device="cpu", ctx=nullcontext(),
                         token_budget=10_000_000, rank=0, world_size=1):
    """The GaLore/LLR papers' validation loss (see the module docstring). Returns (loss, n_batches,
    tokens_seen) where n_batches counts the batches evaluated (the divisor is n_batches + 1); the loss
    is the same on every rank."""
    was_training = model.training
    model.eval()
    docs = documents(tokens, eot)[rank::world_size]
    loss_sum, n_batches, tokens_seen = 0.0, 1, 0  # the papers' batch counter starts at 1
    for i in range(0, len(docs), batch_size):
        if tokens_seen > token_budget:
            break
        rows = [d[:max_length] for d in docs[i:i + batch_size]]
        ids = torch.zeros(len(rows), max_length, dtype=torch.long)
        real = torch.zeros(len(rows), max_length, dtype=torch.bool)  # padding is masked by position, not by id
        for b, r in enumerate(rows):
            ids[b, :len(r)] = torch.from_numpy(np.asarray(r, dtype=np.int64))
            real[b, :len(r)] = True
        ids, real = ids.to(device), real.to(device)
        with ctx:
            logits, _ = model(ids)
        ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="none")
        mask = real[:, 1:].reshape(-1)
        loss_sum += (ce[mask].sum() / mask.sum()).item()  # mean over this batch's targets
        n_batches += 1
        tokens_seen += int(real.sum()) * world_size
    loss = torch.tensor(loss_sum / n_batches, dtype=torch.float64, device=device)
    if world_size > 1:
        torch.distributed.all_reduce(loss)
        loss /= world_size
    if was_training:
        model.train()
    return loss.item(), n_batches - 1, tokens_seen


def token_bytes(tokenizer):
    """UTF-8 bytes of each token id (EOT counts 0: it separates documents and is not text)."""
    if hasattr(tokenizer, "enc"):  # tiktoken
        lengths = np.zeros(tokenizer.n_vocab, dtype=np.int64)
        for i in range(tokenizer.n_vocab):
            if i != tokenizer.eot:
                lengths[i] = len(tokenizer.enc.decode_single_token_bytes(i))
        return lengths
    lengths = np.ones(tokenizer.n_vocab, dtype=np.int64)  # bytes
    lengths[tokenizer.eot] = 0
    return lengths


def bits_per_byte(loss, n_targets, tokens, tokenizer):
    """Canonical split: the targets are tokens[1 : n_targets + 1]."""
    n_bytes = int(token_bytes(tokenizer)[np.asarray(tokens[1:n_targets + 1], dtype=np.int64)].sum())
    return loss * n_targets / (math.log(2) * n_bytes)


def val_tokens_path(ckpt):
    """data/<dataset>/val.bin of the checkpoint's training run."""
    dataset = ckpt.get("config", {}).get("dataset")
    if not dataset:
        raise ValueError("the checkpoint records no dataset: pass --data PATH_TO_val.bin")
    from data.loader import dataset_dir
    return os.path.join(dataset_dir(dataset), "val.bin")


def main(argv=None):
    import argparse
    import json
    import model as M
    from data.tokenizer import check_vocab, get_tokenizer, tokenizer_of
    p = argparse.ArgumentParser(description="Validation perplexity and bits per byte of a nanoLR checkpoint.")
    p.add_argument("--ckpt", required=True, help="run directory or ckpt.pt written by train.py")
    p.add_argument("--data", default=None, help="val.bin (uint16); default: data/<dataset>/val.bin of the run")
    p.add_argument("--eval_tokens", default=None,
                   help="token budget (default: the run's eval_tokens; 10,000,000 with --galore_compat)")
    p.add_argument("--batch_size", default="8")
    p.add_argument("--block_size", default=None, help="window length (default: the model's block_size)")
    p.add_argument("--galore_compat", action="store_true", help="the GaLore/LLR papers' convention (see the docstring)")
    p.add_argument("--max_length", default=None, help="--galore_compat truncation (LLR 1024, GaLore 256; default block_size)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None, help="write the result here")
    args = p.parse_args(argv)
    # the counts are checked here, before any loading: an explicit 0 is refused, never read as "the default"
    for key, example in (("eval_tokens", 1000000), ("batch_size", 8), ("block_size", 256), ("max_length", 256)):
        text = getattr(args, key)
        if text is not None:
            try:
                n = int(text)
            except ValueError:
                n = 0
            if n <= 0:
                raise ValueError(f"--{key}={text}: expected a positive integer, e.g. --{key}={example}")
            setattr(args, key, n)
    net, ckpt = M.model_from_checkpoint(args.ckpt, args.device)
    tok = get_tokenizer(tokenizer_of(ckpt))
    check_vocab(net.cfg.vocab_size, tok)
    path = args.data or val_tokens_path(ckpt)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no validation tokens at {path!r}: prepare the dataset or pass --data PATH_TO_val.bin")
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    if len(tokens) < 2:
        raise ValueError(f"{path!r} holds {len(tokens)} tokens: nothing to evaluate")
    if int(tokens.max()) >= net.cfg.vocab_size:
        raise ValueError(f"{path!r} holds token id {int(tokens.max())} >= the model's vocab_size={net.cfg.vocab_size}: "
                         f"data and checkpoint use different tokenizers")
    block_size = args.block_size or net.cfg.block_size
    if not 0 < block_size <= net.cfg.block_size:
        raise ValueError(f"--block_size must be in 1..{net.cfg.block_size} (the model's), got {block_size}")
    out = {"ckpt": os.path.abspath(args.ckpt), "data": os.path.abspath(path), "tokenizer": tok.name}
    if args.galore_compat:
        max_length = args.max_length or block_size
        if not 1 < max_length <= net.cfg.block_size:
            raise ValueError(f"--max_length must be in 2..{net.cfg.block_size} (the model's block_size), got {max_length}")
        budget = args.eval_tokens or 10_000_000
        loss, n_batches, seen = evaluate_loss_galore(net, tokens, tok.eot, max_length, args.batch_size, args.device,
                                                     token_budget=budget)
        out.update(style="galore", loss=loss, ppl=perplexity(loss), max_length=max_length, n_batches=n_batches,
                   tokens_seen=seen)
        print(f"galore-compat: loss {loss:.4f} | ppl {perplexity(loss):.2f} | {n_batches} batches (divisor {n_batches + 1}) | "
              f"{seen:,} tokens | max_length {max_length}")
    else:
        eval_tokens = args.eval_tokens or ckpt.get("config", {}).get("eval_tokens") or len(tokens) - 1
        if eval_tokens <= 0:
            raise ValueError(f"--eval_tokens must be positive, got {eval_tokens}")
        loss, n = evaluate_loss(net, tokens, block_size, eval_tokens, args.batch_size, args.device)
        bpb = bits_per_byte(loss, n, tokens, tok)
        out.update(style="canonical", loss=loss, ppl=perplexity(loss), bits_per_byte=bpb, n_targets=n, block_size=block_size)
        print(f"val loss {loss:.4f} | ppl {perplexity(loss):.2f} | bits/byte {bpb:.4f} | {n:,} targets | block_size {block_size}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
