"""The shape of the code a forker relies on: imports form a tree with the allowed edges only, nothing
refers outside the repository, the README names only configs that exist."""
import ast
import glob
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

# module -> the project modules it may import (data/ and eval/ count as one package each)
ALLOWED = {"model": set(), "spectral": set(), "rules": set(), "groups": set(), "data": set(),
           "schedules": set(), "optim_core": {"schedules", "rules", "groups"},
           "optim_catalogue": {"optim_core", "schedules", "rules", "groups"},
           "optim_layerwise": {"optim_core", "schedules", "spectral", "groups"},
           "optim": {"schedules", "optim_core", "optim_catalogue", "optim_layerwise"},
           "eval": {"model", "optim", "groups", "spectral", "rules", "data", "eval", "configurator", "preflight"},
           "configurator": set(), "logger": {"configurator", "groups", "spectral"},
           "preflight": {"configurator", "logger", "model", "optim", "spectral", "data"},
           "checkpoint": {"configurator", "preflight", "model", "optim", "data"},
           "scaling": {"configurator", "preflight", "model", "data"},
           "train": {"configurator", "preflight", "checkpoint", "logger", "model", "optim", "data", "eval", "scaling"},
           "finetune_data": {"configurator", "data", "eval"},
           "finetune": {"configurator", "preflight", "checkpoint", "logger", "model", "optim", "data", "eval", "finetune_data"},
           "gpu_check": {"configurator", "preflight", "model", "optim", "train"},
           "bench": {"configurator", "preflight", "model", "optim", "groups", "data", "eval", "train", "spectral", "logger",
                     "gpu_check"}}


def project_files():
    files = glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "data", "**", "*.py"), recursive=True)
    return files + glob.glob(os.path.join(ROOT, "eval", "**", "*.py"), recursive=True)


def unit_of(path):
    rel = os.path.relpath(path, ROOT)
    return rel.split(os.sep)[0] if os.sep in rel else rel[:-3]


def imported_units(path):
    """Every project unit a file imports, at the top or inside functions."""
    units = set(ALLOWED)
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        found |= {n.split(".")[0] for n in names} & units
    return found - {unit_of(path)}


def test_every_project_file_is_a_known_unit():
    assert {unit_of(f) for f in project_files()} <= set(ALLOWED)


def test_imports_use_only_the_allowed_edges_and_form_a_tree():
    edges = {}
    for f in project_files():
        got = imported_units(f)
        bad = got - ALLOWED[unit_of(f)]
        assert not bad, f"{os.path.relpath(f, ROOT)} imports {sorted(bad)}"
        edges.setdefault(unit_of(f), set()).update(got)

    def reaches(a, b, seen=()):
        return any(n == b or (n not in seen and reaches(n, b, seen + (n,))) for n in edges.get(a, ()))
    assert not [u for u in edges if reaches(u, u)], edges


def test_the_import_test_catches_a_cycle(tmp_path):
    f = tmp_path / "spectral.py"
    f.write_text("def f():\n    import optim\n")
    assert imported_units(str(f)) == {"optim"}


OUTSIDE = r"\bspec" + r"s/|\.\./shar" + "ed"  # written in pieces, so that this line does not name them itself


def test_nothing_refers_to_files_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    hits = []
    for rel in tracked:
        path = os.path.join(ROOT, rel)
        if os.path.isfile(path) and rel.endswith((".py", ".md", ".txt")) and rel != "tests/test_layout.py":
            hits += [f"{rel}: {l.strip()}" for l in open(path, errors="replace") if re.search(OUTSIDE, l)]
    assert not hits, "\n".join(hits[:10])


def test_configs_named_in_the_readme_exist():
    readme = open(os.path.join(ROOT, "README.md")).read()
    named = set(re.findall(r"configs/[\w./]+?\.py", readme))
    assert named, "the README names no configs"
    missing = [c for c in sorted(named) if not os.path.exists(os.path.join(ROOT, c))]
    assert not missing, missing


@pytest.mark.parametrize("size, method", [("llama_135m", "llr"), ("llama_60m", "llr_muon"), ("gpt_nano", "llr"),
                                          ("llama_135m", "blockwise"), ("llama_135m", "uniform_muon")])
def test_size_and_method_files_compose_like_the_combined_file(size, method):
    import train
    combined = train.parse_config([os.path.join(ROOT, f"configs/{size}_{method}.py")])
    assert train.parse_config([os.path.join(ROOT, f"configs/{size}.py"), os.path.join(ROOT, f"configs/{method}.py")]) == combined
    strategy = "uniform" if method == "blockwise" else method  # blockwise is lr_mult on uniform
    assert combined["strategy"] == strategy and combined["out_dir"] == f"out/{size}_{method}"


def test_dry_run_prints_the_resolved_config_of_composed_files_and_exits():
    def dry(*files):
        return subprocess.run([sys.executable, "train.py", *files, "--dry_run"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
    out = dry("configs/llama_135m.py", "configs/llr.py")
    assert out == dry("configs/llama_135m_llr.py")
    assert '"llr_every": 100' in out and "# model llama_135m: 162,220,800 parameters" in out
    assert not os.path.exists(os.path.join(ROOT, "out", "llama_135m_llr", "metrics.jsonl"))


def test_the_tested_pins_of_requirements_dev_equal_the_lock():
    lock = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", open(os.path.join(ROOT, "requirements-lock.txt")).read(), re.M))
    lock = {k.lower(): v for k, v in lock.items()}
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", open(os.path.join(ROOT, "requirements-dev.txt")).read(), re.M)
    assert pins and all(lock.get(name.lower()) == version for name, version in pins), (pins, lock)
    unpinned = [l.split()[0] for l in open(os.path.join(ROOT, "requirements-dev.txt"))
                if l.strip() and not l.startswith(("#", "-r")) and "==" not in l.split("#")[0]]
    assert not unpinned, f"requirements-dev.txt names {unpinned} without a version"


def test_the_modules_of_eval_import_each_other_as_a_tree():
    """eval/ counts as one unit above; inside it, its modules (sweep, runs, slurm, lawfit, verdict, ...) form a tree too."""
    edges = {}
    for path in glob.glob(os.path.join(ROOT, "eval", "*.py")):
        name = os.path.basename(path)[:-3]
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.module == "eval":
                edges.setdefault(name, set()).update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("eval."):
                edges.setdefault(name, set()).add(node.module.split(".")[1])

    def reaches(a, b, seen=()):
        return any(n == b or (n not in seen and reaches(n, b, seen + (n,))) for n in edges.get(a, ()))
    assert not [m for m in edges if reaches(m, m)], edges
