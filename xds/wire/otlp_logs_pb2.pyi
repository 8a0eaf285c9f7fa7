from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OtlpAnyValue(_message.Message):
    __slots__ = ("string_value", "bool_value", "int_value", "double_value", "bytes_value")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    BYTES_VALUE_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    bool_value: bool
    int_value: int
    double_value: float
    bytes_value: bytes
    def __init__(self, string_value: _Optional[str] = ..., bool_value: _Optional[bool] = ..., int_value: _Optional[int] = ..., double_value: _Optional[float] = ..., bytes_value: _Optional[bytes] = ...) -> None: ...

class OtlpKeyValue(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: OtlpAnyValue
    def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[OtlpAnyValue, _Mapping]] = ...) -> None: ...

class OtlpResource(_message.Message):
    __slots__ = ("attributes",)
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    attributes: _containers.RepeatedCompositeFieldContainer[OtlpKeyValue]
    def __init__(self, attributes: _Optional[_Iterable[_Union[OtlpKeyValue, _Mapping]]] = ...) -> None: ...

class OtlpLogRecord(_message.Message):
    __slots__ = ("time_unix_nano", "body", "attributes", "observed_time_unix_nano")
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    time_unix_nano: int
    body: OtlpAnyValue
    attributes: _containers.RepeatedCompositeFieldContainer[OtlpKeyValue]
    observed_time_unix_nano: int
    def __init__(self, time_unix_nano: _Optional[int] = ..., body: _Optional[_Union[OtlpAnyValue, _Mapping]] = ..., attributes: _Optional[_Iterable[_Union[OtlpKeyValue, _Mapping]]] = ..., observed_time_unix_nano: _Optional[int] = ...) -> None: ...

class OtlpScopeLogs(_message.Message):
    __slots__ = ("log_records",)
    LOG_RECORDS_FIELD_NUMBER: _ClassVar[int]
    log_records: _containers.RepeatedCompositeFieldContainer[OtlpLogRecord]
    def __init__(self, log_records: _Optional[_Iterable[_Union[OtlpLogRecord, _Mapping]]] = ...) -> None: ...

class OtlpResourceLogs(_message.Message):
    __slots__ = ("resource", "scope_logs")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_LOGS_FIELD_NUMBER: _ClassVar[int]
    resource: OtlpResource
    scope_logs: _containers.RepeatedCompositeFieldContainer[OtlpScopeLogs]
    def __init__(self, resource: _Optional[_Union[OtlpResource, _Mapping]] = ..., scope_logs: _Optional[_Iterable[_Union[OtlpScopeLogs, _Mapping]]] = ...) -> None: ...

class ExportLogsServiceRequest(_message.Message):
    __slots__ = ("resource_logs",)
    RESOURCE_LOGS_FIELD_NUMBER: _ClassVar[int]
    resource_logs: _containers.RepeatedCompositeFieldContainer[OtlpResourceLogs]
    def __init__(self, resource_logs: _Optional[_Iterable[_Union[OtlpResourceLogs, _Mapping]]] = ...) -> None: ...

class ExportLogsServiceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
