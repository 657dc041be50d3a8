"""data/: the Python-stdlib corpus of data/pystdlib/prepare.py, and the checkpoint tokenizer helpers."""
import glob
import json
import os
import sysconfig

import numpy as np
import pytest

from data.loader import PREPARE, TokenData
from data.pystdlib.prepare import MAX_CHARS, prepare, stdlib_text
from data.tokenizer import check_vocab, get_tokenizer, tokenizer_of


def read(d):
    return {f: open(os.path.join(d, f), "rb").read() for f in ("train.bin", "val.bin", "meta.json")}


def test_pystdlib_prepare_is_deterministic_byte_level_90_10(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    meta = prepare(str(a))
    prepare(str(b))
    assert read(a) == read(b)  # same interpreter, same bytes
    assert json.loads((a / "meta.json").read_text()) == meta
    assert meta["tokenizer"] == "byte" and meta["vocab_size"] == 256 and meta["dtype"] == "uint16" and meta["eot"] == 0
    n = meta["utf8_bytes"]
    assert meta["train_tokens"] == int(0.9 * n) and meta["val_tokens"] == n - int(0.9 * n)
    assert MAX_CHARS < meta["chars"] < MAX_CHARS + 1_000_000  # ~3 MB: whole modules past the 3M-character mark
    data = TokenData(str(a))
    train, val = np.asarray(data.tokens("train")), np.asarray(data.tokens("val"))
    assert (len(train), len(val)) == (meta["train_tokens"], meta["val_tokens"]) and data.tokenizer == "byte"
    # the stream is the stdlib's top-level modules in path order, joined by a blank line
    first = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))[0]
    head = open(first, encoding="utf-8", errors="replace").read().encode("utf-8")
    assert bytes(train[:len(head)].astype(np.uint8)) == head
    assert bytes(train[len(head):len(head) + 2].astype(np.uint8)) == b"\n\n"
    text, n_files = stdlib_text()
    assert meta["files"] == n_files and np.array_equal(np.concatenate([train, val]), np.frombuffer(text.encode(), np.uint8))


def test_pystdlib_max_chars_and_hint(tmp_path):
    text, n_files = stdlib_text(max_chars=1)  # the first module alone passes one character
    first = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))[0]
    assert n_files == 1 and text == open(first, encoding="utf-8", errors="replace").read()
    with pytest.raises(FileNotFoundError, match="python data/pystdlib/prepare.py"):
        TokenData(str(tmp_path / "pystdlib"))
    assert PREPARE["pystdlib"] == "python data/pystdlib/prepare.py"


def test_tokenizer_of_checkpoint():
    assert tokenizer_of({"tokenizer": "gpt2", "config": {"tokenizer": "byte"}}) == "gpt2"  # the top-level entry wins
    assert tokenizer_of({"config": {"tokenizer": "byte"}}) == "byte"
    for ckpt in ({}, {"config": {}}, {"tokenizer": None, "config": None}):
        with pytest.raises(ValueError, match="records no tokenizer"):
            tokenizer_of(ckpt)
    with pytest.raises(ValueError, match="unknown tokenizer 't5'"):
        tokenizer_of({"tokenizer": "t5"})


def test_check_vocab():
    check_vocab(256, "byte")
    check_vocab(50304, "gpt2")  # padded vocabularies are fine; a name needs no BPE ranks
    check_vocab(300, get_tokenizer("byte"))
    with pytest.raises(ValueError, match="vocab_size=256 is smaller than the 'gpt2' tokenizer's 50257 ids"):
        check_vocab(256, "gpt2")

    class Mine(Exception):
        pass
    with pytest.raises(Mine, match="vocab_size=255"):
        check_vocab(255, "byte", error=Mine)
