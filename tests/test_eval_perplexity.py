"""Perplexity CLI, bits per byte and the GaLore/LLR-compatible loss."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import model as M
from data.tokenizer import get_tokenizer
from eval import perplexity as P

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def run(tmp_path, nano):
    """A checkpoint whose config points at a prepared dataset directory in tmp_path."""
    data = tmp_path / "ds"
    data.mkdir()
    tokens = np.random.default_rng(0).integers(1, 256, 3000).astype(np.uint16)
    tokens[[100, 900, 2000]] = 0  # EOT between documents
    tokens.tofile(data / "val.bin")
    torch.save(dict(model=nano.state_dict(), model_config=vars(nano.cfg), tokenizer="byte", iter_num=0,
                    config=dict(dataset=str(data), tokenizer="byte", eval_tokens=1000)), tmp_path / "ckpt.pt")
    return tmp_path, tokens


def test_cli_canonical_matches_evaluate_loss(run, nano):
    d, tokens = run
    out = P.main(["--ckpt", str(d), "--json", str(d / "r.json")])  # data and budget from the run's config
    loss, n = P.evaluate_loss(nano, tokens, 64, 1000)
    assert out["n_targets"] == n == 1000 and out["loss"] == pytest.approx(loss) and out["ppl"] == pytest.approx(math.exp(loss))
    # bits per byte: byte tokens are one byte each, EOT none; EOTs at 100 and 900 are among targets 1..1000
    assert out["bits_per_byte"] == pytest.approx(loss * 1000 / (math.log(2) * 998))
    assert json.loads((d / "r.json").read_text())["style"] == "canonical"


def test_bits_per_byte_gpt2_counts_utf8_bytes():
    tok = get_tokenizer("gpt2")
    text = "naïve café — ok"
    tokens = [tok.eot] + tok.encode(text) + [tok.eot]
    bpb = P.bits_per_byte(2.0, len(tokens) - 1, tokens, tok)
    assert bpb == pytest.approx(2.0 * (len(tokens) - 1) / (math.log(2) * len(text.encode("utf-8"))))


def test_documents_split_on_eot():
    docs = P.documents(np.array([5, 1, 2, 5, 5, 3, 4, 5, 6]), eot=5)
    assert [d.tolist() for d in docs] == [[1, 2, 5], [3, 4, 5], [6, 5]]


def test_galore_compat_reference(nano):
    # id 0 occurs inside documents: padding must be masked by position, never by id
    eot = 7
    docs = [[0, 3, 9, 0, 4], [8, 8], [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12], [0, 0, 0], [42]]
    stream = np.array([t for d in docs for t in d + [eot]])
    max_length, bs = 6, 2
    loss, n_batches, seen = P.evaluate_loss_galore(nano, stream, eot, max_length, batch_size=bs)
    rows = [(d + [eot])[:max_length] for d in docs]
    batch_means = []
    with torch.no_grad():
        for i in range(0, len(rows), bs):
            ce, cnt = 0.0, 0
            for r in rows[i:i + bs]:  # pads after a row cannot change it (causal), so score rows alone
                logits, _ = nano(torch.tensor([r]))
                ce += F.cross_entropy(logits[0, :-1].double(), torch.tensor(r[1:]), reduction="sum").item()
                cnt += len(r) - 1
            batch_means.append(ce / cnt)
    assert n_batches == 3 and seen == sum(len(r) for r in rows)
    assert loss == pytest.approx(sum(batch_means) / (3 + 1), abs=1e-5)  # the papers' (batches + 1) divisor
    # the budget is checked before each batch: after the first batch (9 tokens > 5) it stops
    loss1, n1, seen1 = P.evaluate_loss_galore(nano, stream, eot, max_length, batch_size=bs, token_budget=5)
    assert n1 == 1 and seen1 == 9 and loss1 == pytest.approx(batch_means[0] / 2, abs=1e-5)


def test_cli_galore_compat(run):
    d, _ = run
    out = P.main(["--ckpt", str(d / "ckpt.pt"), "--data", str(d / "ds" / "val.bin"), "--galore_compat", "--max_length", "32"])
    assert out["style"] == "galore" and out["n_batches"] == 1 and out["tokens_seen"] == 32 * 4


def test_cli_bad_input(run):
    d, _ = run
    with pytest.raises(ValueError, match="--block_size must be in 1..64"):
        P.main(["--ckpt", str(d), "--block_size", "999"])
    p = subprocess.run([sys.executable, "eval/perplexity.py", "--ckpt", str(d), "--data", "/nonexistent/val.bin"],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode != 0 and "no validation tokens" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("flag,value", [("--eval_tokens", "0"), ("--eval_tokens", "-5"), ("--batch_size", "0"),
                                        ("--batch_size", "-1"), ("--batch_size", "abc"), ("--block_size", "0"),
                                        ("--max_length", "0"), ("--max_length", "2.5")])
def test_cli_counts_must_be_positive(run, flag, value):
    """0 is never read as "the default" (it was: --eval_tokens 0 used the run's budget; --batch_size 0 crashed in range())."""
    d, _ = run
    with pytest.raises(ValueError, match=rf"^{flag}={value}: expected a positive integer, e.g. {flag}=\d+$"):
        P.main(["--ckpt", str(d), flag, value, "--galore_compat"] if flag == "--max_length" else ["--ckpt", str(d), flag, value])
    if (flag, value) == ("--batch_size", "0"):
        p = subprocess.run([sys.executable, "eval/perplexity.py", "--ckpt", str(d), flag, value],
                           cwd=ROOT, capture_output=True, text=True)
        assert p.returncode != 0 and "Traceback" not in p.stderr and p.stdout == ""
        assert p.stderr.splitlines() == ["error: --batch_size=0: expected a positive integer, e.g. --batch_size=8"]


def test_vocab_mismatch(run, nano):
    d, _ = run
    torch.save(dict(model=nano.state_dict(), model_config=vars(nano.cfg), tokenizer="gpt2", config={}), d / "bad.pt")
    with pytest.raises(ValueError, match="smaller than the 'gpt2' tokenizer"):
        P.main(["--ckpt", str(d / "bad.pt"), "--data", str(d / "ds" / "val.bin")])


def test_checkpoint_without_tokenizer(run, nano):
    d, _ = run
    torch.save(dict(model=nano.state_dict(), model_config=vars(nano.cfg), config=dict(dataset=str(d / "ds"))), d / "notok.pt")
    with pytest.raises(ValueError, match="records no tokenizer"):
        P.main(["--ckpt", str(d / "notok.pt")])
