"""Tests against the real services DIM uses (Redis, ZooKeeper, Kafka).

They expect a running stack (`eval "$(scripts/stack up)"`, or `scripts/test`, which starts
one) and read its addresses from DIM_REDIS, DIM_ZOOKEEPER and DIM_KAFKA
(see tests.integration.services). A service that does not answer makes its tests fail.
"""
