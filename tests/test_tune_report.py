"""``sslbench report tune``: a study's best trials, history and importances, from the store.

The store and the study are written directly (runs with per-epoch metrics, an Optuna study on
the same SQLite file with completed and pruned trials), then read back through the CLI; the
numbers are checked against the trials as written and against Optuna computed here.
"""

from __future__ import annotations

import json

import pytest

from sslbench.db import Store

EPOCHS = 3
#: (lr, temperature, final online top-1, epochs trained); the last one was pruned.
TRIALS = [(0.001, 0.1, 21.0, 3), (0.004, 0.2, 27.5, 3), (0.002, 0.5, 24.0, 3),
          (0.01, 0.05, None, 1)]


@pytest.fixture
def study_store(home):
    import optuna

    from sslbench.runs.tune import SPEC_ATTR, storage

    path = home / "db" / "sslbench.sqlite"
    path.parent.mkdir()
    with Store.open(str(path)) as store:
        study = optuna.create_study(study_name="lr", storage=storage(store.url),
                                    direction="maximize")
        study.set_user_attr(SPEC_ATTR, json.dumps({
            "base": {"epochs": EPOCHS}, "pruner": {"name": "median"},
            "objective": {"metric": "online_top1", "protocol": None,
                          "direction": "maximize"}}))
        space = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
                 "temperature": optuna.distributions.FloatDistribution(0.05, 1.0)}
        for n, (lr, tau, top1, epochs) in enumerate(TRIALS):
            run_id = f"{n:012x}"
            store.upsert_run(run_id=run_id, kind="pretrain", config={"lr": lr}, command=[],
                             env={}, method="simclr", dataset="shapes", tags=["tune:lr"])
            for epoch in range(1, epochs + 1):
                store.log_metrics(run_id, 10 * epoch, {"online_top1": 10.0 + epoch},
                                  epoch=epoch)
            state = optuna.trial.TrialState.COMPLETE if top1 else optuna.trial.TrialState.PRUNED
            study.add_trial(optuna.trial.create_trial(
                params={"lr": lr, "temperature": tau}, distributions=space, value=top1,
                state=state, user_attrs={"run_id": run_id},
                intermediate_values={} if top1 else {1: 11.0}))
        yield store, study


def test_best_trials_first_with_their_runs_and_what_the_search_spent(cli, study_store):
    import optuna

    _, study = study_store
    result = cli("report", "tune", "lr", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    rows = doc["rows"]
    assert [(r["trial"], r["value"], r["lr"], r["epochs"]) for r in rows] == [
        (1, 27.5, 0.004, 3), (2, 24.0, 0.002, 3), (0, 21.0, 0.001, 3)]
    assert [r["run_id"] for r in rows] == ["000000000001", "000000000002", "000000000000"]
    table = cli("report", "tune", "lr", "--format", "markdown").output
    assert "3 complete, 1 pruned" in table
    assert "10 training epochs spent, 83% of the 12" in table  # 3 + 3 + 3 + 1 of 4 x 3
    expected = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    assert doc["notes"]["lr"]["importances"] == pytest.approx(dict(expected))
    assert doc["notes"]["lr"]["trials"] == {"complete": 3, "pruned": 1}


def test_the_figure_and_refusals(cli, study_store, home):
    out = home / "tune.png"
    result = cli("report", "tune", "lr", "--format", "png", "--out", str(out))
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    missing = cli("report", "tune", "nosuch")
    assert missing.exit_code == 1 and "no tuning study 'nosuch'" in missing.output
    other = cli("report", "dims", "lr")
    assert other.exit_code == 1 and "takes no STUDY argument" in other.output


def test_a_store_without_studies_says_so(cli, home):
    path = home / "db" / "sslbench.sqlite"
    path.parent.mkdir()
    Store.open(str(path)).close()
    result = cli("report", "tune")
    assert result.exit_code == 1
    assert "the store holds no tuning study" in result.output
