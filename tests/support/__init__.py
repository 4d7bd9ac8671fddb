"""Helpers the tests share: real processes started and stopped by PID."""
