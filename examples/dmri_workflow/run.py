"""Run the DIPY tensor study on a BIDS dataset, BIDS-Apps style; AWSBatch on the local stack by
default, real AWS Batch when a job queue and bucket are given.

    python examples/dmri_workflow/run.py BIDS_DIR OUTPUT_DIR participant \\
        [--participant-label 01 02] [--plugin AWSBatch|MultiProc|Linear] [--work-dir DIR] \\
        [--n-procs N] [--denoise nlmeans|mppca|none] [--job-queue Q --bucket s3://B/P]

Outputs: ``OUTPUT_DIR/sub-XX/dwi/sub-XX_model-tensor_param-{fa,md,rd,ad}_dwimap.nii.gz``,
``sub-XX_desc-brain_mask.nii.gz`` and ``OUTPUT_DIR/group_model-tensor_regions.tsv``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `examples` as a package

from examples.dmri_workflow.workflow import (
    BIDS_TEMPLATES,
    DENOISE_METHODS,
    GROUP_TABLE,
    PACKAGES,
    build_workflow,
)


def find_participants(bids_dir: str, labels: list[str] | None = None) -> list[str]:
    """Participant labels (without ``sub-``) that have a DWI run, all or only ``labels``."""
    root = Path(bids_dir)
    dwi = BIDS_TEMPLATES["dwi"]
    found = sorted(p.name[4:] for p in root.glob("sub-*")
                   if p.is_dir() and (root / dwi.format(subject=p.name[4:])).exists())
    if not labels:
        return found
    wanted = [label.removeprefix("sub-") for label in labels]
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise SystemExit(f"no DWI for participant(s) {', '.join(missing)} in {bids_dir} "
                         f"(looked for {dwi}); found: {', '.join(found) or 'none'}")
    return wanted


def plugin_args_for(args: argparse.Namespace) -> dict:
    """plugin_args of the chosen plugin; AWS settings only matter to AWSBatch."""
    if args.plugin == "MultiProc":
        return {"n_procs": args.n_procs}
    if args.plugin == "Linear":
        return {}
    aws = {"job_queue": args.job_queue, "bucket": args.bucket, "region": args.region,
           "image": args.image}
    return {"packages": PACKAGES, **{k: v for k, v in aws.items() if v}}


def write_description(output_dir: str, bids_dir: str, denoise: str) -> None:
    """``dataset_description.json`` of the derivatives, as BIDS requires."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "dataset_description.json"), "w") as fh:
        json.dump({"Name": "DIPY tensor maps", "BIDSVersion": "1.9.0",
                   "DatasetType": "derivative",
                   "GeneratedBy": [{"Name": "nipype-batch examples/dmri_workflow",
                                    "Description": f"median_otsu, {denoise}, DTI (WLS)"}],
                   "SourceDatasets": [{"URL": Path(bids_dir).resolve().as_uri()}]},
                  fh, indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir", help="raw BIDS dataset (a local directory)")
    parser.add_argument("output_dir", help="where the derivatives go")
    parser.add_argument("analysis_level", choices=["participant"],
                        help="'participant' (the group table is written at its end)")
    parser.add_argument("--participant-label", nargs="+", metavar="LABEL",
                        help="labels to process (default: every subject with a DWI)")
    parser.add_argument("--plugin", default="AWSBatch", choices=["AWSBatch", "MultiProc", "Linear"])
    parser.add_argument("--work-dir", default="dmri-work", help="Nipype's working directory")
    parser.add_argument("--n-procs", type=int, default=os.cpu_count() or 1,
                        help="MultiProc's processes")
    parser.add_argument("--denoise", default="nlmeans", choices=DENOISE_METHODS)
    parser.add_argument("--denoise-threads", type=int, default=1,
                        help="threads of each nlmeans node (and CPUs its job asks for)")
    parser.add_argument("--poll", type=float, metavar="SECONDS",
                        help="Nipype's poll_sleep_duration (its default is 2 s)")
    aws = parser.add_argument_group("AWS Batch (all unset: the local stack)")
    aws.add_argument("--job-queue", help="Batch job queue name or ARN")
    aws.add_argument("--bucket", help="staging location s3://bucket/prefix")
    aws.add_argument("--region", help="AWS region")
    aws.add_argument("--image", help="a ready job image (skips building)")
    args = parser.parse_args(argv)

    if args.bids_dir.startswith("s3://"):
        parser.error("BIDS_DIR must be a local directory: copy the dataset first "
                     "(`aws s3 sync s3://... DIR`); outputs may still be staged in S3")
    if not os.path.isdir(args.bids_dir):
        parser.error(f"no such directory: {args.bids_dir}")
    subjects = find_participants(args.bids_dir, args.participant_label)
    if not subjects:
        parser.error(f"no sub-*/dwi/sub-*_dwi.nii.gz in {args.bids_dir}")

    from nipype import config

    import nipype_batch  # noqa: F401  registers plugin='AWSBatch'

    if args.poll is not None:
        config.set("execution", "poll_sleep_duration", str(args.poll))
    output_dir = os.path.abspath(args.output_dir)
    wf = build_workflow(os.path.abspath(args.bids_dir), output_dir, subjects,
                        base_dir=os.path.abspath(args.work_dir), denoise_method=args.denoise,
                        denoise_threads=args.denoise_threads)
    write_description(output_dir, args.bids_dir, args.denoise)
    wf.run(plugin=args.plugin, plugin_args=plugin_args_for(args))

    table = os.path.join(output_dir, GROUP_TABLE)
    print(f"\n{len(subjects)} participant(s) done with {args.plugin}; group table: {table}\n")
    with open(table) as fh:
        print(fh.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
