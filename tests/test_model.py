"""model.py: preset sizes, shapes, initial loss, naming, FLOPs."""
import math
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from model import PRESETS, ModelConfig, Transformer, config_from_preset


def build_meta(name, **kw):
    with torch.device("meta"):
        return Transformer(config_from_preset(name, **kw))


# (total, non_embedding) from the formula L(4d² + 3d·ff + 2d) + d + 2Vd and nanoGPT's GPT-2 124M
EXPECTED = {
    "llama_60m": (112_334_592, 35_067_648),
    "llama_135m": (162_220_800, 84_953_856),
    "llama_350m": (405_455_872, 302_433_280),
    "llama_1b": (1_414_055_936, 1_208_010_752),
    "llama_3b": (2_779_548_160, 2_521_991_680),
    "llama_60m_galore": (76_816_896, 25_305_600),
    "gpt_nano": (124_373_760, 84_953_856),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_preset_parameter_counts(name):
    assert build_meta(name).num_params() == EXPECTED[name]


def test_llama_formula_holds_for_paper_vocab():
    c = dict(L=12, d=768, ff=2048, V=32128)
    formula = c["L"] * (4 * c["d"] ** 2 + 3 * c["d"] * c["ff"] + 2 * c["d"]) + c["d"] + 2 * c["V"] * c["d"]
    assert build_meta("llama_135m", vocab_size=32128).num_params()[0] == formula  # 134.3M in the paper's table


def test_gpt_nano_matches_nanogpt_count_without_position_embedding():
    model = build_meta("gpt_nano")
    total, _ = model.num_params()
    assert total - model.pos_embed.weight.numel() == 123_587_328  # nanoGPT get_num_params(): 123.59M
    assert model.head.weight is model.embed.weight


def test_module_names_make_groups_obvious():
    names = {n for n, _ in build_meta("llama_nano").named_modules()}
    for expected in ["embed", "head", "norm", "blocks.1.attn.q", "blocks.1.attn.k", "blocks.1.attn.v", "blocks.1.attn.o",
                     "blocks.1.mlp.gate", "blocks.1.mlp.up", "blocks.1.mlp.down", "blocks.1.attn_norm", "blocks.1.mlp_norm"]:
        assert expected in names
    assert "blocks.0.mlp.gate" not in {n for n, _ in build_meta("gpt_micro").named_modules()}


@pytest.mark.parametrize("name", ["llama_nano", "gpt_micro"])
def test_shapes_and_initial_loss_is_log_vocab(name):
    torch.manual_seed(0)
    model = Transformer(config_from_preset(name))
    idx, targets = torch.randint(0, 256, (4, 32)), torch.randint(0, 256, (4, 32))
    logits, loss = model(idx, targets)
    assert logits.shape == (4, 32, 256)
    assert abs(loss.item() - math.log(256)) < 0.05  # std-0.02 init: near-uniform predictions


def test_causality_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    model = Transformer(config_from_preset("llama_nano"))
    a = torch.randint(0, 256, (1, 16))
    b = a.clone()
    b[0, 10:] = (b[0, 10:] + 1) % 256
    la, lb = model(a)[0], model(b)[0]
    assert torch.allclose(la[0, :10], lb[0, :10], atol=1e-6)
    assert not torch.allclose(la[0, 10:], lb[0, 10:])


def test_init_std_and_gpt_residual_scaling():
    torch.manual_seed(0)
    gpt = Transformer(config_from_preset("gpt_tiny"))
    assert abs(gpt.blocks[0].mlp.up.weight.std().item() - 0.02) < 0.002
    assert abs(gpt.blocks[0].mlp.down.weight.std().item() - 0.02 / math.sqrt(8)) < 0.001
    llama = Transformer(config_from_preset("llama_tiny"))
    assert abs(llama.blocks[0].mlp.down.weight.std().item() - 0.02) < 0.002  # no depth scaling in LLaMA


def test_flops_per_token_matches_spec_worked_values():
    # docs/models.md: GPT-2 124M at T=1024 is 6·123.59M + 113.2M = 0.855 GFLOP per token
    assert build_meta("gpt_nano").flops_per_token() / 1e9 == pytest.approx(0.855, abs=0.001)
    assert build_meta("llama_135m", vocab_size=32128).flops_per_token() / 1e9 == pytest.approx(0.771, abs=0.001)
    assert build_meta("llama_1b", vocab_size=32128).flops_per_token() / 1e9 == pytest.approx(8.247, abs=0.001)


def test_bad_model_config():
    with pytest.raises(ValueError, match="not divisible"):
        ModelConfig(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match="unknown model preset"):
        config_from_preset("llama_7b")


def test_cli_prints_counts_for_135m():
    out = subprocess.run([sys.executable, "model.py", "llama_135m"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "params total=162220800 non_embedding=84953856" in out
    assert "blocks.11.mlp.down.weight" in out


def test_presets_are_all_buildable():
    for name in PRESETS:
        assert build_meta(name).num_params()[0] > 0


@pytest.mark.parametrize("damage", ["half", "random", "empty"])
def test_corrupt_checkpoint_is_one_value_error_naming_the_file(tmp_path, damage):
    """A truncated (interrupted copy, full disk), random or empty ckpt.pt: one ValueError naming the file and
    the fix, whichever error torch, pickle or zipfile raised; train.py's resume prints it as one config error."""
    import model as M
    torch.manual_seed(0)
    net = Transformer(config_from_preset("llama_nano"))
    torch.save(dict(model=net.state_dict(), model_config=vars(net.cfg)), tmp_path / "ckpt.pt")
    data = (tmp_path / "ckpt.pt").read_bytes()
    data = {"half": data[:len(data) // 2], "random": bytes(range(256)) * 8, "empty": b""}[damage]
    (tmp_path / "ckpt.pt").write_bytes(data)
    with pytest.raises(ValueError, match=r"ckpt\.pt' is corrupt or truncated \(.*\): replace it with a kept ckpt_<iter>\.pt") as e:
        M.load_checkpoint(str(tmp_path))
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)
    if damage == "half":
        p = subprocess.run([sys.executable, "train.py", "--init_from=resume", f"--out_dir={tmp_path}", "--model=llama_nano"],
                           cwd=ROOT, capture_output=True, text=True)
        assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
        assert p.stderr.strip().splitlines() == [p.stderr.strip()] and "cannot resume:" in p.stderr
        assert "corrupt or truncated" in p.stderr and (tmp_path / "ckpt.pt").read_bytes() == data


def test_an_error_of_loading_is_not_called_corruption(tmp_path, monkeypatch):
    """Out of memory while loading a good file: one ValueError, but never 'corrupt' (a user would delete the file)."""
    import model as M
    (tmp_path / "ckpt.pt").write_bytes(b"")

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(torch, "load", oom)
    with pytest.raises(ValueError, match=r"is not a readable checkpoint \(OutOfMemoryError: CUDA out of memory\)$"):
        M.load_checkpoint(str(tmp_path))
