"""The AWS seam: every call to AWS goes through this package.

- :mod:`.session`: the clients of a run (one retry policy, every call counted); it is handed
  its clients' maker, so real AWS and the local stack look the same from here on.
- :mod:`.batch`: the only module that speaks Batch and CloudWatch Logs.
- :mod:`.status`: Batch's job states and what they mean for the driver.
- :mod:`.staging`, :mod:`.bundles`: files to and from S3, at the same absolute paths.
- :mod:`.iam`: the least-privilege policy documents of the roles a run needs.

Modules here take their clients in their constructors and never build them, and import nothing
from the rest of the package but :mod:`~nipype_batch.errors`, :mod:`~nipype_batch.protocol`
and :mod:`~nipype_batch.resources`.
"""
