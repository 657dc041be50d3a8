"""eval/lawfit.py: learning-rate laws from ladders of synthetic cells whose true law is known: the fit, its
bootstrap interval, unbracketed cells, too few cells, the held-out penalty, LR sensitivity, the gap to a baseline,
the effective-LR axis, the sp-vs-muP width exponent, and the files the command writes."""
import json
import math
import re

import numpy as np
import pytest

from eval import lawfit, verdict

SIZES = [(100_000, "s1"), (400_000, "s2"), (1_600_000, "s3")]
BUDGETS = [1_000_000, 4_000_000, 16_000_000]
STEPS = [-3, -2, -1, 0, 1, 2, 3]  # a cell's grid: 7 LRs a factor 2 apart around its optimum


def true_lr(n, d, C=2.0, a=-0.35, b=-0.1):
    return C * n ** a * d ** b


def run(label, n, size, d, lr, seed, loss, param="sp", **extra):
    return dict(label=label, name=label.partition(":")[0], overrides=label.partition(":")[2].split(",") if ":" in label else [],
                lr=lr, seed=seed, status=verdict.FINISHED, final_val_loss=loss, evals=[[0, 5.5], [100, loss]], size=size,
                n_params=n + 50_000, n_params_nonembed=n, tokens=d, parametrization=param, tokenizer="byte",
                tokens_per_iter=2048, **extra)


def ladder(label="uniform", law=dict(), seeds=3, noise=0.004, curvature=0.05, floor=lambda n, d: 2.0 - 0.05 * math.log(n / 1e5),
           sizes=SIZES, budgets=BUDGETS, offset=1.13, shift=lambda n, d: 1.0, center=lambda n, d: 1.0, param="sp", rng_seed=0):
    """Every (size, budget) cell: loss = floor + curvature·(ln η − ln η*)² + noise, η* = law × shift; the grid sits
    around law × center, `offset` away so that the vertex is not a grid point."""
    rng, runs = np.random.default_rng(rng_seed), []
    for n, size in sizes:
        for d in budgets:
            opt = true_lr(n, d, **law) * shift(n, d)
            for k in STEPS:
                lr = float(f"{true_lr(n, d, **law) * center(n, d) * offset * 2.0 ** k:.6g}")
                for s in range(seeds):
                    loss = floor(n, d) + curvature * (math.log(lr) - math.log(opt)) ** 2 + rng.normal(0, noise)
                    runs.append(run(label, n, size, d, lr, s, loss, param))
    return runs


# --- the law -------------------------------------------------------------------------------------------

def test_the_fit_recovers_known_exponents_with_intervals_that_cover_them():
    runs = ladder()
    analysis = lawfit.analyze(runs, ["uniform"], None, n_boot=200)
    law = analysis["strategies"]["uniform"]["law"]
    assert law["reason"] is None and law["cells"] == 9 and law["terms"] == ["ln C", "a", "b"]
    assert law["a"] == pytest.approx(-0.35, abs=0.03) and law["b"] == pytest.approx(-0.1, abs=0.03)
    assert law["a_ci"][0] < -0.35 < law["a_ci"][1] and law["b_ci"][0] < -0.1 < law["b_ci"][1]
    assert law["C_ci"][0] < 2.0 < law["C_ci"][1]
    assert law["a_ci"][1] - law["a_ci"][0] < 0.15  # an interval, not everything
    assert law["n_range"] == [100_000, 1_600_000] and law["d_range"] == [1_000_000, 16_000_000]
    # the loss at the optimum falls as N^p with p = d ln(2 − 0.05 ln(N/1e5)) / d ln N, about −0.025 here; no D trend
    trend = analysis["strategies"]["uniform"]["loss_trend"]
    assert trend["p_ci"][0] < trend["p"] < trend["p_ci"][1] < -0.015 and trend["q_ci"][0] < 0 < trend["q_ci"][1]
    assert lawfit.analyze(runs, ["uniform"], None, n_boot=200) == analysis  # a fixed RNG seed: the same report every time
    json.dumps(analysis)  # the sweep writes it into results.json


def test_noiseless_cells_give_the_law_exactly():
    law = lawfit.analyze(ladder(noise=0.0, seeds=1), ["uniform"], None, n_boot=0)["strategies"]["uniform"]["law"]
    assert law["a"] == pytest.approx(-0.35, abs=1e-9) and law["b"] == pytest.approx(-0.1, abs=1e-9)
    assert law["C"] == pytest.approx(2.0, rel=1e-8) and law["rms_ln"] < 1e-9
    assert lawfit.predict(law, 800_000, 2_000_000) == pytest.approx(true_lr(800_000, 2_000_000), rel=1e-8)


def test_unbracketed_cells_are_excluded_from_the_fit_and_listed():
    # the (s2, 4M) cell's optimum is 20x above its grid: its best grid LR is the highest
    runs = ladder(shift=lambda n, d: 20.0 if (n, d) == (400_000, 4_000_000) else 1.0)
    s = lawfit.analyze(runs, ["uniform"], None, n_boot=50)["strategies"]["uniform"]
    assert s["law"]["cells"] == 8 and s["law"]["a"] == pytest.approx(-0.35, abs=0.03)
    assert s["excluded"] == [dict(size="s2", n=400_000, d=4_000_000,
                                  reason="the best grid LR is the highest of the grid: the optimum is not bracketed, extend --lrs")]
    report = lawfit.markdown(lawfit.analyze(runs, ["uniform"], None, n_boot=0))
    assert "Excluded from the fit:" in report and "- s2 (N 400,000, D 4,000,000): the best grid LR is the highest" in report


@pytest.mark.parametrize("cells, message", [
    ([(0, 0), (0, 1), (1, 0)], "3 bracketed cells: fitting ln C, a, b needs 4: 1 more"),
    ([(0, 0), (0, 1)], "2 bracketed cells: fitting ln C, b needs 3: 1 more"),
    ([(1, 1)], "1 bracketed cells, all at N=400,000 and D=4,000,000: no exponent to fit; a fit of b (or a) needs 3 "
               "bracketed cells over 2 token budgets (or sizes): 2 more"),
    ([(0, 0), (1, 1), (2, 2)], "N and D change together across the 3 bracketed cells, so a and b cannot be told apart"),
])
def test_fewer_cells_than_a_fit_needs_give_no_exponent_and_say_how_many_more(cells, message):
    runs = [r for r in ladder(seeds=2) if (SIZES.index((r["n_params_nonembed"], r["size"])), BUDGETS.index(r["tokens"])) in cells]
    law = lawfit.analyze(runs, ["uniform"], None, n_boot=20)["strategies"]["uniform"]["law"]
    assert law["a"] is None and law["b"] is None and law["C"] is None and message in law["reason"]
    assert lawfit.write_laws(lawfit.analyze(runs, ["uniform"], None, n_boot=0), "/nonexistent") == []  # no law, no file


def test_one_size_fits_b_only_and_says_a_is_not_identifiable():
    runs = [r for r in ladder() if r["size"] == "s2"]
    law = lawfit.analyze(runs, ["uniform"], None, n_boot=100)["strategies"]["uniform"]["law"]
    assert law["a"] is None and law["a_ci"] is None and law["b"] == pytest.approx(-0.1, abs=0.03)
    assert law["a_reason"] == "a is not identifiable: every bracketed cell is at N=400,000"
    assert law["C"] == pytest.approx(2.0 * 400_000 ** -0.35, rel=0.3)  # C absorbs N^a at the one N
    assert lawfit.predict(law, 400_000, 2e6) == pytest.approx(true_lr(400_000, 2e6), rel=0.05)
    assert lawfit.predict(law, 800_000, 2e6) is None


# --- held out, sensitivity ---------------------------------------------------------------------------

def test_held_out_penalty_is_the_loss_at_the_predicted_lr_on_the_cells_curve():
    # exact parabolas; the largest N's optimum sits 1.5x (in its 4M cell 3x) above the law the smaller sizes follow
    k = 0.05
    shift = lambda n, d: (3.0 if d == 4_000_000 else 1.5) if n == 1_600_000 else 1.0  # noqa: E731
    runs = ladder(noise=0.0, seeds=1, curvature=k, floor=lambda n, d: 2.0, offset=1.0, shift=shift, center=shift)
    h = lawfit.analyze(runs, ["uniform"], None, n_boot=0)["strategies"]["uniform"]["held_out"]["N"]
    assert h["held_out"] == 1_600_000 and h["cells_used"] == 6
    rows = {r["d"]: r for r in h["rows"]}
    inside = rows[1_000_000]  # prediction η*/1.5 lies in the fitted window [η*/2, 2η*]: the quadratic is the true curve
    assert inside["predicted"] == pytest.approx(true_lr(1_600_000, 1_000_000), rel=1e-9)
    assert inside["how"] == "fitted quadratic" and inside["best"] == pytest.approx(2.0, abs=1e-12)
    assert inside["penalty"] == pytest.approx(k * math.log(1.5) ** 2, rel=1e-9)
    # prediction η*/3 lies below the window: linear in ln LR between the grid means at η*/4 and η*/2
    outside = rows[4_000_000]
    t = math.log(4 / 3) / math.log(2)
    by_hand = k * math.log(4) ** 2 + t * (k * math.log(2) ** 2 - k * math.log(4) ** 2)
    assert outside["how"] == "linear interpolation between grid means"
    assert outside["penalty"] == pytest.approx(by_hand, rel=1e-6) and outside["ratio"] == pytest.approx(1 / 3, rel=1e-6)  # 6-digit grid
    # without the largest D, the law is refitted on the 16M-free cells and predicts at every size's 16M cell
    assert len(lawfit.analyze(runs, ["uniform"], None, n_boot=0)["strategies"]["uniform"]["held_out"]["D"]["rows"]) == 3


def test_held_out_needs_enough_sizes_left():
    runs = [r for r in ladder(seeds=1) if r["size"] != "s1"]
    h = lawfit.analyze(runs, ["uniform"], None, n_boot=0)["strategies"]["uniform"]["held_out"]["N"]
    assert h["reason"] == ("without the largest N (1,600,000), the bracketed cells left are all at one N: a cannot be "
                           "fitted to predict at another; the check needs 3 values of N")
    runs = [r for r in runs if r["size"] != "s2" or r["tokens"] == 1_000_000]
    h = lawfit.analyze(runs, ["uniform"], None, n_boot=0)["strategies"]["uniform"]["held_out"]["N"]
    assert h["reason"].startswith("without the largest N (1,600,000): 1 bracketed cells left, all at N=400,000 and D=1,000,000")


def test_lr_sensitivity_is_the_mean_capped_excess_loss_around_the_optimum():
    # one cell, η* = 1.2e-3 on a grid a factor √10 apart; ×/÷10 around it holds the grid LRs 3.162e-4 ... 1e-2
    grid, k, opt = [1e-4, 3.162e-4, 1e-3, 3.162e-3, 1e-2, 3.162e-2], 0.3, 1.2e-3
    runs = [run("uniform", 100_000, "s1", 1_000_000, lr, s, 2.0 + k * math.log(lr / opt) ** 2) for lr in grid for s in (0, 1)]
    blown = next(r for r in runs if r["lr"] == 1e-2 and r["seed"] == 1)
    blown.update(status=verdict.DIVERGED, final_val_loss=None, evals=[[0, 5.6]])  # counts at its own loss at init
    cell = lawfit.analyze(runs, ["uniform"], None, n_boot=0)["strategies"]["uniform"]["cells"][0]
    assert cell["lr_opt"] == pytest.approx(opt, rel=1e-6)
    capped = {lr: min(2.0 + k * math.log(lr / opt) ** 2, 5.5) for lr in grid[1:5]}  # finished runs: capped at 5.5
    capped[1e-2] = (capped[1e-2] + 5.6) / 2
    by_hand = np.mean(list(capped.values())) - min(capped.values())
    assert cell["sensitivity"]["value"] == pytest.approx(by_hand, rel=1e-9) and cell["sensitivity"]["n_lrs"] == 4
    assert cell["sensitivity"]["n_diverged"] == 1
    for r in runs:
        r["evals"] = [[100, r["final_val_loss"]]]
    no_init = lawfit.analyze(runs, ["uniform"], None, n_boot=0)["strategies"]["uniform"]["cells"][0]["sensitivity"]
    assert no_init["value"] is None and "no eval at iteration 0" in no_init["reason"]


# --- the gap, the effective axis, sp vs muP --------------------------------------------------------------

def test_the_gap_to_the_baseline_grows_shrinks_or_stays():
    base = ladder("uniform", seeds=3, noise=0.002, rng_seed=1)
    lower = lambda g: (lambda n, d: 2.0 - 0.05 * math.log(n / 1e5) + g(n, d))  # noqa: E731
    grows = ladder("llr", seeds=3, noise=0.002, rng_seed=2, floor=lower(lambda n, d: -0.01 * math.log(n / 1e5)))
    shrinks = ladder("tempbalance", seeds=3, noise=0.002, rng_seed=3, floor=lower(lambda n, d: -0.05 + 0.01 * math.log(n / 1e5)))
    stays = ladder("alphadecay", seeds=3, noise=0.002, rng_seed=4, floor=lower(lambda n, d: -0.02))
    analysis = lawfit.analyze(base + grows + shrinks + stays, ["uniform", "llr", "tempbalance", "alphadecay"], "uniform", n_boot=200)
    g = analysis["gaps"]
    assert g["llr"]["g_n"] == pytest.approx(-0.01, abs=0.003) and g["llr"]["g_n_ci"][1] < 0
    assert (g["llr"]["trend_n"], g["llr"]["trend_d"]) == ("grows", "stays")
    assert (g["tempbalance"]["trend_n"], g["tempbalance"]["trend_d"]) == ("shrinks", "stays")
    assert (g["alphadecay"]["trend_n"], g["alphadecay"]["trend_d"]) == ("stays", "stays")
    assert g["alphadecay"]["mean_gap"] == pytest.approx(-0.02, abs=0.003) and len(g["alphadecay"]["cells"]) == 9
    assert all(r["gap_ci"][0] < -0.02 < r["gap_ci"][1] for r in g["alphadecay"]["cells"][:3])
    report = lawfit.markdown(analysis)
    assert "**llr**" in report and "interval covers 0" in report  # −0.01·ln 2 = −0.0069 per doubling
    assert re.search(r"with N the gap grows \(-0\.00[5-8]\d \[-0\.\d+, -0\.\d+\] per doubling\)", report)
    assert "uniform" not in g


def test_the_effective_lr_axis_fits_in_its_unit_and_excludes_cells_without_it():
    runs = ladder(seeds=2)
    for r in runs:
        if r["size"] != "s1" or r["tokens"] != 1_000_000:  # one cell's runs have no monitor record
            r["effective_lr"] = 0.1 * r["lr"] * (1 + 0.01 * r["seed"])
    analysis = lawfit.analyze(runs, ["uniform"], None, x="effective", n_boot=50)
    s = analysis["strategies"]["uniform"]
    assert s["excluded"] == [dict(size="s1", n=100_000, d=1_000_000, reason="no effective_lr logged for 14 of its 14 finished runs")]
    nominal = lawfit.analyze(runs, ["uniform"], None, n_boot=0)["strategies"]["uniform"]["law"]
    assert s["law"]["a"] == pytest.approx(nominal["a"], abs=0.02) and s["law"]["C"] == pytest.approx(0.1 * nominal["C"], rel=0.2)
    assert "effective LR" in lawfit.markdown(analysis)
    assert lawfit.write_laws(analysis, "/nonexistent") == [] and "no law files" in analysis["notes"][-1]


def test_sp_and_mup_width_exponents_side_by_side():
    one_d = [1_000_000]
    sp = ladder("uniform", budgets=one_d, law=dict(a=-0.5), rng_seed=5)
    mup = ladder("uniform:parametrization=mup,base_width=64", budgets=one_d, law=dict(a=0.0), param="mup", rng_seed=6)
    analysis = lawfit.analyze(sp + mup, ["uniform", "uniform:parametrization=mup,base_width=64"], "uniform", n_boot=200)
    (row,) = analysis["widths"]
    assert row["strategy"] == "uniform" and row["mup"]["label"] == "uniform:parametrization=mup,base_width=64"
    assert row["sp"]["a"] == pytest.approx(-0.5, abs=0.03) and row["sp"]["a_ci"][1] < -0.4
    assert row["mup"]["a"] == pytest.approx(0.0, abs=0.03) and row["mup"]["a_ci"][0] < 0 < row["mup"]["a_ci"][1]
    report = lawfit.markdown(analysis)
    assert "| strategy | mup | sp |" in report and "b is not identifiable: every bracketed cell is at D=1,000,000" in report


# --- files ---------------------------------------------------------------------------------------------

def test_the_command_writes_the_report_the_figures_and_a_law_file_per_strategy(tmp_path, capsys):
    runs = ladder("uniform", seeds=2) + ladder("llr", seeds=2, law=dict(C=3.0), rng_seed=7)
    runs += [dict(run("llr", 100_000, "s1", 1_000_000, 1e-3, 9, None), status=verdict.PENDING)]
    command = "python eval/sweep.py --strategies uniform,llr --sizes s1,s2,s3 --tokens 1e6,4e6,1.6e7"
    (tmp_path / "results.json").write_text(json.dumps(dict(command=command, baseline="uniform", runs=runs)))
    assert lawfit.main([str(tmp_path), "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out
    assert "### llr" in printed and "Against the baseline (uniform)" in printed
    names = {p.name for p in tmp_path.iterdir()}
    assert {"law.md", "law.json", "law_uniform.json", "law_llr.json", "law_lr_vs_n.png", "law_sensitivity.png", "law_gap.png"} <= names
    law = json.loads((tmp_path / "law_llr.json").read_text())
    assert law["format"] == "nanolr-lr-law-1" and law["strategy"] == "llr" and law["label"] == "llr"
    assert (law["parametrization"], law["tokenizer"], law["x"], law["n"]) == ("sp", "byte", "nominal", "non_embedding")
    assert law["C"] == pytest.approx(3.0, rel=0.5) and law["a"] == pytest.approx(-0.35, abs=0.03) and law["cells"] == 9
    assert law["a_ci"][0] < law["a"] < law["a_ci"][1] and law["b_ci"][0] < law["b"] < law["b_ci"][1]
    assert law["n_range"] == [100_000, 1_600_000] and law["tokens_per_step"] == [2048] and law["command"] == command
    assert law["source"] == str(tmp_path / "results.json")
    with pytest.raises(SystemExit, match="not one of the strategies: uniform, llr"):
        lawfit.main([str(tmp_path), "--baseline", "adamw"])
    with pytest.raises(SystemExit, match="run eval/sweep.py with --out"):
        lawfit.main([str(tmp_path / "missing")])


def test_a_ladder_across_batches_fits_its_law_at_one_batch_and_lists_the_rest():
    runs = ladder(seeds=1)
    runs += [dict(r, tokens_per_iter=4096, final_val_loss=r["final_val_loss"] + 0.01) for r in ladder(seeds=1, sizes=SIZES[:2])]
    s = lawfit.analyze(runs, ["uniform"], None, n_boot=0)["strategies"]["uniform"]
    assert s["law"]["cells"] == 9 and s["tokens_per_step"] == [2048] and len(s["cells"]) == 15
    assert len(s["excluded"]) == 6 and s["excluded"][0]["reason"].startswith(
        "at 4,096 tokens per step: the law is fitted at one batch, 2,048 (the one with the most bracketed cells)")
