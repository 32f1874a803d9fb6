"""Who may make an edit: the tenant's own policy, applied to its administration.

PRODUCT.md § The policy: editing a role needs `role:update` on that tenant,
assigning needs `role:assign`, and so on; the server checks this for every
pushed mutation against its current policy, and a client can check the same
offline before it queues an edit.

Rules of this module:

- An edit is allowed when every request `permission_requests` builds for it
  is allowed for its author (deny overrides, fail closed, as for any decision).
- The request's resource is what the edit changes: for a role, `resource.id`
  is the role's **name** (how policy documents name roles) and its attributes
  are `role_id` and `name`; for a user, `resource.id` is the user id and its
  attributes are the user's attributes, so "supervisors manage the users of
  their own depot" can be written as a condition.
- Edits that widen what other people hold ask for more than the edit's own
  permission: making a role inherit another (also at creation) needs
  `role:assign` on that parent, since every holder of the child gets it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sync.policy.decision import Decision
from sync.policy.edits import AddInheritance, AssignRole, CreateRole, CreateUser, Edit, UnassignRole
from sync.policy.engine import Engine
from sync.policy.instant import Instant
from sync.policy.model import Policy
from sync.policy.request import Request


def _role_request(
    policy: Policy, author: str, action: str, role_id: str, name: str | None
) -> Request:
    role = policy.roles.get(role_id)
    label = name if name is not None else (role.name if role is not None else role_id)
    return Request(author, action, "role", label, {"role_id": role_id, "name": label})


def _user_request(policy: Policy, author: str, action: str, user_id: str) -> Request:
    user = policy.users.get(user_id)
    attributes = dict(user.attributes) if user is not None else {}
    return Request(author, action, "user", user_id, attributes)


def permission_requests(policy: Policy, edit: Edit, author: str) -> list[Request]:
    """The requests `author` must be allowed for `edit` to be made, against `policy`."""
    resource_type, action = edit.permission_needed()
    if isinstance(edit, CreateUser):
        return [Request(author, action, "user", edit.user_id, dict(edit.attributes))]
    if isinstance(edit, CreateRole):
        requests = [_role_request(policy, author, action, edit.role_id, edit.name)]
        requests += [_role_request(policy, author, "assign", p, None) for p in edit.inherits]
        return requests
    if isinstance(edit, AddInheritance):
        return [
            _role_request(policy, author, action, edit.role_id, None),
            _role_request(policy, author, "assign", edit.parent_id, None),
        ]
    if isinstance(edit, AssignRole | UnassignRole):
        return [_role_request(policy, author, action, edit.role_id, None)]
    target: str | None = getattr(edit, "owner", None)
    if target is not None:  # a rule edit: "role:<id>" or "user:<id>"
        kind, _, target_id = target.partition(":")
        if kind == "user":
            return [_user_request(policy, author, action, target_id)]
        return [_role_request(policy, author, action, target_id, None)]
    if resource_type == "user":
        return [_user_request(policy, author, action, getattr(edit, "user_id", ""))]
    return [_role_request(policy, author, action, getattr(edit, "role_id", ""), None)]


@dataclass(frozen=True, slots=True)
class Denied:
    """Why an author may not make an edit: the request that was denied, and its decision."""

    request: Request
    decision: Decision

    @property
    def permission(self) -> str:
        """`role:assign on 'tenant-admin'`: what the author lacks."""
        return f"{self.request.resource_type}:{self.request.action} on {self.request.resource_id!r}"


def authorize(engine: Engine, edit: Edit, author: str, now: Instant) -> Denied | None:
    """None when `author` may make `edit`; otherwise the first request denied.

    `now` is the time the permission is decided at (expiring assignments).
    """
    for request in permission_requests(engine.policy, edit, author):
        decision = engine.decide(request, now)
        if not decision.allowed:
            return Denied(request, decision)
    return None
