"""The instance-type catalog: what each ml.* type means on a host you own.

Prices are SageMaker's on-demand training prices in us-east-1 (USD per
instance-hour), used to report what a job would have cost and, for spot,
what it saved. `local` and `local_gpu` run without resource limits, as in
SageMaker's local mode.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class InstanceType(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    vcpus: int | None  # None: no limit (local types)
    memory_gib: float | None
    gpus: int  # -1: every GPU the host has (local_gpu)
    price_per_hour: float


def _t(name: str, vcpus: int | None, mem: float | None, gpus: int, price: float) -> InstanceType:
    return InstanceType(name=name, vcpus=vcpus, memory_gib=mem, gpus=gpus, price_per_hour=price)


INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in [
        _t("local", None, None, 0, 0.0),
        _t("local_gpu", None, None, -1, 0.0),
        _t("ml.t3.medium", 2, 4, 0, 0.05),
        _t("ml.t3.large", 2, 8, 0, 0.1),
        _t("ml.t3.xlarge", 4, 16, 0, 0.2),
        _t("ml.m5.large", 2, 8, 0, 0.115),
        _t("ml.m5.xlarge", 4, 16, 0, 0.23),
        _t("ml.m5.2xlarge", 8, 32, 0, 0.461),
        _t("ml.m5.4xlarge", 16, 64, 0, 0.922),
        _t("ml.m5.12xlarge", 48, 192, 0, 2.765),
        _t("ml.m5.24xlarge", 96, 384, 0, 5.53),
        _t("ml.m4.xlarge", 4, 16, 0, 0.24),
        _t("ml.c5.xlarge", 4, 8, 0, 0.204),
        _t("ml.c5.2xlarge", 8, 16, 0, 0.408),
        _t("ml.c5.4xlarge", 16, 32, 0, 0.816),
        _t("ml.c5.9xlarge", 36, 72, 0, 1.836),
        _t("ml.r5.large", 2, 16, 0, 0.151),
        _t("ml.r5.xlarge", 4, 32, 0, 0.302),
        _t("ml.g4dn.xlarge", 4, 16, 1, 0.736),
        _t("ml.g4dn.2xlarge", 8, 32, 1, 0.94),
        _t("ml.g4dn.12xlarge", 48, 192, 4, 4.89),
        _t("ml.g5.xlarge", 4, 16, 1, 1.408),
        _t("ml.g5.2xlarge", 8, 32, 1, 1.515),
        _t("ml.g5.12xlarge", 48, 192, 4, 7.09),
        _t("ml.p3.2xlarge", 8, 61, 1, 3.825),
        _t("ml.p3.8xlarge", 32, 244, 4, 14.688),
        _t("ml.p4d.24xlarge", 96, 1152, 8, 37.688),
    ]
}
