"""
Batches from memmapped token shards. A prepared dataset directory holds meta.json and, per split,
either `{split}.bin` or shards `{split}_*.bin` (uint16), in data/<name>/ or data/<name>/shards/.

A batch is a pure function of (seed, split, iteration, global micro-step): no cursor to save, so a
resumed run sees exactly the batches it would have seen, and N ranks with accumulation A/N see the
same global batch as one process with accumulation A (rank r takes micro-steps r·A/N … (r+1)·A/N − 1).
"""
import glob
import json
import os

import numpy as np
import torch

DATA_ROOT = os.path.dirname(os.path.abspath(__file__))
PREPARE = {"shakespeare": "python data/shakespeare/prepare.py",
           "pystdlib": "python data/pystdlib/prepare.py",
           "fineweb": "python data/fineweb/prepare.py",
           "fineweb_edu": "python data/fineweb/prepare.py --edu"}


def dataset_dir(name):
    """A dataset name under data/ (data/<name>/) or a path to a prepared directory."""
    return name if os.sep in name else os.path.join(DATA_ROOT, name)


def is_prepared(name):
    return os.path.exists(os.path.join(dataset_dir(name), "meta.json"))


def shard_files(directory, split):
    files = sorted(glob.glob(os.path.join(directory, f"{split}.bin")) + glob.glob(os.path.join(directory, f"{split}_*.bin"))
                   + glob.glob(os.path.join(directory, "shards", f"{split}_*.bin")))
    return files


class TokenData:
    def __init__(self, name):
        self.dir = dataset_dir(name)
        meta_file = os.path.join(self.dir, "meta.json")
        if not os.path.exists(meta_file):
            hint = PREPARE.get(os.path.basename(os.path.normpath(self.dir)), "the prepare.py of that dataset")
            raise FileNotFoundError(f"dataset {name!r} is not prepared ({meta_file} is missing): run `{hint}`")
        with open(meta_file) as f:
            self.meta = json.load(f)
        self.vocab_size = self.meta["vocab_size"]
        self.tokenizer = self.meta["tokenizer"]
        self.splits = {}
        for split in ("train", "val"):
            files = shard_files(self.dir, split)
            if not files:
                raise FileNotFoundError(f"dataset {name!r} has no {split} tokens in {self.dir}; rerun its prepare.py")
            self.splits[split] = [np.memmap(f, dtype=np.uint16, mode="r") for f in files]

    def tokens(self, split):
        """The split as one array (a view for a single shard; shards are joined otherwise)."""
        shards = self.splits[split]
        return shards[0] if len(shards) == 1 else np.concatenate(shards)

    def batch(self, split, seed, it, micro, batch_size, block_size):
        """(x, y) int64 CPU tensors of shape (batch_size, block_size) for global micro-step `micro`
        of iteration `it`; windows never cross a shard boundary."""
        shards = self.splits[split]
        starts_per_shard = np.array([max(len(s) - block_size - 1, 0) for s in shards])
        if starts_per_shard.sum() == 0:
            raise ValueError(f"the {split} split of {self.dir} is shorter than block_size + 1 = {block_size + 1} tokens")
        rng = np.random.default_rng([seed, 0 if split == "train" else 1, it, micro])
        flat = rng.integers(0, starts_per_shard.sum(), size=batch_size)
        bounds = np.cumsum(starts_per_shard)
        which = np.searchsorted(bounds, flat, side="right")
        offsets = flat - (bounds[which] - starts_per_shard[which])
        rows = np.stack([shards[w][o:o + block_size + 1] for w, o in zip(which, offsets)]).astype(np.int64)
        rows = torch.from_numpy(rows)
        return rows[:, :-1], rows[:, 1:]
