"""
The config machinery of train.py, finetune.py and bench.py: Python config files run in order, then
--key=value overrides, each value cast to the type of its default; an unknown key or a value of the wrong
type stops the run with one `config error:` line. The keys and their defaults are the caller's (train.py's
globals and optim.py's strategy keys); what a value must be beyond its type is checked where it is used.
"""
import ast
import difflib
import os
import types


class ConfigError(SystemExit):
    def __init__(self, message):
        super().__init__(f"config error: {message}")


BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def coerce(key, value, default, from_text):
    """Cast a config value to the type of its default; text comes from --key=value."""
    kind = type(default)
    if kind is tuple:  # lr_mult: a Python literal on the command line, a list or tuple in a file; optim checks its shape
        if from_text:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise ConfigError(f"--{key}={value}: not a Python literal; write a list such as "
                                  f"--{key}='[(\"embed\", 10.0), (\"blocks.*.attn.[qk]\", 8.0)]'") from None
        return tuple(value) if isinstance(value, list) else value
    if default is None:  # a boolean with an automatic default (compile): None, or what the text or file says
        if from_text and value.lower() in BOOL_WORDS:
            return BOOL_WORDS[value.lower()]
        if from_text and value.lower() in ("none", "auto"):
            return None
        if value is None or isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected true or false ({'/'.join(BOOL_WORDS)}), or auto for the default")
    if from_text:
        if kind is bool:
            if value.lower() in BOOL_WORDS:
                return BOOL_WORDS[value.lower()]
        elif kind is str:
            return value
        else:
            try:
                number = float(value)
                if kind is float:
                    return number
                if number.is_integer():
                    return int(number)
            except ValueError:
                pass
        words = f" ({'/'.join(BOOL_WORDS)})" if kind is bool else ""
        raise ConfigError(f"--{key}={value}: expected {kind.__name__}{words} like the default {default!r}")
    if default is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    raise ConfigError(f"{key} = {value!r}: expected {kind.__name__} like the default {default!r}")


def unknown_key(key, known):
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; see train.py's globals and `python optim.py --list`"
    return ConfigError(f"unknown config key {key!r}{hint}")


def run_config_file(path, namespace):
    """Execute a config file in namespace; include(*files) inside it runs files relative to it."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")

    def include(*files):
        for f in files:
            run_config_file(os.path.join(os.path.dirname(path), f), namespace)
        namespace["include"] = include  # the nested file bound its own

    namespace["include"] = include
    try:
        exec(compile(open(path).read(), path, "exec"), namespace)
    except SystemExit:
        raise
    except Exception as e:
        raise ConfigError(f"{path} failed to run: {type(e).__name__}: {e}") from None


def parse_config(argv, defaults, default_files=(), names=None):
    """Config files (positional, in order; default_files if none) and --key=value overrides -> config dict.
    names(cfg) -> {name: value}: read-only names the files see besides the keys (finetune.py's `model`)."""
    files = [a for a in argv if not a.startswith("--")] or list(default_files)
    cfg = dict(defaults)
    for arg in files + [a for a in argv if a.startswith("--")]:
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            if key not in defaults:
                raise unknown_key(key, defaults)
            if not eq and not isinstance(defaults[key], (bool, type(None))):
                raise ConfigError(f"{arg!r} has no value: write --{key}=VALUE")
            cfg[key] = coerce(key, value if eq else "true", defaults[key], from_text=True)
            continue
        extra = names(cfg) if names else {}
        namespace = {**extra, **cfg}
        run_config_file(arg, namespace)
        for key, value in namespace.items():
            if key.startswith("_") or key == "include" or isinstance(value, (types.ModuleType, types.FunctionType, type)):
                continue
            if key in extra and key not in defaults and value == extra[key]:
                continue
            if key not in defaults:
                raise unknown_key(key, defaults)
            cfg[key] = coerce(key, value, defaults[key], from_text=False)
    return cfg
