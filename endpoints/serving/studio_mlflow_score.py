"""The scoring script of an MLflow model deployed without one: the model folder (the one holding `MLmodel`) is loaded
with `mlflow.pyfunc.load_model`, and requests take MLflow's scoring formats: {"dataframe_split": ...},
{"dataframe_records": ...}, {"inputs": ...} or {"instances": ...}, with optional {"params": ...}. The answer is
{"predictions": ...}; a body in none of these formats, or one the model's signature refuses, is a 400.

The environment must have mlflow (mlflow-skinny is enough) and the model's flavor library installed.
"""

import json
import os

model = None


def _model_folder() -> str:
    root = os.environ.get("AZUREML_MODEL_DIR", ".")
    for folder, _, names in sorted(os.walk(root)):
        if "MLmodel" in names:
            return folder
    raise RuntimeError(f"No MLmodel file under {root}: this version is not an MLflow model folder.")


def init():
    global model
    try:
        import mlflow.pyfunc
    except ImportError as error:
        raise RuntimeError("Serving an MLflow model without a scoring script needs mlflow in the environment "
                           "(pip install mlflow-skinny and the model's flavor, e.g. scikit-learn).") from error
    model = mlflow.pyfunc.load_model(_model_folder())


def _plain(value):
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a DataFrame
        return value.to_dict(orient="records")
    if hasattr(value, "tolist"):  # numpy arrays and scalars, pandas Series
        return value.tolist()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


FORMATS = ("dataframe_split", "dataframe_records", "inputs", "instances")


def _bad_request(message: str):
    """A 400 with Azure's error body: the request is at fault, not the model (the server's own name for AMLResponse,
    or Azure's)."""
    from azureml.contrib.services.aml_response import AMLResponse

    return AMLResponse({"message": message}, 400, json_str=True)


def _input(body: dict):
    if "dataframe_split" in body or "dataframe_records" in body:
        import pandas as pd

        if "dataframe_split" in body:
            split = body["dataframe_split"]
            return pd.DataFrame(split.get("data", []), columns=split.get("columns"), index=split.get("index"))
        return pd.DataFrame(body["dataframe_records"])
    data = body.get("inputs", body.get("instances"))
    try:
        import numpy as np
    except ImportError:
        return data
    return {k: np.asarray(v) for k, v in data.items()} if isinstance(data, dict) else np.asarray(data)


def run(raw_data):
    try:
        body = json.loads(raw_data)
    except ValueError as error:
        return _bad_request(f"The body is not JSON: {error}")
    if not isinstance(body, dict) or not any(key in body for key in FORMATS):
        return _bad_request("Send a JSON object with one of dataframe_split, dataframe_records, inputs or instances "
                            "(MLflow's scoring formats).")
    try:
        data = _input(body)
    except (TypeError, ValueError, AttributeError) as error:
        return _bad_request(f"The input cannot be read as {next(k for k in FORMATS if k in body)}: {error}")
    params = body.get("params")
    try:
        predictions = model.predict(data, params=params) if params else model.predict(data)
    except Exception as error:
        # MLflow's own refusal of an input that does not match the model's signature: the request's fault
        if type(error).__name__ == "MlflowException" and getattr(error, "error_code", "") in (
                "INVALID_PARAMETER_VALUE", "BAD_REQUEST"):
            return _bad_request(getattr(error, "message", str(error)))
        raise
    return {"predictions": _plain(predictions)}
