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


# --- data/fineweb/prepare.py without the hub: one line, non-zero exit, within seconds, nothing written

import multiprocessing as mp  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from data.fineweb import prepare as fineweb  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINEWEB_DIR = os.path.join(ROOT, "data", "fineweb")


def run_prepare(args, env):
    t = time.time()
    r = subprocess.run([sys.executable, "data/fineweb/prepare.py", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    return r, time.time() - t


def assert_one_line_error(r, elapsed):
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert [line for line in lines if "error" in line.lower()] == [lines[-1]], r.stderr  # one line, the last
    assert lines[-1].startswith("error: ") and "--input FILE" in lines[-1], r.stderr
    assert elapsed < 20, f"took {elapsed:.1f} s"
    print(f"failed in {elapsed:.1f} s: {lines[-1]}")


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connecting is refused at once
    return port


def test_fineweb_prepare_offline_fails_fast():
    # the user's command, as train.py's "not prepared" error gives it
    if os.path.exists(os.path.join(FINEWEB_DIR, "progress.json")):
        pytest.skip("data/fineweb/ already holds a prepared dataset")
    def listing():
        return {d: sorted(set(os.listdir(d)) - {"__pycache__"}) for d in (FINEWEB_DIR, os.path.dirname(FINEWEB_DIR))}
    before = listing()
    r, elapsed = run_prepare([], dict(os.environ, HF_HUB_OFFLINE="1"))
    assert_one_line_error(r, elapsed)
    assert "cannot be reached (HF_HUB_OFFLINE is set)" in r.stderr
    assert listing() == before  # no shard, progress.json or meta.json, no data/fineweb_edu/


def test_fineweb_prepare_hub_down_fails_fast(tmp_path):
    r, elapsed = run_prepare(["--out_dir", str(tmp_path / "out")], hub_down_env(f"http://127.0.0.1:{closed_port()}"))
    assert_one_line_error(r, elapsed)  # without the probe: five retries (~25 s), then a hang
    assert "cannot be reached (ConnectError" in r.stderr and "Retry" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_fineweb_prepare_bad_row_midway(tmp_path):
    # a stream that fails after 2000 good documents: one line, and no partial shard
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(2000)) + '{"other": 1}\n')
    out = tmp_path / "out"
    r, elapsed = run_prepare(["--input", str(src), "--out_dir", str(out), "--num_proc", "2"], dict(os.environ))
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode != 0 and "Traceback" not in r.stderr and elapsed < 30, r.stderr
    assert lines[-1] == (f"error: reading {src} failed after 2,000 documents: "
                         "ValueError: row 2000 has no 'text' string (got NoneType)"), r.stderr
    assert os.listdir(out) == []  # the 1e7-token validation shard was never complete


def hub_down_env(endpoint):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = endpoint  # every request of huggingface_hub goes there: loopback only
    return env


def test_fineweb_prepare_hub_timeout_fails_fast(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)  # the kernel completes the handshake; nobody ever answers
        r, elapsed = run_prepare(["--out_dir", str(tmp_path / "out")], hub_down_env(f"http://127.0.0.1:{s.getsockname()[1]}"))
    assert_one_line_error(r, elapsed)
    assert "cannot be reached (no answer within 7 s)" in r.stderr or "Timeout" in r.stderr
    assert not (tmp_path / "out").exists()


def test_fineweb_hub_probe_dns_failure(monkeypatch):
    def no_dns(*a, **k):
        raise socket.gaierror(-2, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # first: no name can be resolved, nothing leaves the machine
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once, at import
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    repo = "HuggingFaceFW/fineweb"
    why = fineweb.hub_problem(repo, endpoint="http://hub.invalid", timeout=1)
    assert why == "ConnectError: [Errno -2] Name or service not known", why

    def stalled_dns(*a, **k):
        time.sleep(4)  # a resolver that never answers: httpx's timeout does not cover it
        raise socket.gaierror(-3, "Temporary failure in name resolution")
    monkeypatch.setattr(socket, "getaddrinfo", stalled_dns)
    t = time.time()
    assert fineweb.hub_problem(repo, endpoint="http://hub.invalid", timeout=0.5) == "no answer within 2.5 s"
    assert time.time() - t < 3.5


def drive_pool(docs, join_timeout=60):
    """Run fineweb.tokenized over `docs` in a thread: (what it raised, or None; whether it returned)."""
    get_tokenizer("gpt2")  # as in main(): forked workers inherit it
    outcome = []

    def target():
        try:
            for _ in fineweb.tokenized(docs, num_proc=2, batch=16):
                pass
            outcome.append(None)
        except BaseException as e:  # SystemExit included
            outcome.append(e)
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(join_timeout)
    return (outcome[0] if outcome else None), not t.is_alive()


def wait_workers_gone(before, timeout=10):
    deadline = time.time() + timeout
    while [p for p in mp.active_children() if p.pid not in before] and time.time() < deadline:
        time.sleep(0.1)
    return not [p for p in mp.active_children() if p.pid not in before]


def test_fineweb_stream_error_midway_stops_pool():
    def rows():
        for i in range(500):
            yield {"text": f"document {i} " * 10}
        raise ConnectionError("the hub went away")
    before = {p.pid for p in mp.active_children()}
    error, returned = drive_pool(fineweb.documents(rows(), "HuggingFaceFW/fineweb (sample-10BT)", skip=0))
    assert returned, "tokenized() hung on a failed stream"
    assert isinstance(error, SystemExit) and str(error).startswith(
        "error: reading HuggingFaceFW/fineweb (sample-10BT) failed after 500 documents: ConnectionError: the hub went away"), error
    assert "\n" not in str(error) and "--input" in str(error)
    assert wait_workers_gone(before)


def test_fineweb_dead_worker_stops_pool():
    before = {p.pid for p in mp.active_children()}

    def docs():
        for i in range(100_000):
            if i == 300:  # as the OOM killer would
                for p in mp.active_children():
                    if p.pid not in before:
                        os.kill(p.pid, signal.SIGKILL)
                        break
            yield f"document {i} " * 10
    from concurrent.futures.process import BrokenProcessPool
    error, returned = drive_pool(docs())
    assert returned, "tokenized() hung on a dead worker"
    assert isinstance(error, BrokenProcessPool), error
    assert wait_workers_gone(before)
