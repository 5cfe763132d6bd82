"""Read-only admin views: an environment version never changes, and the registry password is never shown."""

from django.contrib import admin

from environments.models import Environment, EnvironmentImage


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Environment)
class EnvironmentAdmin(ReadOnlyAdmin):
    list_display = ["name", "version", "workspace", "kind", "anonymous", "definition_hash", "created_at"]
    list_filter = ["kind", "anonymous"]
    search_fields = ["name", "definition_hash"]
    exclude = ["registry_password_encrypted"]


@admin.register(EnvironmentImage)
class EnvironmentImageAdmin(ReadOnlyAdmin):
    list_display = ["pk", "definition_hash", "status", "build_count", "size_bytes", "ended_at"]
    list_filter = ["status"]
    search_fields = ["definition_hash", "image_id"]
