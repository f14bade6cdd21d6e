"""Default policies of the infrastructure API, registered with neutron-server through the ``neutron.policies``
entry point (pyproject.toml), so they hold without a line of policy.yaml and ``oslopolicy-sample-generator
--namespace neutron`` lists them.

The infrastructure network belongs to no project: writes are for the cloud's admins; reads for anyone with
a reader, member or admin role in their project (``role:reader`` alone would do where Keystone's implied
roles are in place, the default since Queens; the explicit list also holds where they are not). An operator
narrows or widens either in policy.yaml under the same names.
"""

from __future__ import annotations

from typing import Any

from oslo_policy import policy

ADMIN = "rule:admin_only"
READER = "rule:admin_only or role:member or role:reader"
SCOPE = ["project"]

COLLECTIONS = {"site": "/infra/sites", "endpoint": "/infra/endpoints", "connection": "/infra/connections"}


def _rules(resource: str, path: str) -> list[Any]:
    item = f"{path}/{{id}}"
    return [
        policy.DocumentedRuleDefault(
            name=f"create_{resource}", check_str=ADMIN, scope_types=SCOPE,
            description=f"Create an isthmus {resource}",
            operations=[{"method": "POST", "path": path}]),
        policy.DocumentedRuleDefault(
            name=f"get_{resource}", check_str=READER, scope_types=SCOPE,
            description=f"Get isthmus {resource}s and their observed state",
            operations=[{"method": "GET", "path": path}, {"method": "GET", "path": item}]),
        policy.DocumentedRuleDefault(
            name=f"update_{resource}", check_str=ADMIN, scope_types=SCOPE,
            description=f"Update an isthmus {resource}",
            operations=[{"method": "PUT", "path": item}]),
        policy.DocumentedRuleDefault(
            name=f"delete_{resource}", check_str=ADMIN, scope_types=SCOPE,
            description=f"Delete an isthmus {resource}",
            operations=[{"method": "DELETE", "path": item}]),
    ]


def list_rules() -> list[Any]:
    """The rules, for the ``neutron.policies`` entry point."""
    return [rule for resource, path in COLLECTIONS.items() for rule in _rules(resource, path)]
