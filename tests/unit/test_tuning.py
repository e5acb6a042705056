import json

import pytest

from dockyard.errors import JobSpecError
from dockyard.secrets import MASK
from dockyard.spec import Tag
from dockyard.status import PrimaryStatus
from dockyard.tuning import (
    CompletionCriteria,
    ConvergenceDetected,
    NotImproving,
    OnConvergence,
    TuningJobSpec,
    check_tuning,
    completion_reason,
    grid,
    hyperband_resources,
    median_rule,
)
from dockyard.tuning_record import (
    ObjectiveStatus,
    TrialSummary,
    TuningRecord,
    from_description,
    shown_definition,
    tuning_record,
    warm_start_problems,
    warm_start_results,
)
from tasks.tuning import distributions, hyperparameters_of, params_of, trial_doc


def spec(
    definition: dict[str, object] | None = None, warm: dict[str, object] | None = None, **config: object
) -> TuningJobSpec:
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
            "training_job_definition": definition or {},
            "warm_start_config": warm,
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
    with pytest.raises(JobSpecError, match="named more than once: a"):
        check_tuning(spec(), ["loss"], {"a": "1"})
    with pytest.raises(ValueError, match="min_value"):
        spec(parameter_ranges={"integer_parameter_ranges": [{"name": "n", "min_value": 5, "max_value": 5}]})
    check_tuning(spec(), ["loss"], {})


def test_hyperband_rules() -> None:
    with pytest.raises(JobSpecError, match="max_resource: is missing, and no static hyperparameter"):
        check_tuning(spec(strategy="Hyperband"), ["loss"], {})
    with pytest.raises(JobSpecError, match="cannot be combined with Auto early stopping"):
        check_tuning(spec(strategy="Hyperband", training_job_early_stopping_type="Auto"), ["loss"], {"epochs": "9"})
    with pytest.raises(JobSpecError, match="applies only to the Hyperband strategy, not Random"):
        check_tuning(spec(strategy_config={"hyperband_strategy_config": {"max_resource": 9}}), ["loss"], {})
    with pytest.raises(JobSpecError, match=r"min_resource: \(9\) must be less than max_resource \(9\)"):
        check_tuning(
            spec(strategy="Hyperband", strategy_config={"hyperband_strategy_config": {"min_resource": 9}}),
            ["loss"],
            {"num_epochs": "9"},
        )
    hyperband = spec(strategy="Hyperband").hyper_parameter_tuning_job_config
    assert hyperband_resources(hyperband, {"n-epochs": "27"}) == (1, 27)  # inferred as SageMaker does
    check_tuning(spec(strategy="Hyperband"), ["loss"], {"epochs": "9"})


def test_convergence_ends_a_search_that_stopped_improving() -> None:
    criteria = CompletionCriteria(
        convergence_detected=ConvergenceDetected(complete_on_convergence=OnConvergence.ENABLED)
    )
    improving = [10.0 - i for i in range(12)]
    assert completion_reason(criteria, improving, maximize=False) is None
    flat = [10.0, 5.0, 3.0, 2.0, 1.0, 1.0, 1.001, 1.2, 3.0, 1.005, 2.0, 4.0]
    assert completion_reason(criteria, flat, maximize=False).startswith("the search converged")
    assert completion_reason(criteria, flat[:9], maximize=False) is None  # too few trials to judge
    disabled = CompletionCriteria(convergence_detected=ConvergenceDetected())
    assert completion_reason(disabled, flat, maximize=False) is None


def trial(name: str, a: str, value: float, b: str = "x") -> TrialSummary:
    return TrialSummary(
        training_job_name=name,
        training_job_status=PrimaryStatus.COMPLETED,
        tuned_hyper_parameters={"a": a, "b": b},
        final_objective=value,
        objective_status=ObjectiveStatus.SUCCEEDED,
    )


def parent_record(definition: dict[str, object], metric: str = "loss") -> TuningRecord:
    parent = spec(definition, hyper_parameter_tuning_job_objective={"type": "Minimize", "metric_name": metric})
    trials = [trial(f"p-00{i}", a, v) for i, (a, v) in enumerate([("1", 0.5), ("2", 0.25)])]
    return tuning_record(parent, trials, stopped=False, completed_because=None, parents=[])


def test_warm_start_rules_and_overall_best() -> None:
    definition = {"algorithm_specification": {"training_image": "img:1"}, "static_hyper_parameters": {"c": "1"}}
    warm = {"parent_hyper_parameter_tuning_jobs": [{"hyper_parameter_tuning_job_name": "p"}]}
    identical = spec(definition, {**warm, "warm_start_type": "IdenticalDataAndAlgorithm"})
    assert warm_start_problems(identical, {"p": parent_record(definition)}) == []
    [missing] = warm_start_problems(identical, {"p": None})
    assert "no tuning job 'p' has finished here" in str(missing)
    other = {**definition, "algorithm_specification": {"training_image": "img:2"}}
    [differs] = warm_start_problems(identical, {"p": parent_record(other)})
    assert "differs in its algorithm" in str(differs) and "TransferLearning" in str(differs)
    transfer = spec(definition, {**warm, "warm_start_type": "TransferLearning"})
    assert warm_start_problems(transfer, {"p": parent_record(other)}) == []
    [objective] = warm_start_problems(transfer, {"p": parent_record(definition, metric="auc")})
    assert "Minimizes auc, this job Minimizes loss" in str(objective)
    record = tuning_record(transfer, [trial("t-001", "1", 0.4, "y")], False, None, parents=[parent_record(definition)])
    body = record.describe()
    assert body["BestTrainingJob"]["TrainingJobName"] == "t-001"
    assert body["OverallBestTrainingJob"]["TrainingJobName"] == "p-001"
    assert warm_start_results([parent_record(definition)]) == [
        ({"c": "1", "a": "1", "b": "x"}, 0.5),
        ({"c": "1", "a": "2", "b": "x"}, 0.25),
    ]
    assert from_description(json.loads(json.dumps(body))) == record  # as earlier versions stored records


def test_hyperparameter_strings_map_back_to_the_search_space() -> None:
    ranges = spec(
        parameter_ranges={
            "integer_parameter_ranges": [{"name": "n", "min_value": 1, "max_value": 1000}],
            "continuous_parameter_ranges": [
                {"name": "m", "min_value": 0.5, "max_value": 0.999, "scaling_type": "ReverseLogarithmic"}
            ],
            "categorical_parameter_ranges": [{"name": "k", "values": ["x", "y"]}],
        }
    ).hyper_parameter_tuning_job_config.parameter_ranges
    space = distributions(ranges)
    params = {"n": 37, "m": 1 - 0.9, "k": "y"}
    assert params_of(hyperparameters_of(params, ranges), space, ranges) == pytest.approx(params)
    assert params_of({"n": "2000", "m": "0.9", "k": "y"}, space, ranges) is None  # outside the new range
    assert params_of({"n": "3", "k": "y"}, space, ranges) is None  # m was static in the parent


def test_each_trial_carries_the_tuning_jobs_tags_and_its_secrets_show_masked() -> None:
    tuning = spec({"static_hyper_parameters": {"api_key": "k-123456", "c": "1"}}).model_copy(
        update={"tags": [Tag(key="project", value="x")]}
    )
    assert trial_doc(tuning, 3, {"a": "1"})["tags"] == [{"key": "project", "value": "x"}]
    assert "tags" not in trial_doc(spec(), 3, {"a": "1"})
    shown = shown_definition(tuning.training_job_definition)
    assert shown["static_hyper_parameters"] == {"api_key": MASK, "c": "1"}
