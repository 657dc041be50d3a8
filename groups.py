"""
Parameter groups: one per weight matrix plus the rest (norms, biases), named by module path
('blocks.3.attn.q') with a kind (embed/head/attn_qk/attn_vo/mlp/norm) and a depth in [0, 1]. Every
strategy of optim.py builds its torch param groups from these, so a rule written against names and
kinds works for every strategy; docs/models.md has the scheme.
"""
import torch.nn as nn


def matrix_kind(name):
    """Kind of a weight matrix from its module name (model.py naming)."""
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
    raise ValueError(f"cannot tell the kind of weight matrix {name!r}")


def unwrap(model):
    """The module inside DDP and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def param_groups(model, rest_by_depth=False):
    """One dict per weight matrix (nn.Linear / nn.Embedding weight), in module order, plus the rest
    (norms, biases) in one group named 'rest' or, with rest_by_depth, one group per depth level.

    Each dict: name ('blocks.3.attn.q'), params ([tensor]), kind (embed/head/attn_qk/attn_vo/mlp/norm),
    depth in [0, 1] (embeddings 0, block i at (i+1)/(L+1), final norm and head 1), decay (True for
    matrices). A tied matrix (GPT's embed/head) appears once, as 'embed'.
    """
    model = unwrap(model)
    n_layer = len(model.blocks)

    def depth_of(name):
        if name.startswith("blocks."):
            return (int(name.split(".")[1]) + 1) / (n_layer + 1)
        return 0.0 if "embed" in name else 1.0

    groups, seen, rest = [], set(), {}
    for mod_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            groups.append(dict(name=mod_name, params=[module.weight], kind=matrix_kind(mod_name),
                               depth=depth_of(mod_name), decay=True))
    for pname, p in model.named_parameters():
        if id(p) in seen:
            continue
        depth = depth_of(pname)
        key = f"rest.{depth:.4f}" if rest_by_depth else "rest"
        rest.setdefault(key, dict(name=key, params=[], kind="norm", depth=depth, decay=False))["params"].append(p)
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
    K = L+2; with levels > 0 the K levels are bucketed into that many (2.6¹³ ≈ 2.5e5 is too wide a
    spread for 12 blocks). Returns (list of l, K)."""
    n_layer = len(unwrap(model).blocks)
    K = n_layer + 2
    ls = [round(g["depth"] * (n_layer + 1)) for g in groups]
    if levels > 0:
        ls, K = [l * levels // K for l in ls], levels
    return ls, K
