"""The conversation worker: executes queued runs (agent turns) and recovers abandoned ones."""
