"""Fleet mode: which of the fleet-wide streams this node runs, decided on etcd, and the
fence that stops a paused node's children before another node takes its cameras.

Entry: :class:`node.Fleet`.
"""
