"""Forms of the endpoints' pages. They check shapes and sizes; what the values mean (a model reference, a traffic
split) is checked by endpoints/services.py, which says what is wrong in the page and the API alike."""

from __future__ import annotations

from django import forms

from endpoints import services
from environments.models import Environment
from studio.models import ComputeTarget

NEW = "__new__"


class EndpointForm(forms.Form):
    name = forms.CharField(max_length=63, help_text="Part of the scoring URL: letters, digits, '-', '_', '.'.")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), max_length=10_000)


class DeploymentSettingsForm(forms.Form):
    environment = forms.ModelChoiceField(
        queryset=Environment.objects.none(), required=False, empty_label="None: the target's own Python",
        help_text="The packages your scoring script imports (its image is built once per definition and cached).")
    instance_count = forms.IntegerField(min_value=1, max_value=services.MAX_INSTANCES, initial=1)
    cpu_limit = forms.FloatField(required=False, min_value=0.01, max_value=256, label="CPU limit (cores)",
                                 help_text="Docker targets only; empty: no limit.")
    memory_limit_mb = forms.IntegerField(required=False, min_value=64, max_value=1_048_576,
                                         label="Memory limit (MiB)", help_text="Docker targets only; empty: no limit.")
    request_timeout_ms = forms.IntegerField(min_value=100, max_value=services.MAX_TIMEOUT_MS, initial=5000,
                                            label="Request timeout (ms)", help_text="Then the caller gets 504.")
    max_concurrent_requests = forms.IntegerField(min_value=1, max_value=services.MAX_CONCURRENT, initial=4,
                                                 label="Concurrent requests per instance",
                                                 help_text="More at once get 429.")
    script = forms.FileField(required=False, label="Scoring script",
                             help_text="A .py file with init() and run(), as Azure Machine Learning expects.")
    snapshot_script = forms.ChoiceField(required=False, label="…or a script from the training run's snapshot")

    def __init__(self, *args, workspace=None, scripts=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["environment"].queryset = Environment.objects.visible_to(workspace).order_by(
            "workspace_id", "name", "-version")
        self.fields["environment"].label_from_instance = lambda env: f"{env.name}:{env.version} ({env.kind})"
        self.fields["snapshot_script"].choices = [("", "—")] + [(path, path) for path in scripts]

    def clean(self):
        data = super().clean()
        upload = data.get("script")
        if upload is not None and upload.size > services.MAX_SCRIPT_BYTES:
            raise forms.ValidationError(f"The scoring script is {upload.size:,} bytes: at most "
                                        f"{services.MAX_SCRIPT_BYTES:,}.")
        return data

    def settings(self) -> dict:
        return {key: self.cleaned_data.get(key) for key in services.SETTINGS}


class DeployForm(DeploymentSettingsForm):
    endpoint = forms.ChoiceField(label="Endpoint")
    new_endpoint = forms.CharField(required=False, max_length=63, label="New endpoint's name")
    name = forms.CharField(max_length=63, initial="blue", label="Deployment name",
                           help_text="e.g. blue, green: names a deployment within its endpoint.")
    model = forms.CharField(max_length=600, label="Model", help_text="name:version, name@alias or name (newest).")
    extra_models = forms.CharField(required=False, max_length=5000, label="Further models",
                                   help_text="Optional, one reference per line: AZUREML_MODEL_DIR then holds "
                                             "azureml-models/<name>/<version> for each.")
    compute_target = forms.ModelChoiceField(queryset=ComputeTarget.objects.none(), empty_label=None)
    traffic = forms.IntegerField(min_value=0, max_value=100, initial=0, required=False, label="Traffic (%)",
                                 help_text="For an endpoint that already serves: the share moved to this deployment. "
                                           "The first deployment takes all of it.")
    field_order = ["model", "extra_models", "endpoint", "new_endpoint", "name", "script", "snapshot_script",
                   "environment", "compute_target", "instance_count", "traffic"]

    def __init__(self, *args, workspace=None, **kwargs):
        super().__init__(*args, workspace=workspace, **kwargs)
        names = list(workspace.endpoints.filter(deleting=False).values_list("name", flat=True))
        self.fields["endpoint"].choices = [(NEW, "A new endpoint…")] + [(name, name) for name in names]
        self.fields["compute_target"].queryset = ComputeTarget.objects.filter(
            workspace=workspace, kind__in=("local", "docker")).order_by("name")
        self.fields["compute_target"].label_from_instance = lambda t: f"{t.name} ({t.get_kind_display()})"

    def clean(self):
        data = super().clean()
        if data.get("endpoint") == NEW and not (data.get("new_endpoint") or "").strip():
            self.add_error("new_endpoint", "Name the new endpoint, or pick an existing one.")
        return data

    def extra_model_list(self) -> list[str]:
        return [line.strip() for line in (self.cleaned_data.get("extra_models") or "").splitlines() if line.strip()]


class UpdateDeploymentForm(DeploymentSettingsForm):
    model = forms.CharField(max_length=600, label="Model", help_text="name:version, name@alias or name (newest).")


class TrafficForm(forms.Form):
    """Fields traffic-<deployment> and mirror-<deployment>, one pair per deployment."""

    def __init__(self, *args, deployments=(), endpoint=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.names = [d.name for d in deployments]
        for name in self.names:
            self.fields[f"traffic-{name}"] = forms.IntegerField(
                min_value=0, max_value=100, required=False, initial=endpoint.traffic.get(name, 0) if endpoint else 0)
            self.fields[f"mirror-{name}"] = forms.IntegerField(
                min_value=0, max_value=50, required=False, initial=endpoint.mirror.get(name, 0) if endpoint else 0)

    def splits(self) -> tuple[dict[str, int], dict[str, int]]:
        traffic = {name: self.cleaned_data.get(f"traffic-{name}") or 0 for name in self.names}
        mirror = {name: self.cleaned_data.get(f"mirror-{name}") or 0 for name in self.names}
        return traffic, mirror


class RegenerateForm(forms.Form):
    key = forms.ChoiceField(choices=[(name, name) for name in services.KEY_NAMES])


class TestForm(forms.Form):
    body = forms.CharField(required=False, max_length=1_000_000, widget=forms.Textarea(attrs={"rows": 8}),
                           strip=False)
    deployment = forms.CharField(required=False, max_length=63,
                                 help_text="Empty: by the traffic split; a name: that deployment.")


class CaptureForm(forms.Form):
    capture_percent = forms.IntegerField(min_value=0, max_value=100, label="Payload capture (%)")


class StatsQuery(forms.Form):
    minutes = forms.IntegerField(min_value=1, max_value=60 * 24 * 30, required=False)
