"""spectral.py against direct transcriptions of the formulas and against weightwatcher 0.7.7 as oracle;
its command-line tool eval/htsr.py end to end."""
import ast
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import model
import groups
import optim
import spectral
from eval import htsr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_alpha_numpy(lam, xmin_pos=2, k_term=False):
    """Direct transcription of llr.md §3 (median xmin, n counts xmin; k_term: the papers' n - 1)."""
    lam = np.sort(np.asarray(lam, dtype=np.float64))
    N = len(lam)
    i = N // xmin_pos
    n = N - i
    return 1 + (n - k_term) / np.sum(np.log(lam[i:] / lam[i]))


def ks_numpy(lam, candidates):
    """min-D fit over the given candidate indices, one candidate at a time (spec §2)."""
    lam = np.sort(np.asarray(lam, dtype=np.float64))
    best = (np.inf, None, None)
    for i in candidates:
        n = len(lam) - i
        a = 1 + n / np.sum(np.log(lam[i:] / lam[i]))
        D = np.max(np.abs(1 - (lam[i:] / lam[i]) ** (1 - a) - np.arange(n) / n)) if a > 1 else 1.0
        if D < best[0]:
            best = (D, a, lam[i])
    return best


def spiked(n, m, spikes, seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, m, generator=g, dtype=torch.float64) / np.sqrt(n)
    u, v = torch.randn(n, spikes, generator=g, dtype=torch.float64), torch.randn(m, spikes, generator=g, dtype=torch.float64)
    return W + u @ torch.diag(torch.linspace(0.5, 3, spikes, dtype=torch.float64)) @ v.T / np.sqrt(n * m) * 4


def heavy(n, m, seed, tail=2.5):
    """Entries drawn from a Pareto-like (Student-t) law: a heavy-tailed ESD."""
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.standard_t(tail, size=(n, m)), dtype=torch.float64)


@pytest.mark.parametrize("N,xmin_pos", [(64, 2), (768, 2), (333, 3), (100, 4)])
def test_median_equals_formula(N, xmin_pos):
    lam = np.random.default_rng(N).pareto(1.7, N) + 0.1
    assert spectral.hill_alpha(torch.tensor(lam), "median", xmin_pos=xmin_pos) == pytest.approx(
        median_alpha_numpy(lam, xmin_pos), rel=1e-12)
    assert spectral.hill_alpha(torch.tensor(lam), "median", xmin_pos=xmin_pos, k_term=True) == pytest.approx(
        median_alpha_numpy(lam, xmin_pos, k_term=True), rel=1e-12)
    fit = spectral.powerlaw_fit(torch.tensor(lam), "median", xmin_pos=xmin_pos)
    assert fit["xmin"] == np.sort(lam)[N // xmin_pos] and fit["num_pl_spikes"] == N - N // xmin_pos


def test_median_filter_zeros():
    lam = np.concatenate([np.zeros(10), np.full(10, 1e-7), np.random.default_rng(0).pareto(2, 80) + 1])
    kept = lam[lam > 1e-5]
    assert spectral.hill_alpha(torch.tensor(lam)) == pytest.approx(median_alpha_numpy(kept), rel=1e-12)
    # without the filter only exact zeros are left out (a log of 0 has no fit)
    assert spectral.hill_alpha(torch.tensor(lam), filter_zeros=False) == pytest.approx(
        median_alpha_numpy(lam[lam > 0]), rel=1e-12)


def _ww_fit():
    pytest.importorskip("powerlaw")
    return pytest.importorskip("weightwatcher.WW_powerlaw").WWFit


@pytest.mark.parametrize("case", ["pareto", "gauss_square", "gauss_tall", "spiked", "student_t", "rank_deficient"])
def test_ks_matches_wwfit(case):
    WWFit = _ww_fit()
    rng = np.random.default_rng(1)
    if case == "pareto":
        lam = torch.tensor((1 - rng.random(600)) ** (-1 / 1.5))   # α = 2.5 in the density
    else:
        W = {"gauss_square": lambda: torch.randn(256, 256, dtype=torch.float64),
             "gauss_tall": lambda: torch.randn(1024, 256, dtype=torch.float64),
             "spiked": lambda: spiked(400, 200, 12, 0), "student_t": lambda: heavy(300, 120, 0),
             "rank_deficient": lambda: heavy(300, 90, 1) @ heavy(90, 150, 2) * 1e-4}[case]()
        lam = spectral.esd(W, route="svd64")
    ref = WWFit(lam.numpy()[lam.numpy() > 1e-5])   # weightwatcher fits the eigenvalues above EVALS_THRESH
    ours = spectral.powerlaw_fit(lam, "ks")
    assert abs(ours["alpha"] - ref.alpha) <= 1e-10 * max(1, ref.alpha)
    assert abs(ours["D"] - ref.D) <= 1e-10
    assert ours["xmin"] == ref.xmin
    assert ours["sigma"] == pytest.approx(ref.sigma, rel=1e-9)
    if case == "pareto":
        assert ours["alpha"] == pytest.approx(2.5, abs=0.2)


def test_ks_matches_loop_transcription():
    lam = spectral.esd(heavy(200, 80, 3), route="svd64").numpy()
    lam = lam[lam > 1e-5]
    D, a, xmin = ks_numpy(lam, range(len(lam) - 1))
    fit = spectral.powerlaw_fit(torch.tensor(lam), "ks")
    assert fit["alpha"] == pytest.approx(a, rel=1e-11) and fit["D"] == pytest.approx(D, abs=1e-12)


def test_ks_table_chunking_does_not_change_the_fit():
    """The KS table is built in chunks of candidate rows (small on a CPU, large on a GPU): any chunk
    size, down to one candidate at a time, picks the same xmin, alpha and D."""
    lam = torch.stack([spectral.esd(heavy(160, 60, s), route="svd64") for s in (1, 2, 3)])
    one_go = spectral._fit_batch(lam, "ks", block=1 << 30)
    for block in (1, 3 * 60 * 7, None):
        fit = spectral._fit_batch(lam, "ks", block=block)
        for key in ("alpha", "D", "xmin"):
            assert torch.equal(fit[key], one_go[key])


def fix_finger_numpy(lam, reference):
    lam = np.sort(lam[lam > 1e-5])
    h, edges = np.histogram(np.log10(lam), bins=100)
    p = 10 ** edges[np.argmax(h)]
    lo_ok = lam > np.log10(0.95 * p) if reference else lam >= 0.95 * p
    ok = lo_ok & (lam <= 1.5 * p)
    return ks_numpy(lam, [i for i in range(len(lam) - 1) if ok[i]])


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("case", ["spiked", "pareto"])
def test_fix_finger_window(reference, case):
    if case == "spiked":
        lam = spectral.esd(spiked(500, 250, 20, 1) * 3, route="svd64").numpy()
    else:  # the min-D candidate sits at the window's lower edge 0.95p here
        lam = np.random.default_rng(12).pareto(1.5, 300) + 1
    D, a, xmin = fix_finger_numpy(lam, reference)
    fit = spectral.powerlaw_fit(torch.tensor(lam), "fix-finger", reference=reference)
    assert fit["alpha"] == pytest.approx(a, rel=1e-11) and fit["xmin"] == xmin
    assert fit["xmin_method"] == ("fix-finger-reference" if reference else "fix-finger")


def test_fix_finger_reference_window_is_looser():
    # p < 1/0.95: the reference's lower bound log10(0.95p) is negative and excludes nothing
    lam = spectral.esd(heavy(300, 150, 5) * 0.05, route="svd64")
    correct = spectral.powerlaw_fit(lam, "fix-finger")
    legacy = spectral.powerlaw_fit(lam, "fix-finger", reference=True)
    assert legacy["D"] <= correct["D"]
    assert legacy["alpha"] == pytest.approx(fix_finger_numpy(lam.numpy(), True)[1], rel=1e-11)


def test_gram_route_accuracy():
    """fp32 Gram + eigvalsh vs fp64 SVD: top half to 1e-4 relative; bottom to 1e-5·λ_max absolute
    (tall matrices: every eigenvalue to 1e-4 relative)."""
    g = torch.Generator().manual_seed(0)
    for shape in [(256, 256), (700, 256), (256, 900)]:
        W = torch.randn(*shape, generator=g) * 0.02
        exact = torch.linalg.svdvals(W.double()).flip(0) ** 2
        fast = spectral.esd(W).double()
        assert fast.dtype == torch.float64 and spectral.esd(W).dtype == torch.float32
        M = len(exact)
        rel = (fast - exact).abs() / exact
        assert rel[M // 2:].max() < 1e-4
        assert (fast - exact).abs().max() < 1e-5 * exact[-1]
        if max(shape) / min(shape) > 2:
            assert rel.max() < 1e-4


def test_metrics_closed_forms():
    lam = torch.tensor(np.random.default_rng(0).pareto(2.0, 200) + 0.5)
    m = spectral.spectrum_metrics(lam, n_rows=300)
    s = np.sort(lam.numpy())
    assert m["log_norm"] == pytest.approx(np.log10(s.sum()), rel=1e-12)
    assert m["stable_rank"] == pytest.approx(s.sum() / s[-1], rel=1e-12)
    assert m["alpha_weighted"] == pytest.approx(m["alpha"] * np.log10(s[-1]), rel=1e-12)
    assert m["log_alpha_norm"] == pytest.approx(np.log10(np.sum(s ** m["alpha"])), rel=1e-12)
    assert m["alphahat"] == pytest.approx(np.log1p(np.exp(m["alpha_weighted"])), rel=1e-12)
    p = s / s.sum() + 6e-5
    ent = spectral.spectrum_metrics(lam, n_rows=300, entropy_eps=6e-5, rank_eps_dtype=torch.float32)["entropy"]
    assert ent == pytest.approx(-np.sum(p * np.log(p)) / np.log(200 + 6e-5), rel=1e-12)


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    net = model.Transformer(model.config_from_preset("llama_nano"))
    with torch.no_grad():  # make one matrix heavy-tailed, one spiked, so fits are not all alike
        net.blocks[0].mlp.up.weight.copy_(heavy(176, 64, 7).float() * 0.02)
        net.blocks[1].attn.q.weight.copy_(spiked(64, 64, 6, 2).float())
    return net


@pytest.fixture(scope="module")
def ww_frame(nano):
    ww = pytest.importorskip("weightwatcher")
    pytest.importorskip("powerlaw")
    return ww.WeightWatcher(model=nano).analyze(min_evals=8, max_N=100000, pl_package="ww")


WW_FIELDS = ("alpha", "D", "xmin", "sigma", "num_pl_spikes", "log_norm", "log_spectral_norm", "alpha_weighted",
             "log_alpha_norm", "stable_rank", "entropy", "matrix_rank", "rank_loss", "num_evals")


@pytest.mark.parametrize("route,rel", [("svd64", 1e-10), ("gram", 1e-3)])
def test_analyze_matches_weightwatcher(nano, ww_frame, route, rel):
    rows = {r["name"]: r for r in spectral.analyze(nano, method="ks", min_evals=8, route=route)}
    assert set(rows) == set(ww_frame.longname)
    for _, ref in ww_frame.iterrows():
        ours = rows[ref.longname]
        assert ours["skipped"] is None and ours["N"] == ref.N and ours["M"] == ref.M
        for f in WW_FIELDS:
            assert ours[f] == pytest.approx(ref[f], rel=rel, abs=1e-12), (ref.longname, f)


def test_analyze_names_match_param_groups():
    for preset in ("llama_nano", "gpt_micro"):
        net = model.Transformer(model.config_from_preset(preset))
        matrices = [g for g in groups.param_groups(net) if g["kind"] != "norm"]
        rows = spectral.analyze(net, metrics=("alpha",))
        assert [r["name"] for r in rows] == [g["name"] for g in matrices]
        assert [r["kind"] for r in htsr.with_kinds(rows)] == [g["kind"] for g in matrices]   # the tool adds kind
        sd_rows = spectral.analyze(net.state_dict(), metrics=("alpha",))
        assert [r["name"] for r in sd_rows] == [g["name"] for g in matrices]   # tied head dropped
        assert [r["alpha"] for r in sd_rows] == [r["alpha"] for r in rows]
        assert set(rows[0]) == {"name", "shape", "N", "M", "skipped", "xmin_method", "scale", "alpha"}
        assert list(htsr.with_kinds(rows)[0]) == ["name", "shape", "kind", "N", "M", "skipped", "xmin_method",
                                                  "scale", "alpha"]
    # a name outside model.py's naming is of kind 'other' in the tool
    assert htsr.with_kinds(spectral.analyze({"proj": torch.randn(80, 60)}, metrics=("alpha",)))[0]["kind"] == "other"


def test_batched_equals_per_matrix(nano):
    rows = spectral.analyze(nano, method="ks")
    tiny = spectral.analyze(nano, method="ks", chunk_bytes=1)   # one matrix per call
    mats = dict(spectral.named_matrices(nano))
    for r, t in zip(rows, tiny):
        single = spectral.spectrum_metrics(spectral.esd(mats[r["name"]]), n_rows=r["N"], method="ks")
        for f in spectral.METRICS:
            assert r[f] == pytest.approx(single[f], rel=1e-6, abs=1e-9), (r["name"], f)
            assert r[f] == pytest.approx(t[f], rel=1e-6, abs=1e-9)


def test_degenerate_inputs_raise():
    bad = {"1-D": torch.ones(5), "empty": torch.ones(0, 4), "NaN": torch.full((8, 4), float("nan")),
           "inf": torch.eye(8).index_put_((torch.tensor(0), torch.tensor(0)), torch.tensor(float("inf")))}
    for why, W in bad.items():
        with pytest.raises(ValueError, match="1-D|empty|NaN"):
            spectral.esd(W)
    with pytest.raises(ValueError, match="all-zero"):
        spectral.hill_alpha(spectral.esd(torch.zeros(30, 20)))
    u, v = torch.randn(40, 1), torch.randn(1, 30)
    with pytest.raises(ValueError, match="rank-1"):
        spectral.powerlaw_fit(spectral.esd(u @ v), "ks")
    with pytest.raises(ValueError, match="NaN"):
        spectral.hill_alpha(torch.tensor([1.0, float("nan"), 2.0]))


def test_degenerate_inputs_skipped_in_analyze():
    g = torch.Generator().manual_seed(0)
    good = torch.randn(80, 60, generator=g)
    nan = good.clone()
    nan[3, 4] = float("nan")
    u, v = torch.randn(80, 1, generator=g), torch.randn(1, 60, generator=g)
    mats = {"good": good, "nan": nan, "inf": good * float("inf"), "zero": torch.zeros(80, 60), "rank1": u @ v,
            "vec": torch.ones(60), "empty": torch.ones(0, 3), "small": torch.randn(80, 20, generator=g)}
    rows = {r["name"]: r for r in spectral.analyze(mats, method="ks", min_evals=50)}
    assert rows["good"]["skipped"] is None
    assert rows["good"]["alpha"] == pytest.approx(spectral.hill_alpha(spectral.esd(good), "ks"), rel=1e-12)
    expect = {"nan": "NaN", "inf": "NaN", "zero": "all-zero", "rank1": "rank-1", "vec": "1-D", "empty": "empty",
              "small": "min_evals"}
    for name, word in expect.items():
        assert word in rows[name]["skipped"], rows[name]
        assert "alpha" not in rows[name]


@pytest.mark.parametrize("method", ["median", "ks", "fix-finger"])
def test_vector_shaped_matrices_skipped_in_analyze(method):
    """A 1xN or Nx1 matrix has one eigenvalue: skipped with its reason, like a rank-1 matrix, never an error."""
    g = torch.Generator().manual_seed(0)
    mats = {"row": torch.randn(1, 40, generator=g), "col": torch.randn(40, 1, generator=g), "one": torch.ones(1, 1),
            "conv": torch.randn(1, 1, 1, 1, generator=g), "good": torch.randn(80, 60, generator=g)}
    rows = {r["name"]: r for r in spectral.analyze(mats, method=method)}
    assert rows["good"]["skipped"] is None and "alpha" in rows["good"]
    for name in ("row", "col", "one", "conv"):
        assert "single eigenvalue" in rows[name]["skipped"] and "alpha" not in rows[name], rows[name]
    net = nn.Sequential(nn.Linear(16, 1), nn.Linear(1, 16))  # a module: the same rows
    assert [r["skipped"] for r in spectral.analyze(net, method=method)] == [
        "1x16 matrix: a single eigenvalue has no tail to fit", "16x1 matrix: a single eigenvalue has no tail to fit"]


def test_conv2d_pooled_matches_weightwatcher():
    ww = pytest.importorskip("weightwatcher")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Flatten(), nn.Linear(288, 60))
    ref = ww.WeightWatcher(model=net).analyze(min_evals=8, pl_package="ww")
    rows = spectral.analyze(net, method="ks", route="svd64")
    for r, (_, w) in zip(rows, ref.iterrows()):
        assert r["M"] == w.num_evals
        for f in ("alpha", "D", "xmin", "log_norm", "log_spectral_norm", "stable_rank"):
            assert r[f] == pytest.approx(w[f], rel=1e-9), (r["name"], f)


def test_checkpoint_path_and_cli(tmp_path, nano):
    from dataclasses import asdict
    torch.save({"model": nano.state_dict(), "model_config": asdict(nano.cfg)}, tmp_path / "ckpt.pt")
    expected = [r["alpha"] for r in spectral.analyze(nano, metrics=("alpha",))]
    rows = spectral.analyze(htsr.load_weights(str(tmp_path)), metrics=("alpha",))
    assert [r["alpha"] for r in rows] == expected
    rows = spectral.analyze(model.load_checkpoint(str(tmp_path)), metrics=("alpha",))   # the whole checkpoint dict
    assert [r["alpha"] for r in rows] == expected
    with pytest.raises(FileNotFoundError):
        htsr.load_weights(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="load a checkpoint"):   # loading files is the tool's job
        spectral.analyze(str(tmp_path))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "eval/htsr.py", str(tmp_path / "nope")], cwd=ROOT, capture_output=True,
                         text=True, env=env)
    assert out.returncode != 0 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = subprocess.run([sys.executable, "eval/htsr.py", str(tmp_path), "--method", "ks", "--json",
                          str(tmp_path / "a.json")], cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "blocks.1.mlp.down" in out.stdout and (tmp_path / "a.json").exists()


def test_cli_compare_csv_and_plots(tmp_path, nano, capsys):
    from dataclasses import asdict
    torch.save({"model": nano.state_dict(), "model_config": asdict(nano.cfg)}, tmp_path / "ckpt.pt")
    htsr.main(["--compare", str(tmp_path), str(tmp_path / "ckpt.pt"), "--device", "cpu"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "mean alpha (median)" and [l.split()[0] for l in lines[2:]] == ["embed", "attn_qk", "attn_vo",
                                                                                      "mlp", "head"]
    assert all(l.split()[1] == l.split()[2] for l in lines[2:])   # the same checkpoint twice
    pytest.importorskip("matplotlib")
    htsr.main([str(tmp_path), "--device", "cpu", "--csv", str(tmp_path / "a.csv"), "--plot", str(tmp_path / "plots"),
               "--modules", "embed,blocks.0.mlp.up"])
    assert "kind" in open(tmp_path / "a.csv").readline().split(",")
    assert sorted(os.listdir(tmp_path / "plots")) == ["alpha_by_kind.png", "esd_blocks.0.mlp.up.png", "esd_embed.png"]


PROJECT_MODULES = {"model", "optim", "train", "rules", "llr", "data", "eval"}


def imported_modules(path):
    """Top-level names of every module a file imports, at the top or inside functions (relative imports as
    '.'), plus the constant arguments of __import__ / importlib.import_module calls."""
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." if node.level else node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if fn in ("__import__", "import_module"):
                found.add(str(node.args[0].value).split(".")[0])
    return found


def test_spectral_imports_nothing_of_the_project():
    found = imported_modules(os.path.join(ROOT, "spectral.py"))
    assert "torch" in found   # the walk sees the imports
    assert not found & (PROJECT_MODULES | {"."}), sorted(found & (PROJECT_MODULES | {"."}))
    assert "train" not in imported_modules(os.path.join(ROOT, "eval", "htsr.py"))   # the tool never imports train


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, path):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    net = model.Transformer(model.config_from_preset("llama_nano"))
    rows = spectral.analyze(net, method="ks")
    torch.save(rows, f"{path}.{rank}")
    torch.distributed.destroy_process_group()


def test_distributed_equals_single_process(tmp_path):
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path / "rows")), nprocs=2)
    torch.manual_seed(0)
    single = spectral.analyze(model.Transformer(model.config_from_preset("llama_nano")), method="ks")
    r0, r1 = torch.load(tmp_path / "rows.0", weights_only=False), torch.load(tmp_path / "rows.1", weights_only=False)
    assert r0 == r1
    assert [r["name"] for r in r0] == [r["name"] for r in single]
    for a, b in zip(r0, single):
        for f in spectral.METRICS:
            assert a[f] == pytest.approx(b[f], rel=1e-9, abs=1e-12)
