"""OIP tensors <-> numpy, shared by the REST and gRPC front ends.

The Open Inference Protocol names data types ("FP64", "INT32", ...) and sends
tensors flattened row-major with an explicit shape; both front ends validate
the same way so a client error reads the same on either protocol.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from devtools.model_servers.model import N_INPUTS

# OIP data type -> little-endian numpy dtype, for the numeric types the MLP accepts.
NUMERIC_DTYPES: dict[str, str] = {
    "FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "INT16": "<i2", "INT8": "i1",
    "UINT64": "<u8", "UINT32": "<u4", "UINT16": "<u2", "UINT8": "u1",
}

MAX_BATCH = 1024


class InvalidInput(ValueError):
    """The request's tensors cannot feed the model (HTTP 400, gRPC INVALID_ARGUMENT)."""


def batch_from(values: np.ndarray, shape: Sequence[int], datatype: str) -> np.ndarray:
    """Check a flat tensor against its declared shape and type; return it as [batch, 4] float64."""
    if datatype not in NUMERIC_DTYPES:
        raise InvalidInput(f"unsupported datatype {datatype!r} (supported: {', '.join(NUMERIC_DTYPES)})")
    shape = [int(d) for d in shape]
    if len(shape) == 1:
        shape = [1, *shape]
    if len(shape) != 2 or shape[1] != N_INPUTS or not 1 <= shape[0] <= MAX_BATCH:
        raise InvalidInput(f"input shape must be [batch, {N_INPUTS}] with 1 <= batch <= {MAX_BATCH}, got {list(shape)}")
    if values.size != shape[0] * shape[1]:
        raise InvalidInput(f"input has {values.size} elements but shape {shape} needs {shape[0] * shape[1]}")
    if not np.all(np.isfinite(values)):
        raise InvalidInput("input contains NaN or infinity")
    return values.reshape(shape).astype(np.float64)


def decode_raw(raw: bytes, datatype: str) -> np.ndarray:
    """A raw_input_contents blob (flattened, little-endian) as a flat array."""
    if datatype not in NUMERIC_DTYPES:
        raise InvalidInput(f"unsupported datatype {datatype!r}")
    dtype = np.dtype(NUMERIC_DTYPES[datatype])
    if len(raw) % dtype.itemsize:
        raise InvalidInput(f"raw input of {len(raw)} bytes is not a whole number of {datatype} elements")
    return np.frombuffer(raw, dtype=dtype)


def output_datatype(array: np.ndarray) -> str:
    return "FP64" if array.dtype == np.float64 else "INT64"
