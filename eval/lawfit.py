"""
Learning-rate laws from a ladder: eval/sweep.py over model sizes × token budgets × strategies × LRs × seeds.
numpy only; matplotlib is imported by plots() alone.

    python eval/lawfit.py out/ladder                     # reads out/ladder/results.json; writes law.md, figures, law files
    python eval/lawfit.py out/ladder --x effective --baseline uniform --bootstrap 500

A cell is (strategy label, model size, token budget D). N is the model's non-embedding parameter count.
Per strategy:
  - per cell, the optimal LR η* and the loss there: eval/verdict.py's quadratic in ln LR around the best grid
    point, with its bootstrap interval over seeds. A cell whose best grid LR is an end of its grid (not bracketed)
    or whose fit is not convex has no η*: it is left out of every fit and listed with the reason;
  - the law η*(N, D) = C·N^a·D^b: least squares of ln η* on ln N and ln D over the bracketed cells. An exponent is
    fitted only when its variable takes two or more values (one N: b and C only, a is not identifiable); a fit of k
    terms needs k + 1 cells, and says how many more it needs when it has fewer;
  - its interval, by a two-level bootstrap: draw the bracketed cells with replacement; within each drawn cell draw
    its seeds with replacement (a seed brings its runs at every LR of the cell), refit that cell's quadratic (a draw
    with no bracketed convex fit drops the cell from this resample), then refit the law. 2.5 and 97.5 percentiles
    of a, b and ln C over the resamples that could fit the same terms, from a fixed RNG seed;
  - the loss at the optimum L*(N, D) and its trend, L* ∝ N^p·D^q, fitted and bootstrapped the same way;
  - the held-out check: refit without the cells of the largest N (then, separately, of the largest D), predict
    η* at each held-out cell and read that cell's loss at the prediction: from its fitted quadratic when the
    prediction lies inside the fitted window, else by linear interpolation in ln LR between its grid means (said
    which); the penalty is that loss minus the cell's best (its fitted loss at the optimum, else its best grid mean);
  - LR sensitivity (Wortsman et al. 2023, arXiv 2309.14322, section 2.2): the mean, over the grid LRs within
    ×/÷ SENSITIVITY_FACTOR of the cell's nominal optimum, of min(loss, loss at initialisation) − the lowest of
    those losses. Each run is capped at its own loss at iteration 0 (its first eval); a diverged run counts at
    the cap, which is what the cap is for; seeds are averaged per LR before the mean over LRs;
  - against the baseline: per cell present in both, the gap L*(strategy) − L*(baseline), and the gap as
    g0 + g_N·ln N + g_D·ln D with the same bootstrap (a drawn cell brings both strategies' runs, each side's seeds
    drawn separately): the slopes say whether the gap grows, shrinks or stays as N and D grow.
With x='effective', each grid LR's x is the geometric mean of its runs' effective LR (their mean relative update
‖ΔW‖/‖W‖, logged by the monitor) over all seeds, and η* and the law are in that unit (no law file then: train.py
sets the nominal learning_rate). Sensitivity stays on the nominal axis. When a strategy was laddered under sp and
under muP, the width exponent a is shown side by side: under muP it should be near 0.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from eval import verdict  # noqa: E402
from eval.runs import tag_of  # noqa: E402  (a law file is named as the sweep names its strategy's directories)

LAW_FORMAT = "nanolr-lr-law-1"
SENSITIVITY_FACTOR = 10.0  # the LR range of the sensitivity: [η*/10, 10·η*], two decades around the optimum
LEVEL = 0.95


# ----------------------------------------------------------------------------------------------
# a cell: its runs, its optimum, its sensitivity

def grid_x(runs, x):
    """{nominal LR: the x of that grid point}: the LR itself, or the geometric mean of the runs' effective LR."""
    if x == "nominal":
        return {r["lr"]: r["lr"] for r in runs}
    return {lr: math.exp(np.mean([math.log(r["effective_lr"]) for r in runs if r["lr"] == lr])) for lr in {r["lr"] for r in runs}}


def seeds_of(runs, gx):
    """{seed: [(x, final loss), ...]} of a cell's usable runs; gx: grid_x of them."""
    by_seed = {}
    for r in runs:
        by_seed.setdefault(r["seed"], []).append((gx[r["lr"]], r["final_val_loss"]))
    return by_seed


def resampled_optimum(by_seed, rng, window):
    """The cell's (η*, L*) after drawing its seeds with replacement; (None, None) when the draw has no optimum."""
    seeds = sorted(by_seed)
    draw = rng.integers(0, len(seeds), len(seeds))
    fit = verdict.fit_quadratic([p for i in draw for p in by_seed[seeds[i]]], window)
    return fit["lr_opt"], fit["loss_opt"]


def loss_at_init(run):
    evals = dict(map(tuple, run.get("evals") or []))
    return evals.get(0)


def sensitivity(runs, center):
    """Wortsman et al.'s LR sensitivity of one cell on the nominal LR axis, over the grid LRs in
    [center/F, center·F]. runs: the cell's finished and diverged runs."""
    caps = [c for c in (loss_at_init(r) for r in runs) if c is not None and math.isfinite(c)]
    if not caps:
        return dict(value=None, reason="no loss at initialisation (no eval at iteration 0) to cap with")
    lo, hi = center / SENSITIVITY_FACTOR, center * SENSITIVITY_FACTOR
    per_lr = {}
    for r in runs:
        if not lo <= r["lr"] <= hi:
            continue
        cap = loss_at_init(r) if loss_at_init(r) is not None else float(np.mean(caps))
        loss = r.get("final_val_loss")
        capped = cap if r["status"] == verdict.DIVERGED or loss is None or not math.isfinite(loss) else min(loss, cap)
        per_lr.setdefault(r["lr"], []).append(capped)
    if not per_lr:
        return dict(value=None, reason="no grid LR in range")
    means = [float(np.mean(v)) for v in per_lr.values()]
    return dict(value=float(np.mean(means) - min(means)), n_lrs=len(means), range=[lo, hi],
                n_diverged=sum(1 for r in runs if r["status"] == verdict.DIVERGED and lo <= r["lr"] <= hi), reason=None)


def analyze_cell(runs, x, window, n_boot, boot_seed):
    """One cell's figures; private data (its seeds' points) under '_seeds'."""
    r0 = runs[0]
    cell = dict(size=r0.get("size"), n=r0["n_params_nonembed"], d=r0["tokens"], n_params=r0.get("n_params"),
                tokens_per_step=r0.get("tokens_per_iter"), lr_opt=None, lr_opt_ci=None, loss_opt=None, loss_opt_ci=None,
                best_lr=None, best_mean=None, bracketed=False, reason=None, sensitivity=None)
    ok = [r for r in runs if verdict.usable(r)]
    grid = verdict.grid_means([(r["lr"], r["final_val_loss"]) for r in ok]) if ok else ([], [], [])
    cell["grid"] = [dict(lr=lr, mean=m, n=k) for lr, m, k in zip(*grid)]
    cell["n_diverged"] = sum(1 for r in runs if r["status"] == verdict.DIVERGED)
    # sensitivity around the nominal optimum (the best grid LR when the optimum is not bracketed)
    nominal = verdict.fit_quadratic([(r["lr"], r["final_val_loss"]) for r in ok], window) if ok else dict(lr_opt=None)
    center = nominal["lr_opt"] or nominal.get("best_lr")
    scored = [r for r in runs if verdict.usable(r) or r["status"] == verdict.DIVERGED]
    cell["sensitivity"] = sensitivity(scored, center) if center else dict(value=None, reason="no finished run")
    if not ok:
        return dict(cell, reason="no finished run")
    if x == "effective":
        missing = [r for r in ok if not (r.get("effective_lr") or 0) > 0]
        if missing:
            return dict(cell, reason=f"no effective_lr logged for {len(missing)} of its {len(ok)} finished runs")
    gx = grid_x(ok, x)
    by_seed = seeds_of(ok, gx)
    for g in cell["grid"]:
        g["x"] = gx[g["lr"]]  # the grid point on the fit's axis (the held-out check reads the curve there)
    fit = verdict.fit_quadratic([p for s in sorted(by_seed) for p in by_seed[s]], window)
    cell.update(best_lr=fit.get("best_lr"), best_mean=fit.get("best_mean"), _fit=fit, _seeds=by_seed)
    if fit["lr_opt"] is None:
        return dict(cell, reason=fit["reason"])
    boot = verdict.bootstrap_fit([(xv, s, y) for s, pts in by_seed.items() for xv, y in pts], window, n_boot, boot_seed)
    return dict(cell, lr_opt=fit["lr_opt"], loss_opt=fit["loss_opt"], bracketed=True, extrapolated=fit["extrapolated"],
                lr_opt_ci=boot.get("lr_opt_ci"), loss_opt_ci=boot.get("loss_opt_ci"), interval_note=boot.get("reason"))


# ----------------------------------------------------------------------------------------------
# laws: least squares in logs, the terms the cells can identify

def free_terms(ns, ds):
    return ["ln C"] + (["a"] if len(set(ns)) > 1 else []) + (["b"] if len(set(ds)) > 1 else [])


def design(ns, ds, terms):
    cols = [np.ones(len(ns))] + ([np.log(ns)] if "a" in terms else []) + ([np.log(ds)] if "b" in terms else [])
    return np.stack(cols, 1)


def solve(ns, ds, ys, terms):
    """Coefficients {ln C, a, b} of ys ≈ ln C + a ln N + b ln D over the given terms; None when not determined."""
    X = design(np.asarray(ns, float), np.asarray(ds, float), terms)
    if len(ys) < len(terms) + 1 or np.linalg.matrix_rank(X) < len(terms):
        return None
    coef, *_ = np.linalg.lstsq(X, np.asarray(ys, float), rcond=None)
    out = dict(zip(terms, map(float, coef)))
    out["rms"] = float(np.sqrt(np.mean((X @ coef - ys) ** 2)))
    return out


def fit_terms(ns, ds, what="cells"):
    """(terms, None) or (None, why not): the terms a log-log fit over these cells can identify."""
    k, terms = len(ns), free_terms(ns, ds)
    if len(terms) == 1:
        return None, (f"{k} {what}, all at N={ns[0]:,} and D={ds[0]:,}" if k else f"no {what}") + \
            f": no exponent to fit; a fit of b (or a) needs 3 {what} over 2 token budgets (or sizes): {max(1, 3 - k)} more"
    if k >= len(terms) and np.linalg.matrix_rank(design(np.asarray(ns, float), np.asarray(ds, float), terms)) < len(terms):
        return None, (f"N and D change together across the {k} {what}, so a and b cannot be told apart: "
                      "add a cell at another pairing of size and token budget")
    if k < len(terms) + 1:
        return None, f"{k} {what}: fitting {', '.join(terms)} needs {len(terms) + 1}: {len(terms) + 1 - k} more"
    return terms, None


def percentile(values, level=LEVEL):
    return [float(v) for v in np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])] if values else None


def law_of(cells, terms, n_boot, rng, window):
    """The law of η* and the trend of L* over bracketed cells, each with its two-level bootstrap interval."""
    ns, ds = [c["n"] for c in cells], [c["d"] for c in cells]
    lr = solve(ns, ds, [math.log(c["lr_opt"]) for c in cells], terms)
    loss = solve(ns, ds, [math.log(c["loss_opt"]) for c in cells], terms)
    draws, failed = {k: [] for k in ("lr", "loss")}, 0
    for _ in range(n_boot):
        rows = [resampled_optimum(cells[i]["_seeds"], rng, window) + (cells[i]["n"], cells[i]["d"])
                for i in rng.integers(0, len(cells), len(cells))]
        rows = [r for r in rows if r[0] is not None]
        b_lr = solve([r[2] for r in rows], [r[3] for r in rows], [math.log(r[0]) for r in rows], terms) if rows else None
        b_loss = solve([r[2] for r in rows], [r[3] for r in rows], [math.log(r[1]) for r in rows], terms) if rows else None
        if b_lr is None or b_loss is None:
            failed += 1
            continue
        draws["lr"].append(b_lr)
        draws["loss"].append(b_loss)
    law = dict(terms=terms, C=math.exp(lr["ln C"]), a=lr.get("a"), b=lr.get("b"), rms_ln=lr["rms"], cells=len(cells),
               n_range=[min(ns), max(ns)], d_range=[min(ds), max(ds)], n_boot=n_boot, n_failed=failed, level=LEVEL,
               a_ci=percentile([d["a"] for d in draws["lr"]]) if "a" in terms else None,
               b_ci=percentile([d["b"] for d in draws["lr"]]) if "b" in terms else None,
               C_ci=[math.exp(v) for v in percentile([d["ln C"] for d in draws["lr"]])] if draws["lr"] else None, reason=None)
    trend = dict(p=loss.get("a"), q=loss.get("b"), rms_ln=loss["rms"],
                 p_ci=percentile([d["a"] for d in draws["loss"]]) if "a" in terms else None,
                 q_ci=percentile([d["b"] for d in draws["loss"]]) if "b" in terms else None)
    return law, trend


def predict(law, n, d):
    """η* of a law at (N, D); None when the law cannot say (an exponent it could not fit, at another N or D)."""
    if (law["a"] is None and n != law["n_range"][0]) or (law["b"] is None and d != law["d_range"][0]):
        return None
    return law["C"] * n ** (law["a"] or 0.0) * d ** (law["b"] or 0.0)


# ----------------------------------------------------------------------------------------------
# the held-out check

def loss_at(cell, lr):
    """(loss, how) of a cell at an LR: its fitted quadratic inside the fitted window, else linear in ln LR between
    its grid means; (None, why) outside its grid."""
    fit = cell.get("_fit") or {}
    if fit.get("a") is not None and fit.get("window") and fit["window"][0] <= lr <= fit["window"][-1] and fit["a"] > 0:
        return float(verdict.fit_curve(fit, [lr])[0]), "fitted quadratic"
    pts = sorted((g["x"], g["mean"]) for g in cell["grid"] if "x" in g)
    if len(pts) < 2 or not pts[0][0] <= lr <= pts[-1][0]:
        return None, "outside the cell's grid: no loss measured there"
    xs, ys = np.log([p[0] for p in pts]), [p[1] for p in pts]
    return float(np.interp(math.log(lr), xs, ys)), "linear interpolation between grid means"


def held_out(cells, axis, rng, window):
    """Refit without the cells at the largest N (axis 'N') or D (axis 'D'); predict there; the penalty."""
    key = "n" if axis == "N" else "d"
    analysed = [c for c in cells if c["grid"]]
    if not analysed:
        return dict(reason="no cell with finished runs")
    top = max(c[key] for c in analysed)
    train = [c for c in cells if c["bracketed"] and c[key] != top]
    terms, why = fit_terms([c["n"] for c in train], [c["d"] for c in train], "bracketed cells left")
    out = dict(axis=axis, held_out=top, cells_used=len(train), rows=[])
    if terms is None:
        return dict(out, reason=f"without the largest {axis} ({top:,}): {why}")
    exponent = "a" if axis == "N" else "b"
    if exponent not in terms:
        return dict(out, reason=f"without the largest {axis} ({top:,}), the bracketed cells left are all at one {axis}: "
                                f"{exponent} cannot be fitted to predict at another; the check needs 3 values of {axis}")
    law, _ = law_of(train, terms, 0, rng, window)
    for c in (c for c in analysed if c[key] == top):
        lr = predict(law, c["n"], c["d"])
        row = dict(size=c["size"], n=c["n"], d=c["d"], predicted=lr, lr_opt=c["lr_opt"])
        if lr is None:
            out["rows"].append(dict(row, reason=f"the refit has no {'a' if law['a'] is None else 'b'}: one value of "
                                                 f"{'N' if law['a'] is None else 'D'} is left, and this cell is at another"))
            continue
        loss, how = loss_at(c, lr)
        best, best_is = (c["loss_opt"], "fitted loss at the optimum") if c["bracketed"] else (c["best_mean"], "best grid mean")
        out["rows"].append(dict(row, loss=loss, how=how, best=best, best_is=best_is, ratio=lr / c["lr_opt"] if c["lr_opt"] else None,
                                penalty=loss - best if loss is not None else None, reason=None if loss is not None else how))
    return out


# ----------------------------------------------------------------------------------------------
# the gap to the baseline

def gap_of(mine, base, n_boot, rng, window):
    """Per common bracketed cell, L*(strategy) − L*(baseline) with its interval; then the gap's slopes in ln N, ln D."""
    where = lambda c: (c["size"], c["d"], c["tokens_per_step"])  # noqa: E731
    pairs = [(c, next(b for b in base if where(b) == where(c))) for c in mine
             if c["bracketed"] and any(where(b) == where(c) and b["bracketed"] for b in base)]
    rows = []
    for c, b in pairs:
        vals = []
        for _ in range(n_boot):
            lc, lb = resampled_optimum(c["_seeds"], rng, window)[1], resampled_optimum(b["_seeds"], rng, window)[1]
            if lc is not None and lb is not None:
                vals.append(lc - lb)
        rows.append(dict(size=c["size"], n=c["n"], d=c["d"], gap=c["loss_opt"] - b["loss_opt"], gap_ci=percentile(vals)))
    paired = {id(c) for c, _ in pairs}
    out = dict(cells=rows, excluded=[dict(size=c["size"], n=c["n"], d=c["d"], reason="no optimum for this strategy here" if not c["bracketed"]
                                          else "no optimum for the baseline here") for c in mine if id(c) not in paired])
    ns, ds = [r["n"] for r in rows], [r["d"] for r in rows]
    terms, why = fit_terms(ns, ds, "cells bracketed on both sides")
    if terms is None:
        return dict(out, reason=why)
    point = solve(ns, ds, [r["gap"] for r in rows], terms)
    slopes, failed = [], 0
    for _ in range(n_boot):
        drawn = []
        for i in rng.integers(0, len(pairs), len(pairs)):
            c, b = pairs[i]
            lc, lb = resampled_optimum(c["_seeds"], rng, window)[1], resampled_optimum(b["_seeds"], rng, window)[1]
            if lc is not None and lb is not None:
                drawn.append((c["n"], c["d"], lc - lb))
        fit = solve([x[0] for x in drawn], [x[1] for x in drawn], [x[2] for x in drawn], terms) if drawn else None
        if fit is None:
            failed += 1
            continue
        slopes.append(fit)
    mean_gap = float(np.mean([r["gap"] for r in rows]))
    out.update(terms=terms, g0=point["ln C"], g_n=point.get("a"), g_d=point.get("b"), mean_gap=mean_gap, n_failed=failed,
               g_n_ci=percentile([s["a"] for s in slopes]) if "a" in terms else None,
               g_d_ci=percentile([s["b"] for s in slopes]) if "b" in terms else None, reason=None)
    for k in ("n", "d"):
        out[f"trend_{k}"] = trend_word(out[f"g_{k}"], out[f"g_{k}_ci"], mean_gap)
    return out


def trend_word(slope, ci, mean_gap):
    """'grows' (moves away from 0 as the variable grows), 'shrinks' (towards 0) or 'stays' (its interval covers 0)."""
    if slope is None:
        return None
    if ci is None or ci[0] <= 0 <= ci[1]:
        return "stays"
    return "grows" if (slope > 0) == (mean_gap > 0) else "shrinks"


# ----------------------------------------------------------------------------------------------
# a ladder's runs -> every figure

def one_batch(cells):
    """(the cells at one batch, the rest): a law of N and D is fitted at one batch, the one with the most bracketed
    cells (then the smallest); a ladder that crosses batches leaves the others out, with the reason."""
    batches = {c["tokens_per_step"] for c in cells}
    if len(batches) < 2:
        return cells, []
    chosen = max(sorted(batches, key=lambda b: b or 0), key=lambda b: sum(c["bracketed"] for c in cells if c["tokens_per_step"] == b))
    rest = [dict(c, in_law=False, reason=f"at {c['tokens_per_step'] or 0:,} tokens per step: the law is fitted at one batch, "
                                         f"{chosen or 0:,} (the one with the most bracketed cells)" + (f"; {c['reason']}" if c["reason"] else ""))
            for c in cells if c["tokens_per_step"] != chosen]
    return [c for c in cells if c["tokens_per_step"] == chosen], rest


def parametrization_of(runs):
    p = runs[0].get("parametrization")
    if p:
        return p
    overrides = dict(kv.split("=", 1) for kv in runs[0].get("overrides") or [])
    return overrides.get("parametrization", "sp")


def analyze(runs, labels, baseline, x="nominal", n_boot=2000, boot_seed=0, window=1):
    """runs: the sweep's run dicts with the ladder fields (size, n_params_nonembed, tokens, parametrization,
    tokenizer, effective_lr). labels: strategy labels in report order. Returns a JSON-serialisable dict."""
    if x not in ("nominal", "effective"):
        raise ValueError(f"x must be 'nominal' or 'effective', got {x!r}")
    rng = np.random.default_rng(boot_seed)
    out = dict(x=x, window=window, n_boot=n_boot, boot_seed=boot_seed, level=LEVEL, baseline=baseline,
               sensitivity_factor=SENSITIVITY_FACTOR, strategies={}, gaps={}, widths=[], notes=[])
    private = {}
    for label in labels:
        mine = [r for r in runs if r["label"] == label and r["status"] != verdict.PENDING]
        ladder = [r for r in mine if r.get("n_params_nonembed") is not None and r.get("tokens") is not None]
        if len(ladder) < len(mine):
            out["notes"].append(f"{label}: {len(mine) - len(ladder)} runs carry no model size or token budget (not a ladder "
                                f"run) and are left out")
        if not mine:
            out["notes"].append(f"{label}: no run has finished yet")
        groups = {}
        for r in ladder:  # a cell: (size, token budget), and its batch when the ladder crosses batches too
            groups.setdefault((r.get("size"), r["tokens"], r.get("tokens_per_iter")), []).append(r)
        cells = [analyze_cell(g, x, window, n_boot, boot_seed)
                 for _, g in sorted(groups.items(), key=lambda kv: (kv[1][0]["n_params_nonembed"], kv[0][1], kv[0][2] or 0))]
        cells, other_batches = one_batch(cells)
        private[label] = cells
        s = dict(label=label, name=(mine or [{}])[0].get("name", label.partition(":")[0]),
                 overrides=(mine or [{}])[0].get("overrides", []), parametrization=parametrization_of(mine) if mine else None,
                 tokenizer=(mine or [{}])[0].get("tokenizer"),
                 tokens_per_step=sorted({c["tokens_per_step"] for c in cells if c["tokens_per_step"]}),
                 excluded=[dict(size=c["size"], n=c["n"], d=c["d"], reason=c["reason"])
                           for c in [c for c in cells if not c["bracketed"]] + other_batches])
        bracketed = [c for c in cells if c["bracketed"]]
        terms, why = fit_terms([c["n"] for c in bracketed], [c["d"] for c in bracketed], "bracketed cells")
        if terms is None:
            s.update(law=dict(reason=why, cells=len(bracketed), a=None, b=None, C=None), loss_trend=None)
        else:
            s["law"], s["loss_trend"] = law_of(bracketed, terms, n_boot, rng, window)
            if "a" not in terms:
                s["law"]["a_reason"] = f"a is not identifiable: every bracketed cell is at N={bracketed[0]['n']:,}"
            if "b" not in terms:
                s["law"]["b_reason"] = f"b is not identifiable: every bracketed cell is at D={bracketed[0]['d']:,}"
        s["held_out"] = {axis: held_out(cells, axis, rng, window) for axis in ("N", "D")}
        s["cells"] = [{k: v for k, v in c.items() if not k.startswith("_")} for c in cells + other_batches]
        out["strategies"][label] = s

    if baseline is not None and baseline not in private:
        out["notes"].append(f"baseline {baseline!r} is not among the strategies: no gaps")
    elif baseline is not None:
        for label in labels:
            if label != baseline:
                out["gaps"][label] = gap_of(private[label], private[baseline], n_boot, rng, window)

    # the width exponent a under each parametrization of the same strategy, side by side
    by_base = {}
    if len({s["parametrization"] for s in out["strategies"].values()} - {None}) > 1:
        for label in labels:
            s = out["strategies"][label]
            if s["parametrization"] is not None:
                by_base.setdefault(base_label(s), {})[s["parametrization"]] = label
    for base, per in by_base.items():
        if len(per) > 1:
            out["widths"].append(dict(strategy=base, **{p: dict(label=lab, a=out["strategies"][lab]["law"].get("a"),
                                                               a_ci=out["strategies"][lab]["law"].get("a_ci"),
                                                               reason=out["strategies"][lab]["law"].get("a_reason")
                                                               or out["strategies"][lab]["law"].get("reason"))
                                                        for p, lab in per.items()}))
    return out


def base_label(s):
    """A strategy's label without its parametrization keys: what an sp and a muP ladder of it share."""
    from optim import PARAMETRIZATION_KEYS  # imported here: the rest of this file needs no torch
    rest = [kv for kv in s["overrides"] if kv.split("=", 1)[0] not in PARAMETRIZATION_KEYS]
    return s["name"] + (":" + ",".join(rest) if rest else "")


# ----------------------------------------------------------------------------------------------
# report

def ci(v, fmt, interval):
    if v is None:
        return "—"
    return format(v, fmt) + (f" [{format(interval[0], fmt)}, {format(interval[1], fmt)}]" if interval else "")


def law_text(law, x):
    unit = "η*" if x == "nominal" else "η*_eff"
    if law.get("reason"):
        return f"no law: {law['reason']}."
    parts = [f"{unit} = C·N^a·D^b with C = {ci(law['C'], '.3g', law['C_ci'])}"]
    parts.append(f"a = {ci(law['a'], '+.3f', law['a_ci'])}" if law["a"] is not None else law["a_reason"])
    parts.append(f"b = {ci(law['b'], '+.3f', law['b_ci'])}" if law["b"] is not None else law["b_reason"])
    return (", ".join(parts) + f"; over {law['cells']} bracketed cells, N {law['n_range'][0]:,}–{law['n_range'][1]:,}, "
            f"D {law['d_range'][0]:,}–{law['d_range'][1]:,}; rms residual {law['rms_ln']:.3f} in ln η*"
            + (f"; {law['n_failed']} of {law['n_boot']} resamples could not fit the same terms" if law["n_failed"] else "") + ".")


def markdown(analysis):
    A, x = analysis["strategies"], analysis["x"]
    unit = "LR" if x == "nominal" else "effective LR (mean ‖ΔW‖/‖W‖)"
    lines = ["## Learning-rate laws across scale", "",
             f"x axis: the {unit}. Per cell (strategy, size, token budget D): the optimal LR η* of a quadratic in ln LR "
             f"around the best grid point ({analysis['window']} neighbour(s) each side) with its bootstrap interval over seeds; "
             "a cell whose optimum is not bracketed by its grid is left out of the fits. Law: ln η* = ln C + a·ln N + b·ln D "
             "by least squares over the bracketed cells; N = non-embedding parameters. Intervals: "
             f"{int(100 * analysis['level'])} % percentile bootstrap ({analysis['n_boot']} resamples, RNG seed "
             f"{analysis['boot_seed']}): cells drawn with replacement, each drawn cell's seeds drawn with replacement and its "
             "quadratic refitted. Sensitivity (Wortsman et al. 2023): mean over the grid LRs within "
             f"×/÷{analysis['sensitivity_factor']:g} of the nominal optimum of min(loss, loss at init) − the lowest of them "
             "(a diverged run counts at its loss at init).", ""]
    for label, s in A.items():
        lines += [f"### {label}", "", law_text(s["law"], x), ""]
        t = s.get("loss_trend")
        if t:
            lines += ["Loss at the optimum: L* ∝ " + " · ".join(
                ([f"N^{ci(t['p'], '+.4f', t['p_ci'])}"] if t["p"] is not None else [])
                + ([f"D^{ci(t['q'], '+.4f', t['q_ci'])}"] if t["q"] is not None else [])) + ".", ""]
        lines += ["| size | N | D | η* [95 % CI] | loss at η* [95 % CI] | sensitivity | cell |", "|---|---|---|---|---|---|---|"]
        for c in s["cells"]:
            sens = c["sensitivity"] or {}
            sens_text = f"{sens['value']:.4f} ({sens['n_lrs']} LRs)" if sens.get("value") is not None else "—"
            note = "bracketed" + (", vertex outside the fitted window" if c.get("extrapolated") else "") \
                if c["bracketed"] and c.get("in_law", True) else f"excluded: {c['reason']}"
            lines.append(f"| {c['size']} | {c['n']:,} | {c['d']:,} | {ci(c['lr_opt'], '.3g', c['lr_opt_ci'])} | "
                         f"{ci(c['loss_opt'], '.4f', c['loss_opt_ci'])} | {sens_text} | {note} |")
        lines.append("")
        if s["excluded"]:
            lines += ["Excluded from the fit:"] + [f"- {e['size']} (N {e['n']:,}, D {e['d']:,}): {e['reason']}"
                                                   for e in s["excluded"]] + [""]
        for axis, h in s["held_out"].items():
            if h.get("reason"):
                lines += [f"Held out the largest {axis}: not possible, {h['reason']}.", ""]
                continue
            lines += [f"Held out the largest {axis} ({h['held_out']:,}); law refitted on {h['cells_used']} cells, then "
                      f"the loss at its predicted {'η*' if x == 'nominal' else 'η*_eff'} in each held-out cell:", "",
                      "| size | N | D | predicted | cell's η* | loss there | cell's best | penalty | how |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for r in h["rows"]:
                if r.get("predicted") is None or r.get("loss") is None:
                    lines.append(f"| {r['size']} | {r['n']:,} | {r['d']:,} | {ci(r.get('predicted'), '.3g', None)} | "
                                 f"{ci(r['lr_opt'], '.3g', None)} | — | — | — | {r['reason']} |")
                    continue
                lines.append(f"| {r['size']} | {r['n']:,} | {r['d']:,} | {r['predicted']:.3g} | {ci(r['lr_opt'], '.3g', None)} | "
                             f"{r['loss']:.4f} | {r['best']:.4f} ({r['best_is']}) | {r['penalty']:+.4f} | {r['how']} |")
            lines.append("")
    if analysis["gaps"]:
        base = analysis["baseline"]
        lines += [f"### Against the baseline ({base})", "",
                  "Gap: loss at the optimum minus the baseline's, per cell bracketed on both sides (negative: lower loss than "
                  "the baseline). Trend: gap = g0 + g_N·ln N + g_D·ln D; the slopes are given per doubling (× ln 2). "
                  "Grows: moves away from 0 as N (or D) grows; shrinks: towards 0; stays: the interval covers 0.", ""]
        for label, g in analysis["gaps"].items():
            lines += [f"**{label}**", ""]
            if g["cells"]:
                lines += ["| size | N | D | gap [95 % CI] |", "|---|---|---|---|"]
                lines += [f"| {r['size']} | {r['n']:,} | {r['d']:,} | {ci(r['gap'], '+.4f', r['gap_ci'])} |" for r in g["cells"]]
                lines.append("")
            if g["excluded"]:
                lines += ["Not compared: " + "; ".join(f"{e['size']} at D {e['d']:,} ({e['reason']})" for e in g["excluded"]) + ".", ""]
            if g.get("reason"):
                lines += [f"No trend: {g['reason']}.", ""]
                continue
            said = []
            for var, k in (("N", "n"), ("D", "d")):
                if g[f"g_{k}"] is None:
                    continue
                per2 = [v * math.log(2) for v in g[f"g_{k}_ci"]] if g[f"g_{k}_ci"] else None
                said.append(f"with {var} the gap {g[f'trend_{k}']} ({ci(g[f'g_{k}'] * math.log(2), '+.4f', per2)} per doubling"
                            + (", interval covers 0" if g[f"trend_{k}"] == "stays" else "") + ")")
            lines += [f"Mean gap {g['mean_gap']:+.4f} ({'lower' if g['mean_gap'] < 0 else 'higher'} loss than {base}); "
                      + "; ".join(said) + ".", ""]
    if analysis["widths"]:
        params = sorted({p for w in analysis["widths"] for p in w if p != "strategy"})
        lines += ["### The exponent a of N under each parametrization", "",
                  "Under muP, η* should not move with width: a near 0 (nanoLR's muP checked by the LR it picks, beside the "
                  "coordinate check of docs/mup.md). With the depth fixed, N grows as width², so the exponent per width is 2a.", "",
                  "| strategy | " + " | ".join(params) + " |", "|---" * (len(params) + 1) + "|"]
        for w in analysis["widths"]:
            cells = [ci(w[p]["a"], "+.3f", w[p]["a_ci"]) if p in w and w[p]["a"] is not None
                     else (w[p]["reason"] if p in w else "") for p in params]
            lines.append(f"| {w['strategy']} | " + " | ".join(cells) + " |")
        lines.append("")
    if analysis["notes"]:
        lines += ["### Notes", ""] + [f"- {n}" for n in analysis["notes"]] + [""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# plots and law files

def plots(analysis, runs, out_dir):
    """law_lr_vs_n.png, law_sensitivity.png, law_gap.png (with a baseline) in out_dir; [] without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        return []
    A, written = analysis["strategies"], []
    labels = [lab for lab, s in A.items() if s["cells"]]
    if not labels:
        return []
    budgets = sorted({c["d"] for s in A.values() for c in s["cells"]})
    color = {d: f"C{k % 10}" for k, d in enumerate(budgets)}

    fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 3.8), squeeze=False, sharey=True)
    for ax, label in zip(axes[0], labels):
        s = A[label]
        for d in budgets:
            mine = [c for c in s["cells"] if c["d"] == d and c["bracketed"]]
            if mine:
                err = [[c["lr_opt"] - c["lr_opt_ci"][0] if c["lr_opt_ci"] else 0 for c in mine],
                       [c["lr_opt_ci"][1] - c["lr_opt"] if c["lr_opt_ci"] else 0 for c in mine]]
                ax.errorbar([c["n"] for c in mine], [c["lr_opt"] for c in mine], yerr=err, fmt="o", color=color[d], capsize=3,
                            label=f"D {d:.3g}")
            law = s["law"]
            if law.get("C") is not None and predict(law, law["n_range"][0], d) is not None:
                ns = np.exp(np.linspace(math.log(law["n_range"][0]), math.log(law["n_range"][1]) + 1e-9, 20))
                ax.plot(ns, [predict(law, law["n_range"][0], d) * (n / law["n_range"][0]) ** (law["a"] or 0) for n in ns],
                        "-", color=color[d], lw=1)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a decade or two overlap
        ax.set_yscale("log")
        ax.set_xlabel("N (non-embedding parameters)")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("η*" if analysis["x"] == "nominal" else "η* (effective)")
    written.append(verdict.save(fig, out_dir, "law_lr_vs_n.png"))

    fig, ax = plt.subplots(figsize=(6.5, 4))
    markers = "osD^v<>"
    for k, label in enumerate(labels):
        for j, d in enumerate(budgets):
            pts = [(c["n"], c["sensitivity"]["value"]) for c in A[label]["cells"]
                   if c["d"] == d and c["sensitivity"] and c["sensitivity"].get("value") is not None]
            if pts:
                ax.plot(*zip(*pts), marker=markers[j % len(markers)], color=f"C{k % 10}", label=f"{label}, D {d:.3g}")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a decade or two overlap
    ax.set_xlabel("N (non-embedding parameters)")
    ax.set_ylabel("LR sensitivity")
    ax.set_title(f"mean excess loss over ×/÷{analysis['sensitivity_factor']:g} around η*, capped at the loss at init", fontsize=9)
    ax.legend(fontsize=7)
    written.append(verdict.save(fig, out_dir, "law_sensitivity.png"))

    gaps = {lab: g for lab, g in analysis["gaps"].items() if g["cells"]}
    if gaps:
        fig, axes = plt.subplots(1, len(gaps), figsize=(4.2 * len(gaps), 3.8), squeeze=False, sharey=True)
        for ax, (label, g) in zip(axes[0], gaps.items()):
            for d in budgets:
                mine = [r for r in g["cells"] if r["d"] == d]
                if mine:
                    err = [[r["gap"] - r["gap_ci"][0] if r["gap_ci"] else 0 for r in mine],
                           [r["gap_ci"][1] - r["gap"] if r["gap_ci"] else 0 for r in mine]]
                    ax.errorbar([r["n"] for r in mine], [r["gap"] for r in mine], yerr=err, fmt="o-", color=color[d], capsize=3,
                                label=f"D {d:.3g}")
            ax.axhline(0, color="k", lw=0.8, ls=":")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a decade or two overlap
            ax.set_xlabel("N (non-embedding parameters)")
            ax.set_title(f"{label} − {analysis['baseline']}", fontsize=9)
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("gap in loss at the optimum")
        written.append(verdict.save(fig, out_dir, "law_gap.png"))
    return written


def write_laws(analysis, out_dir, source=None, command=None):
    """<out_dir>/law_<tag>.json for every strategy with a fitted law on the nominal axis; returns the paths."""
    paths, source, command = [], source or analysis.get("source"), command or analysis.get("command")
    if analysis["x"] != "nominal":
        analysis["notes"].append("no law files: the law is in effective LR, and train.py --lr_law sets the nominal learning_rate")
        return paths
    for label, s in analysis["strategies"].items():
        law = s["law"]
        if law.get("C") is None:
            continue
        record = dict(format=LAW_FORMAT, strategy=s["name"], label=label, overrides=s["overrides"],
                      parametrization=s["parametrization"], tokenizer=s["tokenizer"], x=analysis["x"],
                      C=law["C"], a=law["a"], b=law["b"], C_ci=law["C_ci"], a_ci=law["a_ci"], b_ci=law["b_ci"],
                      level=law["level"], n="non_embedding", n_range=law["n_range"], d_range=law["d_range"], cells=law["cells"],
                      tokens_per_step=s["tokens_per_step"], source=source, command=command)
        path = os.path.join(out_dir, f"law_{tag_of(label)}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(record, f, indent=1)
        os.replace(path + ".tmp", path)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="a ladder's output directory (eval/sweep.py --out), holding results.json")
    p.add_argument("--x", default="nominal", choices=("nominal", "effective"), help="the LR axis of the fits")
    p.add_argument("--baseline", default=None, help="the strategy label gaps are measured against (default: the sweep's)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--bootstrap_seed", type=int, default=0)
    p.add_argument("--fit_window", type=int, default=1, help="grid neighbours on each side of the best LR in a cell's fit")
    p.add_argument("--no_plots", action="store_true")
    a = p.parse_args(argv)
    source = os.path.join(a.out_dir, "results.json")
    try:
        with open(source) as f:
            results = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"lawfit error: cannot read {source} ({e}); run eval/sweep.py with --out {a.out_dir} first") from None
    if a.bootstrap < 0 or a.fit_window < 1:
        raise SystemExit("lawfit error: --bootstrap must be >= 0 and --fit_window >= 1")
    runs = results.get("runs") or []
    labels = [s["label"] for s in (results.get("grid") or {}).get("strategies", [])] or list(dict.fromkeys(r["label"] for r in runs))
    baseline = a.baseline or results.get("baseline")
    if a.baseline is not None and a.baseline not in labels:
        raise SystemExit(f"lawfit error: --baseline={a.baseline!r} is not one of the strategies: {', '.join(labels)}")
    analysis = analyze(runs, labels, baseline, x=a.x, n_boot=a.bootstrap, boot_seed=a.bootstrap_seed, window=a.fit_window)
    laws = write_laws(analysis, a.out_dir, source=os.path.abspath(source), command=results.get("command"))
    figures = [] if a.no_plots else plots(analysis, runs, a.out_dir)
    report = markdown(analysis)
    if figures:
        report += "\n" + "\n".join(f"![{os.path.splitext(os.path.basename(f))[0]}]({os.path.basename(f)})" for f in figures) + "\n"
    with open(os.path.join(a.out_dir, "law.md"), "w") as f:
        f.write(report + "\n")
    with open(os.path.join(a.out_dir, "law.json"), "w") as f:
        json.dump(analysis, f, indent=1)
    print(report)
    print(f"\nwrote {os.path.join(a.out_dir, 'law.md')}, law.json" + "".join(f", {os.path.basename(x)}" for x in laws + figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
