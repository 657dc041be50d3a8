"""fused_ce: the chunked LM-head loss equals the plain one (loss and gradients), 'on' without a kernel is
one clear error before training, and `bench.py --ce` runs end to end."""
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import bench
import model as M
from conftest import ROOT
from model import Transformer, config_from_preset, linear_cross_entropy

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def plain_loss(h, w, t):
    return F.cross_entropy((h @ w.t()).float(), t, ignore_index=-1)


def inputs(n=100, d=24, v=37, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g).to(device).requires_grad_()
    w = (0.5 * torch.randn(v, d, generator=g)).to(device).requires_grad_()
    t = torch.randint(0, v, (n,), generator=g).to(device)
    t[::7] = -1  # ignored targets, mean over the others
    return h, w, t


def loss_and_grads(fn, h, w, t):
    h.grad = w.grad = None
    loss = fn(h, w, t)
    (3.0 * loss).backward()  # a non-unit upstream gradient
    return loss.detach(), h.grad.clone(), w.grad.clone()


@pytest.mark.parametrize("chunk", [30, 64, 1000])  # 30 and 64 do not divide the 100 rows; 1000 is one chunk
def test_chunked_loss_and_gradients_equal_the_plain_path_in_fp32(chunk):
    h, w, t = inputs()
    ref = loss_and_grads(plain_loss, h, w, t)
    got = loss_and_grads(lambda *a: linear_cross_entropy(*a, chunk=chunk), h, w, t)
    for a, b in zip(got, ref):
        assert rel(a, b) < 1e-5


def test_chunked_path_through_the_whole_model_equals_plain(tmp_path):
    for name in ("llama_nano", "gpt_micro"):  # gpt_micro: the head is tied to the embedding
        torch.manual_seed(0)
        plain = Transformer(config_from_preset(name))
        chunked = Transformer(config_from_preset(name))
        chunked.load_state_dict(plain.state_dict())
        chunked.fused_ce, chunked.ce_chunk = "chunked", 50  # 4 x 32 = 128 rows: chunks of 50, 50, 28
        x = torch.randint(0, 256, (4, 32))
        y = torch.roll(x, -1, 1)
        y[:, -3:] = -1
        logits, loss_plain = plain(x, y)
        none, loss_chunked = chunked(x, y)
        assert logits.shape == (4, 32, 256) and none is None  # the fused path returns no logits
        assert rel(loss_chunked, loss_plain) < 1e-5
        loss_plain.backward()
        loss_chunked.backward()
        grads = dict(chunked.named_parameters())
        for n, p in plain.named_parameters():
            assert rel(grads[n].grad, p.grad) < 1e-5, n
        with torch.no_grad():  # eval with targets: the loss alone, no gradient work
            assert rel(chunked(x, y)[1], loss_plain.detach()) < 1e-5
        assert chunked(x)[0].shape == (4, 32, 256)  # no targets: logits, as eval needs


def test_chunked_under_bf16_autocast_is_close_to_plain():
    h, w, t = inputs(n=256, d=64, v=300)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = loss_and_grads(plain_loss, h, w, t)
        got = loss_and_grads(lambda *a: linear_cross_entropy(*a, chunk=100), h, w, t)
    assert got[1].dtype == got[2].dtype == torch.float32  # gradients in the parameters' dtype
    assert rel(got[0], ref[0]) < 1e-3 and rel(got[1], ref[1]) < 2e-2 and rel(got[2], ref[2]) < 2e-2


def test_fused_ce_resolves_per_device(monkeypatch):
    monkeypatch.setattr(M, "installed_kernels", lambda: [])
    assert M.resolve_fused_ce("off", "cuda") == "off" and M.resolve_fused_ce("chunked", "cpu") == "chunked"
    assert M.resolve_fused_ce("auto", "cpu") == M.CPU_AUTO and M.resolve_fused_ce("auto", "cuda") == "off"
    for device in ("cpu", "cuda"):
        with pytest.raises(ValueError, match="pip install liger-kernel.*cut-cross-entropy"):
            M.resolve_fused_ce("on", device)
    with pytest.raises(ValueError, match="fused_ce must be one of"):
        M.resolve_fused_ce("yes", "cpu")
    monkeypatch.setattr(M, "installed_kernels", lambda: ["cce"])
    assert M.resolve_fused_ce("on", "cuda") == M.resolve_fused_ce("auto", "cuda") == "cce"
    assert M.resolve_fused_ce("auto", "cpu") == M.CPU_AUTO  # CUDA kernels never run on a CPU


@pytest.mark.skipif(torch.cuda.is_available() and M.installed_kernels(), reason="a fused kernel is installed")
def test_fused_ce_on_without_a_kernel_stops_before_training(tmp_path):
    out = tmp_path / "run"  # checked before the data is read: no dataset needed
    proc = subprocess.run([sys.executable, "train.py", "--model=llama_nano", "--block_size=32", "--batch_size=2",
                           f"--dataset={tmp_path / 'data'}", "--max_iters=2", "--fused_ce=on", f"--out_dir={out}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("config error: fused_ce='on'") and "pip install liger-kernel" in lines[0]
    assert not (out / "metrics.jsonl").exists() and not (out / "ckpt.pt").exists()


def test_bench_ce_prints_time_and_memory_ratios(capsys):
    bench.main(["--model=llama_nano", "--batch_size=2", "--block_size=32", "--steps=1", "--rounds=1",
                "--compile=False", "--dtype=float32", "--ce"])
    out = capsys.readouterr().out
    assert out.startswith("# python bench.py") and re.search(r"# CPU \(\d+ threads\), \d{4}-\d\d-\d\d", out)
    assert re.search(r"64 rows x 64 -> vocab 256; chunked: 1 chunk\(s\) of 64 rows", out)
    for path in ("plain", "chunked"):
        m = re.search(rf"{path} +[\d.]+ ms +peak +([\d.]+) MiB +\| +time ([\d.]+)x, memory ([\d.]+)x of plain", out)
        assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0 and float(m.group(3)) > 0, out
    assert re.search(r"model fwd\+bwd with each path .*: plain [\d.]+ ms \(1\.00x\), chunked [\d.]+ ms", out)


def test_chunked_peak_memory_is_bounded_by_the_chunk():
    h, w, t = inputs(n=2048, d=32, v=2048)
    run = lambda fn: lambda: (fn(h, w, t).backward(), setattr(h, "grad", None), setattr(w, "grad", None))
    plain = bench.peak_bytes(run(plain_loss), "cpu")
    chunked = bench.peak_bytes(run(lambda *a: linear_cross_entropy(*a, chunk=128)), "cpu")
    logits = 2048 * 2048 * 4
    assert plain >= 2 * logits  # the logits and their gradient, at least
    assert chunked < logits / 2  # a 128-row chunk of logits (1/16 of them), the gradients and the inputs' copies


@CUDA
def test_chunked_equals_plain_on_cuda():
    h, w, t = inputs(device="cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = loss_and_grads(plain_loss, h, w, t)
    got = loss_and_grads(lambda *a: linear_cross_entropy(*a, chunk=30), h, w, t)
    for a, b in zip(got, ref):
        assert rel(a, b) < 1e-4


@CUDA
@pytest.mark.parametrize("kernel", M.FUSED_KERNELS)
def test_installed_cuda_kernels_agree_with_plain_in_bf16(kernel):
    if kernel not in M.installed_kernels():
        pytest.skip(f"{M.KERNEL_PACKAGES[kernel]} is not installed")
    h, w, t = inputs(n=512, d=64, v=1000, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ref = loss_and_grads(plain_loss, h, w, t)
        got = loss_and_grads(lambda *a: linear_cross_entropy(*a, impl=kernel), h, w, t)
    assert rel(got[0], ref[0]) < 1e-2 and rel(got[1], ref[1]) < 5e-2 and rel(got[2], ref[2]) < 5e-2
