"""Export to Hugging Face transformers: the exported model's logits equal ours."""
import os
import subprocess
import sys

import pytest
import torch

import model as M

transformers = pytest.importorskip("transformers")
from eval import export_hf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def perturbed(cfg):
    """Random weights, with norm gains away from 1 so that a wrong norm mapping shows."""
    torch.manual_seed(0)
    net = M.Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "norm" in name:
                p.mul_(1 + 0.3 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("cfg,tok", [
    (M.ModelConfig(arch="llama", n_layer=2, n_head=4, n_embd=64, ffn_hidden=96, vocab_size=256, block_size=48,
                   rope_theta=500000.0, norm_eps=1e-5), "byte"),
    (M.ModelConfig(arch="gpt", n_layer=2, n_head=2, n_embd=32, vocab_size=50304, block_size=40), "gpt2"),
], ids=["llama", "gpt"])
def test_export_logits_match(tmp_path, cfg, tok):
    net = perturbed(cfg)
    torch.save(dict(model=net.state_dict(), model_config=vars(cfg), tokenizer=tok, config=dict(tokenizer=tok)), tmp_path / "ckpt.pt")
    out = export_hf.export(str(tmp_path), str(tmp_path / "hf"))
    assert os.path.isfile(os.path.join(out, "config.json")) and os.path.isfile(os.path.join(out, "model.safetensors"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == ("LlamaForCausalLM" if cfg.arch == "llama" else "GPT2LMHeadModel")
    assert hf.config.vocab_size == cfg.vocab_size
    x = torch.randint(0, 256, (2, cfg.block_size), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = net(x)[0], hf(x).logits
    assert theirs.shape == ours.shape
    assert (ours - theirs).abs().max().item() < 1e-4


def test_export_cli_bad_checkpoint(tmp_path):
    p = subprocess.run([sys.executable, "eval/export_hf.py", "--ckpt", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode != 0 and "no checkpoint" in p.stderr and "Traceback" not in p.stderr


def test_export_checks_tokenizer_and_vocab(tmp_path):
    cfg = M.ModelConfig(arch="llama", n_layer=1, n_head=2, n_embd=32, vocab_size=256, block_size=16)
    net = M.Transformer(cfg)
    torch.save(dict(model=net.state_dict(), model_config=vars(cfg), config={}), tmp_path / "notok.pt")
    p = subprocess.run([sys.executable, "eval/export_hf.py", "--ckpt", str(tmp_path / "notok.pt"), "--out", str(tmp_path / "o")],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode != 0 and "records no tokenizer" in p.stderr and "Traceback" not in p.stderr
    torch.save(dict(model=net.state_dict(), model_config=vars(cfg), tokenizer="gpt2"), tmp_path / "gpt2.pt")
    with pytest.raises(ValueError, match="vocab_size=256 is smaller than the 'gpt2' tokenizer"):
        export_hf.export(str(tmp_path / "gpt2.pt"), str(tmp_path / "o"))
    assert not os.path.exists(tmp_path / "o")
