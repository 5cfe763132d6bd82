"""Helpers of the registry's tests: a completed run with stored outputs (stored the way a worker stores them), model
files of each framework made without the framework (their bytes as the framework writes them), and archives."""

from __future__ import annotations

import io
import pickle
import sys
import tarfile
import types
import zipfile
from collections import OrderedDict

import pytest

from runs import storage
from runs.models import Run, RunStatus
from studio.models import ApiToken
from tests.conftest import make_run


def completed_run_with_outputs(workspace, user, files: dict[str, bytes], experiment: str = "digits") -> Run:
    """A completed run whose outputs were collected by the studio's OutputCollector (hashed, linked as blobs)."""
    run = make_run(workspace, user, experiment=experiment)
    collector = storage.OutputCollector(run.pk)
    for path, content in files.items():
        collector.add(path, io.BytesIO(content), len(content))
    collector.commit()
    Run.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED, exit_code=0)
    run.refresh_from_db()
    return run


def sklearn_pickle(estimator: str = "LogisticRegression", version: str = "1.5.2") -> bytes:
    """A pickle as scikit-learn writes one (a class of sklearn.linear_model with `_sklearn_version` in its state),
    made with a stand-in module: the registry must never unpickle it anyway."""
    module = types.ModuleType("sklearn.linear_model._logistic")
    cls = type(estimator, (), {"__module__": "sklearn.linear_model._logistic"})
    module.__dict__[estimator] = cls
    saved = {name: sys.modules.get(name) for name in ("sklearn", "sklearn.linear_model", "sklearn.linear_model._logistic")}
    sys.modules.update({"sklearn": types.ModuleType("sklearn"), "sklearn.linear_model": types.ModuleType("x"),
                        "sklearn.linear_model._logistic": module})
    try:
        instance = cls()
        instance.__dict__.update({"C": 1.0, "coef_": [[0.5, -0.25]], "_sklearn_version": version})
        return pickle.dumps(instance, protocol=5)
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


MLMODEL = """\
artifact_path: model
flavors:
  python_function:
    loader_module: mlflow.sklearn
    python_version: 3.11.7
  sklearn:
    pickled_model: model.pkl
    sklearn_version: 1.5.2
signature:
  inputs: '[{"type": "double", "name": "pixel_0"}, {"type": "double", "name": "pixel_1"}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]'
"""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def onnx_model(opset: int = 17) -> bytes:
    """An ONNX ModelProto's header fields (what detection reads) around a graph of opaque bytes."""
    opset_import = _field(1, b"") + _varint(2 << 3 | 0) + _varint(opset)
    return (_varint(1 << 3 | 0) + _varint(9) + _field(2, b"skl2onnx") + _field(3, b"1.17.0")
            + _field(7, b"\x00" * 5000) + _field(8, opset_import))


def torch_state_dict() -> bytes:
    """torch.save's zip layout: archive/data.pkl holding an OrderedDict of tensors, archive/version."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(OrderedDict(weight=[1.0, 2.0]), protocol=2))
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/data/0", b"\x00" * 64)
    return buffer.getvalue()


def tar_bytes(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


@pytest.fixture
def token_of():
    return lambda user: {"Authorization": f"Token {ApiToken.issue(user, 'tests')[1]}"}
