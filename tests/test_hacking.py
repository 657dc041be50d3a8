"""docs/hacking.md's recipes 2 and 3, run from the doc's own text (recipe 1, a new strategy: tests/test_optim.py)."""
import os
import re
import shlex
import subprocess
import sys

import torch

from conftest import ROOT
from model import Transformer, config_from_preset, load_checkpoint
from test_optim import doc_block
from test_train import TINY, run_train, text_dataset  # noqa: F401  (a fixture)

HACKING = "docs/hacking.md"


def code_blocks():
    return re.findall(r"```\w*\n(.*?)```", open(os.path.join(ROOT, HACKING)).read(), re.S)


def test_recipe_2_every_line_it_shows_is_in_the_file_it_names():
    shown = [b for b in code_blocks() if re.match(r"# (model|train|preflight)\.py: ", b)]
    assert {b.split(":")[0] for b in shown} == {"# model.py", "# train.py", "# preflight.py"}
    for block in shown:
        path, *lines = block.rstrip("\n").split("\n")
        source = open(os.path.join(ROOT, path[2:].split(":")[0])).read().split("\n")
        for line in lines:
            assert line in source, f"{HACKING} shows a line that {path[2:].split(':')[0]} no longer has:\n{line}"


def test_recipe_2_qk_norm_trains_resumes_only_with_the_same_flag_and_is_refused_by_export(text_dataset, tmp_path):  # noqa: F811
    plain, normed = (Transformer(config_from_preset("llama_nano", qk_norm=flag)) for flag in (False, True))
    extra = {n for n, _ in normed.named_parameters()} - {n for n, _ in plain.named_parameters()}
    assert extra == {f"blocks.{i}.attn.{qk}_norm.weight" for i in range(2) for qk in "qk"}
    x = torch.randint(0, 256, (2, 16))
    normed.load_state_dict({**plain.state_dict(), **{n: torch.ones(32) for n in extra}})
    assert not torch.allclose(plain(x)[0], normed(x)[0])  # it changes the model...
    assert normed(x)[0].isfinite().all()

    out = str(tmp_path / "run")
    args = TINY + [f"--dataset={text_dataset}", f"--out_dir={out}", "--max_iters=2", "--eval_interval=2"]
    run_train(args + ["--qk_norm=true"])
    assert load_checkpoint(out)["model_config"]["qk_norm"] is True
    proc = run_train(args + ["--init_from=resume", "--qk_norm=false"], check=False)
    assert proc.returncode == 1 and "another model config: qk_norm (checkpoint True, config False)" in proc.stderr
    proc = subprocess.run([sys.executable, "eval/export_hf.py", "--ckpt", out, "--out", str(tmp_path / "hf")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "cannot map: blocks.0.attn.q_norm.weight" in proc.stderr, proc.stderr
    assert not os.path.exists(tmp_path / "hf")


def test_recipe_3_the_ablation_sweep_plans_every_run_it_names(tmp_path):
    block = doc_block(HACKING, "python eval/sweep.py --strategies \"uniform,llr,llr:llr_map=sqrt")
    argv = shlex.split(block.strip())
    assert argv[:2] == ["python", "eval/sweep.py"] and "--out" in argv
    argv[argv.index("--out") + 1] = str(tmp_path / "ablate")
    argv.insert(argv.index("--"), "--plan")  # the sweep's own flags go before `--`, train.py's after
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "36 runs: 0 kept, 0 to resume, 36 to start" in proc.stdout  # 4 variants x 3 LRs x 3 seeds
    for tag in ("uniform_lr0.003/", "llr_lr0.003/", "llr_llr_map-sqrt_lr0.003/", "llr_llr_s1-0.2_llr_s2-1_lr0.003/"):
        assert tag in proc.stdout, (tag, proc.stdout[-3000:])
    assert not os.path.exists(tmp_path / "ablate" / "results.json")  # --plan starts nothing
