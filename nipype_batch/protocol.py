"""The contract between the driver and the runner inside a job: names both sides agree on."""

PAYLOAD_ENV = "NIPYPE_BATCH_PAYLOAD"  # s3:// URI of the job's payload JSON
ENDPOINT_ENV = "NIPYPE_BATCH_ENDPOINT_URL"  # custom AWS endpoint (local stack, emulators)
PROVENANCE_FILE = "_nipype_batch.json"  # in each node directory
EXIT_NODE_FAILED = 3  # the node raised; its traceback is in the result file
EXIT_RUNNER_FAILED = 2  # staging or payload failed: an infrastructure error

# An array job's children share one environment: the payload URI holds this placeholder, which
# each child replaces with the index AWS Batch gives it, to find its own payload.
ARRAY_INDEX_ENV = "AWS_BATCH_JOB_ARRAY_INDEX"
ARRAY_INDEX_PLACEHOLDER = "{array_index}"


def payload_uri_for(template: str, environ: dict[str, str]) -> str:
    """The payload URI of this job: an array child's own, or the template as it is."""
    if ARRAY_INDEX_PLACEHOLDER not in template:
        return template
    index = environ.get(ARRAY_INDEX_ENV)
    if index is None or not index.isdigit():
        raise ValueError(
            f"payload {template} is an array job's, but ${ARRAY_INDEX_ENV} is {index!r}"
        )
    return template.replace(ARRAY_INDEX_PLACEHOLDER, index)
