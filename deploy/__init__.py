"""Deployment: per-server configs, the start script of each process, and the native stack (deploy.stack)."""
