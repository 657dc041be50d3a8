"""
Tokenizers: 'byte' (UTF-8 bytes, vocab 256) and 'gpt2' (tiktoken GPT-2 BPE, 50257 ids, EOT 50256).

Offline, 'gpt2' is built from the checksum-verified rank file shipped inside the MIT-licensed
`openai-whisper` package (never imported, only located); online, tiktoken's own download is used.
Both expose encode(text) -> list[int] (no special tokens), decode(ids), eot, n_vocab, name.

A checkpoint names its tokenizer (train.py writes ckpt["tokenizer"] and ckpt["config"]["tokenizer"]):
tokenizer_of(ckpt) reads that name and check_vocab() rejects a model too small for the tokenizer's ids.
"""
import importlib.util
import os

GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_EOT = 50256


class ByteTokenizer:
    name = "byte"
    n_vocab = 256
    eot = 0  # NUL never occurs in text; used as the document separator

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


class GPT2Tokenizer:
    name = "gpt2"
    n_vocab = 50257
    eot = GPT2_EOT

    def __init__(self, encoding):
        self.enc = encoding

    def encode(self, text):
        return self.enc.encode_ordinary(text)

    def encode_batch(self, texts, num_threads=8):
        return self.enc.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids):
        return self.enc.decode(ids)


def whisper_gpt2_ranks_path():
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "assets", "gpt2.tiktoken")
    return path if os.path.exists(path) else None


def gpt2_encoding():
    import tiktoken
    path = whisper_gpt2_ranks_path()
    if path is not None:
        from tiktoken.load import load_tiktoken_bpe
        from tiktoken_ext.openai_public import r50k_pat_str
        ranks = load_tiktoken_bpe(path, expected_hash=GPT2_RANKS_SHA256)
        return tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                                 special_tokens={"<|endoftext|>": GPT2_EOT}, explicit_n_vocab=50257)
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:
        raise RuntimeError(
            "the GPT-2 tokenizer needs its BPE ranks and none are available offline. Install the "
            "file that ships inside openai-whisper:  pip install --no-deps openai-whisper==20250625  "
            f"(or go online so tiktoken can download it). Underlying error: {e}") from None


# name -> class; name, n_vocab and eot are class attributes, readable without loading the BPE ranks
TOKENIZERS = {"byte": ByteTokenizer, "gpt2": GPT2Tokenizer}
_cache = {}


def tokenizer_class(name):
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; choose {' or '.join(map(repr, TOKENIZERS))}")
    return TOKENIZERS[name]


def get_tokenizer(name):
    tokenizer_class(name)
    if name not in _cache:
        _cache[name] = ByteTokenizer() if name == "byte" else GPT2Tokenizer(gpt2_encoding())
    return _cache[name]


def tokenizer_of(ckpt):
    """The name of the tokenizer a checkpoint dict was trained with (ckpt["tokenizer"], else
    ckpt["config"]["tokenizer"]); pass it to get_tokenizer(). ValueError if it records none."""
    name = ckpt.get("tokenizer") or (ckpt.get("config") or {}).get("tokenizer")
    if not name:
        raise ValueError("the checkpoint records no tokenizer (neither ckpt['tokenizer'] nor ckpt['config']['tokenizer']): "
                         "it was not written by train.py; add the entry ('byte' or 'gpt2') to the checkpoint")
    tokenizer_class(name)
    return name


def check_vocab(vocab_size, tokenizer, error=ValueError):
    """Raise `error` when a model with vocab_size ids cannot read every id of `tokenizer` (a name or a
    tokenizer); a larger (padded) vocabulary is fine."""
    tok = tokenizer_class(tokenizer) if isinstance(tokenizer, str) else tokenizer
    if vocab_size < tok.n_vocab:
        raise error(f"the model's vocab_size={vocab_size} is smaller than the {tok.name!r} tokenizer's {tok.n_vocab} ids: "
                    "this checkpoint was not trained with that tokenizer")
