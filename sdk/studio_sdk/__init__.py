"""Studio's in-run SDK: log metrics, tables, images, tags and files from a training script.

    from studio_sdk import Run

    run = Run.get_context()
    run.log("loss", 0.25)

Standard library only; inside the studio records are sent in the background, elsewhere they are printed.
"""

from studio_sdk.run import Run

__all__ = ["Run"]
__version__ = "0.1.0"
