"""LLM-driven characters that join rooms as agents (issue: LLM characters)."""
