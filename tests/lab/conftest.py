"""Lab tests use the session lab from tests/conftest.py."""
