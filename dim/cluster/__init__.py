"""Cluster plumbing: node registry (ZooKeeper), forwarding (Kafka), sessions, and the thread bridge."""
