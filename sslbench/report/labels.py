"""How a stored run is named in the paper's tables: method label and projector family.

**Method labels.** ``vicreg`` -> VICReg, ``vicreg-exp`` -> VICReg-exp, ``vicreg-ctr`` ->
VICReg-ctr, ``simclr-center`` -> "SimCLR w/ centering", ``simclr-dimstd`` -> "SimCLR w/ dim std".
A ``simclr`` run takes a paper name only when its recipe is the paper's:

* a run tagged ``simclr-orig`` is SimCLR-Orig and one tagged ``simclr-tuned`` is SimCLR-Tuned,
  whatever its hyperparameters (the tag is the user's statement);
* otherwise it is SimCLR-Tuned only with the whole Table S6 / Appendix D recipe (τ 0.15, batch
  2048, base lr 0.5, LARS, weight decay 1e-6), and else it is named by what ran: "SimCLR τ=0.15"
  (τ alone is not the tuned recipe), "SimCLR τ=0.5", "SimCLR" when τ is unknown. The paper does
  not print SimCLR-Orig's recipe, so no untagged run is called SimCLR-Orig.

Every other registry name gets a readable label (``simclr-sq`` -> SimCLR-sq, ``barlow`` ->
Barlow Twins, ...); unknown names are shown as they are.

**Projector families.** A spec written with ``d`` (``8192-8192-d``) belongs to that family. A
spec of literal widths belongs to every paper family whose widths it equals once ``d`` is the
run's ``dim`` (``8192-8192-512`` with dim 512 -> ``8192-8192-d``). Some architectures belong to
two families: at d = 8192, ``8192-8192-d`` *is* ``d-d-d``, and at d = 2048 ``2048-2048-d`` is
``d-d-d``; Table S5 prints the same number in both rows, and the reports count such a run in
both. A spec that matches no family is its own family (``512-d``, ``512-512-128``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from sslbench.report.published import PAPER_FAMILIES, PAPER_METHODS

ORIG_TAG, TUNED_TAG = "simclr-orig", "simclr-tuned"
#: The tags a run's label reads (:func:`method_label`).
LABEL_TAGS = (ORIG_TAG, TUNED_TAG)
#: SimCLR-Tuned's recipe (Table S6 and Appendix D), as run params; the temperature is
#: ``loss.temperature``.
TUNED_RECIPE = {"loss.temperature": 0.15, "batch_size": 2048, "lr": 0.5, "optimizer": "lars",
                "weight_decay": 1e-6}
METHOD_LABELS = {
    "vicreg": "VICReg", "vicreg-exp": "VICReg-exp", "vicreg-ctr": "VICReg-ctr",
    "simclr-center": "SimCLR w/ centering", "simclr-dimstd": "SimCLR w/ dim std",
    "simclr-sq": "SimCLR-sq", "simclr-abs": "SimCLR-abs", "dcl": "DCL", "dcl-sq": "DCL-sq",
    "dcl-abs": "DCL-abs", "scl": "SCL", "barlow": "Barlow Twins", "tcr": "TCR",
    "random": "Random",
}
#: Method labels in the order of the paper's tables, then the other methods of the registry.
METHOD_ORDER = (*PAPER_METHODS, "SimCLR", "SimCLR w/ centering", "SimCLR w/ dim std", "SimCLR-sq",
                "SimCLR-abs", "DCL", "DCL-sq", "DCL-abs", "SCL", "Barlow Twins", "TCR", "Random")


def method_label(method: Any, recipe: Mapping[str, Any] | None = None,
                 tags: Iterable[str] = ()) -> str:
    """The paper's name for a run of registry method ``method`` whose params (dotted keys, as
    in :data:`TUNED_RECIPE`) are ``recipe`` (see the module docstring)."""
    name = str(method or "?")
    if name != "simclr":
        return METHOD_LABELS.get(name, name)
    tags = set(tags or ())
    if ORIG_TAG in tags:
        return "SimCLR-Orig"
    if TUNED_TAG in tags:
        return "SimCLR-Tuned"
    recipe = recipe or {}
    if all(_same(recipe.get(key), value) for key, value in TUNED_RECIPE.items()):
        return "SimCLR-Tuned"
    tau = _number(recipe.get("loss.temperature"))
    return "SimCLR" if math.isnan(tau) else f"SimCLR τ={tau:g}"


def _same(ours: Any, paper: Any) -> bool:
    if isinstance(paper, str):
        return str(ours) == paper
    return math.isclose(_number(ours), paper, rel_tol=1e-9)


def is_paper_label(label: str) -> bool:
    """True for the paper's own method names (Table S5's rows, Random)."""
    return label in PAPER_METHODS or label == "Random"


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def normalize_spec(spec: Any) -> str:
    """A projector spec as text: lower case, no spaces (``None`` / ``""`` -> ``"none"``)."""
    text = str(spec if spec is not None else "").strip().lower().replace(" ", "")
    return text or "none"


def projector_widths(spec: Any, dim: Any) -> tuple[int, ...] | None:
    """Layer widths of ``spec`` with ``d`` replaced by ``dim``; ``()`` for no projector; None
    when the spec cannot be read (or uses ``d`` without a dim)."""
    text = normalize_spec(spec)
    if text == "none":
        return ()
    widths = []
    for token in text.split("-"):
        if token.isdigit():
            widths.append(int(token))
        elif token == "d" and not math.isnan(_number(dim)):
            widths.append(int(_number(dim)))
        else:
            return None
    return tuple(widths)


def embedding_dim(spec: Any, dim: Any) -> int | None:
    """The output width of a projector: its last layer (``d`` is ``dim``); ``dim`` when there is
    no projector; None when unknown. ``("2048-d", 128) -> 128``, ``("512-512-64", 128) -> 64``."""
    widths = projector_widths(spec, dim)
    if widths:
        return widths[-1]
    number = _number(dim)
    return None if math.isnan(number) else int(number)


def projector_families(spec: Any, dim: Any) -> tuple[str, ...]:
    """Every family the architecture belongs to, the spec's own first (module docstring)."""
    text = normalize_spec(spec)
    widths = projector_widths(text, dim)
    own = [text] if "d" in text.split("-") or widths is None else []
    if widths is None:
        return tuple(own)
    same = [f for f in PAPER_FAMILIES if f not in own and projector_widths(f, dim) == widths]
    return tuple(own + same) or (text,)


def family_key(family: str) -> tuple[int, str]:
    """Sort key: the paper's families in Table S5 order, then the others by name."""
    return (PAPER_FAMILIES.index(family) if family in PAPER_FAMILIES else len(PAPER_FAMILIES),
            family)


def method_key(label: str) -> tuple[int, str]:
    """Sort key: :data:`METHOD_ORDER` (a SimCLR named by its temperature beside SimCLR), then
    the other labels by name."""
    base = "SimCLR" if label.startswith("SimCLR τ=") else label
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), label)


def cka_label(label: str, dim: Any) -> str:
    """Figure S2's name for a run: ``VICReg-1024``, ``SimCLR-2048`` (SimCLR-Tuned, the paper's
    SimCLR), ``Random``; a run without a paper name says what ran: ``SimCLR τ=0.5 d=64``."""
    if label == "Random":
        return label
    if not is_paper_label(label):
        return f"{label} d={dim}"
    base = "SimCLR" if label == "SimCLR-Tuned" else label
    return f"{base}-{dim}"
