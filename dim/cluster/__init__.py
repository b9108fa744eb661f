"""Cluster plumbing: node registry (ZooKeeper), forwarding (Kafka), sessions, thread bridge."""
