"""The TaskOverflow HTTP API (Litestar). Build it with ``api.app.create_app``."""
