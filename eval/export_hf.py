"""
Export a nanoLR checkpoint to a Hugging Face transformers directory (config.json + model.safetensors),
so that lm-eval, vLLM or `AutoModelForCausalLM` can run it.

  llama -> LlamaForCausalLM: same rotate-half RoPE (no q/k permutation), RMSNorm, SwiGLU, untied head.
  gpt   -> GPT2LMHeadModel: q, k, v fused into c_attn; HF's Conv1D stores weights as (in, out), so every
           matrix is transposed; our LayerNorms and Linears have no bias, so zero biases are written;
           exact GELU ("gelu", not GPT-2's "gelu_new"); tied embedding and head.
vocab_size is the model's (padded) one. No tokenizer files are written: for 'gpt2' checkpoints use the
GPT-2 tokenizer (e.g. lm-eval `tokenizer=gpt2`); the byte tokenizer has no HF counterpart.

Every weight of the checkpoint must have a place in the HF model: one that llama_state / gpt2_state do not
map (a fork's extra weights, e.g. QK-norm gains) stops the export with its name, never silently dropped.
--out is a new directory or an earlier export (whose config.json and weights are replaced); a file, the
checkpoint's own directory and any directory holding a run (ckpt.pt, ckpt_<iter>.pt, metrics.jsonl or
train.py's config.json) are refused, so that no run is written over.

python eval/export_hf.py --ckpt out/run --out out/run/hf
transformers is needed only here (pip install transformers safetensors).
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data.tokenizer import check_vocab, tokenizer_class, tokenizer_of  # noqa: E402


def llama_state(cfg, sd):
    out = {"model.embed_tokens.weight": sd["embed.weight"], "model.norm.weight": sd["norm.weight"],
           "lm_head.weight": sd["head.weight"]}
    for i in range(cfg.n_layer):
        ours, hf = f"blocks.{i}.", f"model.layers.{i}."
        out[hf + "input_layernorm.weight"] = sd[ours + "attn_norm.weight"]
        out[hf + "post_attention_layernorm.weight"] = sd[ours + "mlp_norm.weight"]
        for a in "qkvo":
            out[hf + f"self_attn.{a}_proj.weight"] = sd[ours + f"attn.{a}.weight"]
        for m in ("gate", "up", "down"):
            out[hf + f"mlp.{m}_proj.weight"] = sd[ours + f"mlp.{m}.weight"]
    return out


def gpt2_state(cfg, sd):
    d, zeros = cfg.n_embd, lambda n: torch.zeros(n, dtype=sd["embed.weight"].dtype)
    out = {"transformer.wte.weight": sd["embed.weight"], "transformer.wpe.weight": sd["pos_embed.weight"],
           "transformer.ln_f.weight": sd["norm.weight"], "transformer.ln_f.bias": zeros(d),
           "lm_head.weight": sd["embed.weight"]}
    if "head.weight" in sd and not torch.equal(sd["head.weight"], sd["embed.weight"]):
        raise ValueError("the checkpoint's head.weight differs from embed.weight: GPT2LMHeadModel ties them, so an "
                         "untied head cannot be exported (gpt2_state must map it to another class)")
    for i in range(cfg.n_layer):
        ours, hf = f"blocks.{i}.", f"transformer.h.{i}."
        qkv = torch.cat([sd[ours + f"attn.{a}.weight"] for a in "qkv"], dim=0)  # (3d, d) as a Linear
        out.update({
            hf + "ln_1.weight": sd[ours + "attn_norm.weight"], hf + "ln_1.bias": zeros(d),
            hf + "attn.c_attn.weight": qkv.t().contiguous(), hf + "attn.c_attn.bias": zeros(3 * d),
            hf + "attn.c_proj.weight": sd[ours + "attn.o.weight"].t().contiguous(), hf + "attn.c_proj.bias": zeros(d),
            hf + "ln_2.weight": sd[ours + "mlp_norm.weight"], hf + "ln_2.bias": zeros(d),
            hf + "mlp.c_fc.weight": sd[ours + "mlp.up.weight"].t().contiguous(), hf + "mlp.c_fc.bias": zeros(cfg.ffn_hidden),
            hf + "mlp.c_proj.weight": sd[ours + "mlp.down.weight"].t().contiguous(), hf + "mlp.c_proj.bias": zeros(d),
        })
    return out


BUFFERS = ("rope_cos", "rope_sin")  # recomputed from the config, not weights (model.py keeps them out of state dicts)


class ReadKeys(dict):
    """A state dict that records the keys read from it: what the mapping leaves unread has no place in the export."""
    def __init__(self, sd):
        super().__init__(sd)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def hf_model(cfg, state_dict, tokenizer=None):
    """The transformers model holding our weights (float32 unless the weights are otherwise). ValueError
    names the checkpoint's weights that the mapping does not place."""
    import transformers
    eot = tokenizer_class(tokenizer).eot if tokenizer else None
    if cfg.arch == "llama":
        hf_cfg = transformers.LlamaConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.ffn_hidden,
            num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_head,
            max_position_embeddings=cfg.block_size, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
            hidden_act="silu", attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
            bos_token_id=eot, eos_token_id=eot)
        cls, mapping = transformers.LlamaForCausalLM, llama_state
    else:
        hf_cfg = transformers.GPT2Config(
            vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
            n_head=cfg.n_head, n_inner=cfg.ffn_hidden, activation_function="gelu", layer_norm_epsilon=cfg.norm_eps,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, bos_token_id=eot, eos_token_id=eot)
        cls, mapping = transformers.GPT2LMHeadModel, gpt2_state
    sd = ReadKeys(state_dict)
    weights = mapping(cfg, sd)
    left = [k for k in state_dict if k not in sd.read and k not in BUFFERS]
    if left:
        raise ValueError(f"the checkpoint has {len(left)} weight(s) that the {cls.__name__} export cannot map: "
                         f"{', '.join(left[:4])}{', ...' if len(left) > 4 else ''}; export_hf.py's {mapping.__name__} "
                         "must map them (exporting without them would give another model)")
    hf_cfg.nanolr_tokenizer = tokenizer  # which tokenizer the ids belong to (kept in config.json)
    with torch.device("meta"):
        model = cls(hf_cfg)
    model.load_state_dict(weights, strict=True, assign=True)
    if cfg.arch == "gpt":
        model.tie_weights()
    return model.eval()


def check_out(ckpt_file, out_dir):
    """ValueError unless out_dir is a new directory or an earlier export (see the module docstring)."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir!r} is a file: pass a directory for config.json and model.safetensors")
    if os.path.realpath(out_dir) == os.path.realpath(os.path.dirname(ckpt_file)):
        raise ValueError(f"--out {out_dir!r} is the checkpoint's own directory: pass a new one, e.g. --out {os.path.join(out_dir, 'hf')}")
    names = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    held = [f for f in names if f in ("ckpt.pt", "metrics.jsonl") or f.startswith("ckpt_") and f.endswith(".pt")][:3]
    config = os.path.join(out_dir, "config.json")
    if os.path.isfile(config):
        try:
            with open(config) as f:
                hf = "model_type" in json.load(f)  # an earlier export: every HF config.json names its model_type
        except (ValueError, TypeError, OSError):
            hf = False
        if not hf:
            held.append("config.json (not a Hugging Face config)")
    if held:
        raise ValueError(f"--out {out_dir!r} holds a run ({', '.join(held)}): pass a new directory, e.g. --out {os.path.join(out_dir, 'hf')}")


def export(ckpt_path, out_dir):
    import model as M
    check_out(M.checkpoint_path(ckpt_path), out_dir)
    ckpt = M.load_checkpoint(ckpt_path)
    cfg = M.ModelConfig(**ckpt["model_config"])
    if cfg.parametrization != "sp":  # the HF classes have no output, attention or branch multipliers to carry them
        raise ValueError(f"{ckpt_path!r} was trained with parametrization={cfg.parametrization!r}; export supports 'sp' only")
    tokenizer = tokenizer_of(ckpt)
    check_vocab(cfg.vocab_size, tokenizer)
    model = hf_model(cfg, ckpt["model"], tokenizer)
    try:
        model.save_pretrained(out_dir, safe_serialization=True)
    except OSError as e:  # a parent that is a file, no permission, a full disk
        raise ValueError(f"cannot write --out {out_dir!r}: {e.strerror or e}") from None
    return out_dir


def main(argv=None):
    p = argparse.ArgumentParser(description="Export a nanoLR checkpoint to a Hugging Face transformers directory.")
    p.add_argument("--ckpt", required=True, help="run directory or ckpt.pt written by train.py")
    p.add_argument("--out", required=True, help="output directory (config.json + model.safetensors)")
    args = p.parse_args(argv)
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise RuntimeError("export needs transformers: pip install transformers safetensors") from None
    export(args.ckpt, args.out)
    print(f"wrote {args.out} (load with transformers.AutoModelForCausalLM.from_pretrained({args.out!r}))")


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
