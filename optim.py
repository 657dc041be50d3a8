"""
Learning-rate strategies: schedules, the strategy interface, one registry and every strategy of nanoLR, from plain
SGD to LLR, over the shared parameter groups of groups.py. A strategy owns its torch optimizer and its schedule:

    strategy = optim.build("llr", model, cfg)      # cfg: train.py's config dict, or optim.default_config(...)
    optim.update(strategy, it, forward_backward)   # one update (or strategy.step(it, loss, closure) by hand)
    strategy.lrs()          # group name -> LR of the last update, for logs
    strategy.log_record()   # extra fields for the metrics line (LLR: alphas and LRs after a refit)
    strategy.state_dict(); strategy.load_state_dict(sd); strategy.zero_grad()

`it` is the 0-based index of the update about to be made; schedules are functions of it (or torch
lr_schedulers whose state is in state_dict()), so a resumed run continues exactly. The strategies
registered with uses_schedule follow the one warmup + decay function chosen by the `schedule` key
(optim.schedule: cosine, wsd, linear, inv_sqrt, constant); the rest keep their published schedules.
`lr_mult` multiplies the LR of the groups its patterns match, on top of any strategy.

This file is the one everybody imports; the strategies live in its parts, split by concern:
    schedules.py        λ(t), the published shapes and lr_mult, as plain functions (no project imports)
    optim_core.py       config keys and domains, COMMON, muP multipliers, Strategy, @register, STRATEGIES, build
    optim_catalogue.py  uniform, the strategies paper's 18, the extras, Muon, schedule-free AdamW
    optim_layerwise.py  LLR, its baselines and the HT-SR family (TempBalance, model balancing, AlphaDecay)

Adding a strategy: a function (model, cfg) -> (optimizer, lr_scheduler or None) under @register(name, generation,
rule, reference, its family facts, its keys as key(default, domain, doc)); a Strategy subclass instead only when
step() differs (SAM, Grokfast, DALS, the layerwise family). Its keys become train.py config keys, checked against
their domains when it is built; its family facts (lr_family, uses_schedule, layerwise, ...) are what train.py,
eval/ and the tests ask. Put it in a catalogue file, or in a new file optim_<name>.py beside this one that imports
from optim_core: this file imports every such file after its own, sorted by name, so `python optim.py --list`,
train.py, eval/sweep.py and eval/strategies.py see it with nothing else edited. Update rules torch lacks are in
rules.py. docs/strategies.md has every rule with its reference quirks (faithful=True), docs/llr.md the layerwise
family. `python optim.py --list` prints the catalogue, `python optim.py --list NAME` a strategy's keys.
"""
import glob
import importlib
import os
import sys

from schedules import *  # noqa: F401,F403  every public name of the parts is optim.<name>, as before the split
from optim_core import *  # noqa: F401,F403
from optim_catalogue import *  # noqa: F401,F403
from optim_layerwise import *  # noqa: F401,F403
from optim_core import KEYS, PAPER_GENERATIONS, STRATEGIES


def import_forker_modules():
    """Import every optim_*.py beside this file that is not imported yet (the project's own are, above), by name."""
    here = os.path.dirname(os.path.abspath(__file__))
    for path in sorted(glob.glob(os.path.join(here, "optim_*.py"))):
        name = os.path.basename(path)[:-3]
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:  # one line that names the file: a strategy must never go missing quietly
            raise ImportError(f"{path} failed to import: {type(e).__name__}: {e}".replace("\n", " ")) from e


import_forker_modules()

# The catalogue's groups, from the registry: nothing here lists strategy names.
PAPER_18 = tuple(n for n, s in STRATEGIES.items() if s.generation in PAPER_GENERATIONS)
LAYERWISE_FAMILY = tuple(n for n, s in STRATEGIES.items() if s.layerwise)
CATALOGUE = tuple(n for n, s in STRATEGIES.items() if not s.layerwise)  # uniform, the 18, the extras, muon, ...
# Each quirk of the strategies paper's reference code has its own flag; faithful=True turns all on.
FAITHFUL_FLAGS = tuple(k for k, d in KEYS.items() if d.quirk)


def describe(name):
    """A strategy's rule, reference, family facts and keys (default, domain, doc), for --list NAME."""
    s = STRATEGIES[name]
    facts = ", ".join(f"{f}={getattr(s, f)}" for f in FAMILY_FACTS)
    lines = [f"{name} ({s.generation}): {s.rule}", f"  [{s.reference}]", f"  {facts}", "  keys beside COMMON's:"]
    lines += [f"    {k} = {d.default!r}: {d.doc} ({d.domain[1]})" for k, d in s.keys.items()] or ["    none"]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] != ["--list"] or any(n not in STRATEGIES for n in sys.argv[2:]):
        raise SystemExit(f"usage: python optim.py --list [NAME ...]; the names are {', '.join(STRATEGIES)}")
    if sys.argv[2:]:
        print("\n\n".join(describe(n) for n in sys.argv[2:]))
    else:
        print(f"{'name':<20} {'gen':<9} rule  [reference]")
        for name, cls in STRATEGIES.items():
            print(f"{name:<20} {cls.generation:<9} {cls.rule}  [{cls.reference}]")
