"""``nipype-batch infra``: the AWS resources a run needs, made and removed as one set.

``up`` creates, idempotently: a staging bucket (SSE-S3 encryption, public access blocked, a
lifecycle rule expiring staging data), an ECR repository, the job role (least privilege, see
:mod:`nipype_batch.aws.iam`), the execution role (ECR pull and logs), the Batch service role,
for EC2 and Spot an instance role and its instance profile, a managed compute environment and a
job queue; then it writes a named profile (:mod:`nipype_batch.profiles`). ``down`` removes them
after confirmation, and refuses while jobs are in flight on the queue.

Ownership is by tag: every resource carries ``nipype-batch:infra=NAME``. A resource that has a
planned name but not that tag (made by hand, or by something else) is never changed nor deleted:
``up`` refuses before creating anything, naming it, and ``down`` leaves it where it is.

:class:`Infrastructure` receives its boto3 clients (:class:`Clients`), so the same code runs
against real AWS, the local stack and an in-process moto. Modules: ``spec`` (what to make, with
which clients), ``storage`` (bucket, repository), ``roles`` (IAM roles, instance profile),
``compute`` (compute environment, queue, waits), ``infrastructure`` (the set: plan, up, down),
``command`` (``nipype-batch infra``).
"""

from .infrastructure import Infrastructure, connect_infra
from .spec import TAG_KEY, Clients, InfraSpec, Resource

__all__ = ["TAG_KEY", "Clients", "InfraSpec", "Infrastructure", "Resource", "connect_infra"]
