"""Bad input and faults, tried the way a hostile user would: every case ends with one line that names the problem
and the fix, a non-zero exit, no traceback, nothing written for the bad run, and the files of a neighbouring good
run byte for byte (sha256) as they were. train.py's cases run in-process through train.main, the code the command
line runs, without an interpreter start per case; the other tools run as commands."""
import hashlib
import json
import os
import re
import resource
import subprocess
import sys

import pytest
import torch

import train
from conftest import ROOT
from model import load_checkpoint
from test_train import TINY, run_train, text_dataset  # noqa: F401  (a fixture)


@pytest.fixture(scope="module")
def good_run(text_dataset, tmp_path_factory):  # noqa: F811
    """A finished 4-update run with checkpoints at 0, 2 and 4: the neighbour no bad input may touch."""
    out = str(tmp_path_factory.mktemp("good") / "run")
    run_train(TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", "--max_iters=4", "--eval_interval=2"])
    return out


@pytest.fixture(scope="module")
def stale_run(text_dataset, tmp_path_factory):  # noqa: F811
    """What a run that died before its first checkpoint leaves: a metrics.jsonl and no ckpt.pt."""
    out = tmp_path_factory.mktemp("stale") / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("")
    return str(out)


def digests(directory):
    return {name: hashlib.sha256(open(os.path.join(directory, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(directory))}


def one_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    return lines[0]


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")

# argv after TINY, the dataset and --out_dir={new} (a later --out_dir wins); {good}/{stale}/{new}/{data} are filled in
TRAIN_CASES = [
    (["--compile=maybe"], r"compile='maybe': expected true or false"),
    (["--wandb_log=maybe"], r"--wandb_log=maybe: expected bool \(true/1/yes/false/0/no\)"),
    (["--learning_rate=abc"], r"--learning_rate=abc: expected float"),
    (["--max_iters=1.5"], r"--max_iters=1.5: expected int"),
    (["--learnin_rate=1e-3"], r"unknown config key 'learnin_rate'; did you mean learning_rate"),
    (["--max_iters"], r"'--max_iters' has no value: write --max_iters=VALUE"),
    (["nonexistent_config.py"], r"config file 'nonexistent_config.py' does not exist"),
    (["--strategy=schedule_free", "--schedule=wsd"], r"'schedule_free' keeps a schedule of its own, so schedule='wsd'"),
    (["--strategy=sgdr", "--schedule=linear"], r"'sgdr' keeps a schedule of its own"),
    pytest.param(["--device=cuda"], r"device='cuda' but this torch .* sees no CUDA GPU: use --device=auto", marks=NO_CUDA),
    (["--device=gpu"], r"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    (["--vocab_size=64"], r"vocab_size=64 is smaller than the vocabulary of dataset .* \(256 tokens\): set --vocab_size >= 256"),
    (["--vocab_size=64", "--dry_run"], r"vocab_size=64 is smaller than the vocabulary"),
    (["--n_head=3"], r"n_embd=64 is not divisible by n_head=3"),
    (["--n_head=3", "--dry_run"], r"n_embd=64 is not divisible by n_head=3"),
    (["--dropout=1.5"], r"dropout must be in \[0, 1\), got 1.5"),
    (["--block_size=1000000"], r"block_size=1000000 needs 1000001 tokens in a row, but the train split .* has \d+ at most"),
    (["--batch_size=100000000"], r"this run needs about [\d.]+ GiB per process .* available: lower batch_size"),
    (["--dataset=/nonexistent/dir"], r"dataset '/nonexistent/dir' is not prepared"),
    (["--strategy=adamw_typo"], r"unknown strategy 'adamw_typo'; available: uniform, "),
    (["--model=llama_7b"], r"model 'llama_7b' is not a preset"),
    (["--learning_rate=-1"], r"learning_rate must be"),
    (["--spectral_every=-1"], r"spectral_every must be >= 0"),
    (["--keep_ckpts=2"], r"keep_ckpts=2 keeps the ckpt_every checkpoints: set ckpt_every > 0"),
    (["--init_from=resume"], r"cannot resume: no checkpoint"),
    (["--init_from=resume", "--out_dir={stale}"], r"stopped before its first checkpoint .* start it again without --init_from=resume"),
    (["--out_dir={good}", "--max_iters=6"], r"already holds a run \(ckpt.pt\): continue it with --init_from=resume"),
    (["--out_dir={good}", "--init_from=resume", "--max_iters=6", "--batch_size=8"],
     r"trained on other batches: batch_size \(checkpoint 4, config 8\)\. These keys set the data order"),
    (["--out_dir={good}", "--init_from=resume", "--max_iters=6", "--seed=7", "--grad_accum=2"],
     r"seed \(checkpoint 1337, config 7\), grad_accum \(checkpoint 1, config 2\)"),
    (["--out_dir={good}", "--init_from=resume", "--max_iters=6", "--dataset={other_data}"], r"dataset \(checkpoint '.*', config '.*'\)"),
    (["--out_dir={good}", "--init_from=resume", "--max_iters=6", "--n_layer=3", "--block_size=16"],
     r"another model config: n_layer \(checkpoint 2, config 3\), block_size \(checkpoint 32, config 16\)"),
    (["--out_dir={good}", "--init_from=resume", "--max_iters=6", "--learning_rate=1e-2"], r"keys that define the LR schedule"),
    (["--init_from={good}", "--decay_iters=2", "--batch_size=8"], r"trained on other batches: batch_size"),
]


@pytest.mark.parametrize("args, message", TRAIN_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_train_py_refuses_bad_input_with_one_line(args, message, good_run, stale_run, text_dataset, tmp_path, capsys,  # noqa: F811
                                                 one_thread):
    other_data = tmp_path / "other_data"
    other_data.mkdir()
    for name in os.listdir(text_dataset):
        os.link(os.path.join(text_dataset, name), other_data / name)
    new = tmp_path / "new"
    fill = dict(good=good_run, stale=stale_run, new=new, data=text_dataset, other_data=other_data)
    before, stale_before = digests(good_run), digests(stale_run)
    with pytest.raises(SystemExit) as exit_:
        train.main(TINY + [f"--dataset={text_dataset}", f"--out_dir={new}"] + [a.format(**fill) for a in args])
    code = exit_.value.code
    assert code not in (0, None)  # a message as the code: Python prints it to stderr and exits with 1
    line = one_line(str(code))
    assert re.search(message, line), line
    assert capsys.readouterr().err == ""  # nothing else on stderr: no warning, no traceback
    assert digests(good_run) == before and digests(stale_run) == stale_before
    assert not new.exists()  # refused before anything was written


def test_the_command_line_exits_non_zero_with_the_line_and_no_traceback(text_dataset, tmp_path):  # noqa: F811
    proc = run_train(TINY + [f"--dataset={text_dataset}", f"--out_dir={tmp_path / 'o'}", "--compile=false", "--dropout=2"],
                     check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert one_line(proc.stderr) == "config error: dropout must be in [0, 1), got 2.0: a probability of dropping, e.g. --dropout=0.1"


def test_a_block_size_that_cannot_fit_in_memory_is_refused_before_allocating(tmp_path):
    """The embedded default with --block_size=2000000 once allocated 23 GB before the OOM killer stopped it."""
    limit = 2 * 2 ** 30  # were the estimate skipped, the allocation would fail here instead of eating the machine
    proc = subprocess.run([sys.executable, "train.py", "--block_size=2000000", f"--out_dir={tmp_path / 'o'}"], cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (8 * limit, 8 * limit)))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "this run needs about" in one_line(proc.stderr) and "micro-batch 8x2000000" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_dry_run_prints_the_memory_estimate_and_notes_what_this_machine_lacks(capsys):
    train.main(["--dry_run"])
    assert "GiB of memory per process on cpu" in capsys.readouterr().out
    # a config may be meant for a bigger machine: the dry run says the run would be refused here, and exits 0
    train.main(["--dry_run", "--batch_size=100000000"])
    assert re.search(r"# note: about [\d.]+ GiB per process, but cpu has [\d.]+ GiB available: this run would be "
                     r"refused here", capsys.readouterr().out)
    train.main(["--dry_run", "--dataset=fineweb_not_here"])
    assert "# note: dataset 'fineweb_not_here' is not prepared" in capsys.readouterr().out


# --- faults: a full disk, a cut-off log line, a run that died before its first checkpoint -------------------

def test_a_full_disk_during_a_checkpoint_names_the_path_and_free_space_and_keeps_the_previous_checkpoint(
        text_dataset, tmp_path):  # noqa: F811
    out = str(tmp_path / "run")
    args = TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", "--eval_interval=2"]
    run_train(args + ["--max_iters=2"])
    before = digests(out)
    size = os.path.getsize(os.path.join(out, "ckpt.pt"))
    # a file size limit below the checkpoint's size: the write fails midway as on a full disk (Python ignores SIGXFSZ)
    proc = subprocess.run([sys.executable, "train.py", *args, "--max_iters=4", "--init_from=resume",
                           "--allow_schedule_change=True"], cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2)))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = one_line(proc.stderr)
    assert f"checkpoint: cannot write {os.path.join(out, 'ckpt.pt.tmp')}" in line and "GiB free in" in line
    assert "previous checkpoint kept" in line and "--init_from=resume" in line
    assert not os.path.exists(os.path.join(out, "ckpt.pt.tmp"))
    assert digests(out)["ckpt.pt"] == before["ckpt.pt"] and load_checkpoint(out)["iter_num"] == 2
    run_train(args + ["--max_iters=4", "--init_from=resume", "--allow_schedule_change=True"])  # with space again, the run goes on
    assert load_checkpoint(out)["iter_num"] == 4


def test_resume_drops_a_cut_off_last_line_of_metrics_jsonl_and_continues(text_dataset, tmp_path):  # noqa: F811
    out = str(tmp_path / "run")
    args = TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", "--eval_interval=2"]
    run_train(args + ["--max_iters=2"])
    path = os.path.join(out, "metrics.jsonl")
    with open(path, "a") as f:
        f.write('{"iter": 3, "train_lo')  # what a full disk leaves
    proc = run_train(args + ["--max_iters=4", "--init_from=resume", "--allow_schedule_change=True"])
    assert "dropped its cut-off last line" in proc.stdout
    iters = [json.loads(line)["iter"] for line in open(path)]
    assert iters == list(range(5))


def test_a_corrupt_line_inside_metrics_jsonl_stops_the_resume_with_its_line_number(text_dataset, tmp_path):  # noqa: F811
    out = str(tmp_path / "run")
    args = TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", "--eval_interval=2"]
    run_train(args + ["--max_iters=2"])
    path = os.path.join(out, "metrics.jsonl")
    lines = open(path).readlines()
    open(path, "w").writelines(["{broken\n"] + lines[1:])
    proc = run_train(args + ["--max_iters=4", "--init_from=resume", "--allow_schedule_change=True"], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "metrics.jsonl line 1 is not JSON: repair or delete that line" in one_line(proc.stderr)


def test_a_run_that_died_before_its_first_checkpoint_leaves_a_reusable_directory(text_dataset, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("")  # the logger opened it, then the run died in its first eval
    args = TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", "--eval_interval=2", "--max_iters=2"]
    proc = run_train(args)
    assert "stopped before its first checkpoint" in proc.stdout
    assert load_checkpoint(str(out))["iter_num"] == 2
