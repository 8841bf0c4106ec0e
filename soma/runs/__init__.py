"""The durable run: its events, its state transitions and how clients read them.

Shared by the gateway (accept, cancel, stream) and the runtime (execute), which never import
each other.
"""
