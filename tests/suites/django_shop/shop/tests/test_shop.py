"""An ordinary pytest-django suite: nothing here knows about workers or copies."""
import os
import time

import pytest
from django.db import connection, transaction

from shop.models import Category, Product


@pytest.mark.parametrize("n", range(8))
def test_a_product_with_a_fixed_sku(db, n):
    # the same unique SKU in every test: rolled back after each one
    Product.objects.create(sku="SKU-1", category=Category.objects.get(name="books"), stock=n)
    assert Product.objects.get(sku="SKU-1").stock == n


@pytest.mark.parametrize("n", range(6))
def test_committed_rows_need_their_own_database(transactional_db, n):
    # committed for real, then flushed: two workers sharing one database would see each other's rows
    with transaction.atomic():
        Category.objects.create(name="shared-name")
        Product.objects.create(sku=f"T-{n}", category=Category.objects.get(name="shared-name"))
    time.sleep(0.2)  # the work a real test does: long enough for another worker's run to overlap
    assert Product.objects.count() == 1
    assert Category.objects.filter(name="shared-name").count() == 1


def test_migrations_ran_data_included(db):
    assert sorted(Category.objects.values_list("name", flat=True)) == ["books", "games", "tools"]


@pytest.mark.django_db(serialized_rollback=True, transaction=True)
def test_serialized_rollback_restores_the_seeded_rows():
    Category.objects.all().delete()
    assert Category.objects.count() == 0


@pytest.mark.django_db(serialized_rollback=True, transaction=True)
def test_seeded_rows_are_back_after_a_serialized_rollback():
    assert Category.objects.count() == 3


def test_django_and_libpq_agree_on_the_database(db):
    # what the suite reports, for the template's test to check against the copy and worker
    name = connection.settings_dict["NAME"]
    report = os.environ.get("SHOP_REPORT_DIR")
    if report:
        with open(os.path.join(report, f"{os.environ.get('PYTEST_XDIST_WORKER', 'master')}-{name}"), "w"):
            pass
    assert name == os.environ["PGDATABASE"]


def test_db_is_pytest_djangos_fixture(db):
    # parallel-stacks' own connection fixture is `worker_db` (its old `db` would be a psycopg connection);
    # with pytest-django installed, `db` is pytest-django's: it returns None and unblocks the ORM
    assert db is None
    assert Category.objects.count() == 3  # and it unblocked the ORM, as pytest-django's does
