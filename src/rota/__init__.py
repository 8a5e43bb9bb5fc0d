"""rota: distributed job scheduling and execution for Python teams."""

__version__ = "0.1.0"
