"""
The analysis behind eval/sweep.py: what a grid of runs (strategy × learning rate × seed) says about each
strategy, and how sure it is. numpy only; matplotlib is imported by plots() alone, scipy never.

Per strategy, from the final validation loss of every finished run that did not diverge:
  - the loss at each grid LR (mean ± std over seeds);
  - the best grid LR and a quadratic in ln(LR) fitted by least squares to the runs at the best grid point
    and its `window` neighbours on each side: the estimated optimal LR (its vertex) and the loss there;
    no estimate when the best grid point is an end of the grid (not bracketed) or the fit is not convex;
  - a bootstrap over seeds: resample the seeds with replacement (a seed brings its runs at every LR),
    pick the best grid point again and refit; the 2.5 and 97.5 percentiles of the optimal LR and of the
    loss there, from a fixed RNG seed so the report is reproducible;
  - sensitivity: the loss the fit loses at 2× and at 0.5× the optimal LR (a·ln²2 both, since the fit is a
    parabola in ln LR);
  - Welch's t-test of its runs at its best grid LR against the baseline's runs at the baseline's best grid
    LR: t, Welch–Satterthwaite df, two-sided p, Holm's adjustment over the strategies compared, and
    Hedges' g (Cohen's d on the pooled SD times 1 − 3/(4(n₁+n₂) − 9); negative: lower loss than the
    baseline). Needs 2 seeds on each side; with fewer there is no p-value;
  - steps (and tokens) to reach a target validation loss at its best grid LR: the first eval point at or
    below the target, linearly interpolated with the eval point before it (the step where the straight
    line between the two crosses the target); "not reached" when no eval point gets there.

A failed run, or a diverged one (train.py stopped it, or it ended at or above its first validation loss),
is kept in the tables as such and left out of every fit and test, with a note.
"""
import math
import os

import numpy as np

FINISHED, DIVERGED, FAILED, PENDING = "finished", "diverged", "failed", "pending"


# ----------------------------------------------------------------------------------------------
# statistics

def betainc(a, b, x):
    """Regularized incomplete beta I_x(a, b) by its continued fraction (modified Lentz), on the side of
    x where it converges fast."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-15:
            break
    return front * (f - 1.0)


def t_two_sided_p(t, df):
    """P(|T| ≥ |t|) for Student's t with df degrees of freedom (df may be fractional)."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def welch(a, b):
    """Welch's unequal-variance t-test of sample a against sample b, and Hedges' g of a − b.
    The same t, df and two-sided p as scipy.stats.ttest_ind(a, b, equal_var=False)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    n1, n2 = len(a), len(b)
    out = dict(n=n1, n_baseline=n2, mean=float(a.mean()) if n1 else None, mean_baseline=float(b.mean()) if n2 else None)
    if n1 < 2 or n2 < 2:
        return dict(out, t=None, df=None, p=None, g=None, d=None,
                    reason=f"no p-value: needs at least 2 seeds on each side, has {n1} and {n2}")
    v1, v2 = a.var(ddof=1), b.var(ddof=1)
    diff = float(a.mean() - b.mean())
    se2 = v1 / n1 + v2 / n2
    pooled = math.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2))
    d = diff / pooled if pooled > 0 else None
    g = d * (1 - 3 / (4 * (n1 + n2) - 9)) if d is not None else None
    out.update(diff=diff, d=d, g=g)
    if se2 == 0:
        return dict(out, t=None, df=None, p=None, reason="no p-value: every seed gave the same loss on both sides")
    t = diff / math.sqrt(se2)
    df = se2 ** 2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
    return dict(out, t=t, df=df, p=t_two_sided_p(t, df), reason=None)


def holm(pvalues):
    """Holm's step-down adjustment; None entries are passed through."""
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    out, running, m = list(pvalues), 0.0, len(idx)
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def grid_means(points):
    """[(lr, loss), ...] -> sorted LRs, their mean losses and counts."""
    lrs = sorted({lr for lr, _ in points})
    means = [float(np.mean([y for x, y in points if x == lr])) for lr in lrs]
    return lrs, means, [sum(1 for x, _ in points if x == lr) for lr in lrs]


def fit_quadratic(points, window=1):
    """Quadratic in ln(LR) through the runs at the best grid LR (lowest mean loss) and `window` grid
    neighbours on each side, by least squares over the runs. points: [(lr, final loss), ...].
    Returns the fit; lr_opt and loss_opt are None (with a reason) unless the optimum is bracketed and
    the fit convex."""
    if not points:
        return dict(lr_opt=None, loss_opt=None, reason="no finished run")
    lrs, means, counts = grid_means(points)
    best = int(np.argmin(means))
    res = dict(best_lr=lrs[best], best_mean=means[best], lr_opt=None, loss_opt=None, a=None, b=None, c=None,
               window=None, extrapolated=False, reason=None)
    if len(lrs) < 3:
        return dict(res, reason=f"{len(lrs)} grid LR{'s' if len(lrs) != 1 else ''} with results: a fit needs 3")
    if best in (0, len(lrs) - 1):
        side = "lowest" if best == 0 else "highest"
        return dict(res, reason=f"the best grid LR is the {side} of the grid: the optimum is not bracketed, extend --lrs")
    lo, hi = max(0, best - window), min(len(lrs) - 1, best + window)
    chosen = lrs[lo:hi + 1]
    x0 = math.log(lrs[best])
    xs = np.array([math.log(x) - x0 for x, _ in points if x in chosen])
    ys = np.array([y for x, y in points if x in chosen])
    (a, b, c), *_ = np.linalg.lstsq(np.stack([xs ** 2, xs, np.ones_like(xs)], 1), ys, rcond=None)
    res.update(a=float(a), b=float(b), c=float(c), x0=x0, window=chosen)
    if not a > 0:
        return dict(res, reason="the fit is not convex around the best grid LR: no optimum")
    x_opt = -b / (2 * a)
    res.update(lr_opt=float(math.exp(x0 + x_opt)), loss_opt=float(c - b * b / (4 * a)),
               extrapolated=not (math.log(chosen[0]) - x0 <= x_opt <= math.log(chosen[-1]) - x0))
    res["loss_at_2x"] = res["loss_at_half"] = res["loss_opt"] + float(a) * math.log(2) ** 2
    res["lost_at_2x"] = res["lost_at_half"] = float(a) * math.log(2) ** 2
    return res


def fit_curve(fit, lrs):
    """The fitted quadratic at the given LRs (for plots)."""
    x = np.log(np.asarray(lrs, float)) - fit["x0"]
    return fit["a"] * x ** 2 + fit["b"] * x + fit["c"]


def bootstrap_fit(runs, window=1, n_boot=2000, seed=0, level=0.95):
    """Resample seeds with replacement (each brings its runs at every LR), refit, and take percentiles.
    runs: [(lr, seed, loss), ...]."""
    seeds = sorted({s for _, s, _ in runs})
    if len(seeds) < 2:
        return dict(n_boot=0, reason=f"no interval: the bootstrap over seeds needs at least 2 seeds, has {len(seeds)}")
    by_seed = {s: [(lr, y) for lr, t, y in runs if t == s] for s in seeds}
    rng = np.random.default_rng(seed)
    lr_opt, loss_opt, failed = [], [], 0
    for _ in range(n_boot):
        draw = rng.integers(0, len(seeds), len(seeds))
        fit = fit_quadratic([p for i in draw for p in by_seed[seeds[i]]], window)
        if fit["lr_opt"] is None:
            failed += 1
            continue
        lr_opt.append(fit["lr_opt"])
        loss_opt.append(fit["loss_opt"])
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    out = dict(n_boot=n_boot, n_ok=len(lr_opt), n_failed=failed, level=level, rng_seed=seed, n_seeds=len(seeds),
               distinct_resamples=math.comb(2 * len(seeds) - 1, len(seeds)), lr_opt_ci=None, loss_opt_ci=None, reason=None)
    if lr_opt:
        out.update(lr_opt_ci=[float(math.exp(v)) for v in np.percentile(np.log(lr_opt), q)],
                   loss_opt_ci=[float(v) for v in np.percentile(loss_opt, q)])
    else:
        out["reason"] = "no resample gave a bracketed convex fit"
    return out


def steps_to_target(evals, target):
    """First crossing of `target` by the eval points [(iter, val_loss), ...]: the step where the line
    between the last eval point above the target and the first at or below it meets the target (the
    first eval point itself when it is already at or below). None: not reached."""
    evals = sorted(evals)
    for i, (it, v) in enumerate(evals):
        if v <= target:
            if i == 0:
                return float(it)
            (it0, v0) = evals[i - 1]
            return float(it0 + (v0 - target) / (v0 - v) * (it - it0))
    return None


# ----------------------------------------------------------------------------------------------
# a sweep's runs -> every figure

def usable(run):
    return run["status"] == FINISHED and run.get("final_val_loss") is not None


def analyze(runs, strategies, baseline=None, target=None, window=1, n_boot=2000, boot_seed=0):
    """runs: dicts with label, lr, seed, status, final_val_loss, evals [[iter, val], ...], tokens_per_iter.
    strategies: labels in report order. target: a loss, 'baseline' (the baseline's best mean) or None."""
    notes, out = [], dict(baseline=baseline, window=window, strategies={})
    for label in strategies:
        mine = [r for r in runs if r["label"] == label]
        grid = []
        for lr in sorted({r["lr"] for r in mine}):
            at = [r for r in mine if r["lr"] == lr]
            ok = [r for r in at if usable(r)]
            vals = [r["final_val_loss"] for r in ok]
            grid.append(dict(lr=lr, n=len(vals), seeds=[r["seed"] for r in ok], values=vals,
                             mean=float(np.mean(vals)) if vals else None,
                             std=float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                             excluded=[dict(seed=r["seed"], status=r["status"], reason=r.get("message"))
                                       for r in at if not usable(r)]))
            for r in at:
                if not usable(r) and r["status"] != PENDING:
                    notes.append(f"{label} at lr {lr:g}, seed {r['seed']}: {r['status']}"
                                 f"{' (' + r['message'] + ')' if r.get('message') else ''}; left out of the fits and tests")
        points = [(r["lr"], r["final_val_loss"]) for r in mine if usable(r)]
        fit = fit_quadratic(points, window)
        boot = bootstrap_fit([(r["lr"], r["seed"], r["final_val_loss"]) for r in mine if usable(r)], window, n_boot, boot_seed) \
            if fit["lr_opt"] is not None else dict(n_boot=0, reason="no interval: no fitted optimum")
        best = min((g for g in grid if g["n"]), key=lambda g: g["mean"], default=None)
        out["strategies"][label] = dict(grid=grid, best=best, fit=fit, bootstrap=boot)

    base = out["strategies"].get(baseline)
    if baseline is not None and base is None:
        notes.append(f"baseline {baseline!r} is not among the strategies: no tests")
    if isinstance(target, str) and target == "baseline":
        if base and base["best"]:
            target, out["target_source"] = base["best"]["mean"], f"the best mean final loss of {baseline}"
        else:
            target, out["target_source"] = None, "baseline has no finished run"
    elif target is not None:
        out["target_source"] = "--target"
    out["target"] = target

    tested = [lab for lab in strategies if lab != baseline and base is not None]
    for label in tested:
        s = out["strategies"][label]
        if s["best"] is None or base["best"] is None:
            s["test"] = dict(p=None, reason="no p-value: no finished run on one side")
            continue
        s["test"] = dict(welch(s["best"]["values"], base["best"]["values"]), lr=s["best"]["lr"], lr_baseline=base["best"]["lr"])
    adjusted = holm([out["strategies"][lab]["test"]["p"] for lab in tested])
    for label, p in zip(tested, adjusted):
        out["strategies"][label]["test"]["p_holm"] = p

    for label in strategies:
        s = out["strategies"][label]
        if target is None or s["best"] is None:
            continue
        per_run = []
        for r in runs:
            if r["label"] == label and r["lr"] == s["best"]["lr"] and usable(r):
                step = steps_to_target(r["evals"], target)
                per_run.append(dict(seed=r["seed"], steps=step, reached=step is not None,
                                    tokens=step * r["tokens_per_iter"] if step is not None and r.get("tokens_per_iter") else None))
        reached = [x["steps"] for x in per_run if x["reached"]]
        curves = [dict(map(tuple, r["evals"])) for r in runs if r["label"] == label and r["lr"] == s["best"]["lr"] and usable(r)]
        common = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        mean_curve = [(i, float(np.mean([c[i] for c in curves]))) for i in common]
        s["to_target"] = dict(lr=s["best"]["lr"], runs=per_run, n_reached=len(reached), n=len(per_run),
                              mean_curve_steps=steps_to_target(mean_curve, target) if mean_curve else None,
                              mean_steps=float(np.mean(reached)) if reached else None,
                              std_steps=float(np.std(reached, ddof=1)) if len(reached) > 1 else None,
                              mean_tokens=float(np.mean([x["tokens"] for x in per_run if x["reached"]]))
                              if reached and all(x["tokens"] is not None for x in per_run if x["reached"]) else None)
    for r in runs:  # every run's own steps to the target, at any LR
        if target is not None and usable(r):
            r["steps_to_target"] = steps_to_target(r["evals"], target)
    out["notes"] = notes
    return out


# ----------------------------------------------------------------------------------------------
# report

def f4(v):
    return "—" if v is None else f"{v:.4f}"


def lr_text(v):
    return "—" if v is None else f"{v:.3g}"


def pm(mean, std, n):
    if mean is None:
        return "—"
    return f"{mean:.4f} ± {std:.4f} ({n})" if std is not None else f"{mean:.4f} ({n})"


def markdown(analysis, runs, command, strategies, plots=()):
    A = analysis["strategies"]
    lines = [f"# Sweep report", "", "Reproduce with (from the repository root):", "", "```bash", command, "```", ""]
    n_done = sum(1 for r in runs if usable(r))
    counts = {k: sum(1 for r in runs if r["status"] == k) for k in (FINISHED, DIVERGED, FAILED, PENDING)}
    lines += [f"{len(runs)} runs: {counts[FINISHED]} finished ({n_done} used), {counts[DIVERGED]} diverged, "
              f"{counts[FAILED]} failed, {counts[PENDING]} not run. Loss: final validation loss (train.py's `val_loss` "
              "at max_iters), mean ± std over seeds (n).", ""]

    lrs = sorted({g["lr"] for s in A.values() for g in s["grid"]})
    lines += ["## Final validation loss per learning rate", "",
              "| strategy | " + " | ".join(f"lr {lr:.3g}" for lr in lrs) + " |", "|---" * (len(lrs) + 1) + "|"]
    for label in strategies:
        cells = []
        for lr in lrs:
            g = next((g for g in A[label]["grid"] if g["lr"] == lr), None)
            if g is None:
                cells.append("")
                continue
            text = pm(g["mean"], g["std"], g["n"])
            if A[label]["best"] is g:
                text = f"**{text}**"
            bad = [e["status"] for e in g["excluded"] if e["status"] != PENDING]
            text += f" ({len(bad)} {'/'.join(sorted(set(bad)))})" if bad else ""
            cells.append(text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Bold: the best grid LR of each strategy.", ""]

    lines += ["## Optimal learning rate (quadratic in ln LR around the best grid point)", "",
              f"Fit: least squares over the runs at the best grid LR and {analysis['window']} neighbour(s) on each side. "
              "Interval: bootstrap over seeds (seeds resampled with replacement, best grid point re-picked, refit), "
              "percentile, fixed RNG seed. Sensitivity: the loss the fit loses at 2× and at 0.5× the optimal LR "
              "(equal, since the fit is a parabola in ln LR).", "",
              "| strategy | best grid LR | loss there | fitted optimal LR [95 % CI] | loss at optimum [95 % CI] | lost at 2× / 0.5× | note |",
              "|---|---|---|---|---|---|---|"]
    for label in strategies:
        s = A[label]
        fit, boot = s["fit"], s["bootstrap"]
        if fit.get("lr_opt") is not None:
            ci_lr = f" [{lr_text(boot['lr_opt_ci'][0])}, {lr_text(boot['lr_opt_ci'][1])}]" if boot.get("lr_opt_ci") else ""
            ci_loss = f" [{f4(boot['loss_opt_ci'][0])}, {f4(boot['loss_opt_ci'][1])}]" if boot.get("loss_opt_ci") else ""
            note = boot.get("reason") or ""
            if boot.get("n_seeds"):
                note += f"{boot['n_seeds']} seeds: {boot['distinct_resamples']} distinct resamples"
            if boot.get("n_failed"):
                note += f"; {boot['n_failed']} of {boot['n_boot']} gave no bracketed convex fit"
            if fit["extrapolated"]:
                note = "vertex outside the fitted window; " + note
            row = [lr_text(fit["lr_opt"]) + ci_lr, f4(fit["loss_opt"]) + ci_loss, f"{fit['lost_at_2x']:.4f}", note]
        else:
            row = ["—", "—", "—", fit.get("reason") or ""]
        best = s["best"]
        lines.append(f"| {label} | {lr_text(best['lr']) if best else '—'} | {pm(best['mean'], best['std'], best['n']) if best else '—'} | "
                     + " | ".join(row) + " |")
    lines.append("")

    base = analysis.get("baseline")
    tested = [lab for lab in strategies if "test" in A[lab]]
    if tested:
        lines += [f"## Against the baseline ({base}, at its best grid LR)", "",
                  "Welch's t-test (unequal variances, two-sided) of each strategy's runs at its best grid LR against the "
                  "baseline's at its best; p (Holm): Holm-adjusted over the strategies in this table. Effect size: Hedges' g "
                  "(Cohen's d on the pooled SD × (1 − 3/(4(n₁+n₂) − 9))); negative means a lower loss than the baseline. "
                  "Both best LRs are picked from the same runs that are tested, which favours the "
                  "strategy with more grid points near its optimum; the fitted optima above do not have that bias.", "",
                  "| strategy | lr | loss | baseline lr | baseline loss | difference | t | df | p | p (Holm) | Hedges' g |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label in tested:
            t = A[label]["test"]
            if t.get("mean") is None:
                lines.append(f"| {label} | — | — | — | — | — | — | — | — | — | {t.get('reason', '')} |")
                continue
            sb, bb = A[label]["best"], A[base]["best"]
            num = lambda v, fmt: "—" if v is None else format(v, fmt)  # noqa: E731
            lines.append(f"| {label} | {lr_text(t['lr'])} | {pm(sb['mean'], sb['std'], sb['n'])} | {lr_text(t['lr_baseline'])} | "
                         f"{pm(bb['mean'], bb['std'], bb['n'])} | {num(t.get('diff'), '+.4f')} | {num(t['t'], '.3f')} | "
                         f"{num(t['df'], '.1f')} | {num(t['p'], '.3g')} | {num(t.get('p_holm'), '.3g')} | {num(t.get('g'), '+.2f')} |")
        reasons = sorted({A[lab]["test"]["reason"] for lab in tested if A[lab]["test"].get("reason")})
        lines += [""] + [f"- {r}." for r in reasons] + ([""] if reasons else [])

    target = analysis.get("target")
    lines += ["## Steps to the target", ""]
    if target is None:
        lines += [f"No target ({analysis.get('target_source', 'no --target given')}).", ""]
    else:
        lines += [f"Target validation loss {target:.4f} ({analysis['target_source']}), each strategy at its best grid LR. "
                  "Steps: the first eval point at or below the target, linearly interpolated with the eval point before it; "
                  "tokens = steps × tokens per step; resolution: the eval interval. Steps (mean ± std) is over the runs "
                  "that reached the target; the seed-mean curve's steps use the mean validation curve over all seeds.", "",
                  "| strategy | lr | reached | steps (mean ± std) | tokens (mean) | seed-mean curve | per run |",
                  "|---|---|---|---|---|---|---|"]
        for label in strategies:
            tt = A[label].get("to_target")
            if not tt:
                lines.append(f"| {label} | — | — | — | — | — | no finished run |")
                continue
            per = ", ".join(f"seed {x['seed']}: {x['steps']:.0f}" if x["reached"] else f"seed {x['seed']}: not reached"
                            for x in tt["runs"])
            steps = "—" if tt["mean_steps"] is None else (f"{tt['mean_steps']:.0f} ± {tt['std_steps']:.0f}" if tt["std_steps"] is not None
                                                          else f"{tt['mean_steps']:.0f}")
            tokens = "—" if tt["mean_tokens"] is None else f"{tt['mean_tokens']:,.0f}"
            curve = "not reached" if tt["mean_curve_steps"] is None else f"{tt['mean_curve_steps']:.0f}"
            lines.append(f"| {label} | {lr_text(tt['lr'])} | {tt['n_reached']}/{tt['n']} | {steps} | {tokens} | {curve} | {per} |")
        lines.append("")

    if analysis["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in analysis["notes"]] + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{os.path.splitext(os.path.basename(p))[0]}]({os.path.basename(p)})" for p in plots] + [""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# plots

def plots(analysis, runs, strategies, out_dir):
    """loss_vs_lr.png, curves.png, steps_to_target.png in out_dir; returns the paths written ([] without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)
    except ImportError:
        return []
    A, written = analysis["strategies"], []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, label in enumerate(strategies):
        s, color = A[label], f"C{k % 10}"
        pts = [g for g in s["grid"] if g["n"]]
        if not pts:
            continue
        ax.errorbar([g["lr"] for g in pts], [g["mean"] for g in pts], yerr=[g["std"] or 0 for g in pts], fmt="o",
                    color=color, capsize=3, label=label)
        fit = s["fit"]
        if fit.get("a") is not None and fit.get("window"):
            xs = np.exp(np.linspace(math.log(fit["window"][0]), math.log(fit["window"][-1]), 60))
            ax.plot(xs, fit_curve(fit, xs), "-", color=color, lw=1)
        if fit.get("lr_opt") is not None:
            ax.plot([fit["lr_opt"]], [fit["loss_opt"]], "*", color=color, ms=12)
            ci = s["bootstrap"].get("lr_opt_ci")
            if ci:
                ax.hlines(fit["loss_opt"], ci[0], ci[1], color=color, lw=3, alpha=0.4)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decades only: the minor labels collide
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final validation loss")
    ax.set_title("mean ± std over seeds; quadratic fit in ln LR, ★ optimum with its bootstrap interval", fontsize=9)
    ax.legend(fontsize=8)
    written.append(save(fig, out_dir, "loss_vs_lr.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, label in enumerate(strategies):
        best = A[label]["best"]
        if best is None:
            continue
        curves = [dict(map(tuple, r["evals"])) for r in runs if r["label"] == label and r["lr"] == best["lr"] and usable(r)]
        iters = sorted(set.intersection(*(set(c) for c in curves)))
        mean = np.array([np.mean([c[i] for c in curves]) for i in iters])
        std = np.array([np.std([c[i] for c in curves]) for i in iters])
        ax.plot(iters, mean, "-o", ms=3, color=f"C{k % 10}", label=f"{label} (lr {best['lr']:.3g})")
        ax.fill_between(iters, mean - std, mean + std, color=f"C{k % 10}", alpha=0.2)
    if analysis.get("target") is not None:
        ax.axhline(analysis["target"], color="k", ls=":", lw=1, label=f"target {analysis['target']:.4f}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation loss")
    ax.set_title("each strategy at its best grid LR (mean ± std over seeds)", fontsize=9)
    ax.legend(fontsize=8)
    finite = [r["final_val_loss"] for r in runs if usable(r)]
    if finite:  # the first eval is far above the rest; keep the end of the curves readable
        ax.set_ylim(min(finite) - 0.05, max(min(finite) + 1.0, np.percentile(finite, 90) + 0.1))
    written.append(save(fig, out_dir, "curves.png"))

    if analysis.get("target") is not None:
        fig, ax = plt.subplots(figsize=(7, 4))
        labels = [lab for lab in strategies if A[lab].get("to_target")]
        for k, label in enumerate(labels):
            tt = A[label]["to_target"]
            if tt["mean_steps"] is None:
                ax.bar(k, 0, color="none")
                ax.text(k, 0, "not reached", ha="center", va="bottom", fontsize=8, rotation=90)
                continue
            ax.bar(k, tt["mean_steps"], yerr=tt["std_steps"] or 0, capsize=4, color=f"C{strategies.index(label) % 10}")
            ax.text(k, tt["mean_steps"], f"{tt['n_reached']}/{tt['n']}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("steps to the target")
        ax.set_title(f"steps to val loss {analysis['target']:.4f} at each strategy's best grid LR (runs that reached it)", fontsize=9)
        written.append(save(fig, out_dir, "steps_to_target.png"))
    return written


def save(fig, out_dir, name):
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path
