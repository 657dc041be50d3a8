"""Test defaults: offline, no wandb, project-local compile cache, repo root importable; shared fixtures."""
import os
import sys

import pytest
import torch

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(ROOT, ".cache", "inductor"))
sys.path.insert(0, ROOT)
import model as M  # noqa: E402  (after the path is set)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is as fast and does not stall when the CPU is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def nano():
    """A llama_nano (block_size 64, byte vocabulary) in eval mode, seed 0."""
    torch.manual_seed(0)
    return M.Transformer(M.config_from_preset("llama_nano")).eval()
