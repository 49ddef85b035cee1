"""``nipype-batch infra up|down|show``: flags to an :class:`~nipype_batch.infra.InfraSpec`,
the confirmation before ``down``, and what is printed. The work is done by
:class:`~nipype_batch.infra.Infrastructure`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import ConfigurationError, InfrastructureError
from ..profiles import Profile, load_profile, profile_path
from .infrastructure import connect_infra
from .spec import InfraSpec, Resource


@dataclass(frozen=True)
class InfraOptions:
    """What ``nipype-batch infra`` was given; None where a flag was not."""

    action: str  # up, down or show
    name: str = "default"
    platform: str | None = None
    max_vcpus: int | None = None
    instance_types: list[str] | None = None
    architecture: str | None = None
    subnets: list[str] | None = None
    security_groups: list[str] | None = None
    expire_days: int | None = None
    yes: bool = False
    as_json: bool = False
    local: bool = False
    region: str | None = None
    endpoint_url: str | None = None
    aws_profile: str | None = None


def _previous(name: str) -> Profile | None:
    try:
        return load_profile(name)
    except ConfigurationError:
        return None


def _spec(args: InfraOptions, previous: Profile | None) -> InfraSpec:
    """The spec from the flags given, else from the last ``up`` of this name, else defaults."""
    known = {f.name for f in fields(InfraSpec)}
    values = {k: v for k, v in (previous.spec if previous else {}).items() if k in known}
    given = {"platform": args.platform, "max_vcpus": args.max_vcpus,
             "instance_types": args.instance_types, "architecture": args.architecture,
             "subnets": args.subnets,
             "security_groups": args.security_groups, "staging_expiry_days": args.expire_days}
    values.update({k: v for k, v in given.items() if v is not None})
    return InfraSpec(name=args.name, **{k: v for k, v in values.items() if k != "name"})


def _where(args: InfraOptions, previous: Profile | None) -> dict[str, Any]:
    """Local stack or AWS: from the flags, else from the profile of this name."""
    settings = previous.settings if previous else {}
    if args.local or (settings.get("backend") == "local" and not (args.region
                                                                  or args.endpoint_url)):
        from ..local import stack

        if stack.shared_emulator() is None:
            raise InfrastructureError(
                "no shared local stack is running, and what `infra` made on a stack of its own "
                "would vanish when this command exits: start one with `nipype-batch local up`."
            )
        return {"local": True}
    return {"region": args.region or settings.get("region"),
            "endpoint_url": args.endpoint_url or settings.get("endpoint_url"),
            "aws_profile": args.aws_profile}


def _confirm(args: InfraOptions, bucket: str) -> Any:
    def confirm(ours: list[Resource]) -> bool:
        if args.yes:
            return True
        kinds = {r.kind for r in ours}
        doomed = f"{len(ours)} resource(s) of infra {args.name!r}" + "".join(
            text for kind, text in (("repository", ", the images in its repository"),
                                    ("bucket", f", every object in bucket {bucket}"))
            if kind in kinds)
        if not sys.stdin.isatty():
            raise InfrastructureError(
                f"`infra down` would delete {doomed}; nothing was deleted: pass --yes to "
                "confirm (there is no terminal to ask on)."
            )
        for resource in ours:
            print(f"  {resource.kind:<20} {resource.name}")
        answer = input(f"Delete {doomed}? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    return confirm


def _print(resources: list[Resource]) -> None:
    for r in resources:
        print(f"  {r.state:<10} {r.kind:<20} {r.name}" + (f"  ({r.detail})" if r.detail else ""))


def run(args: InfraOptions) -> int:
    """Run ``nipype-batch infra ACTION`` with the given ``args``; return the exit code."""
    previous = _previous(args.name)
    infra = connect_infra(_spec(args, previous), **_where(args, previous))
    if args.action == "up":
        profile, resources = infra.up()
        report: dict[str, Any] = {"profile": str(profile_path(profile.name)),
                                  "settings": profile.settings}
    elif args.action == "show":
        resources = infra.plan(everything=True)
        report = {"profile": str(profile_path(args.name)) if previous else None}
    else:
        resources = infra.down(_confirm(args, infra.bucket_name))
        report = {"cancelled": not resources}
    if args.as_json:
        print(json.dumps({"name": args.name, **report,
                          "resources": [asdict(r) for r in resources]}, indent=1))
        return 1 if report.get("cancelled") else 0
    if args.action == "down" and not resources:
        print("nothing deleted")
        return 1
    print(f"infra {args.name!r} ({infra.clients.backend}, {infra.clients.region}):")
    _print(resources)
    if args.action == "up":
        print(f"profile: {report['profile']}")
        print(f"run with: wf.run(plugin='AWSBatch', plugin_args={{'profile': {args.name!r}}})")
    elif args.action == "show":
        print(f"profile: {report['profile'] or 'none (run `nipype-batch infra up`)'}")
    else:
        print("profile removed; resources not made by `infra up` (if any) were left alone")
    return 0
