"""schedule_free: the schedulefree package's AdamWScheduleFree under the strategy interface. Training
happens at y, evaluation and checkpoints at the average x, and a resume from a checkpoint continues
exactly."""
import copy
import json
import os

import pytest
import torch

import optim
from eval.perplexity import evaluate_loss
from groups import decayed_groups
from data.loader import TokenData
from model import model_from_checkpoint
from test_optim import DATA, tiny_model
from test_train import TINY, losses, run_train, text_dataset  # noqa: F401  (fixture)

schedulefree = pytest.importorskip("schedulefree")

W, LR = 4, 3e-3
CFG = dict(learning_rate=LR, max_iters=12, warmup_iters=W, weight_decay=0.1, grad_clip=0.0, beta2=0.99)


def loss_of(model):
    _, loss = model(DATA[:, :-1], DATA[:, 1:])
    return loss


def test_updates_equal_the_package_with_its_own_warmup_bitwise():
    ours_model, ref_model = tiny_model(), tiny_model()
    s = optim.build("schedule_free", ours_model, optim.default_config(**CFG))
    ref = schedulefree.AdamWScheduleFree(decayed_groups(ref_model, optim.default_config(**CFG)), lr=LR, betas=(0.9, 0.99),
                                         eps=1e-8, warmup_steps=W)
    ref.train()
    seen = []
    for it in range(CFG["max_iters"]):
        loss_of(ours_model).backward()
        s.step(it)
        s.zero_grad()
        seen.append(s.lrs()["blocks.0.attn.q"])
        loss_of(ref_model).backward()
        ref.step()
        ref.zero_grad(set_to_none=True)
    for (n, a), b in zip(ours_model.state_dict().items(), ref_model.state_dict().values()):
        assert torch.equal(a, b), n
    # the LR warms up as t/W over the first W updates, then stays at learning_rate: no decay
    assert seen == pytest.approx([LR * min(t, W) / W for t in range(1, 13)], rel=1e-15)


def test_eval_weights_are_the_average_x_and_training_goes_on_at_y():
    model, ref_model = tiny_model(), tiny_model()
    s = optim.build("schedule_free", model, optim.default_config(**CFG))
    ref = schedulefree.AdamWScheduleFree(decayed_groups(ref_model, optim.default_config(**CFG)), lr=LR, betas=(0.9, 0.99),
                                         warmup_steps=W)
    ref.train()
    for it in range(6):
        loss_of(model).backward(), loss_of(ref_model).backward()
        s.step(it), ref.step()
        s.zero_grad(), ref.zero_grad(set_to_none=True)
    y = copy.deepcopy(model.state_dict())
    ref.eval()
    with s.eval_weights():
        x = copy.deepcopy(model.state_dict())
        for n, a in ref_model.state_dict().items():
            assert torch.equal(x[n], a), n
        with s.eval_weights():  # nested (eval, then a checkpoint inside it): still x, swapped once
            assert torch.equal(model.state_dict()["blocks.0.attn.q.weight"], x["blocks.0.attn.q.weight"])
    ref.train()
    assert not torch.equal(x["blocks.0.attn.q.weight"], y["blocks.0.attn.q.weight"])  # x and y are different points
    for n, a in model.state_dict().items():  # back at y (to rounding: y -> x -> y is two interpolations)
        torch.testing.assert_close(a, y[n], rtol=1e-5, atol=1e-7)
    loss_of(model).backward(), loss_of(ref_model).backward()
    s.step(6), ref.step()
    for (n, a), b in zip(model.state_dict().items(), ref_model.state_dict().values()):
        assert torch.equal(a, b), n


def test_train_py_evaluates_and_saves_x_and_resumes_exactly(text_dataset, tmp_path):  # noqa: F811
    args = TINY + [f"--dataset={text_dataset}", "--strategy=schedule_free", "--eval_interval=10"]
    half, full = str(tmp_path / "half"), str(tmp_path / "full")
    run_train(args + [f"--out_dir={full}", "--max_iters=20"])
    run_train(args + [f"--out_dir={half}", "--max_iters=10"])
    run_train(args + [f"--out_dir={half}", "--max_iters=20", "--init_from=resume", "--allow_schedule_change=True"])
    assert losses(half) == losses(full) and len(losses(full)) == 20  # every iteration, as exact floats

    # the checkpoint holds x: its loss on the validation split is the val_loss logged at the last eval
    model, ckpt = model_from_checkpoint(full)
    cfg = ckpt["config"]
    logged = [r for r in map(json.loads, open(os.path.join(full, "metrics.jsonl"))) if "val_loss" in r][-1]
    val = TokenData(text_dataset).tokens("val")
    at_x, _ = evaluate_loss(model, val, cfg["block_size"], cfg["eval_tokens"], cfg["batch_size"])
    assert logged["iter"] == 20 and at_x == pytest.approx(logged["val_loss"], rel=1e-6)


def test_a_cooldown_branch_from_schedule_free_is_refused(text_dataset, tmp_path):  # noqa: F811
    out = str(tmp_path / "sf")
    run_train(TINY + [f"--dataset={text_dataset}", "--strategy=schedule_free", f"--out_dir={out}", "--max_iters=4",
                      "--ckpt_every=2", "--keep_ckpts=2", "--eval_interval=100"])
    proc = run_train(TINY + [f"--dataset={text_dataset}", "--strategy=schedule_free", f"--out_dir={tmp_path / 'b'}",
                             f"--init_from={out}", "--branch_at=2", "--decay_iters=2"], check=False)
    assert proc.returncode != 0 and "no decay to branch" in proc.stderr + proc.stdout
