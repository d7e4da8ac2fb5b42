"""Policy routes: CRUD with optimistic concurrency, history, diff, rollback, pause/resume."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from pdscaler.api.body import parse_document
from pdscaler.api.context import Admin, Editor, Services, Svc, Viewer
from pdscaler.api.schemas import (
    NO_NUL,
    ChangeIn,
    DiffOut,
    ErrorOut,
    FieldChangeOut,
    FieldProblem,
    PolicyList,
    PolicyOut,
    RollbackIn,
    ValidationOut,
    VersionList,
    VersionOut,
)
from pdscaler.domain.errors import Conflict, FieldError, InvalidInput
from pdscaler.domain.policy import DNS_LABEL, Mode, Policy, Role, nul_errors, parse_policy
from pdscaler.domain.reasons import Reason
from pdscaler.domain.versioning import (
    ChangeKind,
    StoredPolicy,
    diff_documents,
    merge_patch,
    unified_diff,
)
from pdscaler.store.decisions import DecisionFilter

POLICY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": {"$ref": "#/components/schemas/Policy"}}
            for media in ("application/json", "application/yaml")
        },
    }
}
PATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/merge-patch+json": {"schema": {"type": "object"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 415, 422, 503)
}

router = APIRouter(prefix="/v1/policies", tags=["policies"], responses=ERRORS)

Namespace = Annotated[str, Path(pattern=DNS_LABEL, max_length=63)]
Name = Annotated[str, Path(pattern=DNS_LABEL, max_length=63)]
IfMatch = Annotated[str | None, Header(description='The version to change, e.g. "3".')]
Comment = Annotated[
    str, Query(max_length=1000, pattern=NO_NUL, description="Why; kept with the version.")
]


@router.get("", response_model=PolicyList)
def list_policies(
    svc: Svc,
    _: Viewer,
    namespace: Annotated[str | None, Query(pattern=DNS_LABEL, max_length=63)] = None,
) -> PolicyList:
    items = [PolicyOut.of(p, svc.policy_warnings(p.policy)) for p in svc.policies.all(namespace)]
    return PolicyList(items=items)


@router.post("", status_code=201, response_model=PolicyOut, openapi_extra=POLICY_BODY)
async def create_policy(
    request: Request, svc: Svc, who: Editor, comment: Comment = ""
) -> JSONResponse:
    policy = _checked(
        svc, parse_document(await request.body(), request.headers.get("content-type"))
    )
    stored = svc.policies.create(policy, author=who.name, comment=comment, now=svc.clock.now())
    location = f"/v1/policies/{policy.metadata.namespace}/{policy.metadata.name}"
    return _policy_response(svc, stored, status=201, headers={"Location": location})


@router.post("/validate", response_model=ValidationOut, openapi_extra=POLICY_BODY)
async def validate_policy(request: Request, svc: Svc, _: Viewer) -> ValidationOut:
    """Validate a policy without saving it. A well-formed but invalid policy is a 200."""
    document = parse_document(await request.body(), request.headers.get("content-type"))
    try:
        _checked(svc, document)
    except InvalidInput as e:
        problems = [FieldProblem(field=f.field, message=f.message) for f in e.errors]
        return ValidationOut(valid=False, errors=problems)
    return ValidationOut(valid=True)


@router.get("/{namespace}/{name}", response_model=PolicyOut)
def get_policy(namespace: Namespace, name: Name, svc: Svc, _: Viewer) -> JSONResponse:
    return _policy_response(svc, svc.policies.get(namespace, name))


@router.put("/{namespace}/{name}", response_model=PolicyOut, openapi_extra=POLICY_BODY)
async def replace_policy(
    namespace: Namespace,
    name: Name,
    request: Request,
    svc: Svc,
    who: Editor,
    if_match: IfMatch = None,
    comment: Comment = "",
) -> JSONResponse:
    policy = _checked(
        svc, parse_document(await request.body(), request.headers.get("content-type"))
    )
    _require_same_key(policy, namespace, name)
    stored = svc.policies.change(
        namespace,
        name,
        ChangeKind.UPDATE,
        lambda _current: policy,
        expected_version=_expected_version(if_match, policy.metadata.resource_version),
        author=who.name,
        comment=comment,
        now=svc.clock.now(),
    )
    return _policy_response(svc, stored)


@router.patch("/{namespace}/{name}", response_model=PolicyOut, openapi_extra=PATCH_BODY)
async def patch_policy(
    namespace: Namespace,
    name: Name,
    request: Request,
    svc: Svc,
    who: Editor,
    if_match: IfMatch = None,
    comment: Comment = "",
) -> JSONResponse:
    """Apply a JSON Merge Patch (RFC 7386) to the current policy document."""
    patch = parse_document(await request.body(), request.headers.get("content-type"))
    nul = tuple(nul_errors(patch))
    if nul:
        raise InvalidInput(f"{nul[0].field}: {nul[0].message}", errors=nul)
    if not isinstance(patch, dict):
        raise InvalidInput(
            "a merge patch must be an object", errors=(FieldError("", "expected an object"),)
        )

    # metadata.resourceVersion in a patch is a precondition, not content.
    metadata = patch.get("metadata")
    body_version = metadata.pop("resourceVersion", None) if isinstance(metadata, dict) else None

    def patched(current: StoredPolicy) -> Policy:
        policy = _checked(svc, merge_patch(current.policy.document(), patch))
        _require_same_key(policy, namespace, name)
        return policy

    stored = svc.policies.change(
        namespace,
        name,
        ChangeKind.PATCH,
        patched,
        expected_version=_expected_version(if_match, body_version),
        author=who.name,
        comment=comment,
        now=svc.clock.now(),
    )
    return _policy_response(svc, stored)


@router.delete("/{namespace}/{name}", status_code=204, response_class=Response)
def delete_policy(
    namespace: Namespace,
    name: Name,
    svc: Svc,
    who: Admin,
    if_match: IfMatch = None,
    comment: Comment = "",
) -> Response:
    svc.policies.delete(
        namespace,
        name,
        expected_version=_expected_version(if_match, None),
        author=who.name,
        comment=comment,
        now=svc.clock.now(),
    )
    return Response(status_code=204)


@router.get("/{namespace}/{name}/versions", response_model=VersionList)
def list_versions(namespace: Namespace, name: Name, svc: Svc, _: Viewer) -> VersionList:
    return VersionList(items=[VersionOut.of(v) for v in svc.policies.versions(namespace, name)])


@router.get("/{namespace}/{name}/versions/{version}", response_model=VersionOut)
def get_version(
    namespace: Namespace,
    name: Name,
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],
    svc: Svc,
    _: Viewer,
) -> VersionOut:
    return VersionOut.of(svc.policies.version(namespace, name, version))


@router.get("/{namespace}/{name}/diff", response_model=DiffOut)
def diff_versions(
    namespace: Namespace,
    name: Name,
    svc: Svc,
    _: Viewer,
    from_version: Annotated[int, Query(alias="from", ge=1, le=2**31 - 1)],
    to_version: Annotated[int | None, Query(alias="to", ge=1, le=2**31 - 1)] = None,
) -> DiffOut:
    """Differences from one version to another (by default, to the latest version)."""
    old = svc.policies.version(namespace, name, from_version)
    new = (
        svc.policies.version(namespace, name, to_version)
        if to_version is not None
        else svc.policies.versions(namespace, name)[-1]
    )
    return DiffOut(
        from_version=old.version,
        to_version=new.version,
        changes=[FieldChangeOut.of(c) for c in diff_documents(old.document, new.document)],
        unified=unified_diff(old.document, new.document, f"v{old.version}", f"v{new.version}"),
    )


@router.post("/{namespace}/{name}/rollback", response_model=PolicyOut)
def rollback_policy(
    namespace: Namespace,
    name: Name,
    body: RollbackIn,
    svc: Svc,
    who: Editor,
    if_match: IfMatch = None,
) -> JSONResponse:
    """Make an earlier version's document current again, as a new version."""
    target = svc.policies.version(namespace, name, body.version)
    policy = _checked(svc, target.document)
    comment = body.comment or f"rollback to version {body.version}"
    stored = svc.policies.change(
        namespace,
        name,
        ChangeKind.ROLLBACK,
        lambda _current: policy,
        expected_version=_expected_version(if_match, None),
        author=who.name,
        comment=comment,
        now=svc.clock.now(),
    )
    return _policy_response(svc, stored)


@router.post("/{namespace}/{name}/pause", response_model=PolicyOut)
def pause_policy(
    namespace: Namespace,
    name: Name,
    svc: Svc,
    who: Editor,
    body: ChangeIn | None = None,
    if_match: IfMatch = None,
) -> JSONResponse:
    """Stop deciding and acting for this policy; its targets keep their current size."""
    stored = svc.policies.change(
        namespace,
        name,
        ChangeKind.PAUSE,
        lambda current: current.policy.with_mode(Mode.PAUSED),
        expected_version=_expected_version(if_match, None),
        author=who.name,
        comment=(body or ChangeIn()).comment,
        now=svc.clock.now(),
    )
    return _policy_response(svc, stored)


@router.post("/{namespace}/{name}/resume", response_model=PolicyOut)
def resume_policy(
    namespace: Namespace,
    name: Name,
    svc: Svc,
    who: Editor,
    body: ChangeIn | None = None,
    if_match: IfMatch = None,
) -> JSONResponse:
    """Return to the mode the policy had before it was paused (active if it never had one)."""
    history = svc.policies.versions(namespace, name)
    modes = [Policy.model_validate(v.document).spec.mode for v in reversed(history)]
    resumed = next((mode for mode in modes if mode is not Mode.PAUSED), Mode.ACTIVE)
    # The history read above must still be current when the change is written.
    expected = _expected_version(if_match, None)
    if expected is not None and expected != history[-1].version:
        raise Conflict(f"policy {namespace}/{name} is at version {history[-1].version}")
    stored = svc.policies.change(
        namespace,
        name,
        ChangeKind.RESUME,
        lambda current: current.policy.with_mode(resumed),
        expected_version=history[-1].version,
        author=who.name,
        comment=(body or ChangeIn()).comment,
        now=svc.clock.now(),
    )
    return _policy_response(svc, stored)


def _checked(svc: Services, document: object) -> Policy:
    """Validate a document, and what only the outside world can tell (custom PromQL)."""
    policy = parse_policy(document)
    errors = tuple(svc.check_policy(policy))
    if errors:
        raise InvalidInput(f"invalid policy: {errors[0].field}: {errors[0].message}", errors=errors)
    return policy


def _policy_response(
    svc: Services, stored: StoredPolicy, *, status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    warnings = svc.policy_warnings(stored.policy) + _pool_warnings(svc, stored.policy)
    body = PolicyOut.of(stored, warnings).model_dump(mode="json", by_alias=True)
    return JSONResponse(body, status_code=status, headers={"ETag": stored.etag, **(headers or {})})


# Decision steps that a policy's status repeats: the loop cannot do what it decided.
ATTENTION = frozenset({Reason.UNSCHEDULABLE, Reason.MANAGED_ELSEWHERE})


def _pool_warnings(svc: Services, policy: Policy) -> list[str]:
    """From each pool's last decision: pods that cannot be placed, another autoscaler."""
    warnings = []
    for role in Role:
        where = DecisionFilter(namespace=policy.metadata.namespace, policy=policy.metadata.name,
                               role=role)  # fmt: skip
        page, _next = svc.decisions.page(where, limit=1)
        for step in page[0].record.steps if page else ():
            if step.reason in ATTENTION:
                warnings.append(f"{role}: {step.message}")
    return warnings


def _require_same_key(policy: Policy, namespace: str, name: str) -> None:
    for field, given, wanted in (
        ("metadata.namespace", policy.metadata.namespace, namespace),
        ("metadata.name", policy.metadata.name, name),
    ):
        if given != wanted:
            raise InvalidInput(
                f"{field} {given!r} does not match the URL ({wanted!r})",
                errors=(FieldError(field, f"must be {wanted!r}, as in the URL"),),
            )


def _expected_version(if_match: str | None, body_version: object) -> int | None:
    """The version a change is based on, from If-Match or metadata.resourceVersion."""
    from_header = _parse_if_match(if_match) if if_match is not None else None
    from_body = _parse_version("metadata.resourceVersion", body_version)
    if from_header is not None and from_body is not None and from_header != from_body:
        raise InvalidInput(
            f"If-Match ({from_header}) and metadata.resourceVersion ({from_body}) disagree",
            errors=(FieldError("If-Match", "disagrees with metadata.resourceVersion"),),
        )
    return from_header if from_header is not None else from_body


def _parse_if_match(value: str) -> int | None:
    value = value.strip()
    if value == "*":
        return None
    return _parse_version("If-Match", value.removeprefix("W/").strip('"'))


def _parse_version(field: str, value: object) -> int | None:
    if value is None:
        return None
    text = str(value)
    if not text.isdigit() or len(text) > 18:
        raise InvalidInput(
            f'{field} must be a version number such as "3"',
            errors=(FieldError(field, "must be a version number"),),
        )
    return int(text)
