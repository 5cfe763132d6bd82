"""Studio-sklearn version 3: version 2's packages and inference-schema, which scoring scripts of endpoints (the digits
example's score.py, say) declare their input and output with (and their swagger.json is made from)."""

from django.conf import settings
from django.db import migrations

NAME = "Studio-sklearn"
PACKAGES = "scikit-learn==1.7.2\nnumpy==2.3.4\nscipy==1.16.3\npandas==2.3.3\nmatplotlib==3.10.7\ninference-schema==1.8"
DESCRIPTION = "scikit-learn, NumPy, SciPy, pandas, matplotlib and inference-schema (to serve endpoints' scoring scripts)."


def seed(apps, schema_editor):
    from environments.definition import Definition, package_lines

    Environment = apps.get_model("environments", "Environment")
    if Environment.objects.filter(workspace__isnull=True, name=NAME, version=3).exists():
        return
    base = settings.STUDIO_BUILD_DEFAULT_BASE_IMAGE
    definition = Definition(base_image=base, python_packages=tuple(package_lines(PACKAGES)))
    Environment.objects.create(workspace=None, name=NAME, version=3, kind="curated", description=DESCRIPTION,
                               base_image=base, python_packages=PACKAGES, definition_hash=definition.hash())


def unseed(apps, schema_editor):
    apps.get_model("environments", "Environment").objects.filter(workspace__isnull=True, name=NAME, version=3).delete()


class Migration(migrations.Migration):
    dependencies = [("environments", "0003_curated_sklearn_with_matplotlib")]
    operations = [migrations.RunPython(seed, unseed)]
