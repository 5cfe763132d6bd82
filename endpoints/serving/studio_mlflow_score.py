"""The scoring script of an MLflow model deployed without one: the model folder (the one holding `MLmodel`) is loaded
with `mlflow.pyfunc.load_model`, and requests take MLflow's scoring formats: {"dataframe_split": ...},
{"dataframe_records": ...}, {"inputs": ...} or {"instances": ...}. The answer is {"predictions": ...}.

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


def run(raw_data):
    body = json.loads(raw_data)
    if not isinstance(body, dict):
        raise ValueError("Send a JSON object: dataframe_split, dataframe_records, inputs or instances.")
    if "dataframe_split" in body or "dataframe_records" in body:
        import pandas as pd

        if "dataframe_split" in body:
            split = body["dataframe_split"]
            data = pd.DataFrame(split.get("data", []), columns=split.get("columns"), index=split.get("index"))
        else:
            data = pd.DataFrame(body["dataframe_records"])
    elif "inputs" in body or "instances" in body:
        data = body.get("inputs", body.get("instances"))
        try:
            import numpy as np

            data = {k: np.asarray(v) for k, v in data.items()} if isinstance(data, dict) else np.asarray(data)
        except ImportError:
            pass
    else:
        raise ValueError("Send dataframe_split, dataframe_records, inputs or instances.")
    return {"predictions": _plain(model.predict(data))}
