"""
FineWeb / FineWeb-Edu as GPT-2 BPE tokens in uint16 shards, streamed through `datasets`.

    python data/fineweb/prepare.py --max_tokens=1e9                 # FineWeb sample-10BT -> data/fineweb/
    python data/fineweb/prepare.py --edu --max_tokens=1e10          # FineWeb-Edu -> data/fineweb_edu/
    python data/fineweb/prepare.py --input my_docs.jsonl            # any local json/jsonl/parquet/txt with a 'text' field

Every document is prefixed with <|endoftext|> and tokenized in worker processes. The first shard is
validation (`--val_tokens`), the rest train. Shards end on document boundaries and are written
atomically; progress.json records the documents consumed, so an interrupted run resumes where the
last complete shard ended. Run it again with a larger --max_tokens to extend a dataset.
"""
import argparse
import json
import multiprocessing as mp
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from data.tokenizer import get_tokenizer  # noqa: E402


def tokenize(text):
    tok = get_tokenizer("gpt2")  # cached per worker process
    return np.array([tok.eot] + tok.encode(text), dtype=np.uint16)


def documents(args, skip):
    from datasets import load_dataset
    if args.input:
        ext = os.path.splitext(args.input)[1].lstrip(".")
        kind = {"jsonl": "json", "json": "json", "parquet": "parquet", "txt": "text"}.get(ext)
        if kind is None:
            raise SystemExit(f"--input {args.input}: expected a .jsonl, .json, .parquet or .txt file")
        ds = load_dataset(kind, data_files=args.input, split="train", streaming=True)
    else:
        repo = "HuggingFaceFW/fineweb-edu" if args.edu else "HuggingFaceFW/fineweb"
        try:
            ds = load_dataset(repo, name=args.name, split="train", streaming=True)
        except Exception as e:
            raise SystemExit(f"cannot stream {repo} ({args.name}): {type(e).__name__}: {e}\n"
                             "This needs the Hugging Face hub; offline, pass --input with local files.") from None
    for i, row in enumerate(ds):
        if i >= skip:
            yield row["text"]


def write_atomic(path, write):
    tmp = path + ".tmp"
    write(tmp)
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edu", action="store_true", help="FineWeb-Edu instead of FineWeb")
    p.add_argument("--name", default="sample-10BT", help="dataset config on the hub")
    p.add_argument("--input", help="local file(s) instead of the hub")
    p.add_argument("--out_dir", default=None)
    p.add_argument("--max_tokens", type=float, default=1e9)
    p.add_argument("--val_tokens", type=float, default=1e7)
    p.add_argument("--shard_tokens", type=float, default=1e8)
    p.add_argument("--num_proc", type=int, default=max(1, os.cpu_count() - 1))
    args = p.parse_args()
    out_dir = args.out_dir or os.path.join(os.path.dirname(HERE), "fineweb_edu" if args.edu else "fineweb")
    os.makedirs(out_dir, exist_ok=True)
    progress_file = os.path.join(out_dir, "progress.json")
    progress = json.load(open(progress_file)) if os.path.exists(progress_file) else dict(shards=0, docs=0, tokens=0)
    if progress["tokens"] >= args.max_tokens:
        print(f"{out_dir} already holds {progress['tokens']:,} tokens (>= --max_tokens); nothing to do")
        return

    from tqdm import tqdm
    bar = tqdm(total=int(args.max_tokens), initial=progress["tokens"], unit="tok", unit_scale=True, desc="tokenizing")
    buffer, filled, docs_in_buffer = None, 0, 0

    def flush():
        nonlocal filled, docs_in_buffer
        split = "val" if progress["shards"] == 0 else "train"
        path = os.path.join(out_dir, f"{split}_{progress['shards']:06d}.bin")
        write_atomic(path, lambda tmp: buffer[:filled].tofile(tmp))
        progress.update(shards=progress["shards"] + 1, docs=progress["docs"] + docs_in_buffer, tokens=progress["tokens"] + filled)
        write_atomic(progress_file, lambda tmp: json.dump(progress, open(tmp, "w")))
        if progress["shards"] >= 2:  # both splits exist: the dataset is usable
            meta = dict(tokenizer="gpt2", vocab_size=50257, dtype="uint16", eot=50256, tokens=progress["tokens"])
            write_atomic(os.path.join(out_dir, "meta.json"), lambda tmp: json.dump(meta, open(tmp, "w")))
        filled, docs_in_buffer = 0, 0

    with mp.Pool(args.num_proc) as pool:
        for ids in pool.imap(tokenize, documents(args, progress["docs"]), chunksize=16):
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
        if filled:
            flush()
    bar.close()
    if progress["shards"] < 2:
        print("warning: only the validation shard was written; raise --max_tokens above --val_tokens for training data")
    print(f"{out_dir}: {progress['shards']} shards, {progress['tokens']:,} tokens from {progress['docs']:,} documents")


if __name__ == "__main__":
    main()
