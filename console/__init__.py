"""The web console and its JSON API, served by the process that owns the store."""
