"""
Hyperparameters from a fitted law or from published scaling rules, set on train.py's config before anything
starts: train.py's main() calls apply() right after parsing the config. Every value set is printed on one line
with its reason and source (before the resolved config under --dry_run).

    python train.py configs/llama_135m.py --lr_law=out/ladder/law_uniform.json --dry_run
    python train.py --hparam_rules=all@1.024e6 --max_iters=4000 --dry_run

N is the run's non-embedding parameter count (model.py's num_params()[1], of the model this config builds: the
embeddings and the head are left out, so the vocabulary does not change it); D = max_iters × batch_size ×
block_size × grad_accum, the tokens the run trains on.

--lr_law=FILE, a law eval/lawfit.py fitted on a ladder: learning_rate = C·N^a·D^b. A law of another strategy,
  tokenizer, parametrization or strategy override is refused, naming both; a run outside the N or D range of the
  fit is warned of, with the factor it extrapolates by.
--hparam_rules=RULES@D_REF scales a tuned reference to this run's D. RULES: a comma list of batch, lr, wd, or all.
  The reference is this config: its tokens per step B_ref, learning_rate η_ref and weight_decay λ_ref, taken as
  tuned for a run of D_REF tokens.
  batch  B = B_ref·(D/D_ref)^0.383: the optimal batch grows as D^0.383 whatever N (Power Lines, Bergsma et al.
         2025, arXiv 2505.13738; nanochat's base_train.py scales its batch so). Rounded to whole sequences in
         micro-batches of at most the configured batch_size (grad_accum a multiple of the processes under
         torchrun); max_iters = D/B, so the run still trains on D tokens.
  lr     η = η_ref·√(B/B_ref), with B from the batch rule: the square-root rule for Adam (Malladi et al. 2022,
         arXiv 2205.10287; their rule also moves β₁, β₂ and ε with the batch, which this one keeps, as nanochat does).
  wd     λ from the AdamW EMA timescale (Wang & Aitchison 2024, arXiv 2405.13698): AdamW's weights are an EMA of
         recent updates over τ_iter = 1/(η·λ) updates; in passes over the run's D tokens, τ = τ_iter·B/D =
         B/(η·λ·D). The rule keeps the reference's τ: λ = λ_ref·(B/B_ref)·(η_ref/η)·(D_ref/D), with η the run's
         final learning_rate (from the lr rule, the law or the config). Power Lines finds the optimal τ falling as
         a power law in D/N rather than constant; that refinement is not applied here.
The values are a function of the config alone, so a resumed run sets the same ones and its checkpoint's
schedule check passes. Bad input is one `config error:` line.
"""
import json
import math
import os
import types

import torch

from configurator import ConfigError
from data.loader import dataset_dir
from model import PRESETS, Transformer
from preflight import check_config, model_config

LAW_FORMAT = "nanolr-lr-law-1"  # eval/lawfit.py writes it
RULES = ("batch", "lr", "wd")
BATCH_EXPONENT = 0.383  # Power Lines, arXiv 2505.13738: B_opt ∝ D^0.383


def apply(config):
    """config with learning_rate / batch_size / grad_accum / max_iters / weight_decay set by lr_law and
    hparam_rules (the same dict when both are empty); prints one line per value set."""
    if not config["lr_law"] and not config["hparam_rules"]:
        return config
    rules, d_ref = parse_rules(config["hparam_rules"]) if config["hparam_rules"] else ([], None)
    if config["lr_law"] and "lr" in rules:
        raise ConfigError("lr_law and hparam_rules' lr rule both set learning_rate: drop one (e.g. --hparam_rules=batch,wd@...)")
    c = types.SimpleNamespace(**config)
    check_config(c, 1)  # the model and its keys, as a run checks them first; N needs them
    cfg, said = dict(config), []
    say = lambda text: said.append(text)  # noqa: E731
    n, d = non_embedding_params(c), tokens_of(cfg)
    say(f"N = {n:,} non-embedding parameters; D = {d:,} tokens ({cfg['max_iters']} x {cfg['batch_size']} x "
        f"{cfg['block_size']} x {cfg['grad_accum']})")
    b_ref, lr_ref, wd_ref = tokens_per_step(cfg), cfg["learning_rate"], cfg["weight_decay"]

    if "batch" in rules:
        target = b_ref * (d / d_ref) ** BATCH_EXPONENT
        seqs = max(1, nearest(target / cfg["block_size"]))
        world = int(os.environ.get("WORLD_SIZE", 1))
        accum = max(world, world * nearest(seqs / (cfg["batch_size"] * world)))  # whole micro-batches, a multiple of the processes
        micro = min(cfg["batch_size"], max(1, nearest(seqs / accum)))
        cfg.update(batch_size=micro, grad_accum=accum)
        cfg["max_iters"] = max(1, nearest(d / tokens_per_step(cfg)))  # the same D in bigger (or smaller) steps
        say(f"batch_size = {micro}, grad_accum = {accum}: {tokens_per_step(cfg):,} tokens per step (was {b_ref:,}), the nearest "
            f"whole micro-batches to B_ref·(D/D_ref)^{BATCH_EXPONENT} = {b_ref:,}·({d:,}/{d_ref:,.0f})^{BATCH_EXPONENT} = "
            f"{target:,.0f} [Power Lines, arXiv 2505.13738]")
        say(f"max_iters = {cfg['max_iters']} (was {config['max_iters']}): D/B, so the run still trains on "
            f"{tokens_of(cfg):,} tokens")
    b, d = tokens_per_step(cfg), tokens_of(cfg)  # D moves by the rounding of the batch only

    if config["lr_law"]:
        law = read_law(config["lr_law"])
        said.extend(check_law(law, cfg, config["lr_law"]))
        cfg["learning_rate"] = lr = law_lr(law, n, d, config["lr_law"])
        say(f"learning_rate = {lr:.6g} (was {lr_ref:g}): C·N^a·D^b = "
            f"{law['C']:.6g}·{n:,}^{law['a'] or 0:+.4f}·{d:,}^{law['b'] or 0:+.4f}, "
            f"the law fitted on {law['cells']} cells of {law.get('source') or config['lr_law']}")
        said.extend(law_warnings(law, n, d, b))
    if "lr" in rules:
        if "batch" not in rules:
            raise ConfigError("hparam_rules' lr rule scales learning_rate with the batch the batch rule sets: "
                              "use it with batch (--hparam_rules=batch,lr@D_REF, or all@D_REF)")
        cfg["learning_rate"] = lr_ref * math.sqrt(b / b_ref)
        say(f"learning_rate = {cfg['learning_rate']:.6g} (was {lr_ref:g}): η_ref·√(B/B_ref) = {lr_ref:g}·√({b:,}/{b_ref:,}) "
            f"[square-root rule for Adam, Malladi et al. 2022, arXiv 2205.10287]")
    if "wd" in rules:
        lr = cfg["learning_rate"]
        cfg["weight_decay"] = wd_ref * (b / b_ref) * (lr_ref / lr) * (d_ref / d)
        tau = b_ref / (lr_ref * wd_ref * d_ref) if wd_ref > 0 else math.inf
        say(f"weight_decay = {cfg['weight_decay']:.6g} (was {wd_ref:g}): λ_ref·(B/B_ref)·(η_ref/η)·(D_ref/D) = "
            f"{wd_ref:g}·({b:,}/{b_ref:,})·({lr_ref:g}/{lr:.6g})·({d_ref:,.0f}/{d:,}), keeping the reference's AdamW EMA "
            f"timescale B/(η·λ·D) = {tau:.4g} runs [Wang & Aitchison 2024, arXiv 2405.13698]")
    if int(os.environ.get("RANK", 0)) == 0:
        for line in said:
            print(f"# scaling: {line}")
    return cfg


def nearest(v):
    """Round half up (Python's round() rounds half to even)."""
    return int(math.floor(v + 0.5))


def tokens_per_step(cfg):
    return cfg["batch_size"] * cfg["block_size"] * cfg["grad_accum"]


def tokens_of(cfg):
    return cfg["max_iters"] * tokens_per_step(cfg)


def non_embedding_params(c):
    """N of the model this config builds, on the meta device (no memory). The vocabulary only sizes the
    embeddings and the head, which N leaves out, so the preset's stands in for the dataset's."""
    with torch.device("meta"):
        return Transformer(model_config(c, PRESETS[c.model]["vocab_size"])).num_params()[1]


def tokenizer_of(dataset):
    """The tokenizer name of a prepared dataset (its meta.json); None when it is not prepared yet."""
    try:
        with open(os.path.join(dataset_dir(dataset), "meta.json")) as f:
            return json.load(f).get("tokenizer")
    except (OSError, ValueError):
        return None


def parse_rules(text):
    """'batch,lr,wd@1e6' or 'all@1e6' -> (rule names, D_REF)."""
    names, at, ref = text.partition("@")
    rules = [r.strip() for r in names.split(",") if r.strip()]
    rules = list(RULES) if rules == ["all"] else rules
    unknown = [r for r in rules if r not in RULES]
    if unknown or not rules:
        raise ConfigError(f"hparam_rules={text!r}: unknown rule {', '.join(unknown) or '(none given)'}; the rules are "
                          f"{', '.join(RULES)} (a comma list) or all, then @D_REF, e.g. --hparam_rules=all@1.024e6")
    try:
        d_ref = float(ref)
    except ValueError:
        d_ref = None
    if not at or d_ref is None or not (d_ref > 0 and math.isfinite(d_ref)):
        raise ConfigError(f"hparam_rules={text!r}: give D_REF, the tokens of the run the configured batch, learning_rate and "
                          f"weight_decay were tuned for, after '@' (e.g. --hparam_rules={','.join(rules)}@1.024e6)")
    return rules, d_ref


def read_law(path):
    try:
        with open(path) as f:
            law = json.load(f)
    except OSError as e:
        raise ConfigError(f"lr_law={path!r}: cannot read it ({e.strerror}); eval/lawfit.py writes law_<strategy>.json "
                          "into a ladder's output directory") from None
    except ValueError:
        raise ConfigError(f"lr_law={path!r} is not JSON: give a law_<strategy>.json that eval/lawfit.py wrote") from None
    if not isinstance(law, dict) or law.get("format") != LAW_FORMAT:
        raise ConfigError(f"lr_law={path!r} is not a learning-rate law of format {LAW_FORMAT!r}: give a law_<strategy>.json "
                          "that eval/lawfit.py wrote")
    missing = [k for k in ("strategy", "parametrization", "tokenizer", "x", "C", "a", "b", "n_range", "d_range", "cells") if k not in law]
    if missing:
        raise ConfigError(f"lr_law={path!r} lacks {', '.join(missing)}: write it again with eval/lawfit.py")
    return law


def check_law(law, cfg, path):
    """Refuse a law fitted for another run than this one, naming both; [a note] when the tokenizer cannot be checked."""
    if law["x"] != "nominal":
        raise ConfigError(f"lr_law={path!r} is a law of the {law['x']} LR, but learning_rate is the nominal one: "
                          "fit with `python eval/lawfit.py OUT --x nominal`")
    for key in ("strategy", "parametrization"):
        if law[key] != cfg[key]:
            raise ConfigError(f"lr_law={path!r} was fitted for {key} {law[key]!r}, but this run's {key} is {cfg[key]!r}: "
                              f"use the law of {cfg[key]!r} or set --{key}={law[key]}")
    tokenizer = tokenizer_of(cfg["dataset"])
    notes = [] if tokenizer is not None else [f"note: dataset {cfg['dataset']!r} is not prepared, so the law's tokenizer "
                                              f"({law['tokenizer']!r}) was not checked against it"]
    if tokenizer is not None and law["tokenizer"] != tokenizer:
        raise ConfigError(f"lr_law={path!r} was fitted on tokenizer {law['tokenizer']!r}, but this run's dataset "
                          f"{cfg['dataset']!r} is tokenized with {tokenizer!r}: a loss per token of another tokenizer has "
                          "another optimum; use a law fitted on this tokenizer")
    for kv in law.get("overrides") or []:
        key, _, value = kv.partition("=")
        if key in cfg and not same_value(cfg[key], value):
            raise ConfigError(f"lr_law={path!r} was fitted with {key}={value}, but this run has {key}={cfg[key]!r}: "
                              f"set --{key}={value}, or use a law fitted with this run's {key}")
    return notes


def same_value(have, text):
    if str(have).lower() == text.strip().lower():
        return True
    try:
        return math.isclose(float(have), float(text), rel_tol=1e-9)
    except (TypeError, ValueError):
        return False


def law_lr(law, n, d, path):
    """C·N^a·D^b; an exponent the ladder could not fit (one size, or one budget) allows only that N (or D)."""
    for exp, var, value, span in (("a", "N", n, law["n_range"]), ("b", "D", d, law["d_range"])):
        if law[exp] is None and value != span[0]:
            raise ConfigError(f"lr_law={path!r} was fitted at one {var} ({span[0]:,.0f}) and has no exponent {exp}, but this run "
                              f"has {var} = {value:,}: fit a ladder over several values of {var}")
    return law["C"] * n ** (law["a"] or 0.0) * d ** (law["b"] or 0.0)


def law_warnings(law, n, d, b):
    """Lines for a run outside the fitted range of N or D (by how much), or at another batch than the ladder's."""
    out = []
    for var, value, (lo, hi) in (("N", n, law["n_range"]), ("D", d, law["d_range"])):
        if value < lo or value > hi:
            factor, side = (lo / value, "below") if value < lo else (value / hi, "above")
            out.append(f"warning: {var} = {value:,} is {factor:.3g}x {side} the fitted range {lo:,.0f}–{hi:,.0f}: the law extrapolates")
    steps = law.get("tokens_per_step") or []
    if len(steps) == 1 and steps[0] != b:
        out.append(f"note: the ladder took {steps[0]:,.0f} tokens per step and this run takes {b:,}: the optimal LR moves with "
                   "the batch, which the law does not model")
    return out
