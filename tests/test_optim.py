import math

import pytest
import torch

from sslbench.train.optim import LARS, build_optimizer, lr_at, param_groups, scaled_lr


def test_scaled_lr():
    assert scaled_lr(0.3, 1024) == pytest.approx(1.2)
    assert scaled_lr(0.5, 2048) == pytest.approx(4.0)


def test_schedule_warmup_then_cosine():
    kw = dict(total_steps=100, warmup_steps=10, peak_lr=1.0, final_ratio=0.0)
    lrs = [lr_at(s, **kw) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(55, **kw) == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert lr_at(100, **kw) == pytest.approx(0.0)


def test_schedule_without_warmup_starts_at_peak():
    assert lr_at(0, total_steps=10, warmup_steps=0, peak_lr=2.0) == pytest.approx(2.0)


def _reference_lars(params, grads, mus, lr, wd, momentum, eta, exclude):
    """Plain-loop LARS (VICReg's official update), written independently."""
    out = []
    for p, g, mu, ex in zip(params, grads, mus, exclude):
        if not ex:
            g = g + wd * p
            pn, gn = p.norm(), g.norm()
            q = eta * pn / gn if (pn > 0 and gn > 0) else torch.tensor(1.0)
            g = g * q
        mu = momentum * mu + g
        out.append((p - lr * mu, mu))
    return out


def test_lars_matches_reference_and_excludes_1d():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4),
                                torch.nn.Linear(4, 3))
    opt = build_optimizer("lars", model, lr=0.7, weight_decay=0.1)
    assert isinstance(opt, LARS)
    params = list(model.parameters())
    mus = [torch.zeros_like(p) for p in params]
    exclude = [p.ndim <= 1 for p in params]
    for _ in range(3):
        loss = model(torch.randn(8, 5)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        before = [p.detach().clone() for p in params]
        grads = [p.grad.clone() for p in params]
        expected = _reference_lars(before, grads, mus, 0.7, 0.1, 0.9, 0.001, exclude)
        opt.step()
        for p, (want, _mu) in zip(params, expected):
            torch.testing.assert_close(p.detach(), want)
        mus = [mu for _, mu in expected]


def test_param_groups_split_weights_from_1d():
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4))
    decay, no_decay = param_groups(model, 0.5)
    assert decay["weight_decay"] == 0.5 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"]) and len(no_decay["params"]) == 3


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_other_optimizers(name, cls):
    model = torch.nn.Linear(3, 2)
    assert isinstance(build_optimizer(name, model, lr=0.1, weight_decay=0.0), cls)
