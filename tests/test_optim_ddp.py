"""The generic loop under DDP (2 gloo ranks, accumulation 2 per rank) equals one process with
accumulation 4 on the same global batch: SAM's closure redoes every micro-step, DALS sees the
all-reduced mean loss, Muon shards its matrices and gathers its state for the checkpoint."""
import os
import socket
import tempfile
from contextlib import nullcontext

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import optim
from model import Transformer, config_from_preset

NAMES = ["sam", "dals", "muon", "grokfast"]
LR = {"sam": 0.5, "dals": 0.5, "muon": 1e-2, "grokfast": 0.3}
MICRO, STEPS = 4, 3  # global micro-batches per update


def batches(it):
    g = torch.Generator().manual_seed(it)
    data = torch.randint(0, 256, (MICRO, 2, 17), generator=g)
    return [(d[:, :-1], d[:, 1:]) for d in data]


def run(name, rank=0, world=1):
    torch.manual_seed(0)
    model = Transformer(config_from_preset("llama_nano", block_size=16))
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    s = optim.build(name, model, optim.default_config(learning_rate=LR[name], max_iters=STEPS, grad_clip=1.0))
    accum = MICRO // world
    for it in range(STEPS):
        mine = batches(it)[rank * accum:(rank + 1) * accum]

        def forward_backward():
            total = 0.0
            for j, (x, y) in enumerate(mine):
                sync = j == accum - 1 or world == 1
                with nullcontext() if sync else net.no_sync():
                    _, loss = net(x, y)
                    (loss / accum).backward()
                total = total + loss.detach() / accum
            return total

        def closure():
            s.zero_grad()
            return forward_backward()
        loss = forward_backward()
        if world > 1:
            dist.all_reduce(loss, op=dist.ReduceOp.AVG)
        s.step(it, loss=loss if s.uses_loss else None, closure=closure)
        s.zero_grad()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, s.state_dict()


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save({name: run(name, rank, world) for name in NAMES}, os.path.join(out, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_loop_equals_single_process():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        mp.start_processes(_worker, args=(2, port, d), nprocs=2, join=True, start_method="fork")
        ranks = [torch.load(os.path.join(d, f"{r}.pt"), weights_only=False) for r in range(2)]
    for name in NAMES:
        weights, sd = run(name)
        for k, v in weights.items():
            assert torch.equal(ranks[0][name][0][k], ranks[1][name][0][k]), f"{name} {k}: replicas diverged"
            if name == "muon":
                # bf16 Newton-Schulz turns last-bit differences between all-reduce and accumulation
                # into ~1e-4, and AdamW turns near-zero gradients of rare tokens into ±lr steps;
                # the exact sharded-vs-single equality is tests/test_muon.py's job
                assert ((ranks[0][name][0][k] - v).abs() > 1e-3).float().mean() < 0.01, f"{name} {k}"
            else:
                torch.testing.assert_close(ranks[0][name][0][k], v, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name} {k}: {m}")
        if name == "muon":  # every rank's checkpoint holds every buffer, keyed by name
            for r in ranks:
                assert set(r[name][1]["optimizer"]["state"]) == set(sd["optimizer"]["state"])
        if name == "dals":
            assert ranks[0][name][1]["optimizer"]["dals"] == ranks[1][name][1]["optimizer"]["dals"]
