from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListMethodsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FitMethod(_message.Message):
    __slots__ = ("name", "rpc", "summary", "params_schema", "candidates")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RPC_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    name: str
    rpc: str
    summary: str
    params_schema: str
    candidates: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., rpc: _Optional[str] = ..., summary: _Optional[str] = ..., params_schema: _Optional[str] = ..., candidates: _Optional[_Iterable[str]] = ...) -> None: ...

class ListMethodsResponse(_message.Message):
    __slots__ = ("methods",)
    METHODS_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedCompositeFieldContainer[FitMethod]
    def __init__(self, methods: _Optional[_Iterable[_Union[FitMethod, _Mapping]]] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "api", "max_receive_message_bytes", "max_send_message_bytes", "max_vectors_per_message", "max_dim", "max_name_length", "max_page_size")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    API_FIELD_NUMBER: _ClassVar[int]
    MAX_RECEIVE_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEND_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_VECTORS_PER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_DIM_FIELD_NUMBER: _ClassVar[int]
    MAX_NAME_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    version: str
    api: str
    max_receive_message_bytes: int
    max_send_message_bytes: int
    max_vectors_per_message: int
    max_dim: int
    max_name_length: int
    max_page_size: int
    def __init__(self, version: _Optional[str] = ..., api: _Optional[str] = ..., max_receive_message_bytes: _Optional[int] = ..., max_send_message_bytes: _Optional[int] = ..., max_vectors_per_message: _Optional[int] = ..., max_dim: _Optional[int] = ..., max_name_length: _Optional[int] = ..., max_page_size: _Optional[int] = ...) -> None: ...
