"""groups.py on Hugging Face transformers models (tiny configs, built offline): every parameter in one group,
kinds and depths by docs/models.md's table and rules, tied weights once, and every strategy of optim.py
building and making one update on them, LLR fitting one α per matrix."""
import math

import pytest
import torch
import torch.nn as nn

transformers = pytest.importorskip("transformers")

import groups  # noqa: E402
import optim  # noqa: E402

transformers.logging.set_verbosity_error()
MODELS = ("distilbert", "bert", "roberta", "llama", "gpt2")
CAUSAL = ("llama", "gpt2")


def make(kind, seed=0, **extra):
    torch.manual_seed(seed)
    T = transformers
    if kind == "distilbert":
        cfg = T.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64)
    elif kind == "bert":
        cfg = T.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=64)
    elif kind == "roberta":
        cfg = T.RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=66)
    elif kind == "llama":
        cfg = T.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=2, vocab_size=100, **extra)
    else:
        cfg = T.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64, bos_token_id=0, eos_token_id=0)
    auto = T.AutoModelForCausalLM if kind in CAUSAL else T.AutoModelForSequenceClassification
    return auto.from_config(cfg)


def forward_backward(model, kind):
    x = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(1))
    labels = x if kind in CAUSAL else torch.tensor([0, 1])

    def fb():
        loss = model(input_ids=x, labels=labels).loss
        loss.backward()
        return loss.detach()
    return fb


# representative names -> kind, as docs/models.md tables them
KINDS = {
    "distilbert": {"distilbert.embeddings.word_embeddings": "embed", "distilbert.embeddings.position_embeddings": "embed",
                   "distilbert.transformer.layer.0.attention.q_lin": "attn_qk",
                   "distilbert.transformer.layer.0.attention.k_lin": "attn_qk",
                   "distilbert.transformer.layer.1.attention.v_lin": "attn_vo",
                   "distilbert.transformer.layer.1.attention.out_lin": "attn_vo",
                   "distilbert.transformer.layer.0.ffn.lin1": "mlp", "distilbert.transformer.layer.1.ffn.lin2": "mlp",
                   "pre_classifier": "head", "classifier": "head"},
    "bert": {"bert.embeddings.word_embeddings": "embed", "bert.embeddings.token_type_embeddings": "embed",
             "bert.encoder.layer.0.attention.self.query": "attn_qk", "bert.encoder.layer.0.attention.self.key": "attn_qk",
             "bert.encoder.layer.0.attention.self.value": "attn_vo", "bert.encoder.layer.1.attention.output.dense": "attn_vo",
             "bert.encoder.layer.0.intermediate.dense": "mlp", "bert.encoder.layer.1.output.dense": "mlp",
             "bert.pooler.dense": "head", "classifier": "head"},
    "roberta": {"roberta.embeddings.position_embeddings": "embed", "roberta.encoder.layer.1.attention.self.key": "attn_qk",
                "roberta.encoder.layer.0.attention.output.dense": "attn_vo", "roberta.encoder.layer.0.output.dense": "mlp",
                "classifier.dense": "head", "classifier.out_proj": "head"},
    "llama": {"model.embed_tokens": "embed", "model.layers.0.self_attn.q_proj": "attn_qk",
              "model.layers.1.self_attn.k_proj": "attn_qk", "model.layers.0.self_attn.v_proj": "attn_vo",
              "model.layers.0.self_attn.o_proj": "attn_vo", "model.layers.1.mlp.gate_proj": "mlp",
              "model.layers.1.mlp.up_proj": "mlp", "model.layers.0.mlp.down_proj": "mlp", "lm_head": "head"},
    "gpt2": {"transformer.wte": "embed", "transformer.wpe": "embed", "transformer.h.0.attn.c_attn": "attn_qk",
             "transformer.h.1.attn.c_proj": "attn_vo", "transformer.h.0.mlp.c_fc": "mlp", "transformer.h.1.mlp.c_proj": "mlp"},
}


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


@pytest.mark.parametrize("kind", MODELS)
def test_every_parameter_in_exactly_one_group(kind):
    m = make(kind)
    for rest_by_depth in (False, True):
        gs = groups.param_groups(m, rest_by_depth)
        ids = [id(p) for g in gs for p in g["params"]]
        assert len(ids) == len(set(ids))
        assert set(ids) == {id(p) for p in m.parameters()}
        assert all(g["kind"] in optim.BLOCKWISE for g in gs)  # the six kinds every strategy knows


@pytest.mark.parametrize("kind", MODELS)
def test_kinds_as_tabled(kind):
    m = make(kind)
    gs = {g["name"]: g for g in groups.param_groups(m)}
    for name, k in KINDS[kind].items():
        assert gs[name]["kind"] == k, name
        assert groups.matrix_kind(name) == k, name  # the public function (eval/plots.py's kind_of) agrees
    matrices = {n for n, mod in m.named_modules() if groups.is_matrix(mod)}
    assert {n for n in gs if n != "rest"} <= matrices


@pytest.mark.parametrize("kind", MODELS)
def test_depths_by_layer_index(kind):
    m = make(kind)
    gs = groups.param_groups(m, rest_by_depth=True)
    L = groups.n_layers(m)
    assert L == 2
    last = -1.0
    for g in gs:
        if g["kind"] == "norm":
            continue
        i = groups.layer_index(g["name"])
        if g["kind"] == "embed":
            assert g["depth"] == 0.0
        elif g["kind"] == "head":
            assert g["depth"] == 1.0
        else:
            assert g["depth"] == pytest.approx((i + 1) / (L + 1))
        assert g["depth"] >= last  # module order runs input to output
        last = g["depth"]
    ls, K = groups.depth_levels(m, gs)
    assert K == L + 2
    assert set(ls) == set(range(K))  # 0 (embeddings), 1..L (layers), L+1 (final norm, head)
    for l, g in zip(ls, gs):
        i = groups.layer_index(g["name"])
        if g["kind"] == "norm":  # rest.<depth>
            assert l == round(g["depth"] * (L + 1))
        else:
            assert l == (i + 1 if i is not None else (0 if g["kind"] == "embed" else K - 1))
    assert groups.depth_levels(m, gs, levels=2)[1] == 2


@pytest.mark.parametrize("kind,extra", [("gpt2", {}), ("llama", dict(tie_word_embeddings=True))])
def test_tied_weights_once(kind, extra):
    m = make(kind, **extra)
    assert m.lm_head.weight is m.get_input_embeddings().weight
    gs = groups.param_groups(m)
    names = [g["name"] for g in gs]
    assert "lm_head" not in names
    assert names[0] in ("transformer.wte", "model.embed_tokens") and gs[0]["kind"] == "embed"
    assert sum(p is m.lm_head.weight for g in gs for p in g["params"]) == 1


def test_generic_rule_and_error():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(10, 8)
            self.proj_in = nn.Linear(8, 8)
            self.layers = nn.ModuleList([nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)) for _ in range(3)])
            self.ln_out = nn.LayerNorm(8)
            self.out = nn.Linear(8, 4)

    gs = {g["name"]: (g["kind"], g["depth"]) for g in groups.param_groups(Net())}
    assert gs == {"tok": ("embed", 0.0), "proj_in": ("embed", 0.0), "layers.0.0": ("mlp", 0.25), "layers.1.0": ("mlp", 0.5),
                  "layers.2.0": ("mlp", 0.75), "out": ("head", 1.0), "rest": ("norm", 0.0)}
    with pytest.raises(ValueError, match=r"0 \(Linear\).*HF_KINDS in groups.py"):
        groups.param_groups(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="cannot tell the kind"):
        groups.matrix_kind("encoder.mystery")


LLR = ("llr", "llr_muon")  # llr_min_evals=2 (LLR_KEYS: 50): the 32-wide matrices have 32 eigenvalues or fewer
STRATEGIES = ("uniform", "llr", "llr_muon", "discriminative", "stlr_discriminative", "llrd", "dals", "muon", "blockwise")


def cfg_for(name):
    return optim.default_config(max_iters=10, **(dict(llr_min_evals=2) if name in LLR else {}))


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_updates_hf_model(kind, name):
    m = make(kind)
    s = optim.build(name, m, cfg_for(name))
    before = [p.detach().clone() for p in m.parameters()]
    loss = optim.update(s, 0, forward_backward(m, kind))
    assert math.isfinite(loss.item())
    after = list(m.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    matrices = [g["name"] for g in s.optimizer.param_groups if g["kind"] != "norm"]
    if name in LLR:
        alphas = s.log_record()["alpha"]
        assert sorted(alphas) == sorted(matrices)  # one α per matrix group
    if name in ("muon", "llr_muon"):
        muon = {g["name"] for g in s.optimizer.param_groups if g["use_muon"]}
        hidden = {g["name"] for g in s.optimizer.param_groups if g["kind"] in ("attn_qk", "attn_vo", "mlp")}
        assert muon == hidden and muon  # Conv1D and the fused c_attn go to Muon like any matrix


@pytest.mark.parametrize("kind", MODELS)
def test_every_strategy_runs(kind):
    m = make(kind)
    fb = forward_backward(m, kind)
    for name in optim.STRATEGIES:
        try:
            s = optim.build(name, m, cfg_for(name))
        except optim.ConfigError as e:
            if "pip install" in str(e):
                continue  # an optional package (schedulefree)
            raise
        assert math.isfinite(optim.update(s, 0, fb).item()), name
