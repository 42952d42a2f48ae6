"""A tiny shop package for the monitor tests."""
