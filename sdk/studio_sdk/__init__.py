"""Studio's SDK.

Inside a run, log metrics, tables, images, tags and files:

    from studio_sdk import Run

    run = Run.get_context()
    run.log("loss", 0.25)

From anywhere, submit and follow runs, manage environments, models and endpoints (shaped after Azure ML's v1 SDK):

    from studio_sdk import Workspace, Experiment, ScriptRunConfig, Environment

    ws = Workspace.from_config()
    run = Experiment(ws, "digits").submit(ScriptRunConfig("examples/digits", "train.py", arguments=["--epochs", 20]))
    run.wait_for_completion(show_output=True)

Standard library only; the `studio` command line comes with it.
"""

from studio_sdk._api import StudioError
from studio_sdk.compute import ComputeTarget
from studio_sdk.environment import Environment
from studio_sdk.experiment import Experiment, RemoteRun, ScriptRunConfig
from studio_sdk.model import Model
from studio_sdk.run import Run
from studio_sdk.webservice import Webservice
from studio_sdk.workspace import Workspace

__all__ = ["ComputeTarget", "Environment", "Experiment", "Model", "RemoteRun", "Run", "ScriptRunConfig",
           "StudioError", "Webservice", "Workspace"]
__version__ = "0.2.0"
