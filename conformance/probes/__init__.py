"""Turning traffic and stats into data: reply classifiers, batch helpers."""
