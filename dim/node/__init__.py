"""The DIM node: client connections, delivery, acknowledgement, retransmission, heartbeat.

- :mod:`dim.node.connection`: :class:`ClientConnection`, one client's framed TCP connection;
- :mod:`dim.node.delivery`: :class:`NodeCore`, what the node does with each frame;
- :mod:`dim.node.heartbeat`: :class:`HeartbeatMonitor`, closes silent connections;
- :mod:`dim.node.throttle`: per-user token buckets limiting ``send`` and ``typing``;
- :mod:`dim.node.service`: :class:`NodeService`, the listening port and all of the above;
- :mod:`dim.node.metrics`: the node's Prometheus metrics.
"""
