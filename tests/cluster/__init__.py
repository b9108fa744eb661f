"""Cluster mode end to end: a gateway and several nodes as real twistd processes, on the real
Redis, ZooKeeper and Kafka (``scripts/stack up``; the tests fail when a service is absent).

Every cluster a test starts has a name of its own (its Redis key prefix, ZooKeeper root and
Kafka topics) and node ids of its own, on free ports, and removes what it made when done.
"""
