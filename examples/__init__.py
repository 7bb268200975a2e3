"""Worked examples of what runs next to liveroom (a platform backend)."""
