"""build_optimizer: decay / no-decay parameter groups and the gene table's own group."""

from __future__ import annotations

import pytest
import torch

from videogene.training.config import load_config
from videogene.training.optim import build_optimizer


def _model():
    from videogene.models import model_from_preset

    torch.manual_seed(0)
    return model_from_preset("tiny", 4, 16)


def _groups(opt) -> dict[str, dict]:
    return {g["name"]: g for g in opt.param_groups}


def test_groups_split_decay_no_decay_and_gene_table():
    model = _model()
    cfg = load_config(None, ["adam_weight_decay=0.1", "learning_rate=1e-3",
                             "gene_embedding_lr_scale=10"])
    groups = _groups(build_optimizer(model, cfg))
    assert set(groups) == {"decay", "no_decay", "gene_embedding"}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    # every trainable parameter in exactly one group
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(len(v) for v in ids.values()) == len(trainable)
    assert set().union(*ids.values()) == {id(p) for p in trainable}
    # weight decay on matrices / kernels only
    assert groups["decay"]["weight_decay"] == pytest.approx(0.1)
    assert all(p.ndim >= 2 for p in groups["decay"]["params"])
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim <= 1 for p in groups["no_decay"]["params"])
    # norms and biases are there
    for module in model.modules():
        if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and module.weight is not None:
            assert id(module.weight) in ids["no_decay"] and id(module.bias) in ids["no_decay"]
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv3d, torch.nn.Conv2d)):
            assert id(module.weight) in ids["decay"]
            if module.bias is not None:
                assert id(module.bias) in ids["no_decay"]
    # the gene table: no decay, its own learning rate
    assert ids["gene_embedding"] == {id(model.gene_embedding.weight)}
    assert groups["gene_embedding"]["weight_decay"] == 0.0
    assert groups["gene_embedding"]["lr"] == pytest.approx(1e-2)
    assert groups["decay"]["lr"] == groups["no_decay"]["lr"] == pytest.approx(1e-3)


def test_only_decay_group_shrinks_under_zero_gradients():
    """With zero gradients AdamW's update is the decoupled decay alone: only the decay group moves."""
    model = _model()
    cfg = load_config(None, ["adam_weight_decay=0.5", "learning_rate=0.1"])
    opt = build_optimizer(model, cfg)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for g in opt.param_groups:
        for p in g["params"]:
            if g["name"] == "decay":
                torch.testing.assert_close(p.detach(), before[id(p)] * (1 - 0.1 * 0.5))
            else:
                assert torch.equal(p.detach(), before[id(p)]), g["name"]


def test_plain_parameter_list_and_lr_scheduler():
    from videogene.training.optim import build_lr_scheduler

    w = torch.nn.Parameter(torch.ones(3, 3))
    b = torch.nn.Parameter(torch.ones(3))
    frozen = torch.nn.Parameter(torch.ones(2, 2), requires_grad=False)
    cfg = load_config(None, ["adam_weight_decay=0.01"])
    opt = build_optimizer([w, b, frozen], cfg)
    assert [(g["name"], len(g["params"]), g["weight_decay"]) for g in opt.param_groups] == [
        ("decay", 1, 0.01), ("no_decay", 1, 0.0)]
    sched = build_lr_scheduler(opt, cfg)
    opt.step()
    sched.step()
    assert len(sched.get_last_lr()) == 2
