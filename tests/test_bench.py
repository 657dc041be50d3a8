"""The benchmark scripts run end to end on a tiny model and print what the README quotes."""
import json
import os
import re
import subprocess
import sys
import types

import pytest
import torch

import bench
import gpu_check
from eval import htsr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--model=llama_nano", "--batch_size=2", "--block_size=32", "--steps=1", "--compile=False", "--dtype=float32"]


def test_bench_prints_throughput_the_hf_ratio_and_a_profile(capsys):
    pytest.importorskip("transformers")
    bench.main(TINY + ["--profile"])
    out = capsys.readouterr().out
    assert re.search(r"train step \(llr\): [\d,]+ tok/s", out)
    ratio = float(re.search(r"LlamaForCausalLM [\d,]+ tok/s \| ratio ([\d.]+)x", out).group(1))
    assert ratio > 0
    table = out.split("top 25 ops of 3 train steps by self_cpu_time_total:")[1]
    assert "aten::mm" in table or "aten::addmm" in table  # the matmuls show up in the profile


def test_bench_llr_reports_refit_cost_and_projections(capsys):
    bench.main(TINY + ["--llr", "--max_iters=40", "--llr_every=10"])
    out = capsys.readouterr().out
    # llama_nano: 2 blocks x 7 matrices + embed + head, all refitted
    assert re.search(r"one refit \(16 matrices\) [\d.]+ ms", out)
    # refits at t = 1 and every 10 updates while t <= llr_ratio * 40
    assert re.search(r"projected, 1 device\(s\), \d+ micro-batch\(es\) per step, 40 steps, \d+ refits", out)


def test_spectral_bench_times_every_route_and_agrees_with_weightwatcher(capsys):
    pytest.importorskip("weightwatcher")
    htsr.bench("cpu", "llama_nano", use_ww=True)
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("group"))
    assert header.split()[1:] == ["gram", "gram64", "svd", "svd64"]  # gesvda is CUDA-only
    picks = re.search(r"auto picks: (.*)\)", out).group(1).split(", ")
    assert sorted(picks) == ["176x64 gram", "256x64 gram", "64x64 gram"]  # the Gram route on a CPU
    rel = float(re.search(r"max relative \|Δalpha\| ks vs weightwatcher: (\S+)", out).group(1))
    assert rel < 1e-3


@pytest.mark.parametrize("arg,message", [
    ("--steps=abc", "--steps=abc: expected a positive integer, e.g. --steps=10"),
    ("--steps=0", "--steps=0: expected a positive integer, e.g. --steps=10"),
    ("--rounds=-1", "--rounds=-1: expected a positive integer, e.g. --rounds=3"),
    ("--stpes=3", "unknown config key 'stpes'; did you mean steps"),  # bench's flags are among the candidates
    ("--rouds=2", "unknown config key 'rouds'; did you mean rounds"),
    ("--proflie", "unknown config key 'proflie'; did you mean profile"),
    ("--llr=maybe", "--llr=maybe: expected bool"),
    ("--smoke", "--smoke is the CPU smoke mode of --gpu_check: python bench.py --gpu_check --smoke"),
    ("--out=", "--out=: expected a directory, e.g. --out=out/gpu_check"),
    ("--gpu_chek", "unknown config key 'gpu_chek'; did you mean gpu_check"),
    ("--gpu_check --ce", "--gpu_check runs its own measurements (--llr and --ce among them): drop --llr, --profile and --ce"),
])
def test_bench_bad_flags_are_one_config_error(arg, message):
    with pytest.raises(SystemExit, match=re.escape("config error: " + message)):
        bench.main(TINY + arg.split())


def test_bench_cli_bad_steps_is_one_line():
    p = subprocess.run([sys.executable, "bench.py", "--model=llama_nano", "--steps=abc"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode != 0 and p.stdout == "" and "Traceback" not in p.stderr
    assert p.stderr.splitlines() == ["config error: --steps=abc: expected a positive integer, e.g. --steps=10"]


# --- bench.py --gpu_check: the smoke mode end to end, its bad input, a failing check, a missing kernel package

def test_gpu_check_smoke_runs_every_check_and_writes_both_reports(tmp_path):
    out = tmp_path / "gc"
    p = subprocess.run([sys.executable, "bench.py", "--gpu_check", "--smoke", f"--out={out}"], cwd=ROOT,
                       capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    md = (out / "gpu_check.md").read_text()
    assert report["device"].startswith("CPU") and report["torch"] == torch.__version__ and report["date"]
    assert report["command"] == f"python bench.py --gpu_check --smoke --out={out}" and report["passed"] and report["smoke"]
    statuses = {r["name"]: r["status"] for r in report["checks"]}
    assert list(statuses) == [name for name, _ in bench.GPU_CHECKS]  # every check, in the table's order
    assert set(statuses.values()) <= {"pass", "skipped"}, statuses
    # on a CPU only the CUDA kernels are skipped: everything else ran for real
    assert [n for n, s in statuses.items() if s == "skipped"] == ["fused loss: liger-kernel", "fused loss: cut-cross-entropy"]
    assert {r["name"]: r for r in report["checks"]}["update-ratio monitor at update_every=10"]["figures"]["update_pct"] > 0
    checks = {r["name"]: r for r in report["checks"]}
    assert checks["fused loss: liger-kernel"]["reason"] == "needs CUDA"
    assert all(r["command"] for r in report["checks"])
    assert checks["torchrun train + checkpoint + resume"]["figures"]["max rel diff of resumed losses"] == 0  # exact on gloo
    assert any(c.endswith("--init_from=resume") for c in checks["torchrun train + checkpoint + resume"]["command"])
    assert checks["strategies compiled vs eager"]["figures"]["llr: recompiles"] == 0
    for name in statuses:
        assert f"| {name} | {statuses[name]}" in md
        assert re.search(rf"^(PASS|SKIPPED) +{re.escape(name)} \(", p.stdout, re.M)  # one pass/fail line per check
    assert "0 failed" in p.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_check_without_cuda_is_one_line_pointing_to_the_smoke_mode(tmp_path):
    p = subprocess.run([sys.executable, "bench.py", "--gpu_check", f"--out={tmp_path}"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode != 0 and p.stdout == "" and "Traceback" not in p.stderr
    [line] = p.stderr.splitlines()
    assert line.startswith("config error: --gpu_check needs a CUDA GPU") and "python bench.py --gpu_check --smoke" in line
    assert not os.listdir(tmp_path)  # nothing written


def test_a_check_that_raises_is_failed_with_its_last_line_and_the_rest_still_run(tmp_path, monkeypatch, capsys):
    def boom(g):
        raise RuntimeError("first line\nthe kernel fell over")

    def skip(g):
        raise gpu_check.Skip("does not apply here")
    monkeypatch.setattr(bench, "GPU_CHECKS", [("boom", boom), ("spectral", bench.gpu_spectral), ("skip", skip)])
    with pytest.raises(SystemExit) as e:
        bench.main(["--gpu_check", "--smoke", f"--out={tmp_path}"])
    assert e.value.code == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [(r["name"], r["status"]) for r in report["checks"]] == [("boom", "fail"), ("spectral", "pass"), ("skip", "skipped")]
    assert report["checks"][0]["reason"] == "RuntimeError: the kernel fell over"  # the error's last line
    assert report["checks"][1]["figures"]["spectral_ms"] > 0 and not report["passed"]
    out = capsys.readouterr().out
    assert re.search(r"^FAIL +boom \(.*the kernel fell over$", out, re.M) and "1 failed (boom)" in out


def test_a_figure_that_misses_its_target_fails_on_cuda_only():
    check = [("mfu", lambda g: {"mfu_pct": 30.0, "tok/s": 1.0})]
    on_gpu = types.SimpleNamespace(device_type="cuda", command="c")
    [r] = gpu_check.run_checks(check, on_gpu, bench.GPU_TARGETS)
    assert r["status"] == "fail" and r["reason"] == "mfu_pct 30 misses the target >= 45"
    [r] = gpu_check.run_checks(check, types.SimpleNamespace(device_type="cpu", command="c"), bench.GPU_TARGETS)
    assert r["status"] == "pass" and r["figures"] == {"mfu_pct": 30.0, "tok/s": 1.0}


@pytest.mark.parametrize("kernel,package", [("liger", "liger-kernel"), ("cce", "cut-cross-entropy")])
def test_a_missing_kernel_package_is_skipped_with_its_name(monkeypatch, kernel, package):
    monkeypatch.setattr(bench, "_fused_kernel", lambda name: None)  # as if not installed, on a CUDA machine
    on_gpu = types.SimpleNamespace(device_type="cuda", command="c")
    [r] = gpu_check.run_checks([(kernel, lambda g: bench.gpu_fused_loss(g, kernel))], on_gpu, bench.GPU_TARGETS)
    assert r["status"] == "skipped" and r["reason"] == f"{package} is not installed (pip install {package})"


def test_one_strategy_that_fails_fails_the_strategies_check_by_name_and_the_others_still_run(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "strategy_cases", lambda g: [("uniform", ["--strategy=uniform"]),
                                                                 ("broken", ["--strategy=uniform", "--beta2=2.0"]),
                                                                 ("llr", ["--strategy=llr"])])
    g = gpu_check.settings([], True, str(tmp_path), 10, 3, "c")
    [r] = gpu_check.run_checks([("strategies", gpu_check.strategies)], g, bench.GPU_TARGETS)
    assert r["status"] == "fail" and r["reason"].startswith("Failed: broken: ") and "beta2" in r["reason"]
    assert r["figures"]["uniform: recompiles"] == r["figures"]["llr: recompiles"] == 0
