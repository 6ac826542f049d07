"""Celery workers and the InstantID engine they keep resident."""
