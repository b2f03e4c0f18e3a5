"""The one exception type the data layer raises for bad input."""


class DataError(ValueError):
    """Bad or unreadable input data. The message names the file, field or flag at fault."""
