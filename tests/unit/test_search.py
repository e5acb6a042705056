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
