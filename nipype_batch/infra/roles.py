"""The IAM roles of an infra set, and the instance profile of EC2 and Spot compute.

Each role trusts one service and has either AWS's managed policy for its job or, for the jobs
themselves, the least-privilege inline policy of :mod:`nipype_batch.aws.iam`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from ..aws.iam import job_role_policy
from ..errors import InfrastructureError
from .spec import Found, InfraSpec, Resource, error_code, tag_dict, tag_list

INLINE_POLICY_NAME = "nipype-batch"


@dataclass(frozen=True)
class RoleDesign:
    """Who may assume a role, and what it may do."""

    service: str
    managed: tuple[str, ...] = ()
    inline: dict[str, Any] | None = field(default=None, hash=False)


def role_designs(spec: InfraSpec, bucket: str, partition: str) -> dict[str, RoleDesign]:
    """Design of each role kind of the set whose staging bucket is ``bucket``."""
    managed = f"arn:{partition}:iam::aws:policy/service-role/"
    return {
        # the jobs: their own staging objects, nothing else
        "job-role": RoleDesign("ecs-tasks.amazonaws.com",
                               inline=job_role_policy(bucket, spec.staging_prefix, partition)),
        # ECS pulls the image and ships the logs (Fargate)
        "execution-role": RoleDesign("ecs-tasks.amazonaws.com",
                                     (managed + "AmazonECSTaskExecutionRolePolicy",)),
        # Batch manages the instances and the ECS cluster
        "batch-service-role": RoleDesign("batch.amazonaws.com",
                                         (managed + "AWSBatchServiceRole",)),
        # the ECS agent on EC2 and Spot instances
        "instance-role": RoleDesign("ec2.amazonaws.com",
                                    (managed + "AmazonEC2ContainerServiceforEC2Role",)),
    }


def trust_policy(service: str) -> dict[str, Any]:
    """Trust policy letting ``service`` (e.g. ``batch.amazonaws.com``) assume a role."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service},
                       "Action": "sts:AssumeRole"}],
    }


class Role:
    """An IAM role of the set."""

    def __init__(self, iam: Any, spec: InfraSpec) -> None:
        self.iam = iam
        self.spec = spec

    def find(self, name: str) -> Found:
        """ARN and tags of the role, or None."""
        try:
            role = self.iam.get_role(RoleName=name)["Role"]
        except ClientError as exc:
            if error_code(exc) == "NoSuchEntity":
                return None
            raise
        return role["Arn"], tag_dict(role.get("Tags", []))

    def ensure(self, resource: Resource, design: RoleDesign) -> Resource:
        """Create the role if absent; set its trust, managed and inline policies as designed."""
        iam, name = self.iam, resource.name
        trust = trust_policy(design.service)
        changed = []
        if resource.state == "absent":
            arn = iam.create_role(
                RoleName=name, AssumeRolePolicyDocument=json.dumps(trust),
                Description=f"nipype-batch infra {self.spec.name}", Tags=tag_list(self.spec.tags),
            )["Role"]["Arn"]
            resource = resource.created(arn)
        elif iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"] != trust:
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
            changed.append("trust policy")
        attached = {p["PolicyArn"] for p in
                    iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]}
        for policy in design.managed:
            if policy in attached:
                continue
            try:
                iam.attach_role_policy(RoleName=name, PolicyArn=policy)
            except ClientError as exc:
                raise InfrastructureError(
                    f"cannot attach {policy} to role {name}: {exc}. On an emulator, AWS-managed "
                    "policies must be loaded (moto: MOTO_IAM_LOAD_MANAGED_POLICIES=true)."
                ) from exc
            changed.append(policy.rsplit("/", 1)[1])
        if design.inline is not None and self._inline(name) != design.inline:
            iam.put_role_policy(RoleName=name, PolicyName=INLINE_POLICY_NAME,
                                PolicyDocument=json.dumps(design.inline))
            changed.append("inline policy")
        return resource.outcome(changed)

    def _inline(self, name: str) -> dict[str, Any] | None:
        try:
            return self.iam.get_role_policy(RoleName=name,
                                            PolicyName=INLINE_POLICY_NAME)["PolicyDocument"]
        except ClientError as exc:
            if error_code(exc) != "NoSuchEntity":
                raise
            return None

    def delete(self, name: str) -> None:
        """Detach and delete its policies, then the role."""
        iam = self.iam
        for policy in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
            iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
        for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
            iam.delete_role_policy(RoleName=name, PolicyName=policy)
        iam.delete_role(RoleName=name)


class InstanceProfile:
    """The instance profile that gives EC2 and Spot instances the instance role."""

    def __init__(self, iam: Any, spec: InfraSpec) -> None:
        self.iam = iam
        self.spec = spec

    def find(self, name: str) -> Found:
        """ARN and tags of the instance profile, or None."""
        try:
            found = self.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        except ClientError as exc:
            if error_code(exc) == "NoSuchEntity":
                return None
            raise
        return found["Arn"], tag_dict(found.get("Tags", []))

    def ensure(self, resource: Resource, role: str) -> Resource:
        """Create the profile if absent, holding ``role``."""
        iam, name = self.iam, resource.name
        changed = []
        if resource.state == "absent":
            arn = iam.create_instance_profile(
                InstanceProfileName=name, Tags=tag_list(self.spec.tags))["InstanceProfile"]["Arn"]
            resource = resource.created(arn)
        roles = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
        if role not in {r["RoleName"] for r in roles}:
            iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)
            changed.append(f"role {role}")
        return resource.outcome(changed)

    def delete(self, name: str) -> None:
        """Take its roles out, then delete it."""
        iam = self.iam
        for role in iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]:
            iam.remove_role_from_instance_profile(InstanceProfileName=name,
                                                  RoleName=role["RoleName"])
        iam.delete_instance_profile(InstanceProfileName=name)
