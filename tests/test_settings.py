"""BatchSettings: defaults, validation messages that name the problem and the fix."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from nipype_batch.errors import ConfigurationError
from nipype_batch.resources import JobResources
from nipype_batch.settings import BACKEND_ENV, BatchSettings, describe_settings

AWS_ARGS = {"job_queue": "my-queue", "bucket": "s3://my-bucket/runs"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No backend or region from the machine running the tests."""
    for name in (BACKEND_ENV, "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


# ---- defaults ----------------------------------------------------------------------------


def test_no_arguments_gives_local_backend_with_documented_defaults() -> None:
    settings = BatchSettings.from_plugin_args(None)
    assert settings.backend == "local"
    assert settings.fetch_outputs is True
    assert (settings.vcpus, settings.memory_mb, settings.gpus) == (1, 2048, 0)
    assert settings.timeout_s is None
    assert settings.packages == []
    assert settings.job_name_prefix == "nipype"
    assert settings.max_jobs == float("inf")
    assert settings.region is None


@pytest.mark.parametrize("given", [{"job_queue": "q"}, {"bucket": "s3://b"}])
def test_queue_or_bucket_alone_selects_aws(given: dict) -> None:
    # Selecting 'aws' then fails validation for the other missing value: that proves the
    # backend was resolved to 'aws' rather than 'local'.
    with pytest.raises(ConfigurationError, match=r"backend 'aws' needs (bucket|job_queue)"):
        BatchSettings.from_plugin_args(given)


def test_queue_and_bucket_select_aws_without_fetching_outputs() -> None:
    settings = BatchSettings.from_plugin_args(AWS_ARGS)
    assert settings.backend == "aws"
    assert settings.fetch_outputs is False


def test_explicit_backend_wins_over_inference() -> None:
    settings = BatchSettings.from_plugin_args({**AWS_ARGS, "backend": "local"})
    assert settings.backend == "local"
    assert settings.fetch_outputs is True


def test_backend_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "local")
    assert BatchSettings.from_plugin_args(AWS_ARGS).backend == "local"
    monkeypatch.setenv(BACKEND_ENV, "aws")
    assert BatchSettings.from_plugin_args(AWS_ARGS).backend == "aws"
    with pytest.raises(ConfigurationError, match="backend 'aws' needs job_queue and bucket"):
        BatchSettings.from_plugin_args({})


def test_unknown_backend_from_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "cloud")
    with pytest.raises(ConfigurationError, match=r"backend='cloud' is not known: use 'local'"):
        BatchSettings.from_plugin_args({})


def test_fetch_outputs_explicit_value_is_kept() -> None:
    assert BatchSettings.from_plugin_args({**AWS_ARGS, "fetch_outputs": True}).fetch_outputs
    assert not BatchSettings.from_plugin_args({"fetch_outputs": False}).fetch_outputs


def test_region_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert BatchSettings.from_plugin_args({}).region == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert BatchSettings.from_plugin_args({}).region == "eu-central-1"
    assert BatchSettings.from_plugin_args({"region": "us-west-2"}).region == "us-west-2"


def test_single_package_string_becomes_a_list() -> None:
    assert BatchSettings.from_plugin_args({"packages": "dipy"}).packages == ["dipy"]


def test_nipype_keys_are_accepted() -> None:
    settings = BatchSettings.from_plugin_args({"max_jobs": 4, "status_callback": print})
    assert settings.max_jobs == 4
    assert settings.status_callback is print


# ---- validation --------------------------------------------------------------------------


def test_unknown_key_suggests_the_closest_setting() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"plugin_args key 'job_queu' is not known\. Did you mean 'job_queue'\?",
    ) as info:
        BatchSettings.from_plugin_args({"job_queu": "q"})
    assert "Known keys:" in str(info.value)
    assert "memory_mb" in str(info.value)


def test_unknown_key_without_close_match_lists_known_keys() -> None:
    with pytest.raises(ConfigurationError,
                       match=r"'zzzz' is not known\. Known keys: architecture, attempts, "
                             r"aws_max_attempts, aws_profile"):
        BatchSettings.from_plugin_args({"zzzz": 1})


@pytest.mark.parametrize(
    ("key", "fix"),
    [
        ("n_procs", r"limit concurrency with 'max_jobs'.*node\.n_procs"),
        ("sbatch_args", r"SLURM setting: use 'job_queue', 'vcpus' and 'memory_mb'"),
        ("qsub_args", r"SGE/PBS setting"),
        ("memory_gb", r"node\.mem_gb or node\.plugin_args=\{'memory_mb': N\}"),
    ],
)
def test_keys_of_other_plugins_explain_the_equivalent(key: str, fix: str) -> None:
    pattern = rf"key '{key}' is not an AWSBatch setting: .*{fix}"
    with pytest.raises(ConfigurationError, match=pattern):
        BatchSettings.from_plugin_args({key: 4})


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"backend": "aws"}, "job_queue and bucket"),
        ({"backend": "aws", "bucket": "s3://b"}, "job_queue"),
        ({"backend": "aws", "job_queue": "q"}, "bucket"),
    ],
)
def test_aws_backend_names_what_is_missing_and_how_to_give_it(given: dict, missing: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"backend 'aws' needs {missing}: e\.g\.") as info:
        BatchSettings.from_plugin_args(given)
    assert "{'backend': 'local'}" in str(info.value)


@pytest.mark.parametrize("bucket", ["my-bucket", "https://my-bucket.s3.amazonaws.com", "S3://b"])
def test_bucket_must_be_an_s3_uri(bucket: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"bucket='{bucket}' must be an S3 URI such as"):
        BatchSettings.from_plugin_args({"job_queue": "q", "bucket": bucket})


@pytest.mark.parametrize("bucket", ["s3://", "s3:///prefix"])
def test_bucket_uri_needs_a_bucket_name(bucket: str) -> None:
    with pytest.raises(ConfigurationError, match="bucket"):
        BatchSettings.from_plugin_args({"job_queue": "q", "bucket": bucket})


@pytest.mark.parametrize(
    ("key", "value", "least"),
    [
        ("vcpus", 0, 1),
        ("vcpus", True, 1),
        ("vcpus", "2", 1),
        ("vcpus", 1.5, 1),
        ("memory_mb", 3, 4),
        ("memory_mb", "4096", 4),
        ("gpus", -1, 0),
    ],
)
def test_resources_must_be_whole_numbers_above_the_floor(key: str, value, least: int) -> None:
    pattern = rf"plugin_args {key}={re.escape(repr(value))} must be a whole number >= {least}\."
    with pytest.raises(ConfigurationError, match=pattern):
        BatchSettings.from_plugin_args({key: value})


def test_smallest_valid_resources_are_accepted() -> None:
    settings = BatchSettings.from_plugin_args(
        {"vcpus": 1, "memory_mb": 4, "gpus": 0, "timeout_s": 60}
    )
    assert (settings.vcpus, settings.memory_mb, settings.gpus, settings.timeout_s) == (1, 4, 0, 60)


@pytest.mark.parametrize("timeout", [59, 0, True, "600", 90.0])
def test_timeout_must_be_at_least_a_minute(timeout) -> None:
    with pytest.raises(
        ConfigurationError,
        match=rf"timeout_s={re.escape(repr(timeout))} must be a whole number of seconds >= 60 "
        r"\(AWS Batch",
    ):
        BatchSettings.from_plugin_args({"timeout_s": timeout})


@pytest.mark.parametrize("packages", [["dipy", 3], {"dipy": "1.0"}, [None]])
def test_packages_must_be_a_list_of_requirements(packages) -> None:
    with pytest.raises(ConfigurationError, match=r"must be a list of pip requirements, e\.g\."):
        BatchSettings.from_plugin_args({"packages": packages})


@pytest.mark.parametrize("prefix", ["my prefix", "a.b", "x/y", "", "name!"])
def test_job_name_prefix_follows_batch_job_name_rules(prefix: str) -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"must start with a letter or digit and hold only ASCII letters, digits",
    ):
        BatchSettings.from_plugin_args({"job_name_prefix": prefix})


def test_valid_job_name_prefix_is_kept() -> None:
    assert BatchSettings.from_plugin_args({"job_name_prefix": "sub-01_T1"}).job_name_prefix == (
        "sub-01_T1"
    )


@pytest.mark.parametrize("prefix", ["-nipype", "_nipype"])
def test_job_name_prefix_must_start_alphanumeric(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="job_name_prefix"):
        BatchSettings.from_plugin_args({"job_name_prefix": prefix})


# ---- helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bucket", "expected"),
    [
        ("s3://my-bucket", ("my-bucket", "")),
        ("s3://my-bucket/", ("my-bucket", "")),
        ("s3://my-bucket/runs", ("my-bucket", "runs")),
        ("s3://my-bucket/runs/2024/", ("my-bucket", "runs/2024")),
        ("s3://my-bucket//runs//", ("my-bucket", "runs")),
    ],
)
def test_bucket_and_prefix(bucket: str, expected: tuple[str, str]) -> None:
    settings = BatchSettings.from_plugin_args({"job_queue": "q", "bucket": bucket})
    assert settings.bucket_and_prefix() == expected


def test_describe_settings_covers_every_field_with_help() -> None:
    rows = describe_settings()
    assert [name for name, _default, _help in rows] == [f.name for f in fields(BatchSettings)]
    for name, _default, help_text in rows:
        assert help_text.strip(), f"setting {name} has no help"
    defaults = {name: default for name, default, _help in rows}
    assert defaults["vcpus"] == "1"
    assert defaults["memory_mb"] == "2048"
    assert defaults["packages"] == "[]"
    assert defaults["backend"] == "None"


def test_a_large_environment_is_accepted_it_travels_in_the_payload() -> None:
    from nipype_batch.aws.batch import fits_overrides

    big = {f"VAR_{i}": "x" * 100 for i in range(80)}
    assert BatchSettings.from_plugin_args({"environment": big}).environment == big
    resources = JobResources(vcpus=1, memory_mb=2048, gpus=0, timeout_s=None, job_queue=None,
                             image=None, base_image=None, run_on_driver=False)
    assert not fits_overrides(resources, big)
    assert fits_overrides(resources, {"OMP_NUM_THREADS": "1"})


def test_fits_overrides_measures_what_submit_job_sends() -> None:
    import json

    from nipype_batch.aws.batch import OVERRIDES_BUDGET, container_overrides, fits_overrides

    resources = JobResources(vcpus=96, memory_mb=786432, gpus=8, timeout_s=86400,
                             job_queue="q", image=None, base_image=None, run_on_driver=False)
    env = {"NIPYPE_BATCH_PAYLOAD": "s3://" + "b" * 63 + "/" + "k" * 900}
    i = 0
    while fits_overrides(resources, env):
        env[f"V{i}"] = "x" * 60
        i += 1
    # the margin Batch's own variables need under its 8192 characters
    assert OVERRIDES_BUDGET <= 6500
    assert len(json.dumps(container_overrides(resources, env))) > OVERRIDES_BUDGET
    env.pop(f"V{i - 1}")
    assert len(json.dumps(container_overrides(resources, env))) <= OVERRIDES_BUDGET


def test_platform_names_what_the_jobs_run_on() -> None:
    from nipype_batch.platforms import capability as _billing

    assert BatchSettings.from_plugin_args({"platform": "spot"}).platform == "spot"
    assert (_billing("spot"), _billing("ec2"), _billing("fargate")) == ("ec2", "ec2", "fargate")
    with pytest.raises(ConfigurationError, match=r"platform='gpu' is not known.*'spot'"):
        BatchSettings.from_plugin_args({"platform": "gpu"})


def test_environment_names_batch_reserves_are_refused_before_submitting() -> None:
    with pytest.raises(ConfigurationError, match="AWS_BATCH_JOB_ID: AWS Batch reserves"):
        BatchSettings.from_plugin_args({"environment": {"AWS_BATCH_JOB_ID": "x"}})


def test_aws_jobs_are_told_their_region(monkeypatch: pytest.MonkeyPatch) -> None:
    from nipype_batch.cloud import connect_aws

    monkeypatch.delenv("AWS_PROFILE", raising=False)
    settings = BatchSettings.from_plugin_args({
        "backend": "aws", "region": "eu-west-1", "job_queue": "q", "bucket": "s3://b/p"})
    assert connect_aws(settings).job_environment["AWS_DEFAULT_REGION"] == "eu-west-1"
