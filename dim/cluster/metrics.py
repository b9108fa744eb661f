"""Prometheus figures of the bus between nodes (Kafka) and of ZooKeeper, per process.

Forwarders and registries register themselves here; the collector reads them at scrape time
(envelopes in flight, consumer lag, brokers up, ZooKeeper state), and counters and the
produce latency histogram are bumped as things happen, on the reactor thread.  Whatever
serves ``/metrics`` for the process (the gateway; a node with ``--metrics``) exposes them.
"""
from __future__ import annotations

import weakref
from collections import Counter as _Tally
from typing import Any
from collections.abc import Iterator

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

#: Kafka errors reported by librdkafka (error_cb and failed deliveries), by error name.
kafka_errors: _Tally[str] = _Tally()
#: Plain event counts: records_out, envelopes_out, envelopes_in, nudges_out, nudged_in,
#: repeats_dropped, zookeeper_suspended, zookeeper_lost.
events: _Tally[str] = _Tally()

PRODUCE_LATENCY = Histogram(
    "dim_bus_produce_latency_seconds",
    "Time from producing a record to the brokers' acknowledgement (acks=all)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
             30.0))

_forwarders: weakref.WeakSet[Any] = weakref.WeakSet()
_registries: weakref.WeakSet[Any] = weakref.WeakSet()

#: The ZooKeeper connection states a registry reports (kazoo's, plus "closed").
ZK_STATES = ("CONNECTED", "SUSPENDED", "LOST", "closed")


def add_forwarder(forwarder: Any) -> None:
    """Report ``forwarder`` (``in_flight()``, ``consumer_lag``, ``brokers_up``,
    ``brokers_known``, ``node``) at scrape time while it lives."""
    _forwarders.add(forwarder)


def add_registry(registry: Any) -> None:
    """Report ``registry.zk_state`` at scrape time while it lives."""
    _registries.add(registry)


def count(event: str, n: int = 1) -> None:
    """Count an event (see :data:`events`)."""
    events[event] += n


def kafka_error(name: str) -> None:
    """Count one Kafka error by librdkafka's name for it."""
    kafka_errors[name] += 1


class BusCollector:
    """Reports the bus's figures to Prometheus at scrape time."""

    def collect(self) -> Iterator[Metric]:
        """The bus's metrics, now."""
        forwarders = list(_forwarders)
        in_flight = GaugeMetricFamily(
            "dim_bus_envelopes_in_flight",
            "Envelopes handed to Kafka and not yet acknowledged by the brokers")
        in_flight.add_metric([], sum(f.in_flight() for f in forwarders))
        yield in_flight
        lag = GaugeMetricFamily("dim_bus_consumer_lag",
                                "Records on this node's topic not read yet", labels=["node"])
        up = GaugeMetricFamily("dim_bus_kafka_brokers_up",
                               "Kafka brokers this process is connected to", labels=["node"])
        known = GaugeMetricFamily("dim_bus_kafka_brokers_known",
                                  "Kafka brokers this process knows of", labels=["node"])
        for f in forwarders:
            if f.consumer_lag is not None:
                lag.add_metric([f.node], f.consumer_lag)
            up.add_metric([f.node], f.brokers_up)
            known.add_metric([f.node], f.brokers_known)
        yield lag
        yield up
        yield known
        errors = CounterMetricFamily("dim_bus_kafka_errors",
                                     "Kafka errors reported by librdkafka", labels=["error"])
        for name, value in sorted(kafka_errors.items()):
            errors.add_metric([name], value)
        yield errors
        for event, doc in (
                ("records_out", "Kafka records produced (one per destination node per tick)"),
                ("envelopes_out", "Envelopes handed to Kafka"),
                ("nudges_out", "Records sent again on the nudge partitions, held up too long"),
                ("nudged_in", "Envelopes received first through a nudge partition"),
                ("repeats_dropped", "Envelopes received again and dropped"),
                ("zookeeper_suspended", "ZooKeeper connections lost (session kept)"),
                ("zookeeper_lost", "ZooKeeper sessions lost")):
            yield CounterMetricFamily(f"dim_bus_{event}", doc, value=events[event])
        state = GaugeMetricFamily("dim_bus_zookeeper_state",
                                  "1 for the ZooKeeper connection state of each registry",
                                  labels=["state"])
        registries = list(_registries)
        for name in ZK_STATES:
            state.add_metric([name], sum(1 for r in registries if r.zk_state == name))
        yield state


REGISTRY.register(BusCollector())
