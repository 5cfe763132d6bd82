from django.urls import path

from runs import ingest

urlpatterns = [
    path("metrics", ingest.post_metrics, name="api_metrics"),
    path("entries", ingest.post_entries, name="api_entries"),
    path("tags", ingest.tags, name="api_tags"),
    path("images", ingest.post_image, name="api_images"),
    path("files", ingest.post_file, name="api_files"),
    path("children", ingest.post_child, name="api_children"),
    path("status", ingest.post_status, name="api_status"),
]
