import dataclasses

import pytest

from sslbench.config import (
    EvalConfig,
    TrainConfig,
    embedding_dim,
    from_dict,
    parse_projector,
    replace,
    run_id_of,
    validate_train,
)
from sslbench.errors import ConfigError


@pytest.mark.parametrize("spec,dim,widths", [
    ("8192-8192-d", 512, [8192, 8192, 512]),
    ("d-d-d", 256, [256, 256, 256]),
    ("2048-d", 64, [2048, 64]),
    ("2048-2048-d", 1024, [2048, 2048, 1024]),
    ("512-512-128", 999, [512, 512, 128]),
    ("D", 7, [7]),
    ("none", 7, []),
])
def test_projector_specs(spec, dim, widths):
    assert parse_projector(spec, dim) == widths


@pytest.mark.parametrize("spec", ["8192--d", "abc", "0-d", "-d", "d-", "8192-x", "1.5-d", "d d"])
def test_malformed_projector_specs(spec):
    with pytest.raises(ConfigError) as err:
        parse_projector(spec, 128)
    assert "\n" not in str(err.value)
    assert spec in str(err.value)


def test_embedding_dim_falls_back_to_representation():
    assert embedding_dim("none", 64, 512) == 512
    assert embedding_dim("2048-d", 64, 512) == 64


def test_identity_ignores_execution_fields():
    a = TrainConfig()
    b = replace(a, data_root="/elsewhere", device="cpu", num_workers=4, log_every=1)
    assert a.run_id == b.run_id
    assert replace(a, seed=1).run_id != a.run_id
    assert replace(a, loss={"temperature": 0.2}).run_id != a.run_id


def test_identity_is_canonical():
    a = replace(TrainConfig(), loss={"temperature": 0.2, "impl": "auto"})
    b = replace(TrainConfig(), loss={"impl": "auto", "temperature": 0.2})
    assert a.run_id == b.run_id
    assert len(a.run_id) == 12 and int(a.run_id, 16) >= 0


def test_kind_enters_identity():
    assert run_id_of("pretrain", {"x": 1}) != run_id_of("eval", {"x": 1})


def test_eval_identity_marks_random_init():
    assert EvalConfig().identity()["random_init"] is True
    assert EvalConfig(source_run="abc").identity()["random_init"] is False
    assert EvalConfig().run_id != EvalConfig(source_run="abc").run_id


def test_to_dict_roundtrip_covers_every_field():
    cfg = TrainConfig()
    d = cfg.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(cfg)}


@pytest.mark.parametrize("change,flag", [
    (dict(epochs=0), "--epochs"), (dict(batch_size=-1), "--batch-size"), (dict(dim=0), "--dim"),
    (dict(lr=0.0), "--lr"), (dict(lr=float("nan")), "--lr"), (dict(optimizer="adam"), "optimizer"),
    (dict(projector="8192--d"), "projector"),
])
def test_validate_train_rejects(change, flag):
    with pytest.raises(ConfigError, match=flag):
        validate_train(replace(TrainConfig(), **change))


def test_replace_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown config key"):
        replace(TrainConfig(), epochz=3)


def test_probe_settings_enter_the_id_of_the_linear_probes_only():
    linear = EvalConfig(source_run="abc", protocol="linear", probe_augment="flip")
    for protocol in ("linear", "fast-linear"):
        cfg = replace(linear, protocol=protocol)
        assert cfg.run_id != replace(cfg, probe_augment="none").run_id
        assert cfg.run_id != replace(cfg, probe_standardize=False).run_id
    assert linear.run_id != replace(linear, probe_augment="crop-flip").run_id
    fast = replace(linear, protocol="fast-linear")  # it never crops: crop-flip is flip
    assert fast.run_id == replace(fast, probe_augment="crop-flip").run_id
    for protocol in ("knn", "analysis"):
        cfg = replace(linear, protocol=protocol)
        assert cfg.run_id == replace(cfg, probe_augment="crop-flip").run_id
        assert cfg.run_id == replace(cfg, probe_standardize=False).run_id


def test_the_fast_probe_id_follows_its_recipe():
    fast = EvalConfig(source_run="abc", protocol="fast-linear")
    assert fast.run_id != replace(fast, lr=1.0).run_id
    assert fast.run_id != replace(fast, batch_size=512).run_id
    knn = replace(fast, protocol="knn")
    assert knn.run_id == replace(knn, lr=1.0, batch_size=512, linear_epochs=5).run_id


@pytest.mark.parametrize("protocol,ids", [("knn", ("6cf831f6315f", "92e29134fa28")),
                                          ("analysis", ("9ccf73b10907", "ba1de5805418")),
                                          ("duality", ("9034cb12ae95", "eb29c90e7b62")),
                                          ("cka", ("7fa024a90be2", "794436b0f85e"))])
def test_eval_ids_that_must_not_change(protocol, ids):
    """Ids of protocols that no later field concerns stay what they were, so stored results are
    reused and queued evaluations still load."""
    assert (EvalConfig(source_run="abc", protocol=protocol).run_id,
            EvalConfig(protocol=protocol, dataset="cifar10", samples=512).run_id) == ids


# A config as stored before the online probe's recipe became fields (schema of commit a2cffe6).
STORED_BEFORE_PROBE_FIELDS = {
    "method": "simclr", "dataset": "shapes", "backbone": "small", "cifar_stem": True,
    "projector": "2048-d", "dim": 128, "epochs": 10, "batch_size": 256, "lr": 0.3,
    "optimizer": "lars", "weight_decay": 1e-06, "momentum": 0.9, "warmup_epochs": 1,
    "augment": "small", "image_size": 32, "loss": {}, "probe_lr": 0.001, "sync_bn": False,
    "train_samples": 0, "seed": 0, "preset": "", "data_root": "", "device": "auto",
    "num_workers": 0, "compile": False, "log_every": 10, "threads": 0}


def test_fields_added_later_keep_the_ids_of_stored_runs():
    """A stored config without the probe fields is the run that trained a plain probe at a
    constant lr: it loads as that, and hashes to the id it was stored under."""
    old = from_dict(TrainConfig, STORED_BEFORE_PROBE_FIELDS)
    assert (old.probe_standardize, old.probe_schedule) == (False, "constant")
    assert old.run_id == "b7a2f79ee31d"
    vicreg = from_dict(TrainConfig, {**STORED_BEFORE_PROBE_FIELDS, "method": "vicreg",
                                     "dataset": "cifar10", "dim": 256,
                                     "loss": {"cov_coeff": 0.5}})
    assert vicreg.run_id == "016e86d8a25f"
    # Today's default probe is another computation, so another run; each field counts alone.
    new = replace(old, probe_standardize=True, probe_schedule="cosine")
    assert len({old.run_id, new.run_id, replace(old, probe_standardize=True).run_id,
                replace(old, probe_schedule="cosine").run_id}) == 4
    assert from_dict(TrainConfig, new.to_dict()).run_id == new.run_id
    assert TrainConfig().probe_standardize and TrainConfig().probe_schedule == "cosine"


def test_the_probe_view_enters_the_identity_only_when_it_is_not_the_views():
    """probe_view came after runs were stored with the probe on the two views: those keep their
    ids; the probe on its own view is another computation, so another run."""
    old = from_dict(TrainConfig, STORED_BEFORE_PROBE_FIELDS)
    assert old.probe_view == "views" and old.run_id == "b7a2f79ee31d"
    assert replace(old, probe_view="offline").run_id != old.run_id
    with pytest.raises(ConfigError, match="unknown probe_view 'clean': choose one of"):
        validate_train(replace(TrainConfig(), probe_view="clean"))
