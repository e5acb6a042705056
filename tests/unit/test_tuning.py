import pytest

from dockyard.errors import JobSpecError
from dockyard.tuning import (
    CompletionCriteria,
    NotImproving,
    TuningJobSpec,
    check_tuning,
    completion_reason,
    grid,
    median_rule,
)


def spec(**config: object) -> TuningJobSpec:
    base: dict[str, object] = {
        "strategy": "Random",
        "hyper_parameter_tuning_job_objective": {"type": "Minimize", "metric_name": "loss"},
        "parameter_ranges": {
            "categorical_parameter_ranges": [
                {"name": "a", "values": ["1", "2"]},
                {"name": "b", "values": ["x", "y", "z"]},
            ]
        },
    }
    base.update(config)
    return TuningJobSpec.model_validate(
        {
            "hyper_parameter_tuning_job_name": "t",
            "hyper_parameter_tuning_job_config": base,
            "training_job_definition": {},
        }
    )


def test_grid_is_every_combination_in_order() -> None:
    points = grid(spec().hyper_parameter_tuning_job_config.parameter_ranges)
    assert points == [{"a": a, "b": b} for a in "12" for b in "xyz"]


def test_median_rule() -> None:
    earlier = [[1.0, 0.5, 0.3], [1.0, 0.6, 0.4], [2.0, 1.0, 0.9]]
    assert not median_rule([1.0], earlier[:1], maximize=False)  # too few earlier trials
    assert median_rule([5.0, 4.0], earlier, maximize=False)  # running averages at 2: .75, .8, 1.5
    assert not median_rule([0.5, 0.6], earlier, maximize=False)
    assert median_rule([0.1, 0.2], [[0.9, 0.9], [0.8, 0.8]], maximize=True)


def test_completion_criteria() -> None:
    target = CompletionCriteria(target_objective_metric_value=0.9)
    assert completion_reason(target, [0.5, 0.95], maximize=True) == "the objective reached the target 0.9 (best 0.95)"
    assert completion_reason(target, [0.5, None], maximize=True) is None
    patience = CompletionCriteria(
        best_objective_not_improving=NotImproving(max_number_of_training_jobs_not_improving=3)
    )
    assert completion_reason(patience, [0.3, 0.5, 0.4, 0.6], maximize=False) == (
        "the best objective did not improve over the last 3 trials"
    )
    assert completion_reason(patience, [0.3, 0.5, 0.2, 0.6], maximize=False) is None


def test_tuning_rules() -> None:
    with pytest.raises(JobSpecError, match="Hyperband is not supported yet"):
        check_tuning(spec(strategy="Hyperband"), ["loss"], {})
    with pytest.raises(JobSpecError, match="named more than once: a"):
        check_tuning(spec(), ["loss"], {"a": "1"})
    with pytest.raises(ValueError, match="min_value"):
        spec(parameter_ranges={"integer_parameter_ranges": [{"name": "n", "min_value": 5, "max_value": 5}]})
    check_tuning(spec(), ["loss"], {})
