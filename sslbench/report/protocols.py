"""The metrics the reports tabulate: what protocol produced each, and which command makes it."""

from __future__ import annotations

from sslbench.errors import ConfigError

#: metric -> the protocol that produced it, as a caption says it.
PROTOCOLS = {
    "online_top1": "online linear probe trained on detached features during pretraining",
    "fast_linear_top1": "linear probe on cached frozen features (sslbench's fast protocol)",
    "linear_top1": "offline linear probe on the frozen backbone (the paper's protocol: "
                   "training images re-augmented and re-encoded every epoch)",
    "knn_top1": "k-NN classifier on frozen features, best cell of the paper's k x temperature "
                "sweep",
    "rankme_repr": "RankMe (effective rank) of the representations",
    "rankme_emb": "RankMe (effective rank) of the embeddings",
}
#: metric -> the command that records it.
COMMANDS = {
    "online_top1": "sslbench train",
    "fast_linear_top1": "sslbench eval RUN_ID",
    "linear_top1": "sslbench eval RUN_ID --protocol linear",
    "knn_top1": "sslbench eval RUN_ID --protocol knn",
    "rankme_repr": "sslbench eval RUN_ID --protocol analysis",
    "rankme_emb": "sslbench eval RUN_ID --protocol analysis",
}
#: metric -> the protocol in a few words (legends of random-init lines).
PROBE_NAMES = {"linear_top1": "offline linear probe", "fast_linear_top1": "fast-linear probe",
               "knn_top1": "k-NN"}
SELECTS = ("final", "best")


def check_select(select: str) -> str:
    """``select`` if it is ``final`` or ``best``; ConfigError otherwise."""
    if select not in SELECTS:
        raise ConfigError(f"unknown --select {select!r}: use final (the last logged value) or "
                          "best (the best value over the run)")
    return select


def select_text(select: str, metric: str) -> str:
    """How a cell's value was taken from each run, for captions."""
    if metric.startswith("online_"):
        return ("value at the final epoch" if select == "final"
                else "best value over the epochs")
    return "latest completed evaluation of each run"


def is_online(metric: str) -> bool:
    """Metrics logged by the pretraining run itself (the others come from evaluation runs)."""
    return metric.startswith("online_")
