"""One SageMaker local-mode training job of the noop image (run by the benchmark
under a Python that has `sagemaker<3`): python sagemaker_local.py DATA_DIR OUT_DIR"""

import sys

from sagemaker.estimator import Estimator
from sagemaker.local import LocalSession

session = LocalSession()
session.config = {"local": {"local_code": True}}
estimator = Estimator(
    image_uri="dockyard-bench/noop:1",
    role="arn:aws:iam::123456789012:role/SageMakerRole",
    instance_count=1,
    instance_type="local",
    sagemaker_session=session,
    output_path=f"file://{sys.argv[2]}",
)
estimator.fit({"train": f"file://{sys.argv[1]}"}, logs=False)
