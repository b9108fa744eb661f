"""Integration tests: real Redis, ZooKeeper and Kafka, from DIM_REDIS / DIM_ZOOKEEPER / DIM_KAFKA."""
