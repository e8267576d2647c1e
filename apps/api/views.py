"""Management API views (/api/v1/). Thin: the tenant and role come from
apps.tenants.access (through the permission classes, which set ``self.access`` and
``self.tenant``), objects are read through tenant-scoped selectors (another tenant's id is
a 404), and every write goes through a service that records it in the audit log."""

from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.http import Http404, StreamingHttpResponse
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework import exceptions, status
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.api import serializers as s
from apps.audit.selectors import audit_event_list
from apps.billing import selectors as billing_selectors
from apps.billing import services as billing_services
from apps.billing.pricing import PriceRuleInvalid
from apps.catalog import selectors as catalog_selectors
from apps.catalog import services as catalog_services
from apps.catalog.models import Backend, Deployment, Model, Price
from apps.core.csv_export import csv_chunks
from apps.keys.selectors import api_key_get, api_key_list, api_key_name_taken
from apps.keys.services import (
    ApiKeyError,
    api_key_issue,
    api_key_revoke,
    api_key_rotate,
    api_key_update,
)
from apps.ledger.selectors import ledger_last_ingest, ledger_pipeline_health
from apps.moderation.services import content_policy_set
from apps.projects.selectors import (
    member_user_find,
    project_default_get,
    project_get,
    project_list,
    project_membership_get,
    project_membership_list,
)
from apps.projects.services import (
    ProjectError,
    project_create,
    project_delete,
    project_membership_remove,
    project_membership_set,
    project_update,
)
from apps.tenants import selectors as tenant_selectors
from apps.tenants.access import (
    ADMIN,
    CanRead,
    IsOwner,
    IsStaff,
    ManagesAdminTokens,
    ManagesKeys,
    ReadOrWrite,
    TenantAccess,
    require_every_project,
    require_project_key_manager,
    require_role,
)
from apps.tenants.models import Tenant
from apps.tenants.services import (
    TenantError,
    admin_token_issue,
    admin_token_revoke,
    membership_invite,
    membership_remove,
    membership_set_role,
    tenant_create,
    tenant_update,
    tenant_update_limits,
)
from apps.wallet.selectors import balance_entries, balance_get
from apps.wallet.services import BalanceError, balance_entry_add

TENANT_PARAM = OpenApiParameter(
    "tenant",
    OpenApiTypes.STR,
    description="Staff and members of several tenants: the tenant's name. An admin token "
    "acts for its own tenant only.",
    required=False,
)


def _tenant_error(exc: TenantError) -> exceptions.ValidationError:
    return exceptions.ValidationError({exc.field: [exc.message]})


class TenantAPIView(APIView):
    """Base of the tenant-scoped endpoints: viewers read, admins write (override
    ``permission_classes`` for owner-only endpoints)."""

    permission_classes = [IsAuthenticated, ReadOrWrite]
    access: TenantAccess
    tenant: Tenant


class StaffAPIView(APIView):
    permission_classes = [IsAuthenticated, IsStaff]


def _object_or_404(found):
    if found is None:
        raise Http404("Not found.")
    return found


# Keys --------------------------------------------------------------------------------------
# Members read the keys of the projects they see; writing needs the admin role in the
# key's project (tenant admins have it in every project). A key of a project the caller
# does not see is a 404, like another tenant's.


def _key_or_404(view: "TenantAPIView", key_id: int):
    return _object_or_404(api_key_get(access=view.access, key_id=key_id))


def _key_manager(view: "TenantAPIView", api_key) -> None:
    require_project_key_manager(view.access, api_key.project_id)


def _project_for_keys(access: TenantAccess, project_id: int | None):
    """The project a key goes to (None: the default), which the caller must manage: one
    they cannot see is a 400 naming the field (as an unknown id), one they only read a
    403."""
    if project_id is None:
        project = project_default_get(tenant_id=access.tenant.id)
        if access.project_role(project.id) is None:
            raise exceptions.ValidationError({"project": ["name a project you manage"]})
    else:
        project = project_get(access=access, project_id=project_id)
        if project is None:
            raise exceptions.ValidationError({"project": ["no such project"]})
    require_project_key_manager(access, project.id)
    return project


def _key_error(exc: ApiKeyError) -> exceptions.ValidationError:
    return exceptions.ValidationError({exc.field or "detail": [exc.message]})


def _key_issue(view: "TenantAPIView", data: dict, project) -> Response:
    if api_key_name_taken(tenant=view.tenant, name=data["name"]):
        raise exceptions.ValidationError({"name": ["an active key has this name"]})
    try:
        api_key, secret = api_key_issue(
            tenant=view.tenant, project=project, actor=view.access, **data
        )
    except IntegrityError:
        raise exceptions.ValidationError({"name": ["an active key has this name"]}) from None
    except ApiKeyError as exc:
        raise _key_error(exc) from None
    body = s.ApiKeyWithSecretSerializer(api_key, context={"secret": secret}).data
    return Response(body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})


def _key_status_param(request: Request) -> str | None:
    wanted = request.query_params.get("status") or None
    if wanted not in (None, "active", "revoked", "expired"):
        raise exceptions.ValidationError({"status": ["must be active, revoked or expired"]})
    return wanted


KEY_STATUS_PARAM = OpenApiParameter(
    "status", OpenApiTypes.STR, enum=["active", "revoked", "expired"], required=False
)


@extend_schema_view(
    get=extend_schema(
        summary="List the inference keys the caller may see (of the projects they see)",
        parameters=[TENANT_PARAM, KEY_STATUS_PARAM],
        responses=s.ApiKeySerializer(many=True),
        tags=["keys"],
    ),
    post=extend_schema(
        summary="Issue a key (the secret is in this response only)",
        parameters=[TENANT_PARAM],
        request=s.ApiKeyWriteSerializer,
        responses={201: s.ApiKeyWithSecretSerializer},
        tags=["keys"],
    ),
)
class KeyListView(TenantAPIView):
    permission_classes = [IsAuthenticated, ManagesKeys]

    def get(self, request: Request) -> Response:
        keys = api_key_list(access=self.access, status=_key_status_param(request))
        return Response(s.ApiKeySerializer(keys, many=True).data)

    def post(self, request: Request) -> Response:
        serializer = s.ApiKeyWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        project = _project_for_keys(self.access, data.pop("project", None))
        return _key_issue(self, data, project)


@extend_schema_view(
    get=extend_schema(
        summary="One key", parameters=[TENANT_PARAM], responses=s.ApiKeySerializer, tags=["keys"]
    ),
    patch=extend_schema(
        summary="Change a key's name, project, allowlist, limits, budget, expiry or content policy",
        parameters=[TENANT_PARAM],
        request=s.ApiKeyWriteSerializer,
        responses=s.ApiKeySerializer,
        tags=["keys"],
    ),
)
class KeyDetailView(TenantAPIView):
    # Any member: the key (project) is looked up first (404 unless visible), then the
    # caller must manage its project (403).
    permission_classes = [IsAuthenticated, CanRead]

    def get(self, request: Request, key_id: int) -> Response:
        return Response(s.ApiKeySerializer(_key_or_404(self, key_id)).data)

    def patch(self, request: Request, key_id: int) -> Response:
        api_key = _key_or_404(self, key_id)
        _key_manager(self, api_key)
        serializer = s.ApiKeyWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        if api_key.revoked_at is not None:
            raise exceptions.ValidationError({"detail": ["a revoked key cannot be changed"]})
        data = dict(serializer.validated_data)
        if "project" in data:
            data["project"] = _project_for_keys(self.access, data["project"])
        name = data.get("name")
        if name and api_key_name_taken(tenant=self.tenant, name=name, exclude_id=api_key.id):
            raise exceptions.ValidationError({"name": ["an active key has this name"]})
        policy = data.pop("content_policy", None)
        try:
            with transaction.atomic():
                if data:
                    api_key_update(api_key=api_key, actor=self.access, **data)
                if policy is not None:
                    content_policy_set(api_key=api_key, policy=policy, actor=self.access)
        except ApiKeyError as exc:
            raise _key_error(exc) from None
        api_key.refresh_from_db()
        return Response(s.ApiKeySerializer(api_key).data)


@extend_schema(
    summary="Rotate a key: a new secret for the same key (same id, counters and history); "
    "the old secret works for grace_seconds more",
    parameters=[TENANT_PARAM],
    request=s.KeyRotateSerializer,
    # 201 as before rotation kept the key: a new secret is created (clients check it)
    responses={201: s.ApiKeyWithSecretSerializer},
    tags=["keys"],
)
class KeyRotateView(TenantAPIView):
    # Any member: the key (project) is looked up first (404 unless visible), then the
    # caller must manage its project (403).
    permission_classes = [IsAuthenticated, CanRead]

    def post(self, request: Request, key_id: int) -> Response:
        api_key = _key_or_404(self, key_id)
        _key_manager(self, api_key)
        serializer = s.KeyRotateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            api_key, secret = api_key_rotate(
                api_key=api_key, actor=self.access, **serializer.validated_data
            )
        except ApiKeyError as exc:
            raise exceptions.ValidationError({exc.field or "detail": [exc.message]}) from None
        body = s.ApiKeyWithSecretSerializer(api_key, context={"secret": secret}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})


@extend_schema(
    summary="Revoke a key (refused on /v1 within a second)",
    parameters=[TENANT_PARAM],
    request=None,
    responses=s.ApiKeySerializer,
    tags=["keys"],
)
class KeyRevokeView(TenantAPIView):
    # Any member: the key (project) is looked up first (404 unless visible), then the
    # caller must manage its project (403).
    permission_classes = [IsAuthenticated, CanRead]

    def post(self, request: Request, key_id: int) -> Response:
        api_key = _key_or_404(self, key_id)
        _key_manager(self, api_key)
        api_key_revoke(api_key=api_key, actor=self.access)
        return Response(s.ApiKeySerializer(api_key).data)


# Projects ----------------------------------------------------------------------------------
# Every member reads the projects they see (a project's viewers and admins: theirs only);
# creating, changing and deleting projects and their members is for tenant admins.


def _project_error(exc: ProjectError) -> exceptions.ValidationError:
    return exceptions.ValidationError({exc.field or "detail": [exc.message]})


def _project_or_404(view: "TenantAPIView", project_id: int):
    return _object_or_404(project_get(access=view.access, project_id=project_id))


def _project_to_change(view: "TenantAPIView", project_id: int):
    """The project, for a tenant admin: one the caller does not see is a 404 (as another
    tenant's), one they see but may not change a 403."""
    project = _project_or_404(view, project_id)
    require_role(view.access, ADMIN)
    return project


def _project_body(view: "TenantAPIView", project) -> dict:
    return s.ProjectSerializer(project, context={"access": view.access}).data


@extend_schema_view(
    get=extend_schema(
        summary="List the projects the caller may see",
        parameters=[TENANT_PARAM],
        responses=s.ProjectSerializer(many=True),
        tags=["projects"],
    ),
    post=extend_schema(
        summary="Create a project (tenant admins)",
        parameters=[TENANT_PARAM],
        request=s.ProjectWriteSerializer,
        responses={201: s.ProjectSerializer},
        tags=["projects"],
    ),
)
class ProjectListView(TenantAPIView):
    def get(self, request: Request) -> Response:
        projects = project_list(access=self.access)
        return Response(
            s.ProjectSerializer(projects, many=True, context={"access": self.access}).data
        )

    def post(self, request: Request) -> Response:
        serializer = s.ProjectWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            project = project_create(
                tenant=self.tenant, actor=self.access, **serializer.validated_data
            )
        except ProjectError as exc:
            raise _project_error(exc) from None
        return Response(_project_body(self, project), status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(
        summary="One project",
        parameters=[TENANT_PARAM],
        responses=s.ProjectSerializer,
        tags=["projects"],
    ),
    patch=extend_schema(
        summary="Change a project's name, allowlist, limits, budget, per-model or per-end-user "
        "limits (tenant admins)",
        parameters=[TENANT_PARAM],
        request=s.ProjectWriteSerializer,
        responses=s.ProjectSerializer,
        tags=["projects"],
    ),
    delete=extend_schema(
        summary="Delete a project without active keys (tenant admins; never the default)",
        parameters=[TENANT_PARAM],
        responses={204: None},
        tags=["projects"],
    ),
)
class ProjectDetailView(TenantAPIView):
    permission_classes = [IsAuthenticated, CanRead]  # 404 before 403: _project_to_change

    def get(self, request: Request, project_id: int) -> Response:
        return Response(_project_body(self, _project_or_404(self, project_id)))

    def patch(self, request: Request, project_id: int) -> Response:
        project = _project_to_change(self, project_id)
        serializer = s.ProjectWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        try:
            project = project_update(
                project=project, actor=self.access, **serializer.validated_data
            )
        except ProjectError as exc:
            raise _project_error(exc) from None
        return Response(_project_body(self, project))

    def delete(self, request: Request, project_id: int) -> Response:
        try:
            project_delete(project=_project_to_change(self, project_id), actor=self.access)
        except ProjectError as exc:
            raise _project_error(exc) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    get=extend_schema(
        summary="The members with a role in this project (tenant admins)",
        parameters=[TENANT_PARAM],
        responses=s.ProjectMemberSerializer(many=True),
        tags=["projects"],
    ),
    post=extend_schema(
        summary="Give a member of the tenant a role in this project, or change it (tenant admins)",
        parameters=[TENANT_PARAM],
        request=s.ProjectMemberWriteSerializer,
        responses={201: s.ProjectMemberSerializer},
        tags=["projects"],
    ),
)
class ProjectMemberListView(TenantAPIView):
    # Any member: the project is looked up first (404 unless visible), then tenant admins
    # only (403).
    permission_classes = [IsAuthenticated, CanRead]

    def get(self, request: Request, project_id: int) -> Response:
        project = _project_to_change(self, project_id)
        members = project_membership_list(project=project)
        return Response(s.ProjectMemberSerializer(members, many=True).data)

    def post(self, request: Request, project_id: int) -> Response:
        project = _project_to_change(self, project_id)
        serializer = s.ProjectMemberWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = member_user_find(
            tenant_id=self.tenant.id, identifier=serializer.validated_data["user"]
        )
        if user is None:
            raise exceptions.ValidationError({"user": ["is not a member of this tenant"]})
        try:
            membership = project_membership_set(
                project=project,
                user=user,
                role=serializer.validated_data["role"],
                actor=self.access,
            )
        except ProjectError as exc:
            raise _project_error(exc) from None
        return Response(s.ProjectMemberSerializer(membership).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    patch=extend_schema(
        summary="Change a member's role in this project (tenant admins)",
        parameters=[TENANT_PARAM],
        request=s.ProjectMemberRoleSerializer,
        responses=s.ProjectMemberSerializer,
        tags=["projects"],
    ),
    delete=extend_schema(
        summary="Take a member's role in this project away (tenant admins)",
        parameters=[TENANT_PARAM],
        responses={204: None},
        tags=["projects"],
    ),
)
class ProjectMemberDetailView(TenantAPIView):
    # Any member: the project is looked up first (404 unless visible), then tenant admins
    # only (403).
    permission_classes = [IsAuthenticated, CanRead]

    def _membership(self, project_id: int, member_id: int):
        project = _project_to_change(self, project_id)
        return _object_or_404(project_membership_get(project=project, membership_id=member_id))

    def patch(self, request: Request, project_id: int, member_id: int) -> Response:
        membership = self._membership(project_id, member_id)
        serializer = s.ProjectMemberRoleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            membership = project_membership_set(
                project=membership.project,
                user=membership.user,
                role=serializer.validated_data["role"],
                actor=self.access,
            )
        except ProjectError as exc:
            raise _project_error(exc) from None
        return Response(s.ProjectMemberSerializer(membership).data)

    def delete(self, request: Request, project_id: int, member_id: int) -> Response:
        project_membership_remove(
            membership=self._membership(project_id, member_id), actor=self.access
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    get=extend_schema(
        summary="The keys of a project",
        parameters=[TENANT_PARAM, KEY_STATUS_PARAM],
        responses=s.ApiKeySerializer(many=True),
        tags=["projects"],
    ),
    post=extend_schema(
        summary="Issue a key in this project (its admins; the secret is in this response only)",
        parameters=[TENANT_PARAM],
        request=s.ProjectKeyWriteSerializer,
        responses={201: s.ApiKeyWithSecretSerializer},
        tags=["projects"],
    ),
)
class ProjectKeyListView(TenantAPIView):
    # Any member: the key (project) is looked up first (404 unless visible), then the
    # caller must manage its project (403).
    permission_classes = [IsAuthenticated, CanRead]

    def get(self, request: Request, project_id: int) -> Response:
        project = _project_or_404(self, project_id)
        keys = api_key_list(
            access=self.access, status=_key_status_param(request), project_id=project.id
        )
        return Response(s.ApiKeySerializer(keys, many=True).data)

    def post(self, request: Request, project_id: int) -> Response:
        project = _project_or_404(self, project_id)
        require_project_key_manager(self.access, project.id)
        serializer = s.ProjectKeyWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return _key_issue(self, dict(serializer.validated_data), project)


# Admin tokens ------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        summary="List the tenant's admin tokens",
        parameters=[TENANT_PARAM],
        responses=s.AdminTokenSerializer(many=True),
        tags=["admin tokens"],
    ),
    post=extend_schema(
        summary="Issue an admin token (the secret is in this response only)",
        parameters=[TENANT_PARAM],
        request=s.AdminTokenCreateSerializer,
        responses={201: s.AdminTokenWithSecretSerializer},
        tags=["admin tokens"],
    ),
)
class AdminTokenListView(TenantAPIView):
    permission_classes = [IsAuthenticated, ManagesAdminTokens]

    def get(self, request: Request) -> Response:
        tokens = tenant_selectors.admin_token_list(tenant=self.tenant)
        return Response(s.AdminTokenSerializer(tokens, many=True).data)

    def post(self, request: Request) -> Response:
        serializer = s.AdminTokenCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        name = serializer.validated_data["name"]
        if tenant_selectors.admin_token_name_taken(tenant=self.tenant, name=name):
            raise exceptions.ValidationError({"name": ["an active admin token has this name"]})
        try:
            token, secret = admin_token_issue(tenant=self.tenant, name=name, actor=self.access)
        except IntegrityError:
            raise exceptions.ValidationError(
                {"name": ["an active admin token has this name"]}
            ) from None
        body = s.AdminTokenWithSecretSerializer(token, context={"secret": secret}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})


@extend_schema(
    summary="Revoke an admin token",
    parameters=[TENANT_PARAM],
    request=None,
    responses=s.AdminTokenSerializer,
    tags=["admin tokens"],
)
class AdminTokenRevokeView(TenantAPIView):
    permission_classes = [IsAuthenticated, ManagesAdminTokens]

    def post(self, request: Request, token_id: int) -> Response:
        token = _object_or_404(
            tenant_selectors.admin_token_get(tenant=self.tenant, token_id=token_id)
        )
        admin_token_revoke(admin_token=token, actor=self.access)
        return Response(s.AdminTokenSerializer(token).data)


# Members (owners) --------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        summary="List members (owners)",
        parameters=[TENANT_PARAM],
        responses=s.MembershipSerializer(many=True),
        tags=["members"],
    ),
    post=extend_schema(
        summary="Invite a member by email (owners); a new user gets a one-time set-password link",
        parameters=[TENANT_PARAM],
        request=s.MemberInviteSerializer,
        responses={201: s.InvitationSerializer},
        tags=["members"],
    ),
)
class MemberListView(TenantAPIView):
    permission_classes = [IsAuthenticated, IsOwner]

    def get(self, request: Request) -> Response:
        members = tenant_selectors.membership_list(tenant=self.tenant)
        return Response(s.MembershipSerializer(members, many=True).data)

    def post(self, request: Request) -> Response:
        serializer = s.MemberInviteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            invitation = membership_invite(
                tenant=self.tenant, actor=self.access, **serializer.validated_data
            )
        except TenantError as exc:
            raise _tenant_error(exc) from None
        body = dict(s.MembershipSerializer(invitation.membership).data)
        body.update(
            user_created=invitation.user_created,
            set_password_path=invitation.set_password_path,
        )
        return Response(body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})


@extend_schema_view(
    get=extend_schema(
        summary="One member (owners)",
        parameters=[TENANT_PARAM],
        responses=s.MembershipSerializer,
        tags=["members"],
    ),
    patch=extend_schema(
        summary="Change a member's role (owners; the last owner stays owner)",
        parameters=[TENANT_PARAM],
        request=s.MemberRoleSerializer,
        responses=s.MembershipSerializer,
        tags=["members"],
    ),
    delete=extend_schema(
        summary="Remove a member (owners; never the last owner)",
        parameters=[TENANT_PARAM],
        responses={204: None},
        tags=["members"],
    ),
)
class MemberDetailView(TenantAPIView):
    permission_classes = [IsAuthenticated, IsOwner]

    def _membership(self, member_id: int):
        return _object_or_404(
            tenant_selectors.membership_get(tenant=self.tenant, membership_id=member_id)
        )

    def get(self, request: Request, member_id: int) -> Response:
        return Response(s.MembershipSerializer(self._membership(member_id)).data)

    def patch(self, request: Request, member_id: int) -> Response:
        membership = self._membership(member_id)
        serializer = s.MemberRoleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            membership = membership_set_role(
                membership=membership, role=serializer.validated_data["role"], actor=self.access
            )
        except TenantError as exc:
            raise _tenant_error(exc) from None
        return Response(s.MembershipSerializer(membership).data)

    def delete(self, request: Request, member_id: int) -> Response:
        try:
            membership_remove(membership=self._membership(member_id), actor=self.access)
        except TenantError as exc:
            raise _tenant_error(exc) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


# Audit log (owners) ------------------------------------------------------------------------


class AuditPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 500


def _when(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        value = parse_datetime(raw)
    except ValueError:
        value = None
    if value is None:
        raise exceptions.ValidationError({name: ["must be an ISO 8601 date-time"]})
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


@extend_schema(
    summary="The tenant's audit log, newest first (owners)",
    parameters=[
        TENANT_PARAM,
        OpenApiParameter(
            "action",
            OpenApiTypes.STR,
            description='An action ("key.issued") or a family ending with a dot ("key.")',
            required=False,
        ),
        OpenApiParameter("since", OpenApiTypes.DATETIME, required=False),
        OpenApiParameter("until", OpenApiTypes.DATETIME, required=False),
    ],
    responses=s.AuditEventSerializer(many=True),
    tags=["audit"],
)
class AuditEventListView(TenantAPIView):
    permission_classes = [IsAuthenticated, IsOwner]
    pagination_class = AuditPagination

    def get(self, request: Request) -> Response:
        action = request.query_params.get("action") or None
        if action is not None and (len(action) > 64 or "\x00" in action):
            raise exceptions.ValidationError({"action": ["not an action"]})
        events = audit_event_list(
            tenant=self.tenant,
            action=action,
            since=_when(request, "since"),
            until=_when(request, "until"),
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(events, request, view=self)
        return paginator.get_paginated_response(s.AuditEventSerializer(page, many=True).data)


# Tenant settings ---------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        summary="The tenant's limits, budget and content policy",
        parameters=[TENANT_PARAM],
        responses=s.TenantSettingsSerializer,
        tags=["tenant"],
    ),
    patch=extend_schema(
        summary="Change the tenant's limits, budget or content policy (admins)",
        parameters=[TENANT_PARAM],
        request=s.TenantSettingsWriteSerializer,
        responses=s.TenantSettingsSerializer,
        tags=["tenant"],
    ),
)
class TenantSettingsView(TenantAPIView):
    def get(self, request: Request) -> Response:
        return Response(
            s.TenantSettingsSerializer(self.tenant, context={"access": self.access}).data
        )

    def patch(self, request: Request) -> Response:
        serializer = s.TenantSettingsWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        policy = data.pop("content_policy", None)
        with transaction.atomic():
            tenant = Tenant.objects.select_for_update().get(pk=self.tenant.pk)
            if data:
                tenant_update_limits(tenant=tenant, actor=self.access, **data)
            if policy is not None:
                content_policy_set(tenant=tenant, policy=policy, actor=self.access)
        return Response(s.TenantSettingsSerializer(tenant, context={"access": self.access}).data)


# Prepaid balance ---------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        summary="The tenant's billing mode and prepaid balance",
        parameters=[TENANT_PARAM],
        responses=s.BalanceSerializer,
        tags=["balance"],
    )
)
class BalanceView(TenantAPIView):
    def get(self, request: Request) -> Response:
        require_every_project(self.access)
        data = {
            "billing_mode": self.tenant.billing_mode,
            "balance": balance_get(tenant=self.tenant),
            "currency": "USD",
        }
        return Response(s.BalanceSerializer(data).data)


class BalancePagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 500


@extend_schema_view(
    get=extend_schema(
        summary="The balance journal's credits and corrections, newest first (usage debits "
        "are the ledger's prepaid rows: /api/v1/usage/records.csv)",
        parameters=[TENANT_PARAM],
        responses=s.BalanceEntrySerializer(many=True),
        tags=["balance"],
    )
)
class BalanceEntryListView(TenantAPIView):
    pagination_class = BalancePagination

    def get(self, request: Request) -> Response:
        require_every_project(self.access)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(balance_entries(tenant=self.tenant), request, view=self)
        return paginator.get_paginated_response(s.BalanceEntrySerializer(page, many=True).data)


BALANCE_CSV_HEADER = ("created_at", "kind", "amount", "ref", "reason")


def _balance_csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


@extend_schema_view(
    get=extend_schema(
        summary="The balance journal's entries as CSV (spreadsheet-safe)",
        parameters=[TENANT_PARAM],
        responses={(200, "text/csv"): OpenApiTypes.STR},
        tags=["balance"],
    )
)
class BalanceEntryCSVView(TenantAPIView):
    def get(self, request: Request) -> StreamingHttpResponse:
        require_every_project(self.access)
        rows = (
            (e.created_at, e.kind, e.amount, e.ref, e.reason)
            for e in balance_entries(tenant=self.tenant).iterator()
        )
        response = StreamingHttpResponse(
            csv_chunks(BALANCE_CSV_HEADER, rows, render=_balance_csv_value),
            content_type="text/csv; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="balance-{self.tenant.name}.csv"'
        response["Cache-Control"] = "no-store"
        return response


# Staff: tenants ----------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        summary="All tenants (staff)", responses=s.TenantSerializer(many=True), tags=["staff"]
    ),
    post=extend_schema(
        summary="Create a tenant (staff)",
        request=s.TenantWriteSerializer,
        responses={201: s.TenantSerializer},
        tags=["staff"],
    ),
)
class StaffTenantListView(StaffAPIView):
    def get(self, request: Request) -> Response:
        return Response(s.TenantSerializer(tenant_selectors.tenant_list(), many=True).data)

    def post(self, request: Request) -> Response:
        serializer = s.TenantWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            tenant = tenant_create(actor=request.user, **serializer.validated_data)
        except TenantError as exc:
            raise _tenant_error(exc) from None
        return Response(s.TenantSerializer(tenant).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(summary="One tenant (staff)", responses=s.TenantSerializer, tags=["staff"]),
    patch=extend_schema(
        summary="Change a tenant's display name or limits (staff)",
        request=s.TenantUpdateSerializer,
        responses=s.TenantSerializer,
        tags=["staff"],
    ),
)
class StaffTenantDetailView(StaffAPIView):
    def get(self, request: Request, tenant_id: int) -> Response:
        tenant = _object_or_404(Tenant.objects.filter(id=tenant_id).first())
        return Response(s.TenantSerializer(tenant).data)

    def patch(self, request: Request, tenant_id: int) -> Response:
        tenant = _object_or_404(Tenant.objects.filter(id=tenant_id).first())
        serializer = s.TenantUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        try:
            tenant = tenant_update(tenant=tenant, actor=request.user, **serializer.validated_data)
        except TenantError as exc:
            raise _tenant_error(exc) from None
        return Response(s.TenantSerializer(tenant).data)


@extend_schema_view(
    post=extend_schema(
        summary="Credit a tenant's balance (staff): a grant with a reason, once per ref",
        request=s.GrantWriteSerializer,
        responses={201: s.BalanceEntrySerializer, 200: s.BalanceEntrySerializer},
        tags=["staff"],
    ),
)
class StaffTenantGrantView(StaffAPIView):
    def post(self, request: Request, tenant_id: int) -> Response:
        tenant = _object_or_404(Tenant.objects.filter(id=tenant_id).first())
        serializer = s.GrantWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            entry, created = balance_entry_add(
                tenant=tenant, kind="grant", actor=request.user, **serializer.validated_data
            )
        except BalanceError as exc:
            raise exceptions.ValidationError({exc.field: [exc.message]}) from None
        return Response(
            s.BalanceEntrySerializer(entry).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


# Staff: catalog ----------------------------------------------------------------------------


def _catalog_get(model_class, pk: int):
    return _object_or_404(model_class.objects.filter(id=pk).first())


@extend_schema_view(
    get=extend_schema(
        summary="Backends (staff; credentials are never returned)",
        responses=s.BackendSerializer(many=True),
        tags=["staff"],
    ),
    post=extend_schema(
        summary="Add a backend (staff)",
        request=s.BackendSerializer,
        responses={201: s.BackendSerializer},
        tags=["staff"],
    ),
)
class BackendListView(StaffAPIView):
    def get(self, request: Request) -> Response:
        return Response(s.BackendSerializer(catalog_selectors.backend_list(), many=True).data)

    def post(self, request: Request) -> Response:
        serializer = s.BackendSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        backend = catalog_services.backend_create(actor=request.user, **serializer.validated_data)
        return Response(s.BackendSerializer(backend).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(summary="One backend (staff)", responses=s.BackendSerializer, tags=["staff"]),
    patch=extend_schema(
        summary="Change a backend (staff)",
        request=s.BackendSerializer,
        responses=s.BackendSerializer,
        tags=["staff"],
    ),
    delete=extend_schema(
        summary="Delete a backend without deployments (staff; 409 while in use)",
        responses={204: None},
        tags=["staff"],
    ),
)
class BackendDetailView(StaffAPIView):
    def get(self, request: Request, backend_id: int) -> Response:
        return Response(s.BackendSerializer(_catalog_get(Backend, backend_id)).data)

    def patch(self, request: Request, backend_id: int) -> Response:
        backend = _catalog_get(Backend, backend_id)
        serializer = s.BackendSerializer(backend, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        backend = catalog_services.backend_update(
            backend=backend, actor=request.user, **serializer.validated_data
        )
        return Response(s.BackendSerializer(backend).data)

    def delete(self, request: Request, backend_id: int) -> Response:
        catalog_services.backend_delete(
            backend=_catalog_get(Backend, backend_id), actor=request.user
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    get=extend_schema(
        summary="Models (staff)", responses=s.ModelSerializer(many=True), tags=["staff"]
    ),
    post=extend_schema(
        summary="Add a model (staff)",
        request=s.ModelSerializer,
        responses={201: s.ModelSerializer},
        tags=["staff"],
    ),
)
class ModelListView(StaffAPIView):
    def get(self, request: Request) -> Response:
        return Response(s.ModelSerializer(catalog_selectors.model_list(), many=True).data)

    def post(self, request: Request) -> Response:
        serializer = s.ModelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        model = catalog_services.model_create(actor=request.user, **serializer.validated_data)
        return Response(s.ModelSerializer(model).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(summary="One model (staff)", responses=s.ModelSerializer, tags=["staff"]),
    patch=extend_schema(
        summary="Change a model: aliases, display name, enabled, fallbacks (staff)",
        request=s.ModelSerializer,
        responses=s.ModelSerializer,
        tags=["staff"],
    ),
)
class ModelDetailView(StaffAPIView):
    def get(self, request: Request, model_id: int) -> Response:
        return Response(s.ModelSerializer(_catalog_get(Model, model_id)).data)

    def patch(self, request: Request, model_id: int) -> Response:
        model = _catalog_get(Model, model_id)
        serializer = s.ModelSerializer(model, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        model = catalog_services.model_update(
            model=model, actor=request.user, **serializer.validated_data
        )
        return Response(s.ModelSerializer(model).data)


MODEL_FILTER = OpenApiParameter("model", OpenApiTypes.STR, required=False, description="Model name")


def _model_filter(request: Request) -> str | None:
    name = request.query_params.get("model") or None
    if name is not None and (len(name) > 128 or "\x00" in name):
        raise exceptions.ValidationError({"model": ["not a model name"]})
    return name


@extend_schema_view(
    get=extend_schema(
        summary="Deployments (staff)",
        parameters=[MODEL_FILTER],
        responses=s.DeploymentSerializer(many=True),
        tags=["staff"],
    ),
    post=extend_schema(
        summary="Add a deployment: a model served by a backend (staff)",
        request=s.DeploymentSerializer,
        responses={201: s.DeploymentSerializer},
        tags=["staff"],
    ),
)
class DeploymentListView(StaffAPIView):
    def get(self, request: Request) -> Response:
        deployments = catalog_selectors.deployment_list(model_name=_model_filter(request))
        return Response(s.DeploymentSerializer(deployments, many=True).data)

    def post(self, request: Request) -> Response:
        serializer = s.DeploymentSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        deployment = catalog_services.deployment_create(
            actor=request.user, **serializer.validated_data
        )
        return Response(s.DeploymentSerializer(deployment).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(
        summary="One deployment (staff)", responses=s.DeploymentSerializer, tags=["staff"]
    ),
    patch=extend_schema(
        summary="Change a deployment (staff)",
        request=s.DeploymentSerializer,
        responses=s.DeploymentSerializer,
        tags=["staff"],
    ),
    delete=extend_schema(
        summary="Remove a deployment (staff)", responses={204: None}, tags=["staff"]
    ),
)
class DeploymentDetailView(StaffAPIView):
    def _get(self, deployment_id: int) -> Deployment:
        return _object_or_404(
            Deployment.objects.select_related("model", "backend").filter(id=deployment_id).first()
        )

    def get(self, request: Request, deployment_id: int) -> Response:
        return Response(s.DeploymentSerializer(self._get(deployment_id)).data)

    def patch(self, request: Request, deployment_id: int) -> Response:
        deployment = self._get(deployment_id)
        serializer = s.DeploymentSerializer(deployment, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        deployment = catalog_services.deployment_update(
            deployment=deployment, actor=request.user, **serializer.validated_data
        )
        return Response(s.DeploymentSerializer(deployment).data)

    def delete(self, request: Request, deployment_id: int) -> Response:
        catalog_services.deployment_delete(deployment=self._get(deployment_id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    get=extend_schema(
        summary="Price versions (staff)",
        parameters=[MODEL_FILTER],
        responses=s.PriceSerializer(many=True),
        tags=["staff"],
    ),
    post=extend_schema(
        summary="Add a price version from effective_from on (staff; prices are append-only)",
        request=s.PriceSerializer,
        responses={201: s.PriceSerializer},
        tags=["staff"],
    ),
)
class PriceListView(StaffAPIView):
    def get(self, request: Request) -> Response:
        prices = catalog_selectors.price_list(model_name=_model_filter(request))
        return Response(s.PriceSerializer(prices, many=True).data)

    def post(self, request: Request) -> Response:
        serializer = s.PriceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            price = catalog_services.price_create(actor=request.user, **serializer.validated_data)
        except PriceRuleInvalid as exc:
            raise s.price_rule_error(exc) from None
        return Response(s.PriceSerializer(price).data, status=status.HTTP_201_CREATED)


@extend_schema(summary="One price version (staff)", responses=s.PriceSerializer, tags=["staff"])
class PriceDetailView(StaffAPIView):
    def get(self, request: Request, price_id: int) -> Response:
        price = _object_or_404(Price.objects.select_related("model").filter(id=price_id).first())
        return Response(s.PriceSerializer(price).data)


# Staff: rate cards -------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        summary="A tenant's rate card versions (staff)",
        responses=s.RateCardSerializer(many=True),
        tags=["staff"],
    ),
    post=extend_schema(
        summary="Add a rate card version from effective_from on: a markup (negative: a "
        "discount) and per-model override rules (staff; append-only)",
        request=s.RateCardSerializer,
        responses={201: s.RateCardSerializer},
        tags=["staff"],
    ),
)
class RateCardListView(StaffAPIView):
    def get(self, request: Request, tenant_id: int) -> Response:
        tenant = _catalog_get(Tenant, tenant_id)
        cards = billing_selectors.rate_card_list(tenant=tenant)
        return Response(s.RateCardSerializer(cards, many=True).data)

    def post(self, request: Request, tenant_id: int) -> Response:
        tenant = _catalog_get(Tenant, tenant_id)
        serializer = s.RateCardSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        try:
            card = billing_services.rate_card_create(
                tenant=tenant, models=data.pop("prices", {}), actor=request.user, **data
            )
        except PriceRuleInvalid as exc:
            raise s.price_rule_error(exc) from None
        card = billing_selectors.rate_card_get(tenant=tenant, rate_card_id=card.id)
        return Response(s.RateCardSerializer(card).data, status=status.HTTP_201_CREATED)


@extend_schema(
    summary="One rate card version of a tenant (staff)",
    responses=s.RateCardSerializer,
    tags=["staff"],
)
class RateCardDetailView(StaffAPIView):
    def get(self, request: Request, tenant_id: int, rate_card_id: int) -> Response:
        tenant = _catalog_get(Tenant, tenant_id)
        card = billing_selectors.rate_card_get(tenant=tenant, rate_card_id=rate_card_id)
        return Response(s.RateCardSerializer(_object_or_404(card)).data)


@extend_schema(
    summary="The metering pipeline: usage stream, pending entries, lag, last ingest (staff)",
    responses=s.PipelineSerializer,
    tags=["staff"],
)
class PipelineView(StaffAPIView):
    def get(self, request: Request) -> Response:
        state: dict[str, Any] = ledger_pipeline_health()
        body = {
            "stream_length": state["length"],
            "pending": state["pending"],
            "lag_seconds": state["lag_seconds"],
            "dead_letters": state["dead_letters"],
            "last_ingest_at": ledger_last_ingest(),
            "beat_last_tick_at": state["beat_last_tick"],
            "ingest": state["ingest"],
            "beat": state["beat"],
        }
        return Response(s.PipelineSerializer(body).data)


class SwaggerDocsView(SpectacularSwaggerSplitView):
    """/api/docs/: Swagger UI from the sidecar package (no CDN), CSP-clean."""

    template_name = "api/swagger_ui.html"
