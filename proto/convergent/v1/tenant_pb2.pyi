import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListAuditLogRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("at", "key_id", "method", "target", "outcome", "request_id")
    AT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    key_id: str
    method: str
    target: str
    outcome: str
    request_id: str
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key_id: _Optional[str] = ..., method: _Optional[str] = ..., target: _Optional[str] = ..., outcome: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListAuditLogResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...

class EraseRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class EraseResponse(_message.Message):
    __slots__ = ("anchors_deleted", "gallery_items_deleted", "anchor_sets_changed", "galleries_changed", "stale_fits")
    ANCHORS_DELETED_FIELD_NUMBER: _ClassVar[int]
    GALLERY_ITEMS_DELETED_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_SETS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    GALLERIES_CHANGED_FIELD_NUMBER: _ClassVar[int]
    STALE_FITS_FIELD_NUMBER: _ClassVar[int]
    anchors_deleted: int
    gallery_items_deleted: int
    anchor_sets_changed: _containers.RepeatedScalarFieldContainer[str]
    galleries_changed: _containers.RepeatedScalarFieldContainer[str]
    stale_fits: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, anchors_deleted: _Optional[int] = ..., gallery_items_deleted: _Optional[int] = ..., anchor_sets_changed: _Optional[_Iterable[str]] = ..., galleries_changed: _Optional[_Iterable[str]] = ..., stale_fits: _Optional[_Iterable[str]] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Usage(_message.Message):
    __slots__ = ("tenant", "stored_vectors", "max_vectors", "role", "key_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    STORED_VECTORS_FIELD_NUMBER: _ClassVar[int]
    MAX_VECTORS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    stored_vectors: int
    max_vectors: int
    role: str
    key_id: str
    def __init__(self, tenant: _Optional[str] = ..., stored_vectors: _Optional[int] = ..., max_vectors: _Optional[int] = ..., role: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...
