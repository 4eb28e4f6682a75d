"""VAS exporter (``vas-exporter``), the node's only network-facing process: load-balancer
health, the /v2/health API and Prometheus metrics, all read from the agent's snapshot;
changes go to the agent's control socket.  Entry: :func:`app.create_app`.
"""
