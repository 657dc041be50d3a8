"""eval/sweep.py and eval/verdict.py: the statistics against known answers and scipy, steps to a target,
bad grids refused before any run, and a tiny real sweep that resumes."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from eval import sweep, verdict
from model import load_checkpoint
from test_train import text_dataset  # noqa: F401  (fixture)


# --- statistics ----------------------------------------------------------------------------------------

GRID = [float(f"{v:.4g}") for v in np.exp(np.linspace(np.log(1e-4), np.log(1e-2), 7))]


def parabola(lr, lr_opt=1.3e-3, floor=1.8, curvature=0.05):
    return floor + curvature * (math.log(lr) - math.log(lr_opt)) ** 2


def test_the_quadratic_fit_recovers_a_known_optimum():
    fit = verdict.fit_quadratic([(lr, parabola(lr)) for lr in GRID])
    assert fit["best_lr"] == GRID[3] and fit["window"] == GRID[2:5]
    assert fit["lr_opt"] == pytest.approx(1.3e-3, rel=1e-9) and fit["loss_opt"] == pytest.approx(1.8, abs=1e-12)
    assert fit["lost_at_2x"] == fit["lost_at_half"] == pytest.approx(0.05 * math.log(2) ** 2)
    assert not fit["extrapolated"] and fit["reason"] is None
    wide = verdict.fit_quadratic([(lr, parabola(lr)) for lr in GRID], window=2)
    assert wide["lr_opt"] == pytest.approx(1.3e-3, rel=1e-9) and len(wide["window"]) == 5


def test_the_fit_with_noisy_seeds_and_its_bootstrap_interval():
    rng = np.random.default_rng(1)
    runs = [(lr, seed, parabola(lr) + rng.normal(0, 0.01)) for seed in range(5) for lr in GRID]
    fit = verdict.fit_quadratic([(lr, y) for lr, _, y in runs])
    assert fit["lr_opt"] == pytest.approx(1.3e-3, rel=0.25) and fit["loss_opt"] == pytest.approx(1.8, abs=0.02)
    boot = verdict.bootstrap_fit(runs, n_boot=300, seed=0)
    assert boot["lr_opt_ci"][0] < 1.3e-3 < boot["lr_opt_ci"][1] and boot["loss_opt_ci"][0] < fit["loss_opt"] < boot["loss_opt_ci"][1]
    assert boot == verdict.bootstrap_fit(runs, n_boot=300, seed=0)  # a fixed RNG seed: the same report every time
    assert boot["n_ok"] + boot["n_failed"] == 300 and boot["distinct_resamples"] == 126


def test_the_fit_refuses_an_unbracketed_or_concave_optimum():
    edge = verdict.fit_quadratic([(lr, parabola(lr, lr_opt=1e-1)) for lr in GRID])
    assert edge["lr_opt"] is None and "highest of the grid" in edge["reason"] and edge["best_lr"] == GRID[-1]
    assert "needs 3" in verdict.fit_quadratic([(1e-3, 2.0), (1e-2, 1.9)])["reason"]
    # the best point is bracketed, but the least-squares fit over its 2 neighbours each side bends the wrong way
    flat = verdict.fit_quadratic([(lr, y) for lr, y in zip(GRID, [3, 1.0, 1.05, 0.99, 1.05, 1.0, 3])], window=2)
    assert flat["lr_opt"] is None and "not convex" in flat["reason"]


def test_welch_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n1, n2, s1, s2, shift in [(2, 2, 0.01, 0.02, 0.01), (3, 5, 0.01, 0.05, -0.02), (5, 3, 0.2, 0.01, 0.3),
                                  (10, 7, 1.0, 1.0, 0.0), (4, 4, 0.01, 0.01, 0.5)]:
        a, b = rng.normal(shift, s1, n1), rng.normal(0, s2, n2)
        ours, ref = verdict.welch(a, b), stats.ttest_ind(a, b, equal_var=False)
        assert ours["t"] == pytest.approx(ref.statistic, rel=1e-12)
        assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
        assert ours["df"] == pytest.approx(ref.df, rel=1e-12)
        pooled = math.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2))
        assert ours["g"] == pytest.approx((a.mean() - b.mean()) / pooled * (1 - 3 / (4 * (n1 + n2) - 9)))
    special = pytest.importorskip("scipy.special")
    for a_, b_, x in [(0.5, 0.5, 0.3), (3.7, 0.5, 0.99), (40, 0.5, 0.2), (1.0, 2.5, 0.999999)]:
        assert verdict.betainc(a_, b_, x) == pytest.approx(special.betainc(a_, b_, x), rel=1e-12)


def test_welch_needs_two_seeds_on_each_side():
    res = verdict.welch([1.0], [1.1, 1.2])
    assert res["p"] is None and "needs at least 2 seeds" in res["reason"]


def test_holm_adjusts_in_order():
    assert verdict.holm([0.01, None, 0.04, 0.03]) == pytest.approx([0.03, None, 0.06, 0.06])


def test_steps_to_target_interpolates_between_eval_points_and_says_not_reached():
    curve = [[0, 5.0], [10, 3.0], [20, 2.0], [30, 1.5]]
    assert verdict.steps_to_target(curve, 2.5) == 15.0  # halfway between the eval points at 10 and 20
    assert verdict.steps_to_target(curve, 3.0) == 10.0  # an eval point exactly at the target
    assert verdict.steps_to_target(curve, 6.0) == 0.0
    assert verdict.steps_to_target(curve, 1.0) is None


def fake_runs(seeds, lrs=GRID[1:6], labels=("uniform", "llr")):
    runs = []
    for k, label in enumerate(labels):
        for lr in lrs:
            for seed in seeds:
                final = parabola(lr, lr_opt=1.3e-3 / (1 + 2 * k)) + 0.01 * k + 0.003 * seed
                evals = [[0, 5.5], [50, final + 1.0], [100, final]]
                runs.append(dict(label=label, lr=lr, seed=seed, status=verdict.FINISHED, final_val_loss=final, evals=evals,
                                 tokens_per_iter=1000))
    return runs


def test_one_seed_gives_no_p_value_and_the_report_says_so():
    runs = fake_runs([0])
    analysis = verdict.analyze(runs, ["uniform", "llr"], baseline="uniform", target=2.0, n_boot=50)
    llr = analysis["strategies"]["llr"]
    assert llr["test"]["p"] is None and llr["fit"]["lr_opt"] == pytest.approx(1.3e-3 / 3, rel=1e-6)
    assert "2 seeds" in llr["bootstrap"]["reason"]
    report = verdict.markdown(analysis, runs, "python eval/sweep.py --seeds 1", ["uniform", "llr"])
    assert "no p-value: needs at least 2 seeds on each side, has 1 and 1" in report
    assert "python eval/sweep.py --seeds 1" in report


def test_diverged_runs_are_data_points_left_out_of_the_fits():
    runs = fake_runs([0, 1, 2])
    bad = next(r for r in runs if r["label"] == "llr" and r["lr"] == GRID[5] and r["seed"] == 1)
    bad.update(status=verdict.DIVERGED, final_val_loss=None, message="training diverged: train loss is nan at iter 7")
    analysis = verdict.analyze(runs, ["uniform", "llr"], baseline="uniform", target=1.85, n_boot=100)
    cell = next(g for g in analysis["strategies"]["llr"]["grid"] if g["lr"] == GRID[5])
    assert cell["n"] == 2 and cell["excluded"][0]["status"] == "diverged"
    assert any("diverged" in n and "left out" in n for n in analysis["notes"])
    test = analysis["strategies"]["llr"]["test"]
    assert test["p"] is not None and test["n"] == 3 and test["diff"] > 0  # llr's floor is 0.01 higher
    tt = analysis["strategies"]["uniform"]["to_target"]
    assert tt["n_reached"] == 3 and tt["mean_steps"] == pytest.approx(
        np.mean([50 + (r["final_val_loss"] + 1 - 1.85) / 1.0 * 50 for r in runs if r["label"] == "uniform" and r["lr"] == GRID[3]]))
    assert tt["mean_tokens"] == pytest.approx(1000 * tt["mean_steps"])
    never = verdict.analyze(runs, ["uniform", "llr"], baseline="uniform", target=0.5, n_boot=0)
    assert all(not x["reached"] for x in never["strategies"]["llr"]["to_target"]["runs"])
    assert "seed 0: not reached" in verdict.markdown(never, runs, "cmd", ["uniform", "llr"])


# --- the grid and bad input ------------------------------------------------------------------------------

def test_grid_syntax():
    assert sweep.parse_lrs("3e-4:3e-2:3") == [3e-4, 3e-3, 3e-2]
    assert sweep.parse_lrs("1e-4:1e-2:7")[1] == 2.154e-4  # 4 significant digits
    assert sweep.parse_lrs("1e-3,3e-3") == [1e-3, 3e-3]
    specs = sweep.parse_strategies("uniform,llr:llr_s1=0.5,llr_s2=2,blockwise:lrs=1e-5/1e-4", [1e-3])
    assert [(s["label"], s["lrs"]) for s in specs] == [("uniform", [1e-3]), ("llr:llr_s1=0.5,llr_s2=2", [1e-3]),
                                                      ("blockwise", [1e-5, 1e-4])]
    assert sweep.tag_of("llr:llr_embed=data") == "llr_llr_embed-data"  # the directory names of earlier sweeps
    literal = sweep.parse_strategies("uniform:lr_mult=[('embed', 10.0), ('head', 2.0)],warmup_iters=5,llr", [None])
    assert [s["overrides"] for s in literal] == [[("lr_mult", "[('embed', 10.0), ('head', 2.0)]"), ("warmup_iters", "5")], []]


@pytest.mark.parametrize("argv, message", [
    (["--lrs", "1e-2:1e-3:3"], "--lrs='1e-2:1e-3:3'"),
    (["--lrs", "0,1e-3"], "must be positive"),
    (["--strategies", "uniform,llr", "--baseline", "adamw"], "--baseline='adamw' is not one of the strategies"),
    (["--strategies", "llr:llr_s1"], "needs a value"),
    (["--strategies", "uniform,uniform"], "appears twice"),
    (["--", "--seed=3"], "--seed after `--`: the sweep sets it"),
    (["--target", "low"], "--target='low'"),
])
def test_bad_arguments_stop_the_sweep_before_anything_runs(argv, message, tmp_path):
    with pytest.raises(SystemExit, match=message.replace("[", r"\[")):
        sweep.main(argv + ([] if "--" in argv else ["--out", str(tmp_path)]))
    assert not any(tmp_path.iterdir())


def test_unknown_strategies_and_keys_fail_with_train_py_s_message_before_any_run(tmp_path):
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "eval/sweep.py", "--strategies", "uniform,adamw_typo,llr:llr_s9=1", "--lrs", "1e-3",
                           "--seeds", "1", "--out", str(out), "--jobs", "2"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "nothing was run" in proc.stderr
    assert "adamw_typo: config error: unknown strategy 'adamw_typo'" in proc.stderr
    assert "llr:llr_s9=1: config error: unknown config key 'llr_s9'; did you mean" in proc.stderr
    assert "uniform:" not in proc.stderr and not out.exists()


# --- a tiny real sweep ----------------------------------------------------------------------------------

class Killed(Exception):
    pass


def interrupt_at_third_checkpoint(args, monkeypatch):
    """Run train.py's loop in this process and stop it like a kill between its checkpoints of iter 2 and 4: the
    directory is left with ckpt.pt of iter 2 and metrics.jsonl up to iter 3."""
    import torch
    import train
    real, calls = train.save_checkpoint, []

    def save(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        return real(*a, **kw)
    monkeypatch.setattr(train, "save_checkpoint", save)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(Killed):
            train.train(train.parse_config(args))
    finally:
        torch.set_num_threads(threads)
        monkeypatch.undo()


def test_a_tiny_sweep_end_to_end_then_resumed(text_dataset, tmp_path, capsys, monkeypatch):  # noqa: F811
    out = tmp_path / "sweep"
    argv = ["--strategies", "uniform,llr:llr_min_evals=8", "--lrs", "1e-3:1e-2:3", "--seeds", "2", "--jobs", "2", "--threads", "1",
            "--out", str(out), "--bootstrap", "100", "--", "--model=llama_nano", "--block_size=32", "--batch_size=4",
            "--eval_tokens=256", "--dtype=float32", "--warmup_iters=1", "--llr_every=2", "--llr_ramp=1",
            f"--dataset={text_dataset}", "--max_iters=4", "--eval_interval=2", "--log_interval=1"]
    assert sweep.main(argv) == 0
    results = json.load(open(out / "results.json"))
    runs = results["runs"]
    assert len(runs) == 12 and all(r["status"] == "finished" and r["action"] == "fresh" for r in runs)
    assert all([e[0] for e in r["evals"]] == [0, 2, 4] for r in runs)
    report = (out / "report.md").read_text()
    assert results["command"] in report and "python eval/sweep.py --strategies uniform,llr:llr_min_evals=8" in report
    assert "| llr:llr_min_evals=8 | " in report and "Hedges' g" in report
    assert all((out / f).exists() for f in ("loss_vs_lr.png", "curves.png", "steps_to_target.png"))
    test = results["analysis"]["strategies"]["llr:llr_min_evals=8"]["test"]
    assert test["p"] is not None and 0 <= test["p"] <= 1

    by_key = {(r["label"], r["lr"], r["seed"]): out / r["dir"] for r in runs}
    deleted = by_key[("uniform", 1e-3, 1)]
    interrupted = by_key[("llr:llr_min_evals=8", 1e-2, 0)]
    subprocess.run(["rm", "-r", str(deleted)], check=True)
    uninterrupted = json.loads(open(interrupted / "metrics.jsonl").readlines()[-1])["val_loss"]
    for name in ("ckpt.pt", "metrics.jsonl", "config.json"):
        os.remove(interrupted / name)
    interrupt_at_third_checkpoint(json.load(open(interrupted / "sweep.json"))["args"], monkeypatch)
    assert load_checkpoint(interrupted)["iter_num"] == 2
    head = open(interrupted / "metrics.jsonl").readlines()
    assert [json.loads(l)["iter"] for l in head] == [0, 1, 2, 3]
    untouched = {k: os.path.getmtime(d / "metrics.jsonl") for k, d in by_key.items() if d not in (deleted, interrupted)}

    capsys.readouterr()
    assert sweep.main(argv) == 0
    assert "12 runs: 10 kept, 1 to resume, 1 to start" in capsys.readouterr().out
    again = {(r["label"], r["lr"], r["seed"]): r for r in json.load(open(out / "results.json"))["runs"]}
    assert again[("uniform", 1e-3, 1)]["action"] == "fresh" and again[("llr:llr_min_evals=8", 1e-2, 0)]["action"] == "resume"
    assert all(r["status"] == "finished" for r in again.values())
    assert all(os.path.getmtime(by_key[k] / "metrics.jsonl") == t for k, t in untouched.items())  # nothing else reran
    lines = open(interrupted / "metrics.jsonl").readlines()
    assert lines[:2] == head[:2] and [json.loads(l)["iter"] for l in lines] == [0, 1, 2, 3, 4]  # from its iter 2 on
    assert json.loads(lines[-1])["val_loss"] == pytest.approx(uninterrupted, rel=1e-5)
    assert "--init_from=resume" in (interrupted / "stdout.txt").read_text()


def test_a_diverged_run_is_a_result_of_the_sweep_not_a_crash(text_dataset, tmp_path):  # noqa: F811
    out = tmp_path / "sweep"
    argv = ["--strategies", "uniform", "--lrs", "1e-3,1e30", "--seeds", "1", "--jobs", "2", "--threads", "1", "--out", str(out),
            "--no_plots", "--", "--model=llama_nano", "--block_size=32", "--batch_size=4", "--eval_tokens=256", "--dtype=float32",
            "--warmup_iters=0", "--grad_clip=0", f"--dataset={text_dataset}", "--max_iters=3", "--eval_interval=3"]
    assert sweep.main(argv) == 0
    runs = {r["lr"]: r for r in json.load(open(out / "results.json"))["runs"]}
    assert runs[1e-3]["status"] == "finished" and runs[1e30]["status"] == "diverged"
    assert "training diverged" in runs[1e30]["message"]
    report = (out / "report.md").read_text()
    assert "(1 diverged)" in report and "left out of the fits and tests" in report
    assert sweep.main(["--plan"] + argv) == 0  # a diverged run is kept as a result: nothing to rerun
    assert json.load(open(out / runs[1e30]["dir"] / "sweep.json"))["attempts"] == 1


def test_placement_one_run_per_gpu_or_per_gpu_group_under_torchrun(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,5,7")
    gpus = sweep.detect_gpus("auto")
    assert gpus == ["2", "3", "5", "7"] and sweep.detect_gpus("none") == [] and sweep.detect_gpus("0,1") == ["0", "1"]
    assert [s["gpus"] for s in sweep.slots_of(gpus, 1, 0, 0)] == ["2", "3", "5", "7"]
    assert [s["gpus"] for s in sweep.slots_of(gpus, 2, 0, 0)] == ["2,3", "5,7"]
    with pytest.raises(SystemExit, match="needs 8 GPUs per run"):
        sweep.slots_of(gpus, 8, 0, 0)
    cpu = sweep.slots_of([], 1, 3, 2)
    assert len(cpu) == 3 and all(s == dict(gpus="", threads=2) for s in cpu)
    run = dict(args=["--max_iters=4"], action="resume")
    assert sweep.Launcher(cpu, 1).command(run) == [sys.executable, "train.py", "--max_iters=4", "--init_from=resume"]
    assert sweep.Launcher(cpu, 2).command(dict(run, action="fresh"))[:5] == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert sweep.detect_gpus("auto") == []


def test_fine_tuning_is_not_judged_by_its_first_loss_but_pretraining_is(tmp_path):
    # a classifier's val loss can end above its first while it learns (overconfident on the errors it still makes)
    rows = [dict(iter=0, val_loss=0.69), dict(iter=28, val_loss=0.71), dict(iter=56, val_loss=0.74, val_acc=0.58)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = dict(dir=str(tmp_path), max_iters=56)
    assert sweep.outcome(dict(run, script="finetune.py"))["status"] == "finished"
    pretraining = sweep.outcome(dict(run, script="train.py"))
    assert pretraining["status"] == "diverged" and "not below its first 0.6900" in pretraining["message"]
    (tmp_path / "metrics.jsonl").write_text(json.dumps(dict(iter=0, val_loss=0.69)) + "\n" + json.dumps(dict(iter=56, val_loss=float("nan"))) + "\n")
    assert sweep.outcome(dict(run, script="finetune.py"))["status"] == "diverged"  # a non-finite loss is, for both
