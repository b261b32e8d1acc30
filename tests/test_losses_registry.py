"""Registry contract, hyperparameter and input validation, and invariances of every criterion."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from sslbench.errors import ConfigError
from sslbench.losses import (
    CRITERIA,
    CriterionSpec,
    build_criterion,
    criterion_defaults,
    criterion_names,
    resolve_hparams,
)
from sslbench.losses.inputs import EmbeddingShapeError, NonFiniteEmbeddingsError

NAMES = ["simclr", "simclr-sq", "simclr-abs", "dcl", "dcl-sq", "dcl-abs", "simclr-center",
         "simclr-dimstd", "scl", "vicreg", "vicreg-exp", "vicreg-ctr", "barlow", "tcr"]


def _pair(n=8, m=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, m, generator=g, dtype=dtype)
    return z1, z1 + 0.5 * torch.randn(n, m, generator=g, dtype=dtype)


def test_registered_names_exactly():
    assert sorted(criterion_names()) == sorted(NAMES)
    assert list(CRITERIA) == criterion_names()


@pytest.mark.parametrize("name", NAMES)
def test_spec_fields(name):
    spec = CRITERIA[name]
    assert isinstance(spec, CriterionSpec) and spec.name == name
    assert spec.family in ("sample", "dimension")
    assert spec.needs_batch_stats is True and spec.min_batch_size == 2
    assert spec.doc and "\n" not in spec.doc
    assert criterion_defaults(name) == spec.defaults
    assert criterion_defaults(name) is not spec.defaults  # a copy the caller may modify


@pytest.mark.parametrize("name", NAMES)
def test_defaults_are_the_functions_signature(name):
    """One source per default: the registry reads each criterion function's keyword defaults."""
    params = list(inspect.signature(CRITERIA[name].fn).parameters.values())
    assert [p.name for p in params[:2]] == ["z1", "z2"]
    assert CRITERIA[name].defaults == {p.name: p.default for p in params[2:]}


def test_a_hyperparameter_without_a_default_is_refused():
    from sslbench.losses import signature_defaults

    def no_default(z1, z2, temperature, impl="auto"):
        return {}

    with pytest.raises(TypeError, match="no_default has no default for temperature"):
        signature_defaults(no_default)


def test_paper_defaults_and_families():
    assert criterion_defaults("simclr") == {"temperature": 0.15}
    assert criterion_defaults("vicreg") == {"sim_coeff": 25.0, "std_coeff": 25.0,
                                            "cov_coeff": 1.0, "impl": "auto"}
    assert criterion_defaults("vicreg-exp") == {"sim_coeff": 1.0, "std_coeff": 1.0,
                                                "cov_coeff": 2.0, "temperature": 0.1}
    assert criterion_defaults("vicreg-ctr") == {"sim_coeff": 1.0, "std_coeff": 1.0,
                                                "cov_coeff": 1.0, "temperature": 0.15}
    assert criterion_defaults("barlow") == {"lambd": 0.0051, "impl": "auto"}
    assert criterion_defaults("dcl") == {"temperature": 0.1}
    for name in ("scl", "tcr", "vicreg", "barlow"):
        assert criterion_defaults(name)["impl"] == "auto"
    dimension = {n for n in NAMES if CRITERIA[n].family == "dimension"}
    assert dimension == {"vicreg", "vicreg-exp", "barlow", "tcr"}  # Prop. 3.2


@pytest.mark.parametrize("bad, match", [
    ({"name": "simclr2"}, r"unknown criterion 'simclr2'; valid names: simclr, simclr-sq"),
    ({"name": "vicreg", "lambd": 1.0}, r"no hyperparameter 'lambd'; valid: sim_coeff"),
    ({"name": "vicreg", "sim_coeff": "25"}, r"'sim_coeff' must be a number, got '25' \(str\)"),
    ({"name": "vicreg", "sim_coeff": True}, r"must be a number, got True \(bool\)"),
    ({"name": "simclr", "temperature": 0.0}, r"'temperature' must be finite and > 0"),
    ({"name": "barlow", "lambd": -1.0}, r"'lambd' must be finite and >= 0"),
    ({"name": "tcr", "eps": float("nan")}, r"'eps' must be finite and > 0"),
    ({"name": "vicreg", "impl": "fast"}, r"'impl' must be one of auto, direct, dual"),
    ({"name": "simclr", "impl": "dual"}, r"no hyperparameter 'impl'; valid: temperature"),
])
def test_build_errors_are_one_line_config_errors(bad, match):
    kw = dict(bad)
    with pytest.raises(ConfigError, match=match) as err:
        build_criterion(kw.pop("name"), **kw)
    assert "\n" not in str(err.value)


def test_ints_accepted_for_floats():
    assert resolve_hparams("vicreg", sim_coeff=10)["sim_coeff"] == 10.0
    assert isinstance(resolve_hparams("vicreg", sim_coeff=10)["sim_coeff"], float)


@pytest.mark.parametrize("z1_shape, z2_shape", [((8,), (8,)), ((4, 3), (4, 5)),
                                                ((4, 3), (5, 3)), ((2, 4, 3), (2, 4, 3))])
def test_misshaped_inputs_show_shapes(z1_shape, z2_shape):
    crit = build_criterion("vicreg")
    with pytest.raises(EmbeddingShapeError) as err:
        crit(torch.randn(*z1_shape), torch.randn(*z2_shape))
    assert str(tuple(z1_shape)) in str(err.value) and str(tuple(z2_shape)) in str(err.value)


def test_integer_inputs_rejected():
    with pytest.raises(EmbeddingShapeError, match="floating point"):
        build_criterion("simclr")(torch.ones(4, 3, dtype=torch.long), torch.ones(4, 3))


@pytest.mark.parametrize("name", NAMES)
def test_batch_of_one_is_a_config_error(name):
    with pytest.raises(ConfigError, match=r"at least 2 embeddings.*\(1, 4\)"):
        build_criterion(name)(torch.randn(1, 4), torch.randn(1, 4))


@pytest.mark.parametrize("name", ["vicreg-exp", "vicreg-ctr"])
def test_dimension_one_rejected_where_undefined(name):
    with pytest.raises(ConfigError, match=r"dimension >= 2"):
        build_criterion(name)(torch.randn(4, 1), torch.randn(4, 1))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_raise_with_shapes(bad):
    z1, z2 = _pair(dtype=torch.float32)
    z2[3, 1] = bad
    with pytest.raises(NonFiniteEmbeddingsError, match=r"z2 has 1 non-finite.*\(8, 6\)"):
        build_criterion("simclr")(z1, z2)


def test_huge_but_finite_inputs_are_not_flagged():
    z1 = torch.full((4, 3), 3e38)  # the cheap sum overflows; the entries are finite
    out = build_criterion("simclr")(z1, z1.clone())
    # Eight equal embeddings: every cosine is 1, so each anchor's log-sum-exp runs over 2N - 1 = 7
    # equal terms and the loss is log 7, exactly as for unit-scale inputs.
    assert out["loss"].item() == pytest.approx(math.log(7), rel=1e-6)
    assert out["loss"].item() == pytest.approx(
        build_criterion("simclr")(torch.ones(4, 3), torch.ones(4, 3))["loss"].item(), rel=1e-6)


def _out(name, z1, z2, **hp):
    return build_criterion(name, **hp)(z1, z2)


@pytest.mark.parametrize("name", NAMES)
def test_returns_scalar_dict_and_documented_weighting(name):
    z1, z2 = _pair()
    out = _out(name, z1, z2)
    assert set(out) == {"loss", *CRITERIA[name].terms}
    assert all(v.dim() == 0 for v in out.values())
    hp = criterion_defaults(name)
    t = {k: v.item() for k, v in out.items()}
    if name in ("vicreg", "vicreg-exp", "vicreg-ctr"):
        want = hp["sim_coeff"] * t["inv"] + hp["std_coeff"] * t["var"] + hp["cov_coeff"] * t["cov"]
    elif name == "barlow":
        want = t["inv"] + hp["lambd"] * t["red"]
    elif name == "scl":
        want = (t["inv"] + t["reg"]) / hp["mu"]
    elif name == "tcr":
        want = hp["sim_coeff"] * t["inv"] + t["reg"]
    else:
        want = t["inv"] + t["reg"]
    assert t["loss"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_symmetric_in_the_two_views(name):
    z1, z2 = _pair(seed=1)
    a, b = _out(name, z1, z2), _out(name, z2, z1)
    for key in a:
        assert a[key].item() == pytest.approx(b[key].item(), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_invariant_to_permuting_the_batch(name):
    z1, z2 = _pair(seed=2)
    perm = torch.randperm(z1.shape[0], generator=torch.Generator().manual_seed(0))
    a, b = _out(name, z1, z2), _out(name, z1[perm], z2[perm])
    assert a["loss"].item() == pytest.approx(b["loss"].item(), rel=1e-10)


@pytest.mark.parametrize("name", ["simclr", "simclr-sq", "simclr-abs", "dcl", "dcl-sq",
                                  "dcl-abs", "simclr-center", "simclr-dimstd", "tcr"])
@pytest.mark.parametrize("scale", [0.01, 7.0])
def test_cosine_losses_ignore_embedding_scale(name, scale):
    z1, z2 = _pair(seed=3)
    a, b = _out(name, z1, z2), _out(name, scale * z1, scale * z2)
    assert a["loss"].item() == pytest.approx(b["loss"].item(), rel=1e-10)


def test_dimension_standardised_losses_ignore_per_dimension_scale():
    z1, z2 = _pair(seed=4)
    s = torch.tensor([0.1, 3.0, 1.0, 20.0, 0.5, 2.0], dtype=z1.dtype)
    for name in ("simclr-dimstd",):
        assert _out(name, z1, z2)["loss"].item() == pytest.approx(
            _out(name, z1 * s, z2 * s)["loss"].item(), rel=1e-10)
    # Barlow's batch norm has eps = 1e-5 inside the square root: invariant up to that eps,
    # so only scales that keep every variance far above eps are used.
    s = torch.tensor([0.5, 3.0, 1.0, 20.0, 0.7, 2.0], dtype=z1.dtype)
    a, b = _out("barlow", z1, z2)["loss"].item(), _out("barlow", z1 * s, z2 * s)["loss"].item()
    assert a == pytest.approx(b, rel=1e-3)


def test_vicreg_is_not_scale_invariant_and_scl_is_beyond_the_ball():
    z1, z2 = _pair(seed=5)
    assert _out("vicreg", z1, z2)["loss"].item() != pytest.approx(
        _out("vicreg", 3 * z1, 3 * z2)["loss"].item(), rel=1e-3)
    # rows have norm ~ √6 > √µ = 1: projected onto the sphere, hence scale invariant upwards
    assert _out("scl", z1, z2)["loss"].item() == pytest.approx(
        _out("scl", 5 * z1, 5 * z2)["loss"].item(), rel=1e-10)
    small = _out("scl", 0.01 * z1, 0.01 * z2)["loss"].item()  # inside the ball: not projected
    assert small != pytest.approx(_out("scl", 0.02 * z1, 0.02 * z2)["loss"].item(), rel=1e-3)


def test_centering_losses_ignore_a_shared_translation():
    z1, z2 = _pair(seed=6)
    shift = torch.randn(1, 6, dtype=z1.dtype) * 10
    for name in ("simclr-center", "simclr-dimstd", "barlow"):
        assert _out(name, z1, z2)["loss"].item() == pytest.approx(
            _out(name, z1 + shift, z2 + shift)["loss"].item(), rel=1e-8)
    a, b = _out("vicreg", z1, z2), _out("vicreg", z1 + shift, z2 + shift)
    for key in ("inv", "var", "cov"):  # inv uses differences; var/cov centred statistics
        assert a[key].item() == pytest.approx(b[key].item(), rel=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_low_precision_inputs_use_float32_math(name):
    z1, z2 = _pair(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _out(name, z1.bfloat16(), z2.bfloat16())
    assert all(v.dtype == torch.float32 for v in out.values())
    ref = _out(name, z1.bfloat16().float(), z2.bfloat16().float())
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_flow_to_both_views_and_are_finite(name):
    z1, z2 = (t.requires_grad_() for t in _pair(dtype=torch.float32))
    _out(name, z1, z2)["loss"].backward()
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_module_repr_names_criterion_and_hparams():
    text = repr(build_criterion("vicreg", cov_coeff=4))
    assert "'vicreg'" in text and "cov_coeff=4.0" in text and "impl='auto'" in text
