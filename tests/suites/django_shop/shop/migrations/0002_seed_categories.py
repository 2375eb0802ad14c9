import os

from django.db import migrations

NAMES = ["books", "games", "tools"]


def seed(apps, schema_editor):
    Category = apps.get_model("shop", "Category")
    Category.objects.bulk_create([Category(name=n) for n in NAMES])
    report = os.environ.get("SHOP_REPORT_DIR")  # the template's test counts how often migrations run
    if report:
        open(os.path.join(report, f"migrated-{os.getpid()}"), "w").close()


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
