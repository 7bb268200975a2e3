"""Load tests and headless benchmarks that print JSON (issue: big-room fan-out)."""
