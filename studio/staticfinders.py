"""Plotly's JavaScript, served from the installed plotly package (never a CDN): only `plotly/plotly.min.js`, not the
package's 50 MB of datasets and notebook bundles."""

from pathlib import Path

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PLOTLY_JS = "plotly.min.js"


class PlotlyFinder(BaseFinder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.storage = FileSystemStorage(location=str(Path(plotly.__file__).parent / "package_data"))
        self.storage.prefix = "plotly"

    def find(self, path, find_all=False, **kwargs):
        if path != f"plotly/{PLOTLY_JS}":
            return [] if find_all else None
        found = self.storage.path(PLOTLY_JS)
        return [found] if find_all else found

    def list(self, ignore_patterns):
        yield PLOTLY_JS, self.storage
