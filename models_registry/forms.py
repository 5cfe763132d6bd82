"""Validation of what users send to the registry: query strings of the lists, and the forms of the pages."""

from __future__ import annotations

from django import forms

from models_registry.models import ALIAS_VALIDATOR
from studio.forms import strict_boolean
from studio.models import NAME_VALIDATOR
from studio.parsing import parse_tags
from studio.text import no_bidi_validator

PAGE_SIZE = 50


class ModelListQuery(forms.Form):
    q = forms.CharField(required=False, max_length=255, validators=[no_bidi_validator])
    tag = forms.CharField(required=False, max_length=600, validators=[no_bidi_validator])
    framework = forms.CharField(required=False, max_length=64, validators=[no_bidi_validator])
    alias = forms.CharField(required=False, max_length=64, validators=[no_bidi_validator])
    archived = strict_boolean()
    after = forms.CharField(required=False, max_length=80)  # keyset cursor: "<epoch microseconds>.<id>"

    def clean_tag(self) -> tuple[str, str | None] | None:
        text = self.cleaned_data["tag"].strip()
        if not text:
            return None
        key, sep, value = text.partition("=")
        try:
            parse_tags(f"{key}={value}" if sep else key)
        except forms.ValidationError as error:
            raise forms.ValidationError(" ".join(error.messages).replace("Line 1: ", "")) from None
        return key.strip(), (value.strip() if sep else None)

    def clean_after(self) -> tuple[int, int] | None:
        text = self.cleaned_data["after"].strip()
        if not text:
            return None
        stamp, _, pk = text.partition(".")
        if not (stamp.isdigit() and pk.isdigit() and len(stamp) <= 20 and len(pk) <= 18):
            raise forms.ValidationError("is not a page cursor: follow the page's Next link.")
        return int(stamp), int(pk)


class VersionListQuery(forms.Form):
    before = forms.IntegerField(required=False, min_value=1, max_value=2**31)


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        files = data if isinstance(data, (list, tuple)) else [data]
        return [single(item, initial) for item in files if item] or [single(None, initial)]


def tags_field(**kwargs) -> forms.CharField:
    return forms.CharField(required=False, max_length=65536, widget=forms.Textarea(attrs={"rows": 2}),
                           help_text="key=value per line.", **kwargs)


class VersionFieldsForm(forms.Form):
    name = forms.CharField(max_length=255, validators=[NAME_VALIDATOR],
                           widget=forms.TextInput(attrs={"list": "model-names", "autocomplete": "off"}),
                           help_text="An existing model (a new version is added) or a new name.")
    description = forms.CharField(required=False, max_length=10_000, widget=forms.Textarea(attrs={"rows": 2}),
                                  validators=[no_bidi_validator])
    tags = tags_field()

    def clean_tags(self) -> dict[str, str]:
        return parse_tags(self.cleaned_data["tags"])


class RegisterFromRunForm(VersionFieldsForm):
    paths = forms.MultipleChoiceField(label="Files and folders", widget=forms.CheckboxSelectMultiple,
                                      error_messages={"required": "Tick at least one file or folder under outputs/."})

    def __init__(self, *args, choices: list[tuple[str, str]] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["paths"].choices = choices


class UploadModelForm(VersionFieldsForm):
    files = MultipleFileField(help_text="One or more files, or one .zip / .tar.gz of the model's folder.")
    framework = forms.CharField(required=False, max_length=64, validators=[no_bidi_validator],
                                help_text="Leave empty to detect it (scikit-learn, PyTorch, ONNX, MLflow models).")
    framework_version = forms.CharField(required=False, max_length=64, validators=[no_bidi_validator])


class AliasForm(forms.Form):
    alias = forms.CharField(max_length=64, validators=[ALIAS_VALIDATOR])
    version = forms.IntegerField(required=False, min_value=1, max_value=2**31,
                                 help_text="Empty: remove the alias.")


class TagsForm(forms.Form):
    tags = tags_field()

    def clean_tags(self) -> dict[str, str]:
        return parse_tags(self.cleaned_data["tags"])
