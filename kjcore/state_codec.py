"""A machine state as a JSON tree plus named numpy arrays, and the ``.npz`` holding the arrays.

:func:`encode` turns a :func:`kjcore.machine_state.machine_state` dict into a JSON-able tree
in which every array or buffer is replaced by ``{"__array__": name}``; :func:`decode` puts
the arrays back. :func:`load_npz` reads an array file without trusting it: uncompressed
members only, each ``.npy`` header checked against the bytes it describes before anything
is allocated (a header may claim any shape).

>>> import numpy as np
>>> arrays = {}
>>> tree = encode({"a": np.arange(3), "b": [1, "x"]}, arrays, "")
>>> tree
{'a': {'__array__': 'a'}, 'b': [1, 'x']}
>>> decode(tree, load_npz(npz_bytes(arrays)))["a"].tolist()
[0, 1, 2]
"""
import io
import zipfile

import numpy as np

__all__ = ["encode", "decode", "npz_bytes", "load_npz"]

_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}


def encode(value, arrays, name):
    """JSON tree of ``value`` with every array or buffer moved into ``arrays[name]``.

    ``TypeError`` for values that are neither JSON types nor buffers (Python objects).
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"state key {k!r} at {name or 'top'} is not a str")
            out[k] = encode(v, arrays, f"{name}.{k}" if name else k)
        return out
    if isinstance(value, (list, tuple)):
        return [encode(v, arrays, f"{name}.{i}") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.frombuffer(memoryview(value).cast("B"), dtype=np.uint8)
        except TypeError:
            raise TypeError(f"state value at {name} has unsupported type "
                            f"{type(value).__name__}") from None
    if arr.dtype.hasobject:
        raise TypeError(f"state array at {name} holds Python objects")
    arrays[name] = arr
    return {"__array__": name}


def decode(tree, arrays):
    """Inverse of :func:`encode` (``KeyError`` for a reference to a missing array)."""
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return arrays[tree["__array__"]]
        return {k: decode(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [decode(v, arrays) for v in tree]
    return tree


def npz_bytes(arrays):
    """The ``.npz`` (uncompressed) of ``arrays`` as bytes."""
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def load_npz(blob):
    """The arrays of the ``.npz`` ``blob``; ``ValueError`` (or ``zipfile.BadZipFile``) for
    compressed members, object arrays, other than 1-D arrays and headers that do not match
    their data."""
    arrays = {}
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        for info in z.infolist():
            if info.compress_type != zipfile.ZIP_STORED or info.file_size > len(blob) \
                    or not info.filename.endswith(".npy"):
                raise ValueError(f"unexpected member {info.filename!r} in the array file")
            f = io.BytesIO(z.read(info))
            version = np.lib.format.read_magic(f)
            if version not in _NPY_HEADERS:
                raise ValueError(f"array {info.filename!r}: .npy version {version}")
            shape, _, dtype = _NPY_HEADERS[version](f)
            if dtype.hasobject or len(shape) != 1 \
                    or shape[0] * dtype.itemsize != info.file_size - f.tell():
                raise ValueError(f"array {info.filename!r} does not match its header")
            f.seek(0)
            arrays[info.filename[:-4]] = np.lib.format.read_array(f, allow_pickle=False)
    return arrays
