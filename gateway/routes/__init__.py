"""FastAPI routers of the REST API (``/api``)."""
