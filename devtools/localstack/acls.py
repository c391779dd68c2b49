"""Kafka ACLs from Python: CreateAcls v1 (aiokafka has no admin call for it) and DescribeAcls,
sent by an aiokafka admin client. Used by the secured local broker (secure.py) and its tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import DescribeAclsRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int8, Int16, Int32, Schema, String

RESOURCE_TYPES = {"ANY": 1, "TOPIC": 2, "GROUP": 3, "CLUSTER": 4, "TRANSACTIONAL_ID": 5}
PATTERN_TYPES = {"ANY": 1, "LITERAL": 3, "PREFIXED": 4}
OPERATIONS = {
    "ANY": 1, "ALL": 2, "READ": 3, "WRITE": 4, "CREATE": 5, "DELETE": 6, "ALTER": 7,
    "DESCRIBE": 8, "CLUSTER_ACTION": 9, "DESCRIBE_CONFIGS": 10, "ALTER_CONFIGS": 11,
    "IDEMPOTENT_WRITE": 12,
}  # fmt: skip
ANY_PERMISSION, ALLOW = 1, 3
_NAMES = {
    "resource": {v: k for k, v in RESOURCE_TYPES.items()},
    "pattern": {v: k for k, v in PATTERN_TYPES.items()},
    "operation": {v: k for k, v in OPERATIONS.items()},
}


@dataclass(frozen=True, order=True)
class AclBinding:
    """One allow rule: `principal` may `operation` on the resource (from any host)."""

    resource_type: str  # TOPIC, GROUP, …
    name: str
    pattern: str  # LITERAL or PREFIXED
    principal: str  # User:<name>
    operation: str  # READ, WRITE, …

    @classmethod
    def topic(
        cls, principal: str, name: str, operation: str, *, prefixed: bool = False
    ) -> AclBinding:
        return cls("TOPIC", name, "PREFIXED" if prefixed else "LITERAL", principal, operation)

    @classmethod
    def group(cls, principal: str, prefix: str, operation: str) -> AclBinding:
        return cls("GROUP", prefix, "PREFIXED", principal, operation)


class CreateAclsResponse_v1(Response):  # type: ignore[misc]
    API_KEY = 30
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", Array(("error_code", Int16), ("error_message", String("utf-8")))),
    )


class CreateAclsRequest_v1(RequestStruct):  # type: ignore[misc]
    API_KEY = 30
    API_VERSION = 1
    RESPONSE_TYPE = CreateAclsResponse_v1
    SCHEMA = Schema(
        (
            "creations",
            Array(
                ("resource_type", Int8),
                ("resource_name", String("utf-8")),
                ("resource_pattern_type", Int8),
                ("principal", String("utf-8")),
                ("host", String("utf-8")),
                ("operation", Int8),
                ("permission_type", Int8),
            ),
        ),
    )


class CreateAclsRequest(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 30

    def __init__(self, bindings: Sequence[AclBinding]) -> None:
        self._bindings = list(bindings)

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(
            [
                (
                    RESOURCE_TYPES[b.resource_type],
                    b.name,
                    PATTERN_TYPES[b.pattern],
                    b.principal,
                    "*",
                    OPERATIONS[b.operation],
                    ALLOW,
                )
                for b in self._bindings
            ]
        )


async def create_acls(admin_kwargs: Mapping[str, Any], bindings: Sequence[AclBinding]) -> None:
    """Add `bindings` (adding an existing one again changes nothing); raises on any error."""
    admin = AIOKafkaAdminClient(
        client_id="itsm-localstack-acls", request_timeout_ms=30_000, **admin_kwargs
    )
    await admin.start()
    try:
        response: Any = await admin._send_request(CreateAclsRequest(bindings))
    finally:
        await admin.close()
    failed = [
        f"{binding}: {code} {message}"
        for binding, (code, message) in zip(bindings, response.results, strict=True)
        if code
    ]
    if failed:
        raise RuntimeError("CreateAcls failed: " + "; ".join(failed))


async def describe_principal_acls(
    admin_kwargs: Mapping[str, Any], principal: str
) -> list[AclBinding]:
    """Every allow rule the broker holds for `principal`, sorted."""
    admin = AIOKafkaAdminClient(
        client_id="itsm-localstack-acls", request_timeout_ms=30_000, **admin_kwargs
    )
    await admin.start()
    try:
        request = DescribeAclsRequest(
            RESOURCE_TYPES["ANY"], None, PATTERN_TYPES["ANY"], principal, None,  # type: ignore[arg-type]
            OPERATIONS["ANY"], ANY_PERMISSION,
        )  # fmt: skip
        response: Any = await admin._send_request(request)
    finally:
        await admin.close()
    if response.error_code:
        raise RuntimeError(f"DescribeAcls failed: {response.error_code} {response.error_message}")
    found = []
    for resource_type, name, pattern, acls in response.resources:
        for acl_principal, _host, operation, permission in acls:
            if permission == ALLOW:
                found.append(
                    AclBinding(
                        _NAMES["resource"][resource_type],
                        name,
                        _NAMES["pattern"][pattern],
                        acl_principal,
                        _NAMES["operation"][operation],
                    )
                )
    return sorted(found)
