"""scaling.py: train.py's lr_law and hparam_rules against values computed by hand from the published formulas,
the refusals of a law fitted for another run, the extrapolation warning, and a resume that sets the same values."""
import json
import math

import pytest

import scaling
import train
from configurator import ConfigError

# llama_mini, computed from its shape rather than by model.py: per layer q, k, v, o (4·d²), the MLP's gate, up and
# down (3·d·ffn) and two RMSNorm gains (2·d); then the final norm. d = 128, ffn = 352, 4 layers.
N_MINI = 4 * (4 * 128 ** 2 + 3 * 128 * 352 + 2 * 128) + 128
D_DEFAULT = 500 * 8 * 256  # configs/default.py: 500 steps of 8 x 256 tokens


def law_file(tmp_path, **changes):
    law = dict(format="nanolr-lr-law-1", strategy="llr", label="llr", overrides=[], parametrization="sp", tokenizer="byte",
               x="nominal", C=0.5, a=-0.2, b=-0.05, C_ci=None, a_ci=None, b_ci=None, n="non_embedding",
               n_range=[100_000, 2_000_000], d_range=[500_000, 5_000_000], cells=9, tokens_per_step=[2048],
               source="out/ladder/results.json", command="python eval/sweep.py ...")
    law.update(changes)
    path = tmp_path / "law_llr.json"
    path.write_text(json.dumps(law))
    return str(path)


def dry_run(args, capsys):
    """train.py --dry_run in this process: (the resolved config it prints, its '# scaling:' lines)."""
    train.main(args + ["--dry_run"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    config = json.loads("\n".join(lines[lines.index("{"):len(lines) - lines[::-1].index("}")]))
    return config, [l for l in lines if l.startswith("# scaling:")]


def test_the_non_embedding_count_is_the_one_model_py_reports():
    c = train.parse_config([])
    assert scaling.non_embedding_params(type("C", (), c)) == N_MINI == 803_968
    assert scaling.tokens_of(c) == D_DEFAULT


def test_lr_law_sets_the_learning_rate_of_this_run_s_n_and_d(tmp_path, capsys):
    path = law_file(tmp_path)
    config, said = dry_run([f"--lr_law={path}"], capsys)
    lr = 0.5 * N_MINI ** -0.2 * D_DEFAULT ** -0.05
    assert config["learning_rate"] == pytest.approx(lr, rel=1e-12) and f"{lr:.6g}" == "0.0164971"
    assert said[0] == f"# scaling: N = {N_MINI:,} non-embedding parameters; D = {D_DEFAULT:,} tokens (500 x 8 x 256 x 1)"
    assert said[1] == ("# scaling: learning_rate = 0.0164971 (was 0.003): C·N^a·D^b = 0.5·803,968^-0.2000·1,024,000^-0.0500, "
                       "the law fitted on 9 cells of out/ladder/results.json")
    assert len(said) == 2  # inside the fitted range: no warning


def test_a_run_outside_the_fitted_range_is_told_by_how_much_it_extrapolates(tmp_path, capsys):
    path = law_file(tmp_path, n_range=[1_000_000, 4_000_000], d_range=[100_000, 512_000], tokens_per_step=[4096])
    config, said = dry_run([f"--lr_law={path}"], capsys)
    assert config["learning_rate"] == pytest.approx(0.5 * N_MINI ** -0.2 * D_DEFAULT ** -0.05, rel=1e-12)  # still set
    assert f"# scaling: warning: N = {N_MINI:,} is {1e6 / N_MINI:.3g}x below the fitted range 1,000,000–4,000,000" in said[2]
    assert "# scaling: warning: D = 1,024,000 is 2x above the fitted range 100,000–512,000: the law extrapolates" in said
    assert any("the ladder took 4,096 tokens per step and this run takes 2,048" in l for l in said)


@pytest.mark.parametrize("changes, message", [
    (dict(strategy="uniform"), "was fitted for strategy 'uniform', but this run's strategy is 'llr'"),
    (dict(parametrization="mup"), "was fitted for parametrization 'mup', but this run's parametrization is 'sp'"),
    (dict(tokenizer="gpt2"), "was fitted on tokenizer 'gpt2', but this run's dataset 'shakespeare' is tokenized with 'byte'"),
    (dict(overrides=["schedule=wsd"]), "was fitted with schedule=wsd, but this run has schedule='cosine'"),
    (dict(x="effective"), "is a law of the effective LR, but learning_rate is the nominal one"),
    (dict(format="something-else"), "is not a learning-rate law of format 'nanolr-lr-law-1'"),
    (dict(a=None, n_range=[400_000, 400_000]), "was fitted at one N (400,000) and has no exponent a, but this run has N = 803,968"),
])
def test_a_law_fitted_for_another_run_is_refused_naming_both(tmp_path, changes, message):
    path = law_file(tmp_path, **changes)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="config error: lr_law=.*" + message.replace("(", r"\(").replace(")", r"\)")):
        train.main([f"--lr_law={path}", f"--out_dir={out}", "--max_iters=2"])
    assert not out.exists()  # refused before anything was written


def test_a_law_that_matches_its_overrides_and_one_size_applies(tmp_path):
    c = train.parse_config([f"--lr_law={law_file(tmp_path, overrides=['schedule=wsd', 'llr_s2=5'], a=None, n_range=[N_MINI, N_MINI])}",
                            "--schedule=wsd"])
    assert scaling.apply(c)["learning_rate"] == pytest.approx(0.5 * D_DEFAULT ** -0.05, rel=1e-12)
    with pytest.raises(ConfigError, match="cannot read it"):
        scaling.apply(train.parse_config([f"--lr_law={tmp_path / 'missing.json'}"]))


def test_hparam_rules_give_the_hand_computed_batch_lr_and_weight_decay(capsys):
    # the default config as the reference, tuned at 1,024,000 tokens; this run trains 8x as long
    config, said = dry_run(["--hparam_rules=all@1.024e6", "--max_iters=4000"], capsys)
    d, b_ref = 4000 * 2048, 2048
    batch = b_ref * 8 ** 0.383  # Power Lines: B ∝ D^0.383 -> 4,542 tokens: 17.7 sequences of 256 -> 18
    assert round(batch) == 4542 and round(batch / 256) == 18  # 18 sequences, in micro-batches of 8: 2 of them
    assert (config["batch_size"], config["grad_accum"], config["max_iters"]) == (8, 2, d // 4096)
    lr = 3e-3 * math.sqrt(4096 / 2048)  # √(B/B_ref)
    assert config["learning_rate"] == pytest.approx(lr, rel=1e-12)
    # the EMA timescale B/(η·λ·D) of the reference, kept: λ = B/(η·τ·D)
    tau = 2048 / (3e-3 * 0.1 * 1.024e6)
    assert config["weight_decay"] == pytest.approx(4096 / (lr * tau * d), rel=1e-12) == pytest.approx(0.1 * math.sqrt(2) / 8)
    assert [l.split(" = ")[0] for l in said] == ["# scaling: N", "# scaling: batch_size", "# scaling: max_iters",
                                                 "# scaling: learning_rate", "# scaling: weight_decay"]
    assert "arXiv 2505.13738" in said[1] and "arXiv 2205.10287" in said[3] and "arXiv 2405.13698" in said[4]
    assert "EMA timescale B/(η·λ·D) = 6.667 runs" in said[4]


def test_a_shorter_run_gets_a_smaller_batch_in_fewer_sequences_per_micro_batch():
    cfg = scaling.apply(train.parse_config(["--hparam_rules=batch@8.192e6"]))  # 1/8 of the reference's tokens
    assert round(2048 * (1 / 8) ** 0.383 / 256) == 4  # 923 tokens: 3.6 sequences -> 4, one micro-batch of 4
    assert (cfg["batch_size"], cfg["grad_accum"], cfg["max_iters"], cfg["learning_rate"]) == (4, 1, 1000, 3e-3)
    wd = scaling.apply(train.parse_config(["--hparam_rules=wd@2.048e6"]))
    assert wd["weight_decay"] == pytest.approx(0.2) and wd["learning_rate"] == 3e-3  # half the reference's tokens: 2x λ


def test_the_weight_decay_rule_follows_the_learning_rate_a_law_sets(tmp_path):
    cfg = scaling.apply(train.parse_config([f"--lr_law={law_file(tmp_path)}", "--hparam_rules=wd@1.024e6"]))
    assert cfg["weight_decay"] == pytest.approx(0.1 * 3e-3 / cfg["learning_rate"], rel=1e-12)  # same B and D: λ·η kept


@pytest.mark.parametrize("rules, message", [
    ("batch,momentum@1e6", "unknown rule momentum; the rules are batch, lr, wd (a comma list) or all, then @D_REF"),
    ("all", "give D_REF, the tokens of the run the configured batch, learning_rate and weight_decay were tuned for"),
    ("all@-3", "give D_REF"),
    ("lr@1e6", "lr rule scales learning_rate with the batch the batch rule sets"),
])
def test_bad_rules_are_one_line_naming_the_fix(rules, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        scaling.apply(train.parse_config([f"--hparam_rules={rules}"]))


def test_a_law_and_the_lr_rule_are_not_both_allowed(tmp_path):
    with pytest.raises(ConfigError, match="lr_law and hparam_rules' lr rule both set learning_rate"):
        scaling.apply(train.parse_config([f"--lr_law={law_file(tmp_path)}", "--hparam_rules=all@1e6"]))


def test_nothing_changes_without_a_law_or_rules():
    c = train.parse_config([])
    assert scaling.apply(c) is c


def test_a_resumed_run_sets_the_same_values_and_passes_the_schedule_check(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    args = ["--model=llama_nano", "--block_size=32", "--batch_size=4", "--eval_tokens=256", "--dtype=float32",
            "--max_iters=4", "--eval_interval=2", "--hparam_rules=all@64", f"--out_dir={out}"]
    train.main(args)  # D = 4·4·32 = 512 tokens, 8x the reference's: 128·8^0.383 = 284 tokens, 9 sequences -> 2 x 4
    saved = json.load(open(out / "config.json"))
    assert (saved["batch_size"], saved["grad_accum"], saved["max_iters"]) == (4, 2, 2)
    assert saved["learning_rate"] == pytest.approx(3e-3 * math.sqrt(2))
    capsys.readouterr()
    config, _ = dry_run(args + ["--init_from=resume"], capsys)  # the checkpoint's schedule and data keys compared
    assert config["learning_rate"] == saved["learning_rate"]
    with pytest.raises(ConfigError, match="other values of keys that define the LR schedule|trained on other batches"):
        train.main([a for a in args if not a.startswith("--hparam_rules")] + ["--init_from=resume", "--dry_run"])
