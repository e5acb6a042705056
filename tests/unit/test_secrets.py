"""Which names are secrets, references to Prefect Secret blocks, and masking."""

import json
from datetime import UTC, datetime

import pytest

from dockyard import secrets
from dockyard.loading import build_job
from dockyard.record import JobRecord, describe
from dockyard.tuning import TuningJobSpec, tuning_as_references

NOW = datetime(2026, 11, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "name",
    ["api_key", "DB_PASSWORD", "hfToken", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "APIKey", "openai.api-key", "token"],
)
def test_names_that_say_secret(name: str) -> None:
    assert secrets.is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    ["max_tokens", "keyword", "monkey", "learning_rate", "num_keys", "secretary", "sort_key", "pad_token", "key_size"],
)
def test_names_that_do_not(name: str) -> None:
    assert not secrets.is_secret_name(name)


def test_a_reference_names_its_block_and_a_literal_none() -> None:
    assert secrets.block_of(secrets.reference("wandb-key")) == "wandb-key"
    assert secrets.block_of("{{prefect.blocks.secret.a-1}}") == "a-1"
    assert secrets.block_of("{{ prefect.blocks.secret.Upper }}") is None  # Prefect's block names are lowercase
    assert secrets.block_of("hunter2") is None


def job(**changes: object) -> dict[str, object]:
    return {
        "training_job_name": "Job-1",
        "algorithm_specification": {"training_image": "img:1"},
        "output_data_config": {"s3_output_path": "s3://b/out"},
        **changes,
    }


def test_literal_secrets_become_references_to_blocks_named_for_the_job_map_and_key() -> None:
    spec = build_job(
        job(
            hyperparameters={"api_key": "k-123456", "epochs": "3", "token": secrets.reference("mine")},
            environment={"DB_PASSWORD": "hunter2", "MODE": "x"},
        ),
        home="/tmp/home",
        now=NOW,
    )
    referenced, literals = secrets.as_references(spec)
    hp_block = secrets.block_of(referenced.hyperparameters["api_key"])
    env_block = secrets.block_of(referenced.environment["DB_PASSWORD"])
    assert hp_block and env_block and hp_block != env_block
    assert literals == {hp_block: "k-123456", env_block: "hunter2"}
    assert referenced.hyperparameters["epochs"] == "3" and referenced.environment["MODE"] == "x"
    assert referenced.hyperparameters["token"] == secrets.reference("mine")  # already a reference
    assert hp_block.startswith("dockyard-job-1-api-key-") and hp_block == hp_block.lower()
    again, _ = secrets.as_references(spec)
    assert again == referenced  # the same job's same key: the same block, so a resubmission matches
    plain = build_job(job(hyperparameters={"epochs": "3"}), home="/tmp/home", now=NOW)
    assert secrets.as_references(plain) == (plain, {})


def test_a_tuning_definitions_secrets_are_referenced_for_every_trial() -> None:
    spec = TuningJobSpec.model_validate(
        {
            "hyper_parameter_tuning_job_name": "t",
            "hyper_parameter_tuning_job_config": {
                "strategy": "Random",
                "hyper_parameter_tuning_job_objective": {"type": "Minimize", "metric_name": "loss"},
                "parameter_ranges": {"categorical_parameter_ranges": [{"name": "a", "values": ["1"]}]},
            },
            "training_job_definition": {
                "static_hyper_parameters": {"hf_token": "hf-abcdef", "b": "2"},
                "environment": {"SECRET": "s-abcdef"},
            },
        }
    )
    referenced, literals = tuning_as_references(spec)
    definition = referenced.training_job_definition
    assert sorted(literals.values()) == ["hf-abcdef", "s-abcdef"]
    assert secrets.block_of(definition["static_hyper_parameters"]["hf_token"]) in literals
    assert secrets.block_of(definition["environment"]["SECRET"]) in literals
    assert definition["static_hyper_parameters"]["b"] == "2"


def test_describe_masks_a_literal_secret_and_shows_a_reference() -> None:
    spec = build_job(
        job(hyperparameters={"password": "hunter2", "key": secrets.reference("k")}, environment={"TOKEN": "t-1"}),
        home="/tmp/home",
        now=NOW,
    )
    body = describe(JobRecord(spec=spec, creation_time=NOW))
    assert body["HyperParameters"] == {"password": secrets.MASK, "key": secrets.reference("k")}
    assert body["Environment"] == {"TOKEN": secrets.MASK}


def test_masking_text_hides_every_value_longest_first() -> None:
    assert secrets.mask_text("token=abc123 and abc123456", frozenset({"abc123", "abc123456"})) == (
        f"token={secrets.MASK} and {secrets.MASK}"
    )
    assert secrets.mask_text("nothing here", frozenset()) == "nothing here"


def test_a_document_mentions_secrets_by_name_or_reference_in_either_naming() -> None:
    assert secrets.mentioned({"hyperparameters": {"api_key": "x"}})
    assert secrets.mentioned({"Environment": {"MODE": secrets.reference("b")}})
    assert secrets.mentioned({"StaticHyperParameters": {"HF_TOKEN": "x"}})
    assert not secrets.mentioned({"hyperparameters": {"epochs": "3"}, "environment": "not a map"})


def test_a_spec_with_literals_is_the_same_job_as_the_one_it_made() -> None:
    from tasks.validate import same_job

    made = secrets.as_references(build_job(job(hyperparameters={"api_key": "k-1"}), home="/h", now=NOW))[0]
    again = build_job(job(hyperparameters={"api_key": "k-1"}), home="/h", now=NOW)
    other = build_job(job(hyperparameters={"api_key": "k-1", "epochs": "2"}), home="/h", now=NOW)
    assert same_job(made, again) and not same_job(made, other)


def test_a_json_encoded_secret_stays_json_encoded_as_a_reference() -> None:
    spec = build_job(job(hyperparameters={"wandb_api_key": '"k-123456"'}), home="/h", now=NOW)
    referenced, literals = secrets.as_references(spec)
    value = referenced.hyperparameters["wandb_api_key"]
    assert json.loads(value) == secrets.reference(secrets.block_of(value) or "")  # the SDK can decode it
    assert list(literals.values()) == ['"k-123456"']  # the container gets what was sent
