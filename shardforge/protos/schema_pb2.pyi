from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    INT64: _ClassVar[DType]
    FLOAT32: _ClassVar[DType]
    BYTES: _ClassVar[DType]

class Combiner(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMBINER_UNSPECIFIED: _ClassVar[Combiner]
    MEAN: _ClassVar[Combiner]
    SUM: _ClassVar[Combiner]
    SQRTN: _ClassVar[Combiner]
DTYPE_UNSPECIFIED: DType
INT64: DType
FLOAT32: DType
BYTES: DType
COMBINER_UNSPECIFIED: Combiner
MEAN: Combiner
SUM: Combiner
SQRTN: Combiner

class Values(_message.Message):
    __slots__ = ("int64_values", "float_values", "bytes_values")
    INT64_VALUES_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUES_FIELD_NUMBER: _ClassVar[int]
    BYTES_VALUES_FIELD_NUMBER: _ClassVar[int]
    int64_values: _containers.RepeatedScalarFieldContainer[int]
    float_values: _containers.RepeatedScalarFieldContainer[float]
    bytes_values: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, int64_values: _Optional[_Iterable[int]] = ..., float_values: _Optional[_Iterable[float]] = ..., bytes_values: _Optional[_Iterable[bytes]] = ...) -> None: ...

class InputFeature(_message.Message):
    __slots__ = ("name", "dtype", "shape", "multivalued", "required", "default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    MULTIVALUED_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    multivalued: bool
    required: bool
    default: Values
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., multivalued: _Optional[bool] = ..., required: _Optional[bool] = ..., default: _Optional[_Union[Values, _Mapping]] = ...) -> None: ...

class Feature(_message.Message):
    __slots__ = ("name", "dtype", "shape", "varlen", "default", "kind", "num_buckets", "column_type", "source", "is_label", "sequence", "max_length", "weight_feature")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Feature.Kind]
        NUMERIC: _ClassVar[Feature.Kind]
        CATEGORICAL: _ClassVar[Feature.Kind]
        WEIGHTS: _ClassVar[Feature.Kind]
    KIND_UNSPECIFIED: Feature.Kind
    NUMERIC: Feature.Kind
    CATEGORICAL: Feature.Kind
    WEIGHTS: Feature.Kind
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    VARLEN_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NUM_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    COLUMN_TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    IS_LABEL_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FEATURE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    varlen: bool
    default: Values
    kind: Feature.Kind
    num_buckets: int
    column_type: str
    source: str
    is_label: bool
    sequence: bool
    max_length: int
    weight_feature: str
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., varlen: _Optional[bool] = ..., default: _Optional[_Union[Values, _Mapping]] = ..., kind: _Optional[_Union[Feature.Kind, str]] = ..., num_buckets: _Optional[int] = ..., column_type: _Optional[str] = ..., source: _Optional[str] = ..., is_label: _Optional[bool] = ..., sequence: _Optional[bool] = ..., max_length: _Optional[int] = ..., weight_feature: _Optional[str] = ...) -> None: ...

class DenseColumn(_message.Message):
    __slots__ = ("name", "type", "feature", "dim", "combiner", "shared_group", "weight_feature", "max_norm", "width")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[DenseColumn.Type]
        NUMERIC: _ClassVar[DenseColumn.Type]
        EMBEDDING: _ClassVar[DenseColumn.Type]
        INDICATOR: _ClassVar[DenseColumn.Type]
    TYPE_UNSPECIFIED: DenseColumn.Type
    NUMERIC: DenseColumn.Type
    EMBEDDING: DenseColumn.Type
    INDICATOR: DenseColumn.Type
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    COMBINER_FIELD_NUMBER: _ClassVar[int]
    SHARED_GROUP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FEATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_NORM_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: DenseColumn.Type
    feature: str
    dim: int
    combiner: Combiner
    shared_group: str
    weight_feature: str
    max_norm: float
    width: int
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[DenseColumn.Type, str]] = ..., feature: _Optional[str] = ..., dim: _Optional[int] = ..., combiner: _Optional[_Union[Combiner, str]] = ..., shared_group: _Optional[str] = ..., weight_feature: _Optional[str] = ..., max_norm: _Optional[float] = ..., width: _Optional[int] = ...) -> None: ...

class ColumnState(_message.Message):
    __slots__ = ("column", "count", "missing", "mean", "std", "min", "max", "boundaries", "vocab", "int_vocab", "vocab_counts", "vocab_total_distinct", "vocab_approximate", "quantile_rank_error", "has_stats")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    BOUNDARIES_FIELD_NUMBER: _ClassVar[int]
    VOCAB_FIELD_NUMBER: _ClassVar[int]
    INT_VOCAB_FIELD_NUMBER: _ClassVar[int]
    VOCAB_COUNTS_FIELD_NUMBER: _ClassVar[int]
    VOCAB_TOTAL_DISTINCT_FIELD_NUMBER: _ClassVar[int]
    VOCAB_APPROXIMATE_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_RANK_ERROR_FIELD_NUMBER: _ClassVar[int]
    HAS_STATS_FIELD_NUMBER: _ClassVar[int]
    column: str
    count: int
    missing: int
    mean: float
    std: float
    min: float
    max: float
    boundaries: _containers.RepeatedScalarFieldContainer[float]
    vocab: _containers.RepeatedScalarFieldContainer[bytes]
    int_vocab: _containers.RepeatedScalarFieldContainer[int]
    vocab_counts: _containers.RepeatedScalarFieldContainer[int]
    vocab_total_distinct: int
    vocab_approximate: bool
    quantile_rank_error: float
    has_stats: bool
    def __init__(self, column: _Optional[str] = ..., count: _Optional[int] = ..., missing: _Optional[int] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., boundaries: _Optional[_Iterable[float]] = ..., vocab: _Optional[_Iterable[bytes]] = ..., int_vocab: _Optional[_Iterable[int]] = ..., vocab_counts: _Optional[_Iterable[int]] = ..., vocab_total_distinct: _Optional[int] = ..., vocab_approximate: _Optional[bool] = ..., quantile_rank_error: _Optional[float] = ..., has_stats: _Optional[bool] = ...) -> None: ...

class TransformState(_message.Message):
    __slots__ = ("columns",)
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[ColumnState]
    def __init__(self, columns: _Optional[_Iterable[_Union[ColumnState, _Mapping]]] = ...) -> None: ...

class Schema(_message.Message):
    __slots__ = ("version", "inputs", "features", "dense", "state", "labels")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    DENSE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    version: int
    inputs: _containers.RepeatedCompositeFieldContainer[InputFeature]
    features: _containers.RepeatedCompositeFieldContainer[Feature]
    dense: _containers.RepeatedCompositeFieldContainer[DenseColumn]
    state: TransformState
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[InputFeature, _Mapping]]] = ..., features: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ..., dense: _Optional[_Iterable[_Union[DenseColumn, _Mapping]]] = ..., state: _Optional[_Union[TransformState, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...
