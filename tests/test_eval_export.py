"""Export to Hugging Face transformers: the exported model's logits equal ours."""
import os
import re
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


def snapshot(d):
    return {p: open(os.path.join(r, p), "rb").read() for r, _, fs in os.walk(d) for p in fs}


@pytest.mark.parametrize("case,message", [
    ("file", r"--out '.*afile' is a file: pass a directory"),
    ("own_dir", r"--out '.*run' is the checkpoint's own directory: pass a new one, e.g. --out .*run/hf"),
    ("other_run", r"--out '.*other' holds a run \(config.json \(not a Hugging Face config\)\): pass a new directory"),
    ("qk_norm", r"the checkpoint has 2 weight\(s\) that the LlamaForCausalLM export cannot map: blocks.0.attn.q_norm.weight, "
                r"blocks.1.attn.q_norm.weight; export_hf.py's llama_state must map them"),
])
def test_export_cli_refuses_and_touches_nothing(tmp_path, case, message):
    """--out a file (it printed 'wrote' and wrote nothing), a run's directory (its config.json was replaced), or a
    checkpoint with weights no HF weight takes (they were dropped): one line, exit 2, every file as it was."""
    cfg = M.ModelConfig(arch="llama", n_layer=2, n_head=2, n_embd=32, vocab_size=256, block_size=16)
    sd = M.Transformer(cfg).state_dict()
    if case == "qk_norm":  # a fork's QK-norm gains
        sd.update({f"blocks.{i}.attn.q_norm.weight": torch.ones(16) for i in range(2)})
    run, other = tmp_path / "run", tmp_path / "other"
    run.mkdir(), other.mkdir()
    torch.save(dict(model=sd, model_config=vars(cfg), tokenizer="byte", config=dict(tokenizer="byte")), run / "ckpt.pt")
    (run / "config.json").write_text('{"model": "llama_nano", "learning_rate": 0.001}')
    (run / "metrics.jsonl").write_text('{"iter": 0}\n')
    (other / "config.json").write_text('{"model": "llama_nano"}')  # train.py's config.json alone marks a run
    (tmp_path / "afile").write_text("keep me")
    out = {"file": tmp_path / "afile", "own_dir": run, "other_run": other, "qk_norm": tmp_path / "hf"}[case]
    before = snapshot(tmp_path)
    p = subprocess.run([sys.executable, "eval/export_hf.py", "--ckpt", str(run), "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "wrote" not in p.stdout
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and re.fullmatch("error: " + message + ".*", lines[0]), p.stderr
    assert snapshot(tmp_path) == before


def test_export_overwrites_an_earlier_export(tmp_path):
    cfg = M.ModelConfig(arch="gpt", n_layer=1, n_head=2, n_embd=32, vocab_size=256, block_size=16)
    torch.save(dict(model=M.Transformer(cfg).state_dict(), model_config=vars(cfg), tokenizer="byte"), tmp_path / "ckpt.pt")
    export_hf.export(str(tmp_path), str(tmp_path / "hf"))
    export_hf.export(str(tmp_path), str(tmp_path / "hf"))  # the user's own output: replaced, not refused
    assert transformers.AutoConfig.from_pretrained(tmp_path / "hf").model_type == "gpt2"
    sd = M.Transformer(cfg).state_dict()
    sd["head.weight"] = sd["head.weight"] + 1  # a fork that unties GPT's head: GPT2LMHeadModel cannot hold it
    torch.save(dict(model=sd, model_config=vars(cfg), tokenizer="byte"), tmp_path / "untied.pt")
    with pytest.raises(ValueError, match="head.weight differs from embed.weight"):
        export_hf.export(str(tmp_path / "untied.pt"), str(tmp_path / "hf2"))
