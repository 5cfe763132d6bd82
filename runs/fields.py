"""A JSON field that keeps the order of object keys on every database.

PostgreSQL's jsonb (what Django's JSONField uses there) reorders keys, and a table's columns must come back in the
order the script logged them. This field stores the JSON text as it is written.
"""

from __future__ import annotations

import json

from django.db import models


class OrderedJSONField(models.TextField):
    description = "JSON kept as text, so object keys keep their order"

    def from_db_value(self, value, expression, connection):
        return None if value is None else json.loads(value)

    def to_python(self, value):
        if value is None or not isinstance(value, str):
            return value
        return json.loads(value)

    def get_prep_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"), allow_nan=False)
