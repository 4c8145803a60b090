"""Helpers and stubs shared by the tests."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
