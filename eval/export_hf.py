"""
Export a nanoLR checkpoint to a Hugging Face transformers directory (config.json + model.safetensors +
tokenizer.json), so that lm-eval, vLLM or `AutoModelForCausalLM` / `AutoTokenizer` run it offline.

  llama -> LlamaForCausalLM: same rotate-half RoPE (no q/k permutation), RMSNorm, SwiGLU, untied head.
  gpt   -> GPT2LMHeadModel: q, k, v fused into c_attn; HF's Conv1D stores weights as (in, out), so every
           matrix is transposed; our LayerNorms and Linears have no bias, so zero biases are written;
           exact GELU ("gelu", not GPT-2's "gelu_new"); tied embedding and head.
vocab_size is the model's (padded) one.

The tokenizer (tokenizer.json + tokenizer_config.json, a PreTrainedTokenizerFast) gives nanoLR's ids:
  gpt2 -> byte-level BPE built from the same BPE ranks as data/tokenizer.py (vocab: each token's bytes in
          GPT-2's byte-to-unicode alphabet; merges: each token's split under the lower ranks), tiktoken's
          split regex; "<|endoftext|>" = 50256 is EOS/BOS/pad, and in text it is split like any other
          text (split_special_tokens), as nanoLR's encode_ordinary does.
  byte -> ids 0..255 = the UTF-8 bytes (a BPE without merges over the byte alphabet); EOT 0 is NUL ("\0"),
          the EOS/BOS/pad token.
If the tokenizer cannot be built (the GPT-2 ranks are not available offline) or written, one warning says
why, the weights are still written and the exit status is 0.

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
from data.tokenizer import check_vocab, get_tokenizer, tokenizer_class, tokenizer_of  # noqa: E402


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
    model.generation_config.pad_token_id = eot  # pads with EOT, as the exported tokenizer does
    return model.eval()


# ----------------------------------------------------------------------------------------------
# tokenizer

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def byte_alphabet():
    """GPT-2's byte -> printable character map (the ByteLevel alphabet of `tokenizers`): printable
    Latin-1 bytes stand for themselves, the other 68 take the characters from U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return chars


def bpe_merges(ranks):
    """(left, right) byte pairs, one per multi-byte token in rank order: the two tokens that BPE with only
    the lower ranks leaves, so that merge priority = rank and HF's BPE merges exactly as tiktoken does."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:  # merge the lowest-ranked adjacent pair, as tiktoken encodes
            r, i = min((ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1))
            if r >= rank:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) != 2:
            raise ValueError(f"GPT-2 rank {rank} ({token!r}) is no merge of two lower-ranked tokens")
        merges.append((parts[0], parts[1]))
    return merges


def hf_tokenizer(name, block_size):
    """A transformers PreTrainedTokenizerFast whose encode(text, add_special_tokens=False) equals
    data.tokenizer's encode(text) and whose EOS/BOS/pad is nanoLR's EOT."""
    import transformers
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    chars = byte_alphabet()
    if name == "gpt2":
        from tiktoken_ext.openai_public import r50k_pat_str
        enc = get_tokenizer("gpt2").enc
        ranks = {b: enc.encode_single_token(b) for b in enc.token_byte_values()}

        def as_str(b):
            return "".join(chars[x] for x in b)
        vocab = {as_str(b): r for b, r in ranks.items()}
        merges = [(as_str(a), as_str(b)) for a, b in bpe_merges(ranks)]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        # tiktoken's own regex splits the text, then ByteLevel maps bytes to the alphabet without splitting again
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r50k_pat_str), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        eot, split = "<|endoftext|>", True  # nanoLR's encode_ordinary reads "<|endoftext|>" in text as text
    else:
        # byte b -> id b; NUL is EOT (id 0) and its own token, so "\0" in text still encodes to 0
        vocab = {chars[b]: b for b in range(1, 256)}
        vocab["\0"] = 0
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        # no regex split: every byte is a token whatever its neighbours
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        eot, split = "\0", False
    tok.decoder = decoders.ByteLevel()
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=eot, bos_token=eot, pad_token=eot, model_max_length=block_size,
        clean_up_tokenization_spaces=False, split_special_tokens=split,
        model_input_names=["input_ids", "attention_mask"],  # GPT2 would add token_type_ids' embeddings
        padding_side="left")  # batched generate continues every row at its end
    if hf.eos_token_id != tokenizer_class(name).eot or len(hf) != tokenizer_class(name).n_vocab:
        raise ValueError(f"the {name!r} tokenizer built for transformers has EOS {hf.eos_token_id} and {len(hf)} ids, "
                         f"not nanoLR's {tokenizer_class(name).eot} and {tokenizer_class(name).n_vocab}")
    return hf


def remove_tokenizer(out_dir):
    for f in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(out_dir, f)):
            os.remove(os.path.join(out_dir, f))


def write_tokenizer(name, block_size, out_dir):
    """Write the tokenizer files into out_dir; None, or why they could not be written (none are left then)."""
    remove_tokenizer(out_dir)  # an earlier export's tokenizer may belong to another checkpoint
    try:
        hf_tokenizer(name, block_size).save_pretrained(out_dir)
        path = os.path.join(out_dir, "tokenizer_config.json")
        with open(path) as f:
            tc = json.load(f)
        tc["tokenizer_class"] = "PreTrainedTokenizerFast"  # transformers 4.x knows no "TokenizersBackend"
        with open(path, "w") as f:
            json.dump(tc, f, indent=2)
        return None
    except (ImportError, RuntimeError, ValueError, OSError) as e:
        remove_tokenizer(out_dir)  # a half-written tokenizer would load and encode wrongly
        return str(e).split("\n")[0]


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
    why = write_tokenizer(tokenizer, cfg.block_size, out_dir)
    if why:  # the weights are still useful with a tokenizer loaded elsewhere
        instead = ("pass the GPT-2 tokenizer instead (lm-eval tokenizer=gpt2, AutoTokenizer 'gpt2')"
                   if tokenizer == "gpt2" else "fix that and export again (the byte tokenizer has no hub counterpart)")
        print(f"warning: wrote the weights to {out_dir} without a tokenizer: {why}; {instead}", file=sys.stderr)
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
    tok = " and AutoTokenizer" if os.path.isfile(os.path.join(args.out, "tokenizer.json")) else ""
    print(f"wrote {args.out} (load with transformers.AutoModelForCausalLM{tok}.from_pretrained({args.out!r}))")


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
