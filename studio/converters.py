"""Path converters: ids in URLs are database keys, never numbers the database cannot hold (a 400-digit id is a 404)."""


class IdConverter:
    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value) -> str:
        return str(int(value))
