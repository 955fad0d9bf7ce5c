import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from convergent.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IndexKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INDEX_KIND_UNSPECIFIED: _ClassVar[IndexKind]
    INDEX_KIND_EXACT: _ClassVar[IndexKind]
    INDEX_KIND_HNSW: _ClassVar[IndexKind]
INDEX_KIND_UNSPECIFIED: IndexKind
INDEX_KIND_EXACT: IndexKind
INDEX_KIND_HNSW: IndexKind

class Gallery(_message.Message):
    __slots__ = ("name", "model", "model_version", "index", "size", "created_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    model_version: int
    index: IndexKind
    size: int
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ..., index: _Optional[_Union[IndexKind, str]] = ..., size: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("gallery", "model", "model_version", "index", "ids", "vectors", "last", "ends_with_last")
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    ENDS_WITH_LAST_FIELD_NUMBER: _ClassVar[int]
    gallery: str
    model: str
    model_version: int
    index: IndexKind
    ids: _containers.RepeatedScalarFieldContainer[str]
    vectors: _types_pb2.Matrix
    last: bool
    ends_with_last: bool
    def __init__(self, gallery: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ..., index: _Optional[_Union[IndexKind, str]] = ..., ids: _Optional[_Iterable[str]] = ..., vectors: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., last: _Optional[bool] = ..., ends_with_last: _Optional[bool] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("enrolled", "size")
    ENROLLED_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    enrolled: int
    size: int
    def __init__(self, enrolled: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("gallery", "ids")
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    gallery: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, gallery: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveResponse(_message.Message):
    __slots__ = ("removed", "size")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    removed: int
    size: int
    def __init__(self, removed: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class GetGalleryRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListGalleriesRequest(_message.Message):
    __slots__ = ("page",)
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _types_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_types_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListGalleriesResponse(_message.Message):
    __slots__ = ("galleries", "next_page_token")
    GALLERIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    galleries: _containers.RepeatedCompositeFieldContainer[Gallery]
    next_page_token: str
    def __init__(self, galleries: _Optional[_Iterable[_Union[Gallery, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteGalleryRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteGalleryResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IdentifyRequest(_message.Message):
    __slots__ = ("gallery", "model", "model_version", "vectors", "k", "fit_id", "scoring", "direction", "fpir", "non_mated")
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FIT_ID_FIELD_NUMBER: _ClassVar[int]
    SCORING_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    FPIR_FIELD_NUMBER: _ClassVar[int]
    NON_MATED_FIELD_NUMBER: _ClassVar[int]
    gallery: str
    model: str
    model_version: int
    vectors: _types_pb2.Matrix
    k: int
    fit_id: str
    scoring: str
    direction: str
    fpir: float
    non_mated: _types_pb2.Matrix
    def __init__(self, gallery: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ..., vectors: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., k: _Optional[int] = ..., fit_id: _Optional[str] = ..., scoring: _Optional[str] = ..., direction: _Optional[str] = ..., fpir: _Optional[float] = ..., non_mated: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ...) -> None: ...

class OpenSetDecision(_message.Message):
    __slots__ = ("accepted", "threshold", "fpir_requested", "fpir_calibration", "n_searches", "calibration", "calibration_searches", "n_excluded")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FPIR_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    FPIR_CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    N_SEARCHES_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_SEARCHES_FIELD_NUMBER: _ClassVar[int]
    N_EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    accepted: _containers.RepeatedScalarFieldContainer[bool]
    threshold: float
    fpir_requested: float
    fpir_calibration: float
    n_searches: int
    calibration: str
    calibration_searches: str
    n_excluded: int
    def __init__(self, accepted: _Optional[_Iterable[bool]] = ..., threshold: _Optional[float] = ..., fpir_requested: _Optional[float] = ..., fpir_calibration: _Optional[float] = ..., n_searches: _Optional[int] = ..., calibration: _Optional[str] = ..., calibration_searches: _Optional[str] = ..., n_excluded: _Optional[int] = ...) -> None: ...

class IdentifyResponse(_message.Message):
    __slots__ = ("ids", "scores", "route", "scoring", "direction", "direction_reason", "open_set")
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    SCORING_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_REASON_FIELD_NUMBER: _ClassVar[int]
    OPEN_SET_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    scores: _types_pb2.Matrix
    route: str
    scoring: str
    direction: str
    direction_reason: str
    open_set: OpenSetDecision
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., scores: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., route: _Optional[str] = ..., scoring: _Optional[str] = ..., direction: _Optional[str] = ..., direction_reason: _Optional[str] = ..., open_set: _Optional[_Union[OpenSetDecision, _Mapping]] = ...) -> None: ...

class PartyProbes(_message.Message):
    __slots__ = ("model", "model_version", "vectors")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: int
    vectors: _types_pb2.Matrix
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[int] = ..., vectors: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ...) -> None: ...

class IdentifyFusedRequest(_message.Message):
    __slots__ = ("gallery", "parties", "k", "scoring")
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SCORING_FIELD_NUMBER: _ClassVar[int]
    gallery: str
    parties: _containers.RepeatedCompositeFieldContainer[PartyProbes]
    k: int
    scoring: str
    def __init__(self, gallery: _Optional[str] = ..., parties: _Optional[_Iterable[_Union[PartyProbes, _Mapping]]] = ..., k: _Optional[int] = ..., scoring: _Optional[str] = ...) -> None: ...

class PartyContribution(_message.Message):
    __slots__ = ("model", "route", "weight", "weight_source")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    model: str
    route: str
    weight: float
    weight_source: str
    def __init__(self, model: _Optional[str] = ..., route: _Optional[str] = ..., weight: _Optional[float] = ..., weight_source: _Optional[str] = ...) -> None: ...

class IdentifyFusedResponse(_message.Message):
    __slots__ = ("ids", "scores", "parties", "scoring")
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    SCORING_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    scores: _types_pb2.Matrix
    parties: _containers.RepeatedCompositeFieldContainer[PartyContribution]
    scoring: str
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., scores: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., parties: _Optional[_Iterable[_Union[PartyContribution, _Mapping]]] = ..., scoring: _Optional[str] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("a_model", "a", "b_model", "b", "far", "direction")
    A_MODEL_FIELD_NUMBER: _ClassVar[int]
    A_FIELD_NUMBER: _ClassVar[int]
    B_MODEL_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    FAR_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    a_model: str
    a: _types_pb2.Matrix
    b_model: str
    b: _types_pb2.Matrix
    far: float
    direction: str
    def __init__(self, a_model: _Optional[str] = ..., a: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., b_model: _Optional[str] = ..., b: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., far: _Optional[float] = ..., direction: _Optional[str] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("scores", "accept", "threshold", "far_requested", "far_calibration", "tar_calibration", "calibration", "n_genuine", "n_impostor", "route", "calibration_pairs", "n_excluded", "direction", "direction_reason")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FAR_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    FAR_CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    TAR_CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    N_GENUINE_FIELD_NUMBER: _ClassVar[int]
    N_IMPOSTOR_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_PAIRS_FIELD_NUMBER: _ClassVar[int]
    N_EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_REASON_FIELD_NUMBER: _ClassVar[int]
    scores: _types_pb2.Matrix
    accept: _containers.RepeatedScalarFieldContainer[bool]
    threshold: float
    far_requested: float
    far_calibration: float
    tar_calibration: float
    calibration: str
    n_genuine: int
    n_impostor: int
    route: str
    calibration_pairs: str
    n_excluded: int
    direction: str
    direction_reason: str
    def __init__(self, scores: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., accept: _Optional[_Iterable[bool]] = ..., threshold: _Optional[float] = ..., far_requested: _Optional[float] = ..., far_calibration: _Optional[float] = ..., tar_calibration: _Optional[float] = ..., calibration: _Optional[str] = ..., n_genuine: _Optional[int] = ..., n_impostor: _Optional[int] = ..., route: _Optional[str] = ..., calibration_pairs: _Optional[str] = ..., n_excluded: _Optional[int] = ..., direction: _Optional[str] = ..., direction_reason: _Optional[str] = ...) -> None: ...

class VerificationReportRequest(_message.Message):
    __slots__ = ("a_model", "b_model", "direction")
    A_MODEL_FIELD_NUMBER: _ClassVar[int]
    B_MODEL_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    a_model: str
    b_model: str
    direction: str
    def __init__(self, a_model: _Optional[str] = ..., b_model: _Optional[str] = ..., direction: _Optional[str] = ...) -> None: ...

class OperatingPoint(_message.Message):
    __slots__ = ("requested_far", "threshold", "far", "tar")
    REQUESTED_FAR_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FAR_FIELD_NUMBER: _ClassVar[int]
    TAR_FIELD_NUMBER: _ClassVar[int]
    requested_far: float
    threshold: float
    far: float
    tar: float
    def __init__(self, requested_far: _Optional[float] = ..., threshold: _Optional[float] = ..., far: _Optional[float] = ..., tar: _Optional[float] = ...) -> None: ...

class VerificationReportResponse(_message.Message):
    __slots__ = ("calibration", "calibration_pairs", "route", "points", "eer", "eer_threshold", "n_genuine", "n_impostor", "n_excluded", "direction", "direction_reason")
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_PAIRS_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    EER_FIELD_NUMBER: _ClassVar[int]
    EER_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    N_GENUINE_FIELD_NUMBER: _ClassVar[int]
    N_IMPOSTOR_FIELD_NUMBER: _ClassVar[int]
    N_EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_REASON_FIELD_NUMBER: _ClassVar[int]
    calibration: str
    calibration_pairs: str
    route: str
    points: _containers.RepeatedCompositeFieldContainer[OperatingPoint]
    eer: float
    eer_threshold: float
    n_genuine: int
    n_impostor: int
    n_excluded: int
    direction: str
    direction_reason: str
    def __init__(self, calibration: _Optional[str] = ..., calibration_pairs: _Optional[str] = ..., route: _Optional[str] = ..., points: _Optional[_Iterable[_Union[OperatingPoint, _Mapping]]] = ..., eer: _Optional[float] = ..., eer_threshold: _Optional[float] = ..., n_genuine: _Optional[int] = ..., n_impostor: _Optional[int] = ..., n_excluded: _Optional[int] = ..., direction: _Optional[str] = ..., direction_reason: _Optional[str] = ...) -> None: ...

class CalibrateRequest(_message.Message):
    __slots__ = ("a_model", "a", "b_model", "b", "same")
    A_MODEL_FIELD_NUMBER: _ClassVar[int]
    A_FIELD_NUMBER: _ClassVar[int]
    B_MODEL_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    SAME_FIELD_NUMBER: _ClassVar[int]
    a_model: str
    a: _types_pb2.Matrix
    b_model: str
    b: _types_pb2.Matrix
    same: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, a_model: _Optional[str] = ..., a: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., b_model: _Optional[str] = ..., b: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., same: _Optional[_Iterable[bool]] = ...) -> None: ...

class CalibrateResponse(_message.Message):
    __slots__ = ("n_genuine", "n_impostor", "route")
    N_GENUINE_FIELD_NUMBER: _ClassVar[int]
    N_IMPOSTOR_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    n_genuine: int
    n_impostor: int
    route: str
    def __init__(self, n_genuine: _Optional[int] = ..., n_impostor: _Optional[int] = ..., route: _Optional[str] = ...) -> None: ...
