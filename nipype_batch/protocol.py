"""The contract between the driver and the runner inside a job: names both sides agree on."""

PAYLOAD_ENV = "NIPYPE_BATCH_PAYLOAD"  # s3:// URI of the job's payload JSON
ENDPOINT_ENV = "NIPYPE_BATCH_ENDPOINT_URL"  # custom AWS endpoint (local stack, emulators)
PROVENANCE_FILE = "_nipype_batch.json"  # in each node directory
EXIT_NODE_FAILED = 3  # the node raised; its traceback is in the result file
EXIT_RUNNER_FAILED = 2  # staging or payload failed: an infrastructure error
