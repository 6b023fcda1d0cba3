"""Middleware of the items service: one concern per module, each usable on the sync and the async path."""
