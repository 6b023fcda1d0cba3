"""Grafana provisioning and dashboards (JSON); check.py checks every panel query offline."""
