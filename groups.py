"""
Parameter groups: one per weight matrix plus the rest (norms, biases), named by module path
('blocks.3.attn.q') with a kind (embed/head/attn_qk/attn_vo/mlp/norm) and a depth in [0, 1]. Every
strategy of optim.py builds its torch param groups from these, so a rule written against names and
kinds works for every strategy; docs/models.md has the scheme. Models not built by model.py (Hugging
Face transformers: LLaMA, GPT-2, BERT, RoBERTa, DistilBERT, ...) keep their own module paths; their
kinds come from HF_KINDS, then a generic rule (docs/models.md, "Parameter groups of other models").
"""
import torch.nn as nn

# Kind of a weight matrix of another model by the end of its module path (the longest match wins)
HF_KINDS = {
    # LLaMA (and Mistral, Qwen, ...)
    "q_proj": "attn_qk", "k_proj": "attn_qk", "v_proj": "attn_vo", "o_proj": "attn_vo",
    "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp", "embed_tokens": "embed", "lm_head": "head",
    "score": "head",  # the sequence-classification head of LLaMA, Mistral, GPT-2, ...
    # GPT-2 (transformers' Conv1D, weight (in, out)); c_attn is q|k|v fused in one matrix: attn_qk
    "c_attn": "attn_qk", "attn.c_proj": "attn_vo", "mlp.c_fc": "mlp", "mlp.c_proj": "mlp", "wte": "embed", "wpe": "embed",
    # BERT, RoBERTa
    "query": "attn_qk", "key": "attn_qk", "value": "attn_vo", "attention.output.dense": "attn_vo",
    "intermediate.dense": "mlp", "output.dense": "mlp", "word_embeddings": "embed", "position_embeddings": "embed",
    "token_type_embeddings": "embed", "pooler.dense": "head", "classifier": "head", "classifier.dense": "head",
    "classifier.out_proj": "head",
    # DistilBERT
    "q_lin": "attn_qk", "k_lin": "attn_qk", "v_lin": "attn_vo", "out_lin": "attn_vo", "ffn.lin1": "mlp", "ffn.lin2": "mlp",
    "pre_classifier": "head",
}
LAYER_CONTAINERS = ("layer", "layers", "h", "block", "blocks")  # '<container>.<i>.' marks layer i
MATRIX_TYPES = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d)   # and transformers' Conv1D (is_matrix)


def matrix_kind(name):
    """Kind of a weight matrix from its module name: model.py naming, then HF_KINDS by the end of the path."""
    leaf = name.rsplit(".", 1)[-1]
    if name in ("embed", "pos_embed"):
        return "embed"
    if name == "head":
        return "head"
    if leaf in ("q", "k"):
        return "attn_qk"
    if leaf in ("v", "o"):
        return "attn_vo"
    if leaf in ("gate", "up", "down"):
        return "mlp"
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        kind = HF_KINDS.get(".".join(parts[-n:]))
        if kind:
            return kind
    raise ValueError(f"cannot tell the kind of weight matrix {name!r}")


def unwrap(model):
    """The module inside DDP and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def is_matrix(module):
    """A module whose .weight is a weight matrix: Linear, Embedding, Conv1d/2d, transformers' Conv1D."""
    return (isinstance(module, MATRIX_TYPES) or type(module).__name__ == "Conv1D") and \
        isinstance(getattr(module, "weight", None), nn.Parameter)


def layer_index(name):
    """i of the first '<container>.<i>' in a module or parameter path (container in LAYER_CONTAINERS), or None."""
    parts = name.split(".")
    for a, b in zip(parts, parts[1:]):
        if a in LAYER_CONTAINERS and b.isdigit():
            return int(b)
    return None


def n_layers(model):
    """L: 1 + the largest layer index in the parameter names (len(model.blocks) for model.py), 0 if none."""
    return 1 + max((i for i in map(layer_index, (n for n, _ in unwrap(model).named_parameters())) if i is not None),
                   default=-1)


def param_groups(model, rest_by_depth=False):
    """One dict per weight matrix (the weight of a Linear, Embedding, Conv or Conv1D), in module order,
    plus the rest (norms, biases) in one group named 'rest' or, with rest_by_depth, one group per depth.

    Each dict: name ('blocks.3.attn.q'), params ([tensor]), kind (embed/head/attn_qk/attn_vo/mlp/norm),
    depth in [0, 1] (layer i at (i+1)/(L+1); what comes before the first layer 0, after the last 1),
    decay (True for matrices). A tied matrix (GPT's embed/head) appears once, under its first name.
    ValueError names the matrices whose kind neither matrix_kind nor the generic rule can tell.
    """
    model = unwrap(model)
    owner = {}  # id(weight) -> (module name, module), first name of a tied weight
    for mod_name, module in model.named_modules():
        if is_matrix(module):
            owner.setdefault(id(module.weight), (mod_name, module))
    named = list(model.named_parameters())  # module order; a tied weight once
    indexed = [k for k, (pname, _) in enumerate(named) if layer_index(pname) is not None]
    n_layer = 1 + max(layer_index(named[k][0]) for k in indexed) if indexed else 0

    def depth_of(pname, k):
        i = layer_index(pname)
        if i is not None:
            return (i + 1) / (n_layer + 1)
        return 0.0 if not indexed or k < indexed[0] else 1.0

    def kind_of(mod_name, module, k):
        try:
            return matrix_kind(mod_name)
        except ValueError:
            pass
        if isinstance(module, nn.Embedding):
            return "embed"
        if layer_index(mod_name) is not None:
            return "mlp"
        if indexed and k < indexed[0]:
            return "embed"  # an input map before the first layer (a patch or projection embedding)
        if indexed and k > indexed[-1]:
            return "head"
        return None

    groups, rest, unplaced = [], {}, []
    for k, (pname, p) in enumerate(named):
        if id(p) in owner:
            mod_name, module = owner[id(p)]
            kind = kind_of(mod_name, module, k)
            if kind is None:
                unplaced.append(f"{mod_name} ({type(module).__name__})")
            groups.append(dict(name=mod_name, params=[p], kind=kind, depth=depth_of(mod_name, k), decay=True))
            continue
        depth = depth_of(pname, k)
        key = f"rest.{depth:.4f}" if rest_by_depth else "rest"
        rest.setdefault(key, dict(name=key, params=[], kind="norm", depth=depth, decay=False))["params"].append(p)
    if unplaced:
        raise ValueError(f"groups.py cannot tell the kind of the weight matrices {', '.join(unplaced)}: they have no "
                         f"layer index ('<{'|'.join(LAYER_CONTAINERS)}>.<i>.' in the name) and sit neither before "
                         f"the first layer nor after the last; add their leaf names to HF_KINDS in groups.py "
                         f"(e.g. HF_KINDS['{unplaced[0].split(' ')[0].rsplit('.', 1)[-1]}'] = 'mlp')")
    return groups + list(rest.values())


def decayed_groups(model, cfg, rest_by_depth=False, decay_all=False):
    """param_groups with weight_decay set: matrices decay, norms and biases only with decay_norms
    (decay_all: everything, for rules that own their exclusions or decay everything as published)."""
    groups = param_groups(model, rest_by_depth)
    for g in groups:
        g["weight_decay"] = cfg["weight_decay"] if (decay_all or g["decay"] or cfg["decay_norms"]) else 0.0
    return groups


def depth_levels(model, groups, levels=0):
    """Integer level l of each group, input (0) to output (K−1), from its depth: l = round(d(L+1)),
    K = L+2, L = n_layers(model); with levels > 0 the K levels are bucketed into that many (2.6¹³ ≈ 2.5e5
    is too wide a spread for 12 blocks). Returns (list of l, K)."""
    n_layer = n_layers(model)
    K = n_layer + 2
    ls = [round(g["depth"] * (n_layer + 1)) for g in groups]
    if levels > 0:
        ls, K = [l * levels // K for l in ls], levels
    return ls, K
