"""Delivery pipeline for the coaching platform's scheduled messages."""

__version__ = "0.1.0"

SERVICE = "proactive-delivery"
