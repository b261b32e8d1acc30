import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from sslbench.evaluate.knn import best_cell, knn_sweep
from sslbench.evaluate.linear import train_linear_probe


def _blobs(n, d, classes, sep, seed):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=g) * sep
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g)
    return x, y


def test_linear_probe_separable_reaches_100():
    x, y = _blobs(600, 16, 4, sep=6.0, seed=0)
    res = train_linear_probe(x[:400], y[:400], x[400:], y[400:], 4, epochs=30)
    assert res["top1"] == pytest.approx(100.0)


def test_linear_probe_agrees_with_sklearn():
    x, y = _blobs(1500, 32, 5, sep=0.6, seed=1)
    xtr, ytr, xte, yte = x[:1000], y[:1000], x[1000:], y[1000:]
    ours = train_linear_probe(xtr, ytr, xte, yte, 5, epochs=60)["top1"]
    ref = LogisticRegression(max_iter=2000).fit(xtr.numpy(), ytr.numpy())
    theirs = 100 * ref.score(xte.numpy(), yte.numpy())
    assert 40 < theirs < 99  # the task is neither trivial nor hopeless
    assert abs(ours - theirs) <= 2.0


def _knn_reference(xtr, ytr, xte, yte, k, t, num_classes):
    xtr = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    xte = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    correct = 0
    for i in range(len(xte)):
        sims = xtr @ xte[i]
        order = np.argsort(-sims, kind="stable")[:k]
        votes = np.zeros(num_classes)
        for j in order:
            votes[ytr[j]] += np.exp(sims[j] / t)
        correct += int(np.argmax(votes) == yte[i])
    return 100 * correct / len(xte)


def test_knn_matches_brute_force():
    x, y = _blobs(260, 8, 3, sep=1.0, seed=2)
    xtr, ytr, xte, yte = x[:200], y[:200], x[200:], y[200:]
    ks, ts = (1, 5, 20), (0.07, 0.5)
    grid = knn_sweep(xtr, ytr, xte, yte, 3, ks=ks, temperatures=ts, chunk_size=7)
    for k in ks:
        for t in ts:
            ref = _knn_reference(xtr.numpy(), ytr.numpy(), xte.numpy(), yte.numpy(), k, t, 3)
            assert grid[(k, t)] == pytest.approx(ref)


def test_knn_tiny_test_set_and_missing_class():
    x, y = _blobs(50, 4, 5, sep=3.0, seed=3)
    y[y == 4] = 0  # class 4 absent from the data, still a valid class
    grid = knn_sweep(x[:45], y[:45], x[45:47], y[45:47], num_classes=5, chunk_size=1024)
    assert len(grid) == 36  # the paper's 6 x 6 sweep
    (k, t), top1 = best_cell(grid)
    assert 0 <= top1 <= 100 and k in (1, 5, 10, 20, 50, 200)


def test_knn_ignores_unlabelled_training_samples():
    x, y = _blobs(100, 4, 2, sep=4.0, seed=4)
    y_unl = y.clone()
    y_unl[:50] = -1
    grid = knn_sweep(x, y_unl, x[50:], y[50:], 2, ks=(1,), temperatures=(0.1,))
    assert grid[(1, 0.1)] == pytest.approx(100.0)


def test_probing_leaves_the_backbone_untouched(tmp_path):
    """Weights and BatchNorm running statistics are identical after every probe."""
    from sslbench.data import load_dataset
    from sslbench.data.subset import subset
    from sslbench.evaluate.features import extract_features
    from sslbench.evaluate.linear import offline_linear_probe
    from sslbench.models import build_backbone
    from sslbench.data.augment import eval_transform

    torch.manual_seed(0)
    net, _ = build_backbone("tiny")
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train = subset(load_dataset("shapes", "train", num_samples=250), 128)
    test = subset(load_dataset("shapes", "test", num_samples=250), 64)
    extract_features(net, test, eval_transform(image_size=32, mean=test.mean, std=test.std),
                     torch.device("cpu"))
    res = offline_linear_probe(net, train, test, image_size=32, epochs=2, batch_size=64,
                               device=torch.device("cpu"))
    assert 0 <= res["top1"] <= 100
    assert net.training  # the caller's mode is restored
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
