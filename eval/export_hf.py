"""
Export a nanoLR checkpoint to a Hugging Face transformers directory (config.json + model.safetensors),
so that lm-eval, vLLM or `AutoModelForCausalLM` can run it.

  llama -> LlamaForCausalLM: same rotate-half RoPE (no q/k permutation), RMSNorm, SwiGLU, untied head.
  gpt   -> GPT2LMHeadModel: q, k, v fused into c_attn; HF's Conv1D stores weights as (in, out), so every
           matrix is transposed; our LayerNorms and Linears have no bias, so zero biases are written;
           exact GELU ("gelu", not GPT-2's "gelu_new"); tied embedding and head.
vocab_size is the model's (padded) one. No tokenizer files are written: for 'gpt2' checkpoints use the
GPT-2 tokenizer (e.g. lm-eval `tokenizer=gpt2`); the byte tokenizer has no HF counterpart.

python eval/export_hf.py --ckpt out/run --out out/run/hf
transformers is needed only here (pip install transformers safetensors).
"""
import argparse
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


def hf_model(cfg, state_dict, tokenizer=None):
    """The transformers model holding our weights (float32 unless the weights are otherwise)."""
    import transformers
    eot = tokenizer_class(tokenizer).eot if tokenizer else None
    if cfg.arch == "llama":
        hf_cfg = transformers.LlamaConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.ffn_hidden,
            num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_head,
            max_position_embeddings=cfg.block_size, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
            hidden_act="silu", attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
            bos_token_id=eot, eos_token_id=eot)
        cls, weights = transformers.LlamaForCausalLM, llama_state(cfg, state_dict)
    else:
        hf_cfg = transformers.GPT2Config(
            vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
            n_head=cfg.n_head, n_inner=cfg.ffn_hidden, activation_function="gelu", layer_norm_epsilon=cfg.norm_eps,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, bos_token_id=eot, eos_token_id=eot)
        cls, weights = transformers.GPT2LMHeadModel, gpt2_state(cfg, state_dict)
    hf_cfg.nanolr_tokenizer = tokenizer  # which tokenizer the ids belong to (kept in config.json)
    with torch.device("meta"):
        model = cls(hf_cfg)
    model.load_state_dict(weights, strict=True, assign=True)
    if cfg.arch == "gpt":
        model.tie_weights()
    return model.eval()


def export(ckpt_path, out_dir):
    import model as M
    ckpt = M.load_checkpoint(ckpt_path)
    cfg = M.ModelConfig(**ckpt["model_config"])
    if cfg.parametrization != "sp":  # the HF classes have no output, attention or branch multipliers to carry them
        raise ValueError(f"{ckpt_path!r} was trained with parametrization={cfg.parametrization!r}; export supports 'sp' only")
    tokenizer = tokenizer_of(ckpt)
    check_vocab(cfg.vocab_size, tokenizer)
    model = hf_model(cfg, ckpt["model"], tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
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
