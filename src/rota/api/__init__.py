"""The HTTP API (django-ninja): OpenAPI at /openapi.json, docs at /docs."""
