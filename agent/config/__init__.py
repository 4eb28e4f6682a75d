"""``streams.yaml``: read, checked against its schema, and turned into frozen dataclasses.

Entry: ``loader.load(path)`` returns a :class:`model.Config` or raises
:class:`model.ConfigError` naming file, line, key and value.  Every section of the
file lives here, the exporter's too; nothing here starts a process.
"""
