from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RelayStream(_message.Message):
    __slots__ = ("id", "node", "node_cluster", "log_name", "opened_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    NODE_CLUSTER_FIELD_NUMBER: _ClassVar[int]
    LOG_NAME_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    node: str
    node_cluster: str
    log_name: str
    opened_at: float
    def __init__(self, id: _Optional[int] = ..., node: _Optional[str] = ..., node_cluster: _Optional[str] = ..., log_name: _Optional[str] = ..., opened_at: _Optional[float] = ...) -> None: ...

class RelayItem(_message.Message):
    __slots__ = ("seq", "at", "stream", "open", "close", "als", "otlp")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    ALS_FIELD_NUMBER: _ClassVar[int]
    OTLP_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: float
    stream: int
    open: RelayStream
    close: bool
    als: bytes
    otlp: bytes
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[float] = ..., stream: _Optional[int] = ..., open: _Optional[_Union[RelayStream, _Mapping]] = ..., close: _Optional[bool] = ..., als: _Optional[bytes] = ..., otlp: _Optional[bytes] = ...) -> None: ...

class RelayHello(_message.Message):
    __slots__ = ("replica", "incarnation")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    replica: str
    incarnation: str
    def __init__(self, replica: _Optional[str] = ..., incarnation: _Optional[str] = ...) -> None: ...

class RelayStart(_message.Message):
    __slots__ = ("first_seq", "complete_since", "streams")
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_SINCE_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    first_seq: int
    complete_since: float
    streams: _containers.RepeatedCompositeFieldContainer[RelayStream]
    def __init__(self, first_seq: _Optional[int] = ..., complete_since: _Optional[float] = ..., streams: _Optional[_Iterable[_Union[RelayStream, _Mapping]]] = ...) -> None: ...

class RelayRequest(_message.Message):
    __slots__ = ("hello", "start", "items")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    hello: RelayHello
    start: RelayStart
    items: _containers.RepeatedCompositeFieldContainer[RelayItem]
    def __init__(self, hello: _Optional[_Union[RelayHello, _Mapping]] = ..., start: _Optional[_Union[RelayStart, _Mapping]] = ..., items: _Optional[_Iterable[_Union[RelayItem, _Mapping]]] = ...) -> None: ...

class RelayAck(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...
