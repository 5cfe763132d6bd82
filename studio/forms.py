from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import BadRequest

from studio.models import Role, Workspace


class AddMemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.CONTRIBUTOR)

    def __init__(self, *args, workspace: Workspace, **kwargs):
        super().__init__(*args, **kwargs)
        self.workspace = workspace

    def clean_username(self):
        username = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise forms.ValidationError(f"There is no user named {username!r}.")
        if self.workspace.memberships.filter(user=user).exists():
            raise forms.ValidationError(f"{username} is already a member; remove them first to change the role.")
        return user


class WorkspaceForm(forms.ModelForm):
    class Meta:
        model = Workspace
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. 'laptop CLI'.")


def strict_boolean(**kwargs) -> forms.TypedChoiceField:
    """A yes/no value that refuses anything else (a BooleanField takes any string as yes)."""
    choices = [(v, v) for v in ("", "on", "true", "1", "off", "false", "0")]
    return forms.TypedChoiceField(
        choices=choices, coerce=lambda v: v in ("on", "true", "1"), empty_value=False, required=False, **kwargs
    )


def valid_query(form_class, request, **kwargs) -> dict:
    """A page's query string, validated by a form: its cleaned data, or BadRequest (a 400 saying what was wrong)."""
    form = form_class(request.GET, **kwargs)
    if not form.is_valid():
        raise BadRequest(error_message(form))
    return form.cleaned_data


def error_message(form: forms.Form) -> str:
    """All of a form's errors as one line a person can act on."""
    parts = []
    for name, errors in form.errors.items():
        text = " ".join(errors)
        parts.append(text if name == "__all__" else f"{name}: {text}")
    return " ".join(parts)


class LogQueryForm(forms.Form):
    """A console log: `?offset=N` reads display lines from byte N on (the polling fallback; an offset past the end
    reads nothing new); `?download=1` saves the whole log."""

    offset = forms.IntegerField(required=False, min_value=0, max_value=2**62,
                                error_messages={"invalid": "offset must be a whole number of bytes."})
    download = strict_boolean()

    def clean_offset(self):
        if "offset" in self.data and self.cleaned_data["offset"] is None:
            raise forms.ValidationError("offset must be a whole number of bytes.")
        return self.cleaned_data["offset"]
