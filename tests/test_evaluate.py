import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from sslbench.evaluate.knn import best_cell, knn_sweep
from sslbench.evaluate.linear import HeadRecipe, train_linear_probe


def _blobs(n, d, classes, sep, seed):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=g) * sep
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g)
    return x, y


def test_linear_probe_separable_reaches_100():
    x, y = _blobs(600, 16, 4, sep=6.0, seed=0)
    res = train_linear_probe(x[:400], y[:400], x[400:], y[400:], 4, HeadRecipe(epochs=30))
    assert res["top1"] == pytest.approx(100.0)


def test_linear_probe_agrees_with_sklearn():
    x, y = _blobs(1500, 32, 5, sep=0.6, seed=1)
    xtr, ytr, xte, yte = x[:1000], y[:1000], x[1000:], y[1000:]
    ours = train_linear_probe(xtr, ytr, xte, yte, 5, HeadRecipe(epochs=60))["top1"]
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
    from sslbench.data.augment import eval_transform
    from sslbench.data.subset import subset
    from sslbench.evaluate.features import extract_features
    from sslbench.evaluate.linear import offline_linear_probe
    from sslbench.models import build_backbone

    torch.manual_seed(0)
    net, _ = build_backbone("tiny")
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train = subset(load_dataset("shapes", "train", num_samples=250), 128)
    test = subset(load_dataset("shapes", "test", num_samples=250), 64)
    extract_features(net, test, eval_transform(image_size=32, mean=test.mean, std=test.std),
                     torch.device("cpu"))
    res = offline_linear_probe(net, train, test, image_size=32,
                               recipe=HeadRecipe(epochs=2, batch_size=64),
                               device=torch.device("cpu"))
    assert 0 <= res["top1"] <= 100
    assert net.training  # the caller's mode is restored
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def _probe_data():
    from sslbench.data import load_dataset
    from sslbench.data.subset import subset

    train = subset(load_dataset("shapes", "train", num_samples=250), 160)
    test = subset(load_dataset("shapes", "test", num_samples=250), 96)
    return train, test


@pytest.mark.parametrize("augment,standardize", [("none", True), ("none", False),
                                                  ("flip", True)])
def test_fast_probe_is_the_offline_probe_without_crops(monkeypatch, augment, standardize):
    """Same head, recipe, batch order and flips: without crops both train the same layer
    (160 images in batches of 48: the last batch is short)."""
    from sslbench.data.augment import eval_transform
    from sslbench.evaluate import linear
    from sslbench.evaluate.features import extract_features
    from sslbench.models import build_backbone

    layers = []
    fit = linear._fit_head

    def recording_fit(*args, **kwargs):
        layer, train_top1 = fit(*args, **kwargs)
        layers.append(layer.weight.detach().clone())
        return layer, train_top1

    monkeypatch.setattr(linear, "_fit_head", recording_fit)
    torch.manual_seed(0)
    net, _ = build_backbone("tiny")
    train, test = _probe_data()
    cpu = torch.device("cpu")
    recipe = HeadRecipe(epochs=5, batch_size=48, base_lr=0.5, seed=3, standardize=standardize)
    offline = linear.offline_linear_probe(net, train, test, image_size=32, recipe=recipe,
                                          augment=augment, device=cpu)
    view = eval_transform(image_size=32, mean=train.mean, std=train.std)
    tx, ty = extract_features(net, train, view, cpu)
    mirror = extract_features(net, train, lambda images: view(images).flip(3), cpu)[0]
    vx, vy = extract_features(net, test, view, cpu)
    flips = dict(mirror_x=mirror, flip_p=0.5 if augment == "flip" else 0.0)
    fast = train_linear_probe(tx, ty, vx, vy, train.num_classes, recipe, **flips)
    train_linear_probe(tx, ty, vx, vy, train.num_classes,
                       HeadRecipe(epochs=5, batch_size=48, base_lr=0.5, seed=4,
                                  standardize=standardize), **flips)
    offline_w, fast_w, other_seed_w = layers
    scale = float(fast_w.abs().max())
    assert torch.allclose(offline_w, fast_w, atol=1e-4 * scale)
    assert not torch.allclose(other_seed_w, fast_w, atol=1e-2 * scale)  # the test can tell
    assert fast["top1"] == pytest.approx(offline["top1"])
    assert fast["train_top1"] == pytest.approx(offline["train_top1"])


class _Spy(torch.nn.Module):
    """A 'backbone' that records its inputs and returns a fixed projection of them."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 32 * 32, 8)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.proj(x.flatten(1))


@pytest.mark.parametrize("augment", ["none", "flip", "crop-flip"])
def test_offline_probe_trains_on_the_requested_augmentation(augment):
    from sslbench.data.augment import eval_transform
    from sslbench.evaluate.linear import offline_linear_probe

    train, test = _probe_data()
    spy = _Spy()
    offline_linear_probe(spy, train, test, image_size=32, augment=augment,
                         recipe=HeadRecipe(epochs=2, batch_size=len(train)),
                         device=torch.device("cpu"))
    plain = eval_transform(image_size=32, mean=train.mean, std=train.std)(train.images)
    from sslbench.data.loader import epoch_order

    torch.testing.assert_close(spy.seen[0], plain)  # the standardisation pass: centre crops
    for epoch in range(2):
        seen = spy.seen[1 + epoch]
        ref = plain[epoch_order(len(train), shuffle=True, seed=0, epoch=epoch)]
        same = (seen - ref).abs().flatten(1).amax(1) < 1e-5
        mirrored = (seen - ref.flip(3)).abs().flatten(1).amax(1) < 1e-5
        if augment == "none":
            assert bool(same.all())
        elif augment == "flip":
            assert bool((same | mirrored).all())
            assert 0.3 < float(mirrored.float().mean()) < 0.7
        else:
            assert float((same | mirrored).float().mean()) < 0.2  # resized crops
    assert len(spy.seen) == 1 + 2 + 1  # statistics, two training epochs, one test batch


def test_offline_probe_rejects_an_unknown_augmentation():
    from sslbench.evaluate.linear import offline_linear_probe

    train, test = _probe_data()
    with pytest.raises(ValueError, match="crop-flip"):
        offline_linear_probe(_Spy(), train, test, image_size=32, augment="rotate")


@pytest.mark.parametrize("dataset,expected", [("shapes", "flip"), ("digits", "none"),
                                              ("cifar10", "crop-flip"),
                                              ("imagenet100", "crop-flip")])
def test_probe_augment_defaults_to_the_datasets(dataset, expected):
    from sslbench.evaluate.run import eval_config_for

    cfg = eval_config_for(None, None, dataset=dataset, protocol="linear")
    assert cfg.probe_augment == expected
    chosen = eval_config_for(None, None, dataset=dataset, probe_augment="none")
    assert chosen.probe_augment == "none"


def test_probe_augment_names_match_their_settings():
    from sslbench.config import PROBE_AUGMENTS
    from sslbench.data.augment import PROBE_AUGMENT_SETTINGS as AUGMENT_SETTINGS

    assert set(AUGMENT_SETTINGS) == set(PROBE_AUGMENTS)
    assert AUGMENT_SETTINGS["crop-flip"] == ((0.08, 1.0), 0.5)  # the paper's (App. E)


def test_linear_head_steps_like_autograd_and_torch_sgd():
    """Closed-form gradients = nn.Linear + cross-entropy + backward + torch.optim.SGD."""
    import torch.nn.functional as F

    from sslbench.evaluate.linear import LinearHead

    recipe = HeadRecipe(weight_decay=1e-2, momentum=0.9, seed=5)
    head = LinearHead(6, 4, recipe, torch.device("cpu"))
    ref = torch.nn.Linear(6, 4)
    with torch.no_grad():
        ref.weight.copy_(head.weight)
        ref.bias.copy_(head.bias)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    g = torch.Generator().manual_seed(0)
    for step in range(6):
        h = torch.randn(10, 6, generator=g) * 3
        y = torch.randint(-1, 4, (10,), generator=g)  # some rows unlabelled
        lr = 0.3 / (step + 1)
        logits = head.step(h, y, lr)
        torch.testing.assert_close(logits, ref(h).detach())
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        F.cross_entropy(ref(h), y, ignore_index=-1).backward()
        opt.step()
        torch.testing.assert_close(head.weight, ref.weight.detach())
        torch.testing.assert_close(head.bias, ref.bias.detach())
    unlabelled = head.step(h, torch.full((10,), -1), 0.1)  # no labels: only decay and momentum
    assert torch.isfinite(unlabelled).all() and torch.isfinite(head.weight).all()


def test_moments_match_torch_over_chunks():
    from sslbench.evaluate.linear import moments

    x = torch.randn(1001, 7, generator=torch.Generator().manual_seed(0)) * 3 + 5
    x[:, 3] = 2.0  # a constant dimension: std clamped, never 0
    mean, std = moments(x.split(100))
    torch.testing.assert_close(mean, x.mean(0))
    torch.testing.assert_close(std, x.std(0).clamp_min(1e-6))
    assert float(std[3]) == pytest.approx(1e-6)
    with pytest.raises(ValueError, match="2 training images"):
        moments([x[:1]])


def test_standardised_probe_ignores_the_scale_of_each_dimension():
    """A random network's representations are ~100x smaller than a trained one's; with the
    paper's fixed learning rate an unstandardised probe barely moves on them."""
    x, y = _blobs(600, 16, 4, sep=6.0, seed=0)
    scale = torch.logspace(-3, 1, 16)  # per-dimension scales from 0.001 to 10
    recipe = HeadRecipe(epochs=30)
    plain = train_linear_probe(x[:400], y[:400], x[400:], y[400:], 4, recipe)
    scaled = train_linear_probe(x[:400] * scale + 3, y[:400], x[400:] * scale + 3, y[400:], 4,
                                recipe)
    assert scaled["top1"] == pytest.approx(plain["top1"], abs=0.5)
    tiny = 0.002 * x
    raw = train_linear_probe(tiny[:400], y[:400], tiny[400:], y[400:], 4,
                             HeadRecipe(epochs=30, standardize=False))
    assert plain["top1"] == pytest.approx(100.0) and raw["top1"] < 90


def test_fast_probe_needs_mirrored_features_to_flip():
    x, y = _blobs(40, 4, 2, sep=4.0, seed=0)
    with pytest.raises(ValueError, match="mirror_x"):
        train_linear_probe(x, y, x, y, 2, flip_p=0.5)


def test_runs_record_the_probe_settings_they_used(tmp_path, monkeypatch):
    """Both protocols record the requested crop-flip; fast-linear replays the flips but never
    the crops, so its id is that of flip."""
    from sslbench.config import replace
    from sslbench.db import Store
    from sslbench.evaluate.run import evaluate_protocols, random_init_config

    monkeypatch.setenv("SSLBENCH_HOME", str(tmp_path))
    base = random_init_config(backbone="tiny", dataset="synthetic", image_size=32,
                              linear_epochs=1, batch_size=512, device="cpu")
    assert base.probe_augment == "crop-flip"
    with Store.open(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        fast, offline = evaluate_protocols(store, base, ("fast-linear", "linear"),
                                           command=["t"])
        recorded = {r.protocol: store.get_run(r.run_id).config for r in (fast, offline)}
    assert recorded["fast-linear"]["probe_augment"] == "crop-flip"
    assert recorded["linear"]["probe_augment"] == "crop-flip"
    as_flip = replace(base, protocol="fast-linear", probe_augment="flip")
    assert fast.run_id == as_flip.run_id
    assert offline.run_id != replace(base, protocol="linear", probe_augment="flip").run_id
    assert all(c["probe_standardize"] is True for c in recorded.values())
