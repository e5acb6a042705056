"""The profiler report: one standalone HTML page, user text escaped, a plot per series."""

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from dockyard import profiler_report
from dockyard.profiling import GpuSample, SystemSample
from dockyard.record import JobRecord, MetricValue, RuleEvaluation, RuleEvaluationStatus, RuleKind
from dockyard.spec import TrainingJobSpec
from dockyard.status import JobStatus, PrimaryStatus, SecondaryStatus

NOW = datetime(2026, 11, 30, tzinfo=UTC)
EVIL = "<script>alert(1)</script>"
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "embed", "source", "track", "wbr"}


def spec(**changes: object) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate(
        {
            "training_job_name": "Job-1",
            "algorithm_specification": {"training_image": "img:1"},
            "output_data_config": {"s3_output_path": "s3://b/out"},
            "resource_config": {"instance_type": "ml.g5.xlarge", "instance_count": 2},
            **changes,
        }
    )


RULES = {
    "debug_rule_configurations": [
        {"rule_configuration_name": "loss", "rule_parameters": {"rule_to_invoke": "LossNotDecreasing"}},
        {"rule_configuration_name": "Overfit"},
    ],
    "profiler_rule_configurations": [
        {"rule_configuration_name": "gpu", "rule_parameters": {"rule_to_invoke": "LowGPUUtilization"}},
        {"rule_configuration_name": "report", "rule_parameters": {"rule_to_invoke": "ProfilerReport"}},
    ],
}


def evaluation(name: str, kind: RuleKind, status: RuleEvaluationStatus, details: str | None = None) -> RuleEvaluation:
    return RuleEvaluation(
        rule_configuration_name=name, kind=kind, status=status, status_details=details, last_modified_time=NOW
    )


def record(with_rules: bool = True) -> JobRecord:
    evaluations = (
        evaluation("loss", RuleKind.DEBUG, RuleEvaluationStatus.ISSUES_FOUND, f"loss went up {EVIL}"),
        evaluation("Overfit", RuleKind.DEBUG, RuleEvaluationStatus.ERROR, "no validation metric"),
        evaluation("gpu", RuleKind.PROFILER, RuleEvaluationStatus.NO_ISSUES_FOUND),
        evaluation("report", RuleKind.PROFILER, RuleEvaluationStatus.IN_PROGRESS),
    )
    return JobRecord(
        spec=spec(**RULES) if with_rules else spec(),
        creation_time=NOW,
        status=JobStatus(primary=PrimaryStatus.COMPLETED, secondary=SecondaryStatus.COMPLETED),
        training_start_time=NOW,
        training_end_time=NOW + timedelta(minutes=5),
        rule_evaluations=evaluations if with_rules else (),
    )


def samples() -> list[SystemSample]:
    """algo-1: CPU only, per-core and I/O wait; algo-2: two GPUs, no I/O wait."""
    out = []
    for i in range(20):
        at = NOW + timedelta(seconds=i)
        out.append(
            SystemSample(
                host="algo-1",
                timestamp=at,
                cpu_percent=40 + i,
                cpu_per_core=(30.0 + i, 50.0),
                memory_bytes=(100 + i) * 2**20,
                memory_limit_bytes=2**30,
                network_rx_bytes_per_s=1e6,
                disk_read_bytes_per_s=2e6,
                iowait_percent=1.5,
            )
        )
        gpus = tuple(
            GpuSample(index=g, utilization_percent=80 - g, memory_used_bytes=2**30, memory_total_bytes=2**34)
            for g in (0, 1)
        )
        out.append(
            SystemSample(
                host="algo-2", timestamp=at, cpu_percent=10, memory_bytes=2**28, memory_limit_bytes=2**30, gpus=gpus
            )
        )
    return out


def metrics() -> list[MetricValue]:
    return [
        MetricValue(metric_name=name, value=v, timestamp=NOW + timedelta(seconds=i), host=host)
        for name in ("train:loss", f"acc {EVIL}")
        for host in ("algo-1", "algo-2")
        for i, v in enumerate([3.0, 2.0, 1.5, 1.25])
    ]


class Balance(HTMLParser):
    """Checks that every opened tag is closed in order (void elements aside)."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, _attrs: object) -> None:
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.errors.append(tag)


def balanced(page: str) -> bool:
    parser = Balance()
    parser.feed(page)
    parser.close()
    return not parser.errors and not parser.open


def test_a_full_report_is_one_balanced_page_with_a_plot_per_series() -> None:
    page = profiler_report.render(record(), samples(), metrics())
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert balanced(page)
    # algo-1: CPU, memory, network, disk, I/O wait; algo-2: the same but I/O wait, plus GPU use and memory; 2 metrics
    assert page.count("<svg") == 5 + 6 + 2
    assert page.count("<figure>") == page.count("<figcaption>") == 13
    assert "<?xml" not in page and "<script" not in page and "http://" not in page.replace('"http://www.w3.org/', "")
    assert "Profiler report: Job-1" in page and "ml.g5.xlarge × 2" in page and "algo-1: 20, algo-2: 20" in page
    assert "GpuPercentMean" in page and "train:loss" in page


def test_rules_show_their_rule_and_status_colour_coded() -> None:
    page = profiler_report.render(record(), [], [])
    for status in ("IssuesFound", "NoIssuesFound", "Error", "InProgress"):
        assert f">{status}</span>" in page
    assert "#c62828" in page and "#2e7d32" in page
    for rule in ("LossNotDecreasing", "Overfit", "LowGPUUtilization", "ProfilerReport"):
        assert f"<td>{rule}</td>" in page


def test_user_text_is_escaped_everywhere() -> None:
    page = profiler_report.render(record(), samples(), metrics())
    assert EVIL not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 2  # the rule's details and the metric's name


def test_nothing_sampled_nothing_scraped_no_rules_says_so() -> None:
    page = profiler_report.render(record(with_rules=False), [], [])
    assert balanced(page)
    assert "<svg" not in page
    assert "No rules were configured" in page
    assert "The profiler sampled nothing" in page and "disable_profiler" in page
    assert "No metrics were recorded" in page


def test_long_series_are_thinned_evenly_to_a_bound() -> None:
    xs = [float(i) for i in range(10_000)]
    thin_x, thin_y = profiler_report._evenly(xs, xs)
    assert len(thin_x) == len(thin_y) == profiler_report.MAX_POINTS
    assert thin_x[0] == 0 and thin_x[-1] == 9_999 and thin_x == sorted(set(thin_x))
    assert profiler_report._evenly(xs[:10], xs[:10]) == (xs[:10], xs[:10])
