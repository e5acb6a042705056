"""A principal limited to actions and job-name prefixes: what gets through, what is refused."""

from __future__ import annotations

import pytest

from api.access import authorize, named_jobs, visible
from api.protocol import ApiError

ARN = "arn:aws:sagemaker:us-east-1:123456789012:training-job/"


def refused(*args: object) -> str:
    with pytest.raises(ApiError) as caught:
        authorize(*args)  # type: ignore[arg-type]
    assert caught.value.code == "AccessDeniedException"
    return caught.value.message


def test_no_limits_let_everything_through() -> None:
    authorize("default", None, None, "sagemaker", "DeleteTags", {"ResourceArn": ARN + "anything"})
    authorize("default", None, None, "logs", "FilterLogEvents", {"logGroupName": "/aws/sagemaker/TrainingJobs"})


def test_actions_are_iam_patterns() -> None:
    readers = ["sagemaker:Describe*", "sagemaker:List*", "logs:*"]
    authorize("carol", readers, None, "sagemaker", "DescribeTrainingJob", {"TrainingJobName": "x"})
    authorize("carol", readers, None, "logs", "GetLogEvents", {"logStreamName": "x/algo-1-1"})
    message = refused("carol", readers, None, "sagemaker", "CreateTrainingJob", {"TrainingJobName": "x"})
    assert message.startswith("carol is not authorized to perform sagemaker:CreateTrainingJob")
    assert "keys file" in message
    assert refused("carol", [], None, "sagemaker", "ListTrainingJobs", {})  # an empty list allows nothing


def test_job_name_prefixes_hold_wherever_a_call_names_a_job() -> None:
    bob = ("bob", None, ["bob-"])
    authorize(*bob, "sagemaker", "CreateTrainingJob", {"TrainingJobName": "Bob-1"})  # names are case-insensitive
    authorize(*bob, "sagemaker", "ListTags", {"ResourceArn": ARN + "bob-1"})
    authorize(*bob, "logs", "GetLogEvents", {"logStreamName": "bob-1/algo-1-1700000000"})
    authorize(*bob, "sagemaker", "ListTrainingJobs", {})  # names no job: the actions decide
    assert "job 'alice-1'" in refused(*bob, "sagemaker", "DescribeTrainingJob", {"TrainingJobName": "alice-1"})
    assert refused(*bob, "sagemaker", "StopHyperParameterTuningJob", {"HyperParameterTuningJobName": "t"})
    assert refused(*bob, "sagemaker", "CreateProcessingJob", {"ProcessingJobName": "alice-p"})
    authorize(*bob, "sagemaker", "DescribeProcessingJob", {"ProcessingJobName": "bob-p"})
    assert refused(*bob, "sagemaker", "AddTags", {"ResourceArn": ARN + "alice-1", "Tags": []})
    assert refused(*bob, "logs", "FilterLogEvents", {"logStreamNames": ["bob-1/algo-1-1", "alice-1/algo-1-1"]})
    assert "name a log stream" in refused(*bob, "logs", "DescribeLogStreams", {"logGroupName": "g"})


def test_named_jobs() -> None:
    assert named_jobs("sagemaker", {"MaxResults": 5}) is None
    assert named_jobs("sagemaker", {"ResourceArn": ARN + "j"}) == ["j"]
    assert named_jobs("logs", {"logStreamNamePrefix": "j/algo-1"}) == ["j"]


def test_a_limited_principal_may_not_name_locations_on_this_machine() -> None:
    bob = ("bob", None, ["bob-"])
    create = {"TrainingJobName": "bob-1", "OutputDataConfig": {"S3OutputPath": "s3://b/out"}}
    authorize(*bob, "sagemaker", "CreateTrainingJob", create)
    for local in (
        {"InputDataConfig": [{"DataSource": {"S3DataSource": {"S3Uri": "file:///root/.dockyard/jobs/alice-1"}}}]},
        {"InputDataConfig": [{"DataSource": {"FileSystemDataSource": {"DirectoryPath": "/"}}}]},
        {"HyperParameters": {"sagemaker_submit_directory": '"file:///etc"'}},
    ):
        assert "locations on this machine" in refused(*bob, "sagemaker", "CreateTrainingJob", {**create, **local})
    authorize("default", None, None, "sagemaker", "CreateTrainingJob", {**create, "X": "file:///data"})  # unlimited


def test_lists_and_search_answer_only_the_jobs_within_the_prefixes() -> None:
    listed = {
        "TrainingJobSummaries": [{"TrainingJobName": "bob-1"}, {"TrainingJobName": "alice-1"}],
        "NextToken": "t",
    }
    assert visible(["BOB-"], listed) == {"TrainingJobSummaries": [{"TrainingJobName": "bob-1"}], "NextToken": "t"}
    found = {
        "Results": [{"TrainingJob": {"TrainingJobName": "alice-2"}}, {"TrainingJob": {"TrainingJobName": "bob-2"}}]
    }
    assert visible(["bob-"], found) == {"Results": [{"TrainingJob": {"TrainingJobName": "bob-2"}}]}
    assert visible(None, found) is found
    processing = {"ProcessingJobSummaries": [{"ProcessingJobName": "alice-p"}, {"ProcessingJobName": "bob-p"}]}
    assert visible(["bob-"], processing) == {"ProcessingJobSummaries": [{"ProcessingJobName": "bob-p"}]}


def test_a_principal_with_roles_may_pass_only_those_to_its_jobs() -> None:
    roles = ["arn:aws:iam::*:role/alice-*"]
    mine, theirs = "arn:aws:iam::111111111111:role/alice-training", "arn:aws:iam::111111111111:role/admin"
    authorize("alice", None, None, "sagemaker", "CreateTrainingJob", {"RoleArn": mine}, roles)
    authorize("alice", None, None, "sagemaker", "DescribeTrainingJob", {"TrainingJobName": "x"}, roles)
    message = refused("alice", None, None, "sagemaker", "CreateTrainingJob", {"RoleArn": theirs}, roles)
    assert f"it may not pass the role {theirs} to a job" in message and "principal's roles in the keys file" in message
    tuning = {"TrainingJobDefinitions": [{"RoleArn": mine}, {"RoleArn": theirs}]}
    assert refused("alice", None, None, "sagemaker", "CreateHyperParameterTuningJob", tuning, roles)
    assert refused(
        "alice",
        None,
        None,
        "sagemaker",
        "CreateHyperParameterTuningJob",
        {"TrainingJobDefinition": {"RoleArn": theirs}},
        roles,
    )
    assert refused("alice", None, None, "sagemaker", "CreateTrainingJob", {"RoleArn": mine}, [])  # none at all
    authorize("bob", None, None, "sagemaker", "CreateTrainingJob", {"RoleArn": theirs})  # no roles: no limit
