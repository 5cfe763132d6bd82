"""Seed the curated environments. Their base image is fixed at seeding (the configured default then)."""

from django.conf import settings
from django.db import migrations

CURATED = [
    ("Studio-minimal-python", "Python with nothing else installed.", ""),
    ("Studio-sklearn", "scikit-learn, NumPy, SciPy and pandas.", "scikit-learn==1.7.2\nnumpy==2.3.4\nscipy==1.16.3\npandas==2.3.3"),
]


def seed(apps, schema_editor):
    from environments.definition import Definition, package_lines

    Environment = apps.get_model("environments", "Environment")
    base = settings.STUDIO_BUILD_DEFAULT_BASE_IMAGE
    for name, description, packages in CURATED:
        if Environment.objects.filter(workspace__isnull=True, name=name).exists():
            continue
        definition = Definition(base_image=base, python_packages=tuple(package_lines(packages)))
        Environment.objects.create(
            workspace=None, name=name, version=1, kind="curated", description=description, base_image=base,
            python_packages=packages, definition_hash=definition.hash(),
        )


def unseed(apps, schema_editor):
    apps.get_model("environments", "Environment").objects.filter(workspace__isnull=True, name__in=[c[0] for c in CURATED]).delete()


class Migration(migrations.Migration):
    dependencies = [("environments", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
