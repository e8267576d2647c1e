"""Shared infrastructure (not a Django app): Redis clients and channel names."""
