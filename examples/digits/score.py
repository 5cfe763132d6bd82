"""Scoring script of the digits model (what examples/digits/train.py saves as outputs/model.pkl), written for Azure
Machine Learning's inference server and run as is by the studio's.

A request is {"data": [[64 pixel intensities], ...]}: rows of 8x8 images flattened, each pixel 0-16 as
sklearn.datasets.load_digits gives them (train.py scales them to 0-1 before training; so does run()). See sample.json.
The answer is {"predictions": [digit, ...], "probabilities": [[p0, ..., p9], ...]}.

The environment needs scikit-learn, numpy and inference-schema (Studio-sklearn version 3 has them).
"""

import os
import pickle

import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

MODEL_FILE = "model.pkl"

# Two digits of load_digits (a 3 and an 8): the request example of the service's swagger.json.
INPUT_EXAMPLE = np.array([
    [0, 0, 7, 15, 13, 1, 0, 0, 0, 8, 13, 6, 15, 4, 0, 0, 0, 2, 1, 13, 13, 0, 0, 0, 0, 0, 2, 15, 11, 1, 0, 0,
     0, 0, 0, 1, 12, 12, 1, 0, 0, 0, 0, 0, 1, 10, 8, 0, 0, 0, 8, 4, 5, 14, 9, 0, 0, 0, 7, 13, 13, 9, 0, 0],
    [0, 0, 9, 14, 8, 1, 0, 0, 0, 0, 12, 14, 14, 12, 0, 0, 0, 0, 9, 10, 0, 15, 4, 0, 0, 0, 3, 16, 12, 14, 2, 0,
     0, 0, 4, 16, 16, 2, 0, 0, 0, 3, 16, 8, 10, 13, 2, 0, 0, 1, 15, 1, 3, 16, 8, 0, 0, 0, 11, 16, 15, 11, 1, 0],
], dtype=np.float64)
OUTPUT_EXAMPLE = {
    "predictions": [3, 8],
    "probabilities": [[0.0, 0.01, 0.02, 0.9, 0.0, 0.03, 0.0, 0.01, 0.02, 0.01],
                      [0.0, 0.05, 0.01, 0.02, 0.0, 0.01, 0.01, 0.0, 0.85, 0.05]],
}

model = None


def _find_model(root: str) -> str:
    """The model file under AZUREML_MODEL_DIR, whether the registered model is the file itself or the outputs folder
    (or the model dir holds several models)."""
    if os.path.isfile(root):
        return root
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        if MODEL_FILE in names:
            return os.path.join(folder, MODEL_FILE)
    raise FileNotFoundError(f"No {MODEL_FILE} under {root}: register train.py's outputs/model.pkl (or outputs/).")


def init():
    global model
    path = _find_model(os.environ.get("AZUREML_MODEL_DIR", "."))
    with open(path, "rb") as handle:
        model = pickle.load(handle)
    print(f"loaded {type(model).__name__} from {path}", flush=True)


# The input's shape is checked against the example's (any number of rows of 64 values): another shape is refused.
@input_schema("data", NumpyParameterType(INPUT_EXAMPLE))
@output_schema(StandardPythonParameterType(OUTPUT_EXAMPLE))
def run(data):
    features = data / 16.0  # as train.py scaled load_digits' pixels
    return {"predictions": model.predict(features).tolist(),
            "probabilities": model.predict_proba(features).round(6).tolist()}
