"""Studio-sklearn version 2: the same packages and matplotlib, which the digits example draws its pictures with (the
server's own requirements no longer carry what examples need)."""

from django.conf import settings
from django.db import migrations

NAME = "Studio-sklearn"
PACKAGES = "scikit-learn==1.7.2\nnumpy==2.3.4\nscipy==1.16.3\npandas==2.3.3\nmatplotlib==3.10.7"
DESCRIPTION = "scikit-learn, NumPy, SciPy, pandas and matplotlib."


def seed(apps, schema_editor):
    from environments.definition import Definition, package_lines

    Environment = apps.get_model("environments", "Environment")
    if Environment.objects.filter(workspace__isnull=True, name=NAME, version=2).exists():
        return
    base = settings.STUDIO_BUILD_DEFAULT_BASE_IMAGE
    definition = Definition(base_image=base, python_packages=tuple(package_lines(PACKAGES)))
    Environment.objects.create(workspace=None, name=NAME, version=2, kind="curated", description=DESCRIPTION,
                               base_image=base, python_packages=PACKAGES, definition_hash=definition.hash())


def unseed(apps, schema_editor):
    apps.get_model("environments", "Environment").objects.filter(workspace__isnull=True, name=NAME, version=2).delete()


class Migration(migrations.Migration):
    dependencies = [("environments", "0002_curated_environments")]
    operations = [migrations.RunPython(seed, unseed)]
