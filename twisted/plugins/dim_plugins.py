"""twistd plugins for DIM: the embedded all-in-one ``dim``, ``dim-node`` and ``dim-gateway``."""
from __future__ import annotations

from twisted.application.service import ServiceMaker

dim = ServiceMaker("DIM", "dim.standalone", "DIM gateway and node in one process, on SQLite", "dim")
dimNode = ServiceMaker("DIM node", "dim.node.tap", "A DIM cluster node (Redis, Kafka, ZooKeeper)",
                       "dim-node")
dimGateway = ServiceMaker("DIM gateway", "dim.gateway.tap",
                          "The DIM HTTP gateway (Redis, ZooKeeper)", "dim-gateway")
