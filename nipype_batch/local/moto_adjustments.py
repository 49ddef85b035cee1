"""The one place where the local stack bends moto towards real AWS Batch behaviour.

Each adjustment corrects a known deviation of moto 5.x that the plugin's AWS code path would
otherwise have to special-case. Nothing here is imported on the AWS path.

1. DescribeJobs drops ``container.exitCode`` and never sets ``statusReason`` on a failed job;
   real Batch reports both.
2. DescribeJobs shows only the job definition's resources; real Batch shows the
   ``resourceRequirements`` a job was submitted with (its overrides).
3. Before each job moto probes whether it runs inside Docker (a curl to the daemon, printing a
   warning when that fails) to find its own address; our jobs share the host network and reach
   the emulator on loopback, so the answer is fixed.
"""

from __future__ import annotations

from typing import Any

_APPLIED = False


def apply() -> None:
    """Patch moto's Batch ``Job.describe`` once per process."""
    global _APPLIED
    if _APPLIED:
        return
    from moto import settings as moto_settings
    from moto.batch.models import Job

    moto_settings.moto_server_host = lambda: "http://127.0.0.1"

    original_describe = Job.describe

    def describe(self: Any) -> dict[str, Any]:
        result = original_describe(self)
        container = result.get("container")
        if container is not None:
            if self.exit_code is not None:
                container["exitCode"] = self.exit_code
            asked = (self.container_overrides or {}).get("resourceRequirements")
            if asked:
                container["resourceRequirements"] = asked
        if result.get("status") == "FAILED" and "statusReason" not in result:
            if self.exit_code:
                result["statusReason"] = "Essential container in task exited"
            else:
                result["statusReason"] = "Task failed to start"
        return result

    Job.describe = describe
    _APPLIED = True
