import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from convergent.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UploadAnchorsRequest(_message.Message):
    __slots__ = ("model", "model_version", "anchor_set", "overwrite", "ids", "vectors", "last", "ends_with_last")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_SET_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    ENDS_WITH_LAST_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: int
    anchor_set: str
    overwrite: bool
    ids: _containers.RepeatedScalarFieldContainer[str]
    vectors: _types_pb2.Matrix
    last: bool
    ends_with_last: bool
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[int] = ..., anchor_set: _Optional[str] = ..., overwrite: _Optional[bool] = ..., ids: _Optional[_Iterable[str]] = ..., vectors: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., last: _Optional[bool] = ..., ends_with_last: _Optional[bool] = ...) -> None: ...

class UploadAnchorsResponse(_message.Message):
    __slots__ = ("received", "inserted", "unchanged", "overwritten", "total", "data_version")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    OVERWRITTEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    received: int
    inserted: int
    unchanged: int
    overwritten: int
    total: int
    data_version: int
    def __init__(self, received: _Optional[int] = ..., inserted: _Optional[int] = ..., unchanged: _Optional[int] = ..., overwritten: _Optional[int] = ..., total: _Optional[int] = ..., data_version: _Optional[int] = ...) -> None: ...

class CountAnchorsRequest(_message.Message):
    __slots__ = ("model", "anchor_set")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_SET_FIELD_NUMBER: _ClassVar[int]
    model: str
    anchor_set: str
    def __init__(self, model: _Optional[str] = ..., anchor_set: _Optional[str] = ...) -> None: ...

class CountAnchorsResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class AnchorSetModel(_message.Message):
    __slots__ = ("model", "count")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    model: str
    count: int
    def __init__(self, model: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class AnchorSet(_message.Message):
    __slots__ = ("name", "models", "data_version", "updated_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    models: _containers.RepeatedCompositeFieldContainer[AnchorSetModel]
    data_version: int
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., models: _Optional[_Iterable[_Union[AnchorSetModel, _Mapping]]] = ..., data_version: _Optional[int] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListAnchorSetsRequest(_message.Message):
    __slots__ = ("page", "model")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    page: _types_pb2.PageRequest
    model: str
    def __init__(self, page: _Optional[_Union[_types_pb2.PageRequest, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class ListAnchorSetsResponse(_message.Message):
    __slots__ = ("anchor_sets", "next_page_token")
    ANCHOR_SETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    anchor_sets: _containers.RepeatedCompositeFieldContainer[AnchorSet]
    next_page_token: str
    def __init__(self, anchor_sets: _Optional[_Iterable[_Union[AnchorSet, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteAnchorsRequest(_message.Message):
    __slots__ = ("model", "anchor_set", "ids")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_SET_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    anchor_set: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., anchor_set: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteAnchorsResponse(_message.Message):
    __slots__ = ("deleted", "data_version")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    data_version: int
    def __init__(self, deleted: _Optional[int] = ..., data_version: _Optional[int] = ...) -> None: ...
