"""Model backends behind one small interface (``llm_agents.backends.base``)."""
