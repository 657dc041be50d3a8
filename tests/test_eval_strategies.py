"""The cross-regime benchmark eval/strategies.py: a few steps of the LM regimes b and c."""
import json
import math

import pytest
import torch

from eval import strategies as S


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_lm_regimes_smoke(tmp_path, capsys):
    out = tmp_path / "out"
    S.main(["--regimes", "b,c", "--strategies", "uniform,adamw", "--seeds", "0", "--steps", "20",
            "--eval_every_lm", "5", "--jobs", "1", "--out", str(out)])
    result = json.loads((out / "strategies.json").read_text())
    table = (out / "strategies.md").read_text()
    assert "| uniform |" in table and "| adamw |" in table and "val loss (b)" in table and "val loss (c)" in table
    for regime, steps in (("b", 20), ("c", 10)):  # c pretrains 20 steps on Shakespeare, fine-tunes 10 on Python
        for name in ("uniform", "adamw"):
            curve = result["curves"][regime][name]["0"]
            its, losses = [it for it, _ in curve], [v for _, v in curve]
            assert its == list(range(5, steps + 1, 5))
            assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0] < math.log(256) + 0.5
            assert result["results"][regime][name]["values"] == [losses[-1]]
    assert "wrote" in capsys.readouterr().out
    # both corpora are byte-level datasets of data/, read through data/loader.TokenData
    assert S.corpus("shakespeare").tokenizer == S.corpus("pystdlib").tokenizer == "byte"
