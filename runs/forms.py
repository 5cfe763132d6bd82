"""Validation of everything a user sends about experiments and runs, query strings included."""

from __future__ import annotations

import posixpath

from django import forms
from django.core.exceptions import ValidationError

from environments.definition import package_lines
from environments.models import Environment
from runs import gitinfo, metrics, runs_table, snapshots
from runs.models import RunStatus
from runs.submission import submit_run
from studio.forms import strict_boolean
from studio.models import NAME_VALIDATOR, ComputeTarget
from studio.parsing import TAG_KEY, parse_arguments, parse_env_vars, parse_tags
from studio.text import no_bidi_validator

MAX_DURATION = 30 * 24 * 3600


def normalize_entry_script(path: str) -> str:
    path = path.strip().replace("\\", "/")
    normalized = posixpath.normpath(path) if path else ""
    if normalized.startswith("./"):
        normalized = normalized[2:]
    if not normalized or normalized == "." or normalized.startswith(("/", "../")) or normalized == "..":
        raise ValidationError("Give a path inside the source, such as train.py or src/train.py.")
    return normalized


class SubmitRunForm(forms.Form):
    experiment = forms.CharField(
        max_length=255,
        widget=forms.TextInput(attrs={"list": "experiment-names", "autocomplete": "off"}),
        validators=[NAME_VALIDATOR],
        help_text="An existing experiment, or a new name: 1-255 letters, digits, '-', '_' or '.'.",
    )
    source = forms.FileField(help_text="One .py file, or a .zip (or .tar.gz) of the source folder.")
    entry_script = forms.CharField(
        max_length=1024, required=False, help_text="Path of the script inside the source. Empty for a single .py file."
    )
    arguments = forms.CharField(required=False, max_length=32768, help_text="Split like a shell would; never run by one.")
    env_vars = forms.CharField(
        label="Environment variables", required=False, max_length=262144, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One KEY=VALUE per line.",
    )
    compute_target = forms.ModelChoiceField(
        queryset=ComputeTarget.objects.none(), to_field_name="name", empty_label=None,
        error_messages={"invalid_choice": "No compute target named %(value)s in this workspace."})
    max_duration_seconds = forms.IntegerField(
        label="Maximum duration (seconds)", required=False, min_value=1, max_value=MAX_DURATION
    )
    display_name = forms.CharField(max_length=255, required=False, validators=[no_bidi_validator])
    tags = forms.CharField(required=False, max_length=65536, widget=forms.Textarea(attrs={"rows": 2}), help_text="key=value per line.")
    environment = forms.CharField(
        required=False, max_length=300, widget=forms.TextInput(attrs={"list": "environment-names", "autocomplete": "off"}),
        help_text="NAME (latest version) or NAME:VERSION. Empty: the compute target's own Python.",
    )
    packages = forms.CharField(
        label="Python packages", required=False, max_length=65536, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Instead of a named environment: pip requirements, one per line (an environment is made for them).",
    )
    cpu_limit = forms.FloatField(label="CPU cores", required=False, min_value=0.01, max_value=1024,
                                 help_text="Docker targets: overrides the target's limit for this run.")
    memory_limit_mb = forms.IntegerField(label="Memory (MB)", required=False, min_value=6, max_value=10_000_000,
                                         help_text="Docker targets: overrides the target's limit for this run.")
    gpus = forms.RegexField(regex=r"^(all|[1-9][0-9]{0,2})$", label="GPUs", required=False, max_length=4,
                            help_text="Docker targets: 'all' or a number.",
                            error_messages={"invalid": "Write 'all' or a number of GPUs."})
    # Sent by clients (the SDK, the API), not shown in the browser's form: where the source came from in git.
    git = forms.CharField(required=False, max_length=4 * gitinfo.MAX_DIFF_BYTES + 65536, strip=False,
                          widget=forms.HiddenInput,
                          help_text='JSON: {"remote_url", "branch", "commit", "dirty", "diff", "diff_truncated"}.')

    def __init__(self, *args, workspace, in_browser: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        self.in_browser = in_browser
        self.fields["compute_target"].queryset = ComputeTarget.objects.filter(workspace=workspace)
        self.staged: snapshots.StagedSnapshot | None = None

    def clean_arguments(self) -> list[str]:
        return parse_arguments(self.cleaned_data["arguments"])

    def clean_env_vars(self) -> dict[str, str]:
        return parse_env_vars(self.cleaned_data["env_vars"])

    def clean_tags(self) -> dict[str, str]:
        return parse_tags(self.cleaned_data["tags"])

    def clean_git(self) -> dict | None:
        try:
            return gitinfo.parse(self.cleaned_data["git"])
        except gitinfo.GitInfoError as exc:
            raise ValidationError(str(exc)) from None

    def clean_environment(self):
        text = self.cleaned_data["environment"].strip()
        if not text:
            return None
        name, _, version = text.partition(":")
        candidates = Environment.objects.visible_to(self.workspace).filter(name=name)
        if version and version != "latest":
            if not version.isdigit():
                raise ValidationError("Write NAME or NAME:VERSION, e.g. Studio-sklearn or my-env:2.")
            found = candidates.filter(version=int(version)).first()
        else:
            found = candidates.order_by("-version").first()
        if found is None:
            raise ValidationError(f"There is no environment {text!r} in this workspace.")
        return found

    def clean_packages(self) -> str:
        return "\n".join(package_lines(self.cleaned_data["packages"]))

    def submit(self, user):
        """Submit the validated run (the form's staged snapshot becomes the run's snapshot)."""
        data = self.cleaned_data
        return submit_run(
            self.workspace, user, experiment_name=data["experiment"], staged=self.staged,
            entry_script=data["entry_script"], compute_target=data["compute_target"], arguments=data["arguments"],
            env_vars=data["env_vars"], max_duration_seconds=data["max_duration_seconds"],
            display_name=data["display_name"], tags=data["tags"], environment=data["environment"],
            packages=data["packages"], resources=self.resources(), git=data.get("git"),
        )

    def resources(self) -> dict:
        data = self.cleaned_data
        return {key: data[key] for key in ("cpu_limit", "memory_limit_mb", "gpus") if data.get(key) not in (None, "")}

    def clean_entry_script(self) -> str:
        value = self.cleaned_data["entry_script"]
        return normalize_entry_script(value) if value.strip() else ""

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("environment") and cleaned.get("packages"):
            self.add_error("packages", "Choose a named environment or list packages, not both.")
        try:
            self.staged = self.stage_source(cleaned)
        except snapshots.SnapshotError as exc:
            self.add_error("source", str(exc))
            return cleaned
        if self.staged is None:
            return cleaned
        if "entry_script" in cleaned:
            cleaned["entry_script"] = self._check_entry_script(cleaned["entry_script"])
        if self.errors:
            self.discard()
            if "source" not in self.errors and self.in_browser:  # a browser forgets the chosen file on a redisplay
                self.add_error("source", "The file was fine; choose it again after fixing the other fields.")
        return cleaned

    def stage_source(self, cleaned: dict):
        """The run's source staged from the uploaded file (None when the field already refused it)."""
        upload = cleaned.get("source")
        return None if upload is None else snapshots.stage_upload(upload)

    def _check_entry_script(self, entry: str) -> str:
        paths = self.staged.paths()
        if not entry:
            if len(paths) == 1 and paths[0].endswith(".py"):
                return paths[0]
            self.add_error("entry_script", "Name the script to run inside the archive, such as train.py.")
        elif not self.staged.has_file(entry):
            candidates = [p for p in paths if p.endswith(".py")][:5]
            hint = f" Scripts in the source: {', '.join(candidates)}." if candidates else ""
            self.add_error("entry_script", f"{entry} is not in the uploaded source.{hint}")
        return entry

    def discard(self) -> None:
        if self.staged is not None:
            self.staged.discard()
            self.staged = None


class ApiSubmitRunForm(SubmitRunForm):
    """The API's submission: the source is an uploaded file (`source`) or a snapshot of the workspace made from blobs
    (`snapshot_id`, from `POST .../snapshots`: only the files the studio did not hold were sent)."""

    snapshot_id = forms.IntegerField(required=False, min_value=1, max_value=2**62,
                                     help_text="A snapshot of this workspace, instead of an uploaded source.")

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("in_browser", False)
        super().__init__(*args, **kwargs)
        self.fields["source"].required = False

    def stage_source(self, cleaned: dict):
        snapshot_id, upload = cleaned.get("snapshot_id"), cleaned.get("source")
        if snapshot_id is None:
            if upload is None and "source" not in self.errors and "snapshot_id" not in self.errors:
                raise snapshots.SnapshotError("Send the source: a .py file or an archive as `source`, or the id of a "
                                              "snapshot made from blobs as `snapshot_id`.")
            return super().stage_source(cleaned)
        if upload is not None:
            raise snapshots.SnapshotError("Send either an uploaded `source` or a `snapshot_id`, not both.")
        return snapshots.ExistingSnapshot.of_workspace(self.workspace, snapshot_id)


class RunFilterForm(forms.Form):
    """Query string of the experiment page; what each part means is in runs/runs_table.py.

    `before`/`after` page by run id in the default order (newest first); `below`/`above` page in any order,
    relative to a run's place in it. `metric` and `param` are repeated, one per column: absent, the default columns;
    `?metric=` (`?param=`) alone, none. `tag`, `range` and `param_filter` are repeated too, and every one of them must
    hold. `metric_names` are the experiment's scalar metric names and `parameter_names` its parameters' names: any
    other name is refused.
    """

    MAX_COLUMNS = 20
    MAX_FILTERS = 20

    status = forms.ChoiceField(choices=[("", "Any status"), *RunStatus.choices], required=False)
    before = forms.IntegerField(required=False, min_value=1)
    after = forms.IntegerField(required=False, min_value=0)
    below = forms.IntegerField(required=False, min_value=1)
    above = forms.IntegerField(required=False, min_value=1)
    children_of = forms.IntegerField(required=False, min_value=1)
    sort = forms.CharField(required=False, max_length=300)
    metric = forms.Field(required=False, widget=forms.MultipleHiddenInput)
    param = forms.Field(required=False, widget=forms.MultipleHiddenInput)
    tag = forms.Field(required=False, widget=forms.MultipleHiddenInput)
    range = forms.Field(required=False, widget=forms.MultipleHiddenInput)
    param_filter = forms.Field(required=False, widget=forms.MultipleHiddenInput)

    def __init__(self, *args, metric_names=(), parameter_names=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.metric_names = set(metric_names)
        self.parameter_names = set(parameter_names)

    def _check_metric(self, name: str) -> str:
        if name not in self.metric_names:
            known = ", ".join(sorted(self.metric_names)[:20]) or "none yet"
            raise ValidationError(f"No scalar metric named {name!r} in this experiment (its metrics: {known}).")
        return name

    def _check_param(self, name: str) -> str:
        if name not in self.parameter_names:
            known = ", ".join(sorted(self.parameter_names)[:20]) or "none yet"
            raise ValidationError(f"No parameter named {name!r} in this experiment (its parameters: {known}).")
        return name

    def _repeated(self, name: str, *, limit: int) -> list[str]:
        values = [value for value in self.cleaned_data[name] or [] if value.strip()]
        if len(values) > limit:
            raise ValidationError(f"At most {limit} values.")
        return values

    def clean_sort(self) -> runs_table.Sort:
        try:
            sort = runs_table.Sort.parse(self.cleaned_data["sort"])
        except runs_table.TableError as exc:
            raise ValidationError(str(exc)) from None
        if sort.column == "metric":
            self._check_metric(sort.name)
        elif sort.column == "param":
            self._check_param(sort.name)
        return sort

    def clean_metric(self) -> list[str] | None:
        """The chosen metric columns in the order given, or None for the default ones."""
        raw = self.cleaned_data["metric"] or []
        if not raw:
            return None
        names = list(dict.fromkeys(self._repeated("metric", limit=self.MAX_COLUMNS)))
        return [self._check_metric(name) for name in names]

    def clean_param(self) -> list[str] | None:
        """The chosen parameter columns in the order given, or None for the default ones."""
        if not self.cleaned_data["param"]:
            return None
        names = list(dict.fromkeys(self._repeated("param", limit=self.MAX_COLUMNS)))
        return [self._check_param(name) for name in names]

    def clean_param_filter(self) -> tuple[runs_table.ParamFilter, ...]:
        found = []
        for text in self._repeated("param_filter", limit=self.MAX_FILTERS):
            try:
                param = runs_table.ParamFilter.parse(text.strip())
            except runs_table.TableError as exc:
                raise ValidationError(str(exc)) from None
            self._check_param(param.name)
            found.append(param)
        return tuple(found)

    def clean_tag(self) -> tuple[runs_table.TagFilter, ...]:
        found = []
        for text in self._repeated("tag", limit=self.MAX_FILTERS):
            tag = runs_table.TagFilter.parse(text.strip())
            if not TAG_KEY.match(tag.key) or len(tag.value or "") > 1024:
                raise ValidationError(
                    f"Tag filter {text!r}: write key or key:value; keys are 1-128 letters, digits or _ . / -."
                )
            found.append(tag)
        return tuple(found)

    def clean_range(self) -> tuple[runs_table.MetricRange, ...]:
        found = []
        for text in self._repeated("range", limit=self.MAX_FILTERS):
            try:
                metric_range = runs_table.MetricRange.parse(text.strip())
            except runs_table.TableError as exc:
                raise ValidationError(str(exc)) from None
            self._check_metric(metric_range.name)
            found.append(metric_range)
        return tuple(found)

    def clean(self):
        cleaned = super().clean()
        cursors = [name for name in ("before", "after", "below", "above") if cleaned.get(name) is not None]
        if len(cursors) > 1:
            raise ValidationError(f"Give one of {' and '.join(cursors)}, not both: follow the page links.")
        sort = cleaned.get("sort")
        if sort is not None and not sort.is_default and cursors and cursors[0] in ("before", "after"):
            raise ValidationError(f"{cursors[0]} pages by run id; with sort={sort}, use below or above.")
        return cleaned

    @staticmethod
    def filters_of(data: dict) -> runs_table.Filters:
        """The filters of a valid query (its cleaned data)."""
        return runs_table.Filters(status=data["status"], tags=data["tag"], ranges=data["range"],
                                  params=data["param_filter"])


class RunPageForm(forms.Form):
    """The run page's query string: `tab` (an unknown one shows the overview, so an old link still opens the page)
    and `pane`, the part an htmx request asks for when its tab is first opened."""

    TABS = ("overview", "metrics", "console", "outputs", "snapshot", "system", "children")
    tab = forms.CharField(max_length=20, required=False)
    pane = forms.ChoiceField(choices=[("", ""), ("outputs", "outputs"), ("snapshot", "snapshot")], required=False)

    def clean_tab(self) -> str:
        tab = self.cleaned_data["tab"]
        return tab if tab in self.TABS else "overview"


class SnapshotFileForm(forms.Form):
    path = forms.CharField(max_length=4096, required=False)
    download = strict_boolean()


class ExperimentListForm(forms.Form):
    archived = strict_boolean()


class ArchiveForm(forms.Form):
    archived = strict_boolean()


# Run page telemetry ---------------------------------------------------------------------------------------------------


class SeriesDataForm(forms.Form):
    """One series' chart data: against step, relative or wall-clock time, downsampled to at most `max_points`."""

    X_MODES = [("step", "Step"), ("relative", "Relative time (s)"), ("time", "Wall-clock time")]

    x = forms.ChoiceField(choices=X_MODES, required=False)
    max_points = forms.IntegerField(min_value=100, max_value=5_000, required=False)

    def clean_x(self) -> str:
        return self.cleaned_data["x"] or "step"

    def clean_max_points(self) -> int:
        value = self.cleaned_data["max_points"]
        return metrics.CHART_POINTS if value is None else value


class MetricsTabForm(forms.Form):
    # The live poller sends the version it shows; an unchanged version is answered with 204 (nothing to swap).
    known = forms.RegexField(regex=r"^\d{1,12}\.\d{1,15}\.\d{1,12}(?:\.\d{1,12})?$", required=False)


class CompareForm(forms.Form):
    """The compare page's query string. `run` and `metric` repeat; run ids keep their order, repeats dropped."""

    MIN_RUNS = 2
    MAX_RUNS = 10
    MAX_METRICS = 8

    run = forms.Field(widget=forms.MultipleHiddenInput)
    metric = forms.Field(required=False, widget=forms.MultipleHiddenInput)
    target = forms.CharField(required=False, max_length=255)

    def clean_run(self) -> list[int]:
        ids = []
        for text in self.cleaned_data["run"]:
            try:
                run_id = int(text)
            except ValueError:
                raise ValidationError(f"{text[:40]!r} is not a run id (a whole number).") from None
            if not 1 <= run_id < 2**62:
                raise ValidationError(f"{text[:40]} is not a run id.")
            ids.append(run_id)
        ids = list(dict.fromkeys(ids))
        if not self.MIN_RUNS <= len(ids) <= self.MAX_RUNS:
            raise ValidationError(f"Choose {self.MIN_RUNS} to {self.MAX_RUNS} different runs to compare (got {len(ids)}).")
        return ids

    def clean_metric(self) -> list[str] | None:
        names = list(dict.fromkeys(name for name in self.cleaned_data["metric"] or [] if name))
        if len(names) > self.MAX_METRICS:
            raise ValidationError(f"Choose at most {self.MAX_METRICS} metrics.")
        return names or None
