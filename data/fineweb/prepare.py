"""
FineWeb / FineWeb-Edu as GPT-2 BPE tokens in uint16 shards, streamed through `datasets`.

    python data/fineweb/prepare.py --max_tokens=1e9                 # FineWeb sample-10BT -> data/fineweb/
    python data/fineweb/prepare.py --edu --max_tokens=1e10          # FineWeb-Edu -> data/fineweb_edu/
    python data/fineweb/prepare.py --input my_docs.jsonl            # local data, no hub: see --input

Every document is prefixed with <|endoftext|> and tokenized in worker processes. The first shard is
validation (`--val_tokens`), the rest train. Shards end on document boundaries and are written
atomically; progress.json records the documents consumed, so an interrupted run resumes where the
last complete shard ended. Run it again with a larger --max_tokens to extend a dataset.

Without the hub (offline, DNS failure, refused or timed-out connection) it stops within seconds with
a one-line error and writes nothing; a stream that fails later keeps the shards already complete.
"""
import argparse
import collections
import itertools
import json
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from data.tokenizer import get_tokenizer  # noqa: E402

INPUT_KINDS = {"jsonl": "json", "json": "json", "parquet": "parquet", "txt": "text"}  # extension -> datasets builder
INPUT_FILES = "a local .jsonl/.json/.parquet file with a 'text' field, or a .txt file (one document per line)"
INPUT_HELP = f"--input FILE: {INPUT_FILES}"
PROBE_TIMEOUT = 5  # seconds for the one hub request made before anything starts


def tokenize(text):
    tok = get_tokenizer("gpt2")  # cached per worker process
    return np.array([tok.eot] + tok.encode(text), dtype=np.uint16)


def tokenize_batch(texts):
    return [tokenize(t) for t in texts]


def one_line(msg, limit=300):
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= limit else msg[:limit - 3] + "..."


def offline_flag():
    """The environment variable that keeps huggingface_hub or datasets offline, or None."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE"):
            return name


def hub_problem(repo, endpoint=None, timeout=PROBE_TIMEOUT):
    """None if the hub answers for dataset `repo`, else why not, in a few words. One HEAD request without
    retries: load_dataset retries a dead connection five times with backoff (~25 s) before it fails."""
    if offline_flag():
        return f"{offline_flag()} is set"
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    answer = []

    def probe():
        try:
            get_hf_file_metadata(hf_hub_url(repo, "README.md", repo_type="dataset", endpoint=endpoint), timeout=timeout)
            answer.append(None)
        except Exception as e:
            answer.append(f"{type(e).__name__}: {e}")
    # `timeout` bounds each connection and reply, not a stalled DNS lookup nor huggingface_hub's own first
    # request (a 3 s fetch of its agent registry): bound the whole probe here
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 2)
    if not answer:
        return f"no answer within {timeout + 2:g} s"
    return answer[0] and one_line(answer[0])


def open_dataset(args):
    """(iterable of rows with a 'text' field, a name for messages). Every failure here is a SystemExit
    with one line, raised before any worker starts or any file is written."""
    if args.input:
        kind = INPUT_KINDS.get(os.path.splitext(args.input)[1].lstrip("."))
        if kind is None:
            raise SystemExit(f"error: --input {args.input}: expected {INPUT_FILES}")
        from datasets import load_dataset
        try:
            return load_dataset(kind, data_files=args.input, split="train", streaming=True), args.input
        except Exception as e:
            raise SystemExit(one_line(f"error: cannot read --input {args.input} ({type(e).__name__}: {e}); expected {INPUT_FILES}")) from None
    repo = "HuggingFaceFW/fineweb-edu" if args.edu else "HuggingFaceFW/fineweb"
    why = hub_problem(repo)
    if why:
        raise SystemExit(f"error: the FineWeb hub dataset {repo} ({args.name}) cannot be reached ({why}); without the hub, prepare local files with {INPUT_HELP}")
    from datasets import load_dataset
    try:
        return load_dataset(repo, name=args.name, split="train", streaming=True), f"{repo} ({args.name})"
    except Exception as e:
        raise SystemExit(one_line(f"error: cannot stream {repo} ({args.name}): {type(e).__name__}: {e}; "
                                  f"without the hub, prepare local files with {INPUT_HELP}", limit=600)) from None


def documents(ds, source, skip):
    """The 'text' of each row after the first `skip`; an error in the stream becomes a one-line SystemExit."""
    n = 0  # rows read
    try:
        for row in ds:
            if n >= skip:
                text = row.get("text")
                if not isinstance(text, str):  # caught here, not as a traceback from a worker
                    raise ValueError(f"row {n} has no 'text' string (got {type(text).__name__})")
                yield text
            n += 1
    except Exception as e:
        hint = " (the hub stopped answering? rerun to resume, or use --input)" if source.startswith("HuggingFaceFW/") else ""
        raise SystemExit(one_line(f"error: reading {source} failed after {n:,} documents: {type(e).__name__}: {e}{hint}", 600)) from None


def tokenized(docs, num_proc, batch=64):
    """Token arrays of `docs`, in order, from a pool of worker processes.
    The caller's thread reads `docs`, so an error in the stream is raised right here. (Pool.imap read it
    in a background thread, where the SystemExit of a failed hub request killed that thread silently and
    left imap waiting forever.) A dead worker raises BrokenProcessPool (Pool would wait for its task
    forever). Either way the workers are killed before the error propagates."""
    pool = ProcessPoolExecutor(num_proc)
    pending, finished = collections.deque(), False
    docs = iter(docs)
    try:
        while texts := list(itertools.islice(docs, batch)):
            pending.append(pool.submit(tokenize_batch, texts))
            if len(pending) > 2 * num_proc:  # bounded read-ahead: the stream may be endless
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
        finished = True
    finally:
        if finished:
            pool.shutdown()
        else:  # an error, or the caller stopped early: queued work is useless, don't wait for it
            workers = list((getattr(pool, "_processes", None) or {}).values())  # no public way before Python 3.14
            pool.shutdown(wait=False, cancel_futures=True)
            for w in workers:
                w.terminate()


def write_atomic(path, write):
    tmp = path + ".tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):  # a failed write leaves nothing behind
            os.remove(tmp)


def write_json(obj):
    def write(path):
        with open(path, "w") as f:
            json.dump(obj, f)
    return write


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edu", action="store_true", help="FineWeb-Edu instead of FineWeb")
    p.add_argument("--name", default="sample-10BT", help="dataset config on the hub")
    p.add_argument("--input", metavar="FILE", help=f"instead of the hub: {INPUT_FILES}; a glob pattern such as 'docs/*.jsonl' works too")
    p.add_argument("--out_dir", default=None)
    p.add_argument("--max_tokens", type=float, default=1e9)
    p.add_argument("--val_tokens", type=float, default=1e7)
    p.add_argument("--shard_tokens", type=float, default=1e8)
    p.add_argument("--num_proc", type=int, default=max(1, os.cpu_count() - 1))
    args = p.parse_args()
    out_dir = args.out_dir or os.path.join(os.path.dirname(HERE), "fineweb_edu" if args.edu else "fineweb")
    progress_file = os.path.join(out_dir, "progress.json")
    progress = json.load(open(progress_file)) if os.path.exists(progress_file) else dict(shards=0, docs=0, tokens=0)
    if progress["tokens"] >= args.max_tokens:
        print(f"{out_dir} already holds {progress['tokens']:,} tokens (>= --max_tokens); nothing to do")
        return
    try:
        get_tokenizer("gpt2")  # fail here, not in every worker; forked workers inherit it
    except RuntimeError as e:
        raise SystemExit(one_line(f"error: {e}", 600)) from None
    ds, source = open_dataset(args)  # before anything is created: a failure leaves no trace
    os.makedirs(out_dir, exist_ok=True)

    from tqdm import tqdm
    bar = tqdm(total=int(args.max_tokens), initial=progress["tokens"], unit="tok", unit_scale=True, desc="tokenizing")
    buffer, filled, docs_in_buffer = None, 0, 0

    def flush():
        nonlocal filled, docs_in_buffer
        split = "val" if progress["shards"] == 0 else "train"
        path = os.path.join(out_dir, f"{split}_{progress['shards']:06d}.bin")
        write_atomic(path, lambda tmp: buffer[:filled].tofile(tmp))
        progress.update(shards=progress["shards"] + 1, docs=progress["docs"] + docs_in_buffer, tokens=progress["tokens"] + filled)
        write_atomic(progress_file, write_json(progress))
        if progress["shards"] >= 2:  # both splits exist: the dataset is usable
            meta = dict(tokenizer="gpt2", vocab_size=50257, dtype="uint16", eot=50256, tokens=progress["tokens"])
            write_atomic(os.path.join(out_dir, "meta.json"), write_json(meta))
        filled, docs_in_buffer = 0, 0

    try:
        # on any error the partly filled buffer is dropped: progress.json only counts complete shards
        for ids in tokenized(documents(ds, source, progress["docs"]), args.num_proc):
            if filled and filled + len(ids) > len(buffer):
                flush()
            size = int(args.val_tokens if progress["shards"] == 0 else args.shard_tokens)
            if buffer is None or len(buffer) != size:  # only ever when the buffer is empty
                buffer = np.empty(size, dtype=np.uint16)
            ids = ids[:size]  # a document longer than a whole shard is cut
            buffer[filled:filled + len(ids)] = ids
            filled, docs_in_buffer = filled + len(ids), docs_in_buffer + 1
            bar.update(len(ids))
            if progress["tokens"] + filled >= args.max_tokens:
                break
    except BrokenProcessPool as e:
        raise SystemExit(one_line(f"error: a tokenizer worker process died ({e}); complete shards are kept, rerun to resume")) from None
    finally:
        bar.close()  # ends the bar's line, so an error message gets a line of its own
    if filled:
        flush()
    if progress["shards"] < 2:
        print("warning: only the validation shard was written; raise --max_tokens above --val_tokens for training data")
    print(f"{out_dir}: {progress['shards']} shards, {progress['tokens']:,} tokens from {progress['docs']:,} documents")


if __name__ == "__main__":
    main()
