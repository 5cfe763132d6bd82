"""What framework a model was made with, found by reading its files, never by running them: a pickle is scanned for
the classes it names (unpickling would run the code it carries), an `MLmodel` file is parsed as YAML, an ONNX file's
header fields are read as protobuf, a PyTorch file is opened as the zip it is.

`detect(files, read)` takes the version's files as {path: size} and a function that opens one; it answers
(framework, framework_version, details) with "custom" when nothing is recognised.
"""

from __future__ import annotations

import io
import json
import pickletools
import zipfile
from collections.abc import Callable
from typing import BinaryIO

import yaml

PICKLE_SCAN_BYTES = 64 * 1024 * 1024
ONNX_HEADER_BYTES = 1024 * 1024
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".sav")
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
FLAVOR_FRAMEWORKS = {  # MLmodel flavor -> (framework, the key holding its version)
    "sklearn": ("scikit-learn", "sklearn_version"),
    "pytorch": ("pytorch", "pytorch_version"),
    "tensorflow": ("tensorflow", "keras_version"),
    "keras": ("keras", "keras_version"),
    "xgboost": ("xgboost", "xgb_version"),
    "lightgbm": ("lightgbm", "lgb_version"),
    "onnx": ("onnx", "onnx_version"),
    "transformers": ("transformers", "transformers_version"),
}
MODULE_FRAMEWORKS = (  # the first module prefix a pickle names decides
    ("sklearn.", "scikit-learn"), ("xgboost.", "xgboost"), ("lightgbm.", "lightgbm"), ("catboost.", "catboost"),
    ("torch.", "pytorch"), ("statsmodels.", "statsmodels"),
)

Opener = Callable[[str], BinaryIO]


def detect(files: dict[str, int], read: Opener) -> tuple[str, str, dict]:
    mlmodel = sorted((path for path in files if path.rsplit("/", 1)[-1] == "MLmodel"), key=lambda p: p.count("/"))
    if mlmodel:
        found = _mlmodel(read, mlmodel[0])
        if found:
            return found
    for path in sorted(files):
        lower = path.lower()
        try:
            if lower.endswith(".onnx"):
                return _onnx(read, path)
            if lower.endswith(PICKLE_SUFFIXES):
                found = _pickle(read, path)
                if found:
                    return found
            if lower.endswith(TORCH_SUFFIXES):
                found = _torch(read, path)
                if found:
                    return found
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, yaml.YAMLError):
            continue  # an unreadable file is simply not recognised
    return "custom", "", {}


def _mlmodel(read: Opener, path: str) -> tuple[str, str, dict] | None:
    try:
        with read(path) as handle:
            document = yaml.safe_load(handle.read(1024 * 1024))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("flavors"), dict):
        return None
    flavors = document["flavors"]
    details: dict = {"mlmodel": path, "flavors": sorted(str(name) for name in flavors)}
    signature = document.get("signature")
    if isinstance(signature, dict):
        details["signature"] = {part: _signature_columns(signature.get(part)) for part in ("inputs", "outputs")}
    for flavor, (framework, version_key) in FLAVOR_FRAMEWORKS.items():
        if isinstance(flavors.get(flavor), dict):
            return framework, str(flavors[flavor].get(version_key, "") or "")[:64], details
    python = flavors.get("python_function")
    version = str(python.get("python_version", "")) if isinstance(python, dict) else ""
    return "mlflow-pyfunc", version[:64], details


def _signature_columns(text) -> list[dict]:
    """MLmodel keeps each side of the signature as a JSON string: [{"name", "type"} or tensor specs]."""
    try:
        columns = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return []
    rows = []
    for column in columns if isinstance(columns, list) else []:
        if isinstance(column, dict):
            kind = column.get("type", "")
            if kind == "tensor":
                spec = column.get("tensor-spec") or {}
                kind = f"tensor {spec.get('dtype', '')} {spec.get('shape', '')}".strip()
            rows.append({"name": str(column.get("name", "")), "type": str(kind)})
    return rows


def _pickle_globals(handle: BinaryIO) -> tuple[list[str], dict[str, str]]:
    """The classes a pickle names, in order, and string pairs that look like `key, value` (for `_sklearn_version`)."""
    data = handle.read(PICKLE_SCAN_BYTES)
    names, strings, pairs = [], [], {}
    try:
        for opcode, argument, _ in pickletools.genops(io.BytesIO(data)):
            if opcode.name == "GLOBAL" and isinstance(argument, str):
                names.append(argument.replace(" ", "."))
            elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(argument)
                if len(strings) >= 2 and strings[-2] == "_sklearn_version":
                    pairs["_sklearn_version"] = argument
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
    except (ValueError, EOFError, KeyError):
        pass  # a truncated scan (or joblib's appended arrays): what was read so far counts
    return names, pairs


def _pickle(read: Opener, path: str) -> tuple[str, str, dict] | None:
    with read(path) as handle:
        head = handle.read(2)
        handle.seek(0)
        if not head or head[0] != 0x80:  # not a pickle (compressed joblib, say)
            return None
        names, pairs = _pickle_globals(handle)
    for name in names:
        for prefix, framework in MODULE_FRAMEWORKS:
            if name.startswith(prefix):
                estimator = name.rsplit(".", 1)[-1]
                version = pairs.get("_sklearn_version", "") if framework == "scikit-learn" else ""
                return framework, version[:64], {"file": path, "class": name, "estimator": estimator}
    return None


def _torch(read: Opener, path: str) -> tuple[str, str, dict] | None:
    with read(path) as handle:
        if handle.read(4) != b"PK\x03\x04":
            return None
        handle.seek(0)
        archive = zipfile.ZipFile(handle)
        entries = archive.namelist()
        data = next((name for name in entries if name.endswith("/data.pkl")), None)
        if data is None:
            return None
        with archive.open(data) as pickled:
            names, _ = _pickle_globals(pickled)
    kind = "state dict" if names[:1] == ["collections.OrderedDict"] else "pickled module"
    return "pytorch", "", {"file": path, "kind": kind, "classes": sorted(set(names))[:20]}


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _onnx(read: Opener, path: str) -> tuple[str, str, dict]:
    """ModelProto's small fields: ir_version (1), producer_name (2), producer_version (3), opset_import (8). The graph
    (7) is skipped by its length, so only the header is read."""
    details: dict = {"file": path}
    opsets = []
    with read(path) as handle:
        position_in_file = 0
        while True:
            handle.seek(position_in_file)
            head = handle.read(16)
            if not head:
                break
            key, used = _varint(head, 0)
            field, wire = key >> 3, key & 7
            if wire == 0:
                value, end = _varint(head, used)
                if field == 1:
                    details["ir_version"] = value
                position_in_file += end
            elif wire == 2:
                length, end = _varint(head, used)
                start = position_in_file + end
                if field in (2, 3, 8) and length <= ONNX_HEADER_BYTES:
                    handle.seek(start)
                    body = handle.read(length)
                    if field == 2:
                        details["producer"] = body.decode("utf-8", "replace")
                    elif field == 3:
                        details["producer_version"] = body.decode("utf-8", "replace")
                    else:
                        opsets.append(_opset(body))
                position_in_file = start + length
            elif wire == 5:
                position_in_file += used + 4
            elif wire == 1:
                position_in_file += used + 8
            else:
                break
    default = next((version for domain, version in opsets if domain in ("", "ai.onnx")), None)
    if opsets:
        details["opsets"] = {domain or "ai.onnx": version for domain, version in opsets}
    return "onnx", f"opset {default}" if default is not None else "", details


def _opset(body: bytes) -> tuple[str, int]:
    domain, version, position = "", 0, 0
    while position < len(body):
        key, position = _varint(body, position)
        if key >> 3 == 1 and key & 7 == 2:
            length, position = _varint(body, position)
            domain = body[position:position + length].decode("utf-8", "replace")
            position += length
        elif key >> 3 == 2 and key & 7 == 0:
            version, position = _varint(body, position)
        else:
            break
    return domain, version
