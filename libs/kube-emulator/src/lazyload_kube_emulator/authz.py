"""Opt-in RBAC authorization (`EmulatorConfig.authorize`, `--authorize`).

Authentication is emulated by the bearer token alone: the kubeconfig's token
(`lazyload-emulator-token`) is the cluster admin (every request allowed, like `system:masters`);
any other token is the user name, so `system:serviceaccount:<ns>:<name>` is that ServiceAccount
(groups `system:serviceaccounts`, `system:serviceaccounts:<ns>`, `system:authenticated`).
No token is `system:anonymous`. Resource requests are then allowed only by the stored Roles
and ClusterRoles bound to the user (RoleBindings in the request's namespace, ClusterRoleBindings
anywhere): verbs, apiGroups, resources (`plural`, `plural/subresource`, `*`, `*/sub`) and
resourceNames, as the real RBAC authorizer matches them. Discovery, `/version`, health and the
admin API are always allowed. Nothing else (aggregation, escalation checks) is emulated.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ApiError
from .kubeconfig import TOKEN
from .resources import RBAC_GROUP

if TYPE_CHECKING:
    from .emulator import Emulator

Obj = dict[str, Any]
ADMIN_USER = "lazyload-emulator-admin"
SA_PREFIX = "system:serviceaccount:"
ROLES = (RBAC_GROUP, "roles")
CLUSTER_ROLES = (RBAC_GROUP, "clusterroles")
ROLE_BINDINGS = (RBAC_GROUP, "rolebindings")
CLUSTER_ROLE_BINDINGS = (RBAC_GROUP, "clusterrolebindings")


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return self.name == ADMIN_USER


@dataclass(frozen=True)
class Attributes:
    """What a resource request does, in the terms RBAC rules use."""

    verb: str
    api_group: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None

    @property
    def resource_path(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def user_from_authorization(header: str | None) -> User:
    """The user a request's `Authorization: Bearer <token>` header names."""
    token = ""
    if header and header.lower().startswith("bearer "):
        token = header[7:].strip()
    if not token:
        return User("system:anonymous", ("system:unauthenticated",))
    if token == TOKEN:
        return User(ADMIN_USER, ("system:masters", "system:authenticated"))
    if token.startswith(SA_PREFIX):
        namespace = token[len(SA_PREFIX) :].split(":", 1)[0]
        groups = ("system:serviceaccounts", f"system:serviceaccounts:{namespace}")
        return User(token, (*groups, "system:authenticated"))
    return User(token, ("system:authenticated",))


def service_account_token(namespace: str, name: str) -> str:
    """The bearer token that authenticates as a ServiceAccount in authorizing mode."""
    return f"{SA_PREFIX}{namespace}:{name}"


def request_verb(method: str, has_name: bool, watching: bool) -> str:
    if method == "GET":
        return "get" if has_name else ("watch" if watching else "list")
    if method == "DELETE":
        return "delete" if has_name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def _subject_matches(subject: Obj, user: User, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return user.name == f"{SA_PREFIX}{namespace}:{name}"
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    return False


def _matches(values: list[str] | None, wanted: str) -> bool:
    return bool(values) and ("*" in values or wanted in values)


def _resource_matches(resources: list[str] | None, attrs: Attributes) -> bool:
    for resource in resources or []:
        if resource in ("*", attrs.resource_path):
            return True
        if attrs.subresource and resource in (
            f"*/{attrs.subresource}",
            f"{attrs.resource}/*",
        ):
            return True
    return False


def rule_allows(rule: Obj, attrs: Attributes) -> bool:
    if not _matches(rule.get("verbs"), attrs.verb):
        return False
    if not _matches(rule.get("apiGroups"), attrs.api_group):
        return False
    if not _resource_matches(rule.get("resources"), attrs):
        return False
    names = rule.get("resourceNames") or []
    return not names or (attrs.name is not None and attrs.name in names)


def _role_rules(emu: Emulator, ref: Obj, binding_namespace: str) -> list[Obj]:
    if ref.get("kind") == "ClusterRole":
        role = emu.store.get(CLUSTER_ROLES, "", ref.get("name", ""))
    elif ref.get("kind") == "Role" and binding_namespace:
        role = emu.store.get(ROLES, binding_namespace, ref.get("name", ""))
    else:
        role = None
    return list((role or {}).get("rules") or [])


def _bound_rules(emu: Emulator, user: User, namespace: str | None) -> Iterator[Obj]:
    bindings = list(emu.store.iter_raw(CLUSTER_ROLE_BINDINGS))
    if namespace:
        bindings += [
            b
            for b in emu.store.iter_raw(ROLE_BINDINGS)
            if b["metadata"].get("namespace") == namespace
        ]
    for binding in bindings:
        binding_ns = binding["metadata"].get("namespace") or ""
        if any(_subject_matches(s, user, binding_ns) for s in binding.get("subjects") or []):
            yield from _role_rules(emu, binding.get("roleRef") or {}, binding_ns)


def allowed(emu: Emulator, user: User, attrs: Attributes) -> bool:
    if user.is_admin:
        return True
    return any(rule_allows(rule, attrs) for rule in _bound_rules(emu, user, attrs.namespace))


def forbidden(user: User, attrs: Attributes) -> ApiError:
    """The 403 Status the real API server answers a denied request with."""
    what = attrs.resource_path
    subject = f'{what} "{attrs.name}"' if attrs.name else what
    where = f' in the namespace "{attrs.namespace}"' if attrs.namespace else ""
    if attrs.subresource:
        cannot = f'resource "{attrs.resource}/{attrs.subresource}"'
    else:
        cannot = f'resource "{attrs.resource}"'
    message = (
        f'{subject} is forbidden: User "{user.name}" cannot {attrs.verb} {cannot} '
        f'in API group "{attrs.api_group}"'
        + (where if attrs.namespace else " at the cluster scope")
    )
    details: Obj = {"kind": attrs.resource}
    if attrs.name:
        details["name"] = attrs.name
    if attrs.api_group:
        details["group"] = attrs.api_group
    return ApiError(403, message, "Forbidden", details)


def authorize(emu: Emulator, authorization: str | None, attrs: Attributes) -> None:
    """Raise a 403 ApiError unless the request's user may do attrs (no-op when not enabled)."""
    if not emu.config.authorize:
        return
    user = user_from_authorization(authorization)
    if not allowed(emu, user, attrs):
        raise forbidden(user, attrs)
