"""train.py: config handling, a run that learns, exact resume, DDP equivalence, failure modes."""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import checkpoint
import optim
import preflight
import train
from conftest import ROOT
from data.shakespeare.prepare import write_split
from model import load_checkpoint, model_from_checkpoint

TINY = ["--model=llama_nano", "--block_size=32", "--batch_size=4", "--eval_tokens=512", "--dtype=float32",
        "--log_interval=1", "--learning_rate=3e-3", "--warmup_iters=2"]


@pytest.fixture(scope="module")
def text_dataset(tmp_path_factory):
    """A small byte-level dataset from Python's own argparse source (every machine has it)."""
    directory = tmp_path_factory.mktemp("data") / "argparse_src"
    write_split(open(argparse.__file__).read(), str(directory))
    return str(directory)


def run_train(args, check=True, env=None, **kw):
    """train.py in a subprocess; env adds variables, or removes those given as None."""
    env = {k: v for k, v in dict(os.environ, OMP_NUM_THREADS="1", **(env or {})).items() if v is not None}
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, env=env, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def losses(out_dir):
    """iter -> train loss; a later line for the same iter (after a resume) replaces the earlier one."""
    result = {}
    for line in open(os.path.join(out_dir, "metrics.jsonl")):
        rec = json.loads(line)
        if "train_loss" in rec:
            result[rec["iter"]] = rec["train_loss"]
    return result


# --- config -------------------------------------------------------------------------------------

def test_no_arguments_is_the_embedded_default_spelled_out_in_configs_default():
    assert train.parse_config([]) == train.parse_config([os.path.join(ROOT, "configs", "default.py")])


def test_values_are_coerced_to_the_type_of_the_default():
    cfg = train.parse_config(["--max_iters=1e5", "--learning_rate=1", "--wandb_log=true", "--compile=True", "--out_dir=x"])
    assert cfg["max_iters"] == 100000 and isinstance(cfg["max_iters"], int)
    assert cfg["learning_rate"] == 1.0 and isinstance(cfg["learning_rate"], float)
    assert cfg["wandb_log"] is True and cfg["compile"] is True and cfg["out_dir"] == "x"


@pytest.mark.parametrize("text, value", [("false", False), ("0", False), ("No", False), ("true", True), ("1", True),
                                         ("yes", True), ("auto", None)])
def test_booleans_read_true_false_1_0_yes_no_and_compile_also_auto(text, value):
    # --compile=false once turned compile on: its default is None (auto), and any non-empty string was true
    assert train.parse_config([f"--compile={text}"])["compile"] is value
    if value is not None:
        assert train.parse_config([f"--wandb_log={text}"])["wandb_log"] is value


def test_config_file_with_unknown_or_mistyped_key(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import math\nlearning_rate = 1e-3 * math.sqrt(2)\nbatchsize = 8\n")
    with pytest.raises(SystemExit, match="unknown config key 'batchsize'; did you mean batch_size"):
        train.parse_config([str(bad)])
    bad.write_text("max_iters = 'many'\n")
    with pytest.raises(SystemExit, match="max_iters = 'many': expected int"):
        train.parse_config([str(bad)])


def test_config_files_apply_in_order_then_overrides(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("max_iters = 100\nbatch_size = 4\n")
    b.write_text("max_iters = max_iters * 2\n")  # a file sees the values set before it
    cfg = train.parse_config([str(a), str(b), "--batch_size=2"])
    assert (cfg["max_iters"], cfg["batch_size"]) == (200, 2)


def test_accumulation_must_divide_by_world_size():
    c = argparse.Namespace(**{**train.DEFAULTS, "grad_accum": 3})
    with pytest.raises(SystemExit, match="grad_accum=3 is not divisible by the world size 2"):
        preflight.check_config(c, world_size=2)


# --- runs ---------------------------------------------------------------------------------------

def test_tiny_run_lowers_validation_loss(text_dataset, tmp_path):
    out = str(tmp_path / "run")
    run_train(TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", "--max_iters=60", "--eval_interval=30"])
    val = [json.loads(l)["val_loss"] for l in open(os.path.join(out, "metrics.jsonl")) if "val_loss" in l]
    assert len(val) == 3 and val[-1] < val[0] - 1.0
    ckpt = load_checkpoint(out)
    assert ckpt["iter_num"] == 60 and ckpt["tokenizer"] == "byte"
    assert json.load(open(os.path.join(out, "config.json")))["max_iters"] == 60
    rec = json.loads(open(os.path.join(out, "metrics.jsonl")).readline())
    assert {"iter", "tokens", "train_loss", "val_loss", "lr", "tok_per_s", "mfu"} <= set(rec) and rec["mfu"] is None


def test_compiled_run_matches_eager_compiles_once_per_mode_and_saves_plain_keys(text_dataset, tmp_path):
    args = TINY + [f"--dataset={text_dataset}", "--max_iters=6", "--eval_interval=3"]
    run_train(args + [f"--out_dir={tmp_path / 'eager'}", "--compile=False"])
    proc = run_train(args + [f"--out_dir={tmp_path / 'compiled'}", "--compile=True"], env={"TORCH_LOGS": "recompiles"})
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert eager.keys() == compiled.keys() and all(abs(eager[i] - compiled[i]) < 1e-4 for i in eager)
    # one graph for training and one for evaluation under no_grad; none after that
    assert proc.stderr.count("Recompiling function forward") == 1 and "grad_mode" in proc.stderr
    ckpt = load_checkpoint(tmp_path / "compiled")
    assert not any(k.startswith("_orig_mod.") for k in ckpt["model"])
    net, _ = model_from_checkpoint(tmp_path / "compiled")  # loads into a plain, uncompiled model
    assert torch.equal(net.head.weight, ckpt["model"]["head.weight"])


@pytest.mark.parametrize("api_key", [None, "a" * 40], ids=["no key", "key, server unreachable"])
def test_wandb_logs_offline_without_key_or_server_and_records_the_final_val_loss(text_dataset, tmp_path, api_key):
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    env = {"WANDB_MODE": None, "WANDB_API_KEY": api_key, "HOME": str(tmp_path), "WANDB_INIT_TIMEOUT": "3",
           "WANDB_BASE_URL": "http://127.0.0.1:9"}  # nothing listens on the discard port
    proc = run_train(TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", "--max_iters=4", "--eval_interval=2",
                             "--wandb_log=True"], env=env, timeout=240)
    assert ("logging offline instead" in proc.stdout) == (api_key is not None)
    assert len(list((out / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    final = [json.loads(l) for l in open(out / "metrics.jsonl")][-1]
    assert final["iter"] == 4
    printed = proc.stdout + proc.stderr  # wandb prints its run summary to stderr
    summary = printed[printed.index("Run summary:"):]
    assert float(re.search(r"val_loss ([\d.]+)", summary).group(1)) == pytest.approx(final["val_loss"], abs=1e-4)


def test_a_resumed_run_continues_its_wandb_run(text_dataset, tmp_path):
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    args = TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", "--eval_interval=2", "--wandb_log=True"]
    env = {"WANDB_MODE": "offline", "HOME": str(tmp_path)}
    run_train(args + ["--max_iters=2"], env=env)
    run_train(args + ["--max_iters=4", "--init_from=resume", "--allow_schedule_change=True"], env=env)
    runs = sorted((out / "wandb").glob("offline-run-*"))
    ids = [r.name.rsplit("-", 1)[1] for r in runs]
    assert len(runs) == 2 and ids[0] == ids[1] == load_checkpoint(out)["wandb_id"]


def test_resume_after_sigkill_gives_bitwise_identical_losses(text_dataset, tmp_path):
    args = TINY + [f"--dataset={text_dataset}", "--max_iters=50", "--eval_interval=25", "--ckpt_every=10",
                   "--model=llama_tiny", "--block_size=64", "--batch_size=8", "--dtype=float32"]
    reference, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
    run_train(args + [f"--out_dir={reference}"])

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "train.py", *args, f"--out_dir={killed}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = os.path.join(killed, "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and max(losses(killed) or {0: 0}) >= 20:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(losses(killed))
    assert 20 <= killed_at < 49
    assert load_checkpoint(killed)["iter_num"] <= killed_at

    run_train(args + [f"--out_dir={killed}", "--init_from=resume"])
    assert losses(killed) == losses(reference)  # every iteration, compared as exact floats
    assert len(losses(reference)) == 50


def test_ddp_two_processes_equal_one_process_with_twice_the_accumulation(text_dataset, tmp_path):
    args = TINY + [f"--dataset={text_dataset}", "--max_iters=6", "--eval_interval=100", "--grad_accum=2"]
    single, ddp = str(tmp_path / "single"), str(tmp_path / "ddp")
    run_train(args + [f"--out_dir={single}"])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
                           *args, f"--out_dir={ddp}"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_checkpoint(single)["model"], load_checkpoint(ddp)["model"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)


def test_divergence_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(text_dataset, tmp_path):
    out = str(tmp_path / "run")
    proc = run_train(TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", "--max_iters=20", "--eval_interval=100",
                             "--learning_rate=1e30", "--grad_clip=0", "--warmup_iters=0"], check=False)
    assert proc.returncode != 0 and "training diverged" in proc.stderr and "Traceback" not in proc.stderr
    ckpt = load_checkpoint(out)
    assert ckpt["iter_num"] == 0 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


# the bad inputs of train.py, bench.py and eval/: tests/test_bad_input.py


def test_out_dir_not_writable(text_dataset, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = run_train(TINY + [f"--dataset={text_dataset}", f"--out_dir={blocker / 'run'}"], check=False)
    assert proc.returncode != 0 and "is not writable" in proc.stderr and "Traceback" not in proc.stderr


def test_a_save_interrupted_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    good = dict(model={"w": torch.ones(3)}, config={"max_iters": 1}, iter_num=5)
    checkpoint.save_checkpoint(str(tmp_path), good)

    def crash_midway(obj, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(str(tmp_path), dict(good, iter_num=6))
    monkeypatch.undo()
    reloaded = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert reloaded["iter_num"] == 5 and torch.equal(reloaded["model"]["w"], torch.ones(3))


def test_logged_lr_is_the_lr_of_that_iterations_update(text_dataset, tmp_path):
    out = str(tmp_path / "run")
    run_train(TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", "--max_iters=4", "--eval_interval=100",
                      "--strategy=uniform", "--warmup_iters=4"])
    lrs = [json.loads(l)["lr"] for l in open(os.path.join(out, "metrics.jsonl")) if '"lr"' in l]
    assert lrs == pytest.approx([3e-3 * t / 4 for t in (1, 2, 3, 4)])  # linear warmup t/W for updates t = 1..4


def test_a_config_file_includes_others_relative_to_itself_and_bare_flags_mean_true(tmp_path):
    (tmp_path / "size.py").write_text("max_iters = 100\n")
    (tmp_path / "method.py").write_text("strategy = 'uniform'\nout_dir = f'out/{max_iters}'\n")
    (tmp_path / "both.py").write_text("include('size.py', 'method.py')\nbatch_size = 2\n")
    cfg = train.parse_config([str(tmp_path / "both.py"), "--dry_run"])
    assert (cfg["max_iters"], cfg["strategy"], cfg["out_dir"], cfg["batch_size"], cfg["dry_run"]) == (100, "uniform", "out/100", 2, True)
    # configs/default.py runs only when no config file is given: its LLR cadence is not a global default
    assert train.parse_config([str(tmp_path / "size.py")])["llr_every"] == 100 == optim.hyperparameters()["llr_every"]
    assert train.parse_config([])["llr_every"] == 25


def test_strategy_keys_have_one_default_and_run_keys_never_shadow_them():
    assert not set(train.RUN_KEYS) & set(optim.hyperparameters())
    assert train.DEFAULTS["learning_rate"] == optim.COMMON["learning_rate"]


def test_a_fresh_run_refuses_an_out_dir_holding_a_run_and_a_resume_logs_each_iteration_once(text_dataset, tmp_path):
    out = str(tmp_path / "run")
    args = TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", "--eval_interval=3"]
    run_train(args + ["--max_iters=4"])
    before = open(os.path.join(out, "metrics.jsonl")).read()
    proc = run_train(args + ["--max_iters=6"], check=False)
    assert proc.returncode != 0 and "already holds a run" in proc.stderr and "--init_from=resume" in proc.stderr
    assert open(os.path.join(out, "metrics.jsonl")).read() == before and load_checkpoint(out)["iter_num"] == 4
    run_train(args + ["--max_iters=8", "--init_from=resume", "--allow_schedule_change=True"])  # from the checkpoint at iter 4
    iters = [json.loads(l)["iter"] for l in open(os.path.join(out, "metrics.jsonl"))]
    assert iters == sorted(set(iters)) == list(range(9))
