"""Composition root and CLI of liveroom."""
