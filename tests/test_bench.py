"""The benchmark scripts run end to end on a tiny model and print what the README quotes."""
import os
import re
import subprocess
import sys

import pytest

import bench
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
])
def test_bench_bad_flags_are_one_config_error(arg, message):
    with pytest.raises(SystemExit, match=re.escape("config error: " + message)):
        bench.main(TINY + [arg])


def test_bench_cli_bad_steps_is_one_line():
    p = subprocess.run([sys.executable, "bench.py", "--model=llama_nano", "--steps=abc"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode != 0 and p.stdout == "" and "Traceback" not in p.stderr
    assert p.stderr.splitlines() == ["config error: --steps=abc: expected a positive integer, e.g. --steps=10"]
