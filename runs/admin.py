from django.contrib import admin

from runs.models import Experiment, Run


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "archived", "created_at"]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "experiment", "status", "created_at"]
    list_filter = ["status"]
    raw_id_fields = ["snapshot", "parent"]
