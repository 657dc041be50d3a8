"""
Python source as a second embedded corpus: the top-level *.py modules of this interpreter's standard
library (every machine has them), sorted by path, whole files joined by a blank line until the text
passes 3,000,000 characters (~3 MB), as byte-level tokens (vocab 256) split 90/10 into train.bin /
val.bin. The transfer regime (c) of eval/strategies.py fine-tunes on it (docs/strategies.md).

    python data/pystdlib/prepare.py          # or --max_chars N, --tokenizer gpt2

The corpus depends only on the interpreter: meta.json records its version and the number of files.
"""
import argparse
import glob
import json
import os
import platform
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from data.shakespeare.prepare import write_split  # noqa: E402

MAX_CHARS = 3_000_000


def stdlib_files():
    return sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))


def stdlib_text(max_chars=MAX_CHARS):
    """(text, number of files): whole modules in path order, stopping after the one that passes max_chars."""
    parts, size = [], 0
    for f in stdlib_files():
        with open(f, encoding="utf-8", errors="replace") as fh:
            parts.append(fh.read())
        size += len(parts[-1])
        if size > max_chars:
            break
    return "\n\n".join(parts), len(parts)


def prepare(out_dir=HERE, max_chars=MAX_CHARS, tokenizer="byte"):
    text, n_files = stdlib_text(max_chars)
    if not text:
        raise SystemExit(f"no *.py files in {sysconfig.get_paths()['stdlib']}: this interpreter ships no standard-library source")
    meta = write_split(text, out_dir, tokenizer)
    meta.update(source="python standard library, top-level *.py", python=platform.python_version(), files=n_files)
    tmp = os.path.join(out_dir, "meta.json.tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, "meta.json"))
    print(f"wrote {meta['train_tokens']:,} train and {meta['val_tokens']:,} val {tokenizer} tokens "
          f"({n_files} modules of Python {meta['python']}) to {out_dir}")
    return meta


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max_chars", type=int, default=MAX_CHARS, help="stop after the module that passes this many characters")
    p.add_argument("--tokenizer", default="byte", choices=["byte", "gpt2"])
    p.add_argument("--out_dir", default=HERE)
    a = p.parse_args()
    prepare(a.out_dir, a.max_chars, a.tokenizer)
