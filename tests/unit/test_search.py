import pytest

from dockyard.errors import JobSpecError
from dockyard.search import Clause, order_clause, parse_query


def test_a_query_splits_into_clauses_and_only_what_mlflow_cannot_do_stays_here() -> None:
    clauses = parse_query("metrics.validation:auc > 0.95 and params.eta < '0.3' AND name LIKE 'xgb%'")
    assert clauses == [
        Clause("metrics", "validation:auc", ">", "0.95"),
        Clause("params", "eta", "<", "'0.3'"),
        Clause("tags", "dockyard.job_name", "LIKE", "'xgb%'"),
    ]
    assert [c.pushed_down() for c in clauses] == [True, False, True]
    assert clauses[0].mlflow() == "metrics.`validation:auc` > 0.95"
    assert parse_query("params.`odd and name` = 'a and b'") == [Clause("params", "odd and name", "=", "'a and b'")]
    assert parse_query("tags.owner is not null") == [Clause("tags", "owner", "IS NOT NULL", None)]
    assert parse_query("") == []


def test_params_compare_as_numbers_when_they_are_numbers() -> None:
    eta = Clause("params", "eta", "<", "'0.3'")
    assert eta.matches("0.25") and not eta.matches("0.5") and not eta.matches(None)
    assert Clause("params", "depth", ">=", "10").matches("10")
    assert Clause("params", "depth", ">", "'9'").matches("10")  # numerically, not as text
    assert Clause("params", "booster", "<", "'gbtree'").matches("dart")  # text compares as text


def test_bad_clauses_name_themselves_and_show_an_example() -> None:
    with pytest.raises(JobSpecError) as caught:
        parse_query("loss < 2 and metric.auc >")
    lines = [str(p) for p in caught.value.problems]
    assert lines[0].startswith("search 'loss < 2': 'loss' names no kind of field")
    assert "has no value" in lines[1] and "metrics.validation:auc > 0.95" in lines[1]
    assert order_clause("metrics.validation:auc desc") == "metrics.`validation:auc` DESC"
    with pytest.raises(JobSpecError, match="--order-by"):
        order_clause("auc")


def test_job_facts_become_tags_mlflow_accepts() -> None:
    from infra.catalog import job_tags, mlflow_name

    body = {
        "TrainingJobName": "j-1",
        "TrainingJobStatus": "Completed",
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        "Tags": [{"Key": "team=ml+ops@x", "Value": "a"}, {"Key": "empty", "Value": ""}],
        "SpotSavingsPercent": 70.0,
        "SpotSavingsUSD": 0.01,
    }
    tags = job_tags(body)
    assert tags["tag.team_ml_ops_x"] == "a" and "tag.empty" not in tags  # SageMaker tag keys MLflow refuses
    assert tags["dockyard.instance_type"] == "ml.m5.large" and tags["dockyard.spot_savings_percent"] == "70.0"
    assert mlflow_name("validation:auc") == "validation:auc"
