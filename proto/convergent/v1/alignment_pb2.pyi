import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from convergent.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetAtlasRequest(_message.Message):
    __slots__ = ("anchor_set",)
    ANCHOR_SET_FIELD_NUMBER: _ClassVar[int]
    anchor_set: str
    def __init__(self, anchor_set: _Optional[str] = ...) -> None: ...

class AtlasEntry(_message.Message):
    __slots__ = ("source", "target", "n_pairs", "fit_id", "method", "stale", "top1", "cka", "mutual_knn", "condition_number", "n_heldout")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    N_PAIRS_FIELD_NUMBER: _ClassVar[int]
    FIT_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    TOP1_FIELD_NUMBER: _ClassVar[int]
    CKA_FIELD_NUMBER: _ClassVar[int]
    MUTUAL_KNN_FIELD_NUMBER: _ClassVar[int]
    CONDITION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    N_HELDOUT_FIELD_NUMBER: _ClassVar[int]
    source: str
    target: str
    n_pairs: int
    fit_id: str
    method: str
    stale: bool
    top1: float
    cka: float
    mutual_knn: float
    condition_number: float
    n_heldout: int
    def __init__(self, source: _Optional[str] = ..., target: _Optional[str] = ..., n_pairs: _Optional[int] = ..., fit_id: _Optional[str] = ..., method: _Optional[str] = ..., stale: _Optional[bool] = ..., top1: _Optional[float] = ..., cka: _Optional[float] = ..., mutual_knn: _Optional[float] = ..., condition_number: _Optional[float] = ..., n_heldout: _Optional[int] = ...) -> None: ...

class AtlasCluster(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[str]] = ...) -> None: ...

class GetAtlasResponse(_message.Message):
    __slots__ = ("anchor_set", "data_version", "models", "entries", "clusters", "cluster_distance")
    ANCHOR_SET_FIELD_NUMBER: _ClassVar[int]
    DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    anchor_set: str
    data_version: int
    models: _containers.RepeatedScalarFieldContainer[str]
    entries: _containers.RepeatedCompositeFieldContainer[AtlasEntry]
    clusters: _containers.RepeatedCompositeFieldContainer[AtlasCluster]
    cluster_distance: float
    def __init__(self, anchor_set: _Optional[str] = ..., data_version: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., entries: _Optional[_Iterable[_Union[AtlasEntry, _Mapping]]] = ..., clusters: _Optional[_Iterable[_Union[AtlasCluster, _Mapping]]] = ..., cluster_distance: _Optional[float] = ...) -> None: ...

class FitCooperativeRequest(_message.Message):
    __slots__ = ("space", "anchor_set", "teachers", "params")
    SPACE_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_SET_FIELD_NUMBER: _ClassVar[int]
    TEACHERS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    space: str
    anchor_set: str
    teachers: _containers.RepeatedScalarFieldContainer[str]
    params: _struct_pb2.Struct
    def __init__(self, space: _Optional[str] = ..., anchor_set: _Optional[str] = ..., teachers: _Optional[_Iterable[str]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class PartyVectors(_message.Message):
    __slots__ = ("model", "model_version", "vectors")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: int
    vectors: _types_pb2.Matrix
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[int] = ..., vectors: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("head", "parties")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    head: str
    parties: _containers.RepeatedCompositeFieldContainer[PartyVectors]
    def __init__(self, head: _Optional[str] = ..., parties: _Optional[_Iterable[_Union[PartyVectors, _Mapping]]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("probabilities", "parties", "rule")
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    probabilities: _types_pb2.Matrix
    parties: _containers.RepeatedScalarFieldContainer[str]
    rule: str
    def __init__(self, probabilities: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., parties: _Optional[_Iterable[str]] = ..., rule: _Optional[str] = ...) -> None: ...

class FitAlignmentRequest(_message.Message):
    __slots__ = ("source", "target", "anchor_set", "method", "params")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_SET_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    source: str
    target: str
    anchor_set: str
    method: str
    params: _struct_pb2.Struct
    def __init__(self, source: _Optional[str] = ..., target: _Optional[str] = ..., anchor_set: _Optional[str] = ..., method: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Fit(_message.Message):
    __slots__ = ("id", "method", "requested_method", "source", "source_version", "target", "target_version", "anchor_set", "data_version", "metrics", "warnings", "converged", "stale", "created_at", "params", "models", "auto_winner")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_METHOD_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_SET_FIELD_NUMBER: _ClassVar[int]
    DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    CONVERGED_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    AUTO_WINNER_FIELD_NUMBER: _ClassVar[int]
    id: str
    method: str
    requested_method: str
    source: str
    source_version: int
    target: str
    target_version: int
    anchor_set: str
    data_version: int
    metrics: _containers.ScalarMap[str, float]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    converged: bool
    stale: bool
    created_at: _timestamp_pb2.Timestamp
    params: _struct_pb2.Struct
    models: _containers.RepeatedScalarFieldContainer[str]
    auto_winner: str
    def __init__(self, id: _Optional[str] = ..., method: _Optional[str] = ..., requested_method: _Optional[str] = ..., source: _Optional[str] = ..., source_version: _Optional[int] = ..., target: _Optional[str] = ..., target_version: _Optional[int] = ..., anchor_set: _Optional[str] = ..., data_version: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., warnings: _Optional[_Iterable[str]] = ..., converged: _Optional[bool] = ..., stale: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., models: _Optional[_Iterable[str]] = ..., auto_winner: _Optional[str] = ...) -> None: ...

class FitSharedSpaceRequest(_message.Message):
    __slots__ = ("models", "anchor_set", "params")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_SET_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    anchor_set: str
    params: _struct_pb2.Struct
    def __init__(self, models: _Optional[_Iterable[str]] = ..., anchor_set: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GetFitRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListFitsRequest(_message.Message):
    __slots__ = ("page", "source", "target")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    page: _types_pb2.PageRequest
    source: str
    target: str
    def __init__(self, page: _Optional[_Union[_types_pb2.PageRequest, _Mapping]] = ..., source: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class ListFitsResponse(_message.Message):
    __slots__ = ("fits", "next_page_token")
    FITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    fits: _containers.RepeatedCompositeFieldContainer[Fit]
    next_page_token: str
    def __init__(self, fits: _Optional[_Iterable[_Union[Fit, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteFitRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteFitResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TransformRequest(_message.Message):
    __slots__ = ("source", "source_version", "target", "fit_id", "vectors")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FIT_ID_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    source: str
    source_version: int
    target: str
    fit_id: str
    vectors: _types_pb2.Matrix
    def __init__(self, source: _Optional[str] = ..., source_version: _Optional[int] = ..., target: _Optional[str] = ..., fit_id: _Optional[str] = ..., vectors: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ...) -> None: ...

class TransformResponse(_message.Message):
    __slots__ = ("vectors", "fit_id", "target", "target_version")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    FIT_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    vectors: _types_pb2.Matrix
    fit_id: str
    target: str
    target_version: int
    def __init__(self, vectors: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., fit_id: _Optional[str] = ..., target: _Optional[str] = ..., target_version: _Optional[int] = ...) -> None: ...

class ExportFitRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ExportFitResponse(_message.Message):
    __slots__ = ("fit", "arrays")
    class ArraysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _types_pb2.Matrix
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ...) -> None: ...
    FIT_FIELD_NUMBER: _ClassVar[int]
    ARRAYS_FIELD_NUMBER: _ClassVar[int]
    fit: Fit
    arrays: _containers.MessageMap[str, _types_pb2.Matrix]
    def __init__(self, fit: _Optional[_Union[Fit, _Mapping]] = ..., arrays: _Optional[_Mapping[str, _types_pb2.Matrix]] = ...) -> None: ...
