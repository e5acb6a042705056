"""SageMaker Python SDK v2 code as its users write it, run in .venv-clients against `dockyard serve`.

    python sagemaker_sdk.py '{"scenario": "fit", "image": ..., "train": "s3://...", "output": "s3://..."}'

The only changes from code that runs on AWS: AWS_ENDPOINT_URL_SAGEMAKER and
AWS_ENDPOINT_URL_CLOUDWATCH_LOGS in the environment, and telemetry opted out.
Prints one JSON line with what the test checks.
"""

import json
import sys

import boto3
import sagemaker
from sagemaker.estimator import Estimator
from sagemaker.exceptions import UnexpectedStatusException
from sagemaker.processing import ProcessingInput, ProcessingOutput, Processor
from sagemaker.tuner import ContinuousParameter, HyperparameterTuner

args = json.loads(sys.argv[1])
session = sagemaker.Session(
    boto3.Session(region_name="us-east-1"),
    sagemaker_config={"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}},
)


def estimator(**hyperparameters):
    return Estimator(
        image_uri=args["image"],
        role="arn:aws:iam::111111111111:role/dockyard",
        instance_count=1,
        instance_type="ml.m5.large",
        output_path=args["output"],
        sagemaker_session=session,
        hyperparameters=hyperparameters,
        metric_definitions=[{"Name": "loss", "Regex": "loss=([0-9.]+)"}],
        max_run=600,
    )


result = {}
if args["scenario"] == "fit":
    est = estimator(mode="sleep", seconds="3")
    est.fit({"train": args["train"]}, logs="All")
    result["job"] = est.latest_training_job.name
    result["model_data"] = est.model_data
    attached = Estimator.attach(result["job"], sagemaker_session=session)
    result["attached_model_data"] = attached.model_data
    result["attached_instance_type"] = attached.instance_type
elif args["scenario"] == "fail":
    est = estimator(mode="fail", failure_text="the probe was told to fail")
    try:
        est.fit(logs="All")
    except UnexpectedStatusException as exc:
        result["error"] = str(exc)
elif args["scenario"] == "tune":
    est = estimator(mode="branin", x2="2.275", epochs="3")
    tuner = HyperparameterTuner(
        est,
        objective_metric_name="loss",
        objective_type="Minimize",
        hyperparameter_ranges={"x1": ContinuousParameter(-5, 10)},
        metric_definitions=[{"Name": "loss", "Regex": "loss=([0-9.]+)"}],
        max_jobs=2,
        max_parallel_jobs=2,
        tags=[{"Key": "project", "Value": "branin"}],
    )
    tuner.fit(wait=True)
    result["best"] = tuner.best_training_job()
elif args["scenario"] == "process":
    script = (
        "import os; files = sorted(os.listdir('/opt/ml/processing/input/data')); print('processing', files);"
        "open('/opt/ml/processing/output/count.txt', 'w').write(str(len(files)))"
    )
    processor = Processor(
        role="arn:aws:iam::111111111111:role/dockyard",
        image_uri=args["image"],
        entrypoint=["python3", "-c", script],
        instance_count=1,
        instance_type="ml.m5.large",
        max_runtime_in_seconds=600,
        sagemaker_session=session,
    )
    processor.run(
        inputs=[ProcessingInput(source=args["data"], destination="/opt/ml/processing/input/data")],
        outputs=[ProcessingOutput(source="/opt/ml/processing/output", destination=args["output"])],
        wait=True,
        logs=True,
    )
    result["job"] = processor.latest_job.job_name
    result["status"] = processor.latest_job.describe()["ProcessingJobStatus"]
elif args["scenario"] == "clarify":
    from sagemaker import clarify

    processor = clarify.SageMakerClarifyProcessor(
        role="arn:aws:iam::111111111111:role/dockyard",
        instance_count=1,
        instance_type="ml.m5.xlarge",
        sagemaker_session=session,
    )
    data = clarify.DataConfig(
        s3_data_input_path=args["data"],
        s3_output_path=args["output"],
        label="approved",
        headers=["approved", "gender", "income", "debt", "predicted"],
        dataset_type="text/csv",
    )
    bias = clarify.BiasConfig(label_values_or_threshold=[1], facet_name="gender", facet_values_or_threshold=[1])
    processor.run_pre_training_bias(data, bias, methods=["CI", "DPL"], wait=True, logs=False)
    result["job"] = processor.latest_job.job_name
    result["status"] = processor.latest_job.describe()["ProcessingJobStatus"]
    # Post-training bias of a model trained here: Clarify serves it from the training job's image.
    trainer = estimator()
    trainer.fit({"train": args["train"]}, wait=True, logs=False)
    model = clarify.ModelConfig(
        model_name=trainer.latest_training_job.name,
        instance_count=1,
        instance_type="ml.m5.large",
        content_type="text/csv",
        accept_type="text/csv",
    )
    data = clarify.DataConfig(
        s3_data_input_path=args["data"],
        s3_output_path=args["output"] + "-post",
        label="approved",
        headers=["approved", "gender", "income", "debt", "predicted"],
        excluded_columns=["predicted"],
        dataset_type="text/csv",
    )
    labels = clarify.ModelPredictedLabelConfig(probability_threshold=0.5)
    processor.run_post_training_bias(data, bias, model, labels, methods=["DPPL", "DI"], wait=True, logs=False)
    result["model_job"] = trainer.latest_training_job.name
    result["post_job"] = processor.latest_job.job_name
    result["post_status"] = processor.latest_job.describe()["ProcessingJobStatus"]
elif args["scenario"] == "algorithm":
    from sagemaker.algorithm import AlgorithmEstimator

    client = session.sagemaker_client
    arn = client.create_algorithm(**args["algorithm"])["AlgorithmArn"]
    vendor = AlgorithmEstimator(
        algorithm_arn=arn,
        role="arn:aws:iam::111111111111:role/dockyard",
        instance_count=1,
        instance_type="ml.m5.large",
        output_path=args["output"],
        sagemaker_session=session,
        hyperparameters={"x1": 3.14},
    )
    vendor.fit({"train": args["train"]}, logs=False)
    result["job"] = vendor.latest_training_job.name
    result["described"] = client.describe_training_job(TrainingJobName=result["job"])["HyperParameters"]
    result["listed"] = [a["AlgorithmName"] for a in client.list_algorithms()["AlgorithmSummaryList"]]
    try:
        AlgorithmEstimator(
            algorithm_arn=arn,
            role="arn:aws:iam::111111111111:role/dockyard",
            instance_count=1,
            instance_type="ml.c5.xlarge",
            sagemaker_session=session,
        )
    except ValueError as exc:  # the SDK's own check, from DescribeAlgorithm's answer
        result["sdk_refused"] = str(exc)
    client.delete_algorithm(AlgorithmName=arn)
    result["after_delete"] = [a["AlgorithmName"] for a in client.list_algorithms()["AlgorithmSummaryList"]]
print("\nRESULT " + json.dumps(result), flush=True)  # on a line of its own: waits print progress dots
