"""The transactional workload of the chaos suite: consume-transform-produce, and its checks.

A `TxnPipeline` thread reads an input topic in a consumer group (read_committed), and for
each batch it read opens a transaction on a transactional producer (confluent-kafka,
`transactional.id`), writes one output record per input record to the same partition of
the output topic, adds the consumer's positions with `send_offsets_to_transaction`, and
commits, or (seeded: one in five) aborts, or (one in ten) lets a successor producer with
the same transactional.id fence it first, as when a paused instance is replaced: the
zombie's commit must then fail and its transaction be aborted. After an abort, or a
transaction whose end the client never learnt, it rewinds to the group's committed
offsets, so the batch is transformed again. An output record's value names its input and its transaction:
`<input partition>:<input offset>:<input value>:<transaction>`.

`check_pipeline` reads the output topic with read_committed and finds:
- a committed transaction (its commit acknowledged) not wholly visible, or an aborted one
  (its abort acknowledged) of which anything is visible;
- a zombie's commit that succeeded after its successor fenced it;
- an input record transformed twice, or one below the group's committed offset not
  transformed (committed offsets and output must agree: both are in one transaction);
- an acknowledged input record not transformed at all once the pipeline drained;
- replicas of the output topic (control batches included) not byte-identical below the
  high watermark.
"""

from __future__ import annotations

import random
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from strom.testing.cluster import BackgroundProducer, Cluster, wait_until
from strom.testing.txn_clients import read_to_end

__all__ = ["TxnPipeline", "check_pipeline", "judge"]


class TxnPipeline(threading.Thread):
    def __init__(self, bootstrap: str, source: str, sink: str, partitions: int, seed: int,
                 batch: int = 200, timeout_ms: int = 10000) -> None:
        super().__init__(daemon=True, name="chaos-txn-pipeline")
        self.bootstrap, self.source, self.sink = bootstrap, source, sink
        self.partitions, self.batch, self.timeout_ms = partitions, batch, timeout_ms
        self.rng = random.Random(seed)
        self.group = f"chaos-txn-{seed}"
        self.transactional_id = f"chaos-txn-{seed}"
        self.outcomes: dict[str, str] = {}  # transaction -> committed, aborted, unknown
        self.sizes: dict[str, int] = {}  # transaction -> records written
        self.fenced = 0  # producers replaced (after a fatal error, or to fence a zombie)
        self.zombie_commits: list[str] = []  # a fenced producer's commit that succeeded
        self.error: BaseException | None = None
        self._step = "starting"
        self.step_since = time.monotonic()
        self._stop_flag = threading.Event()

    def start(self) -> TxnPipeline:
        super().start()
        return self

    def stop(self, timeout: float = 90) -> None:
        self._stop_flag.set()
        self.join(timeout)

    @property
    def step(self) -> str:
        """The client call under way (and `step_since`), to tell where a stall is."""
        return self._step

    @step.setter
    def step(self, text: str) -> None:
        self._step, self.step_since = text, time.monotonic()

    def committed_count(self) -> int:
        return sum(o == "committed" for o in list(self.outcomes.values()))

    def _producer(self) -> Producer:
        p = Producer({"bootstrap.servers": self.bootstrap,
                      "transactional.id": self.transactional_id,
                      "transaction.timeout.ms": self.timeout_ms, "linger.ms": 5,
                      "socket.timeout.ms": 5000, "log_level": 2,
                      "message.timeout.ms": self.timeout_ms - 1000})
        p.init_transactions(90)
        return p

    def group_offsets(self, consumer: Consumer | None = None) -> dict[int, int]:
        """The group's committed offsets (stable: pending transactional ones waited for)."""
        own = consumer is None
        c = consumer or Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                                  "enable.auto.commit": False, "log_level": 2,
                                  "isolation.level": "read_committed"})
        try:
            tps = c.committed([TopicPartition(self.source, p) for p in range(self.partitions)],
                              timeout=30)
        finally:
            if own:
                c.close()
        return {tp.partition: max(tp.offset, 0) for tp in tps}

    def _rewind(self, consumer: Consumer) -> None:
        assigned = {tp.partition for tp in consumer.assignment()}
        for p, offset in self.group_offsets(consumer).items():
            if p in assigned:
                consumer.seek(TopicPartition(self.source, p, offset))

    def run(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                             "enable.auto.commit": False, "auto.offset.reset": "earliest",
                             "isolation.level": "read_committed", "session.timeout.ms": 10000,
                             "socket.timeout.ms": 10000, "log_level": 2})
        n = 0
        try:
            consumer.subscribe([self.source])
            producer = self._producer()
            while not self._stop_flag.is_set():
                msgs = [m for m in consumer.consume(self.batch, 0.5) if not m.error()]
                if not msgs:
                    continue
                txn = f"t{n}"
                n += 1
                self.outcomes[txn] = "unknown"
                self.sizes[txn] = len(msgs)
                roll = self.rng.randrange(10)
                abort, zombie = roll < 2, roll == 2
                try:
                    self.step = f"{txn}: begin and produce {len(msgs)}"
                    producer.begin_transaction()
                    for m in msgs:
                        producer.produce(self.sink, partition=m.partition(), value=b"%d:%d:%s:%s" % (
                            m.partition(), m.offset(), m.value(), txn.encode()))
                    self.step = f"{txn}: send_offsets_to_transaction"
                    producer.send_offsets_to_transaction(
                        consumer.position(consumer.assignment()),
                        consumer.consumer_group_metadata(), 30)
                    self.step = f"{txn}: end ({'abort' if abort else 'commit'})"
                    if abort:
                        producer.abort_transaction(30)
                        self.outcomes[txn] = "aborted"
                    elif zombie:
                        producer = self._zombie(producer, txn)
                    else:
                        self._commit(producer)
                        self.outcomes[txn] = "committed"
                        continue
                except KafkaException as e:
                    err = e.args[0]
                    if err.txn_requires_abort():
                        try:
                            producer.abort_transaction(30)
                            self.outcomes[txn] = "aborted"
                        except KafkaException:
                            producer = self._replace(producer)
                    else:
                        producer = self._replace(producer)
                self.step = f"{txn}: rewind to the group's offsets"
                self._rewind(consumer)
            self.step = "stopped"
        except BaseException as e:  # noqa: BLE001 - reported by check_pipeline
            self.error = e
        finally:
            consumer.close()

    def _zombie(self, producer: Producer, txn: str) -> Producer:
        """A successor with the same transactional.id takes over while `txn` is open (as
        after the old one was paused past its timeout); the old producer, a zombie now,
        must be refused its commit, and `txn` is aborted. Returns the successor."""
        successor = self._producer()
        self.fenced += 1
        try:
            producer.commit_transaction(30)
            self.zombie_commits.append(txn)
            self.outcomes[txn] = "committed"
        except KafkaException:
            self.outcomes[txn] = "aborted"  # fenced: the coordinator aborted it
        return successor

    @staticmethod
    def _commit(producer: Producer) -> None:
        """commit_transaction, again while the client says a retry may succeed."""
        for _ in range(10):
            try:
                producer.commit_transaction(30)
                return
            except KafkaException as e:
                if not e.args[0].retriable():
                    raise
                time.sleep(0.5)
        producer.commit_transaction(30)

    def _replace(self, producer: Producer) -> Producer:
        """A new producer with the same transactional.id: its InitProducerId completes or
        aborts what the old one left open, so the group's offsets are settled after it."""
        self.fenced += 1
        try:
            producer.flush(5)
        except KafkaException:
            pass
        return self._producer()


def check_pipeline(cluster: Cluster, pipeline: TxnPipeline, source: BackgroundProducer,
                   drain_timeout: float = 90) -> list[str]:
    """Let the pipeline transform everything `source` acknowledged (bounded), stop it and
    check the output; returns the problems found (see the module docstring)."""
    problems: list[str] = []
    ends = {p: cluster.high_watermark(source.topic, p) for p in range(pipeline.partitions)}
    try:
        wait_until(lambda: pipeline.error is not None or all(
            o >= ends[p] for p, o in pipeline.group_offsets().items()), drain_timeout,
            interval=1.0, what=f"the pipeline transforming up to {ends}")
    except TimeoutError as e:
        problems.append(f"{e} (the pipeline's client call under way: {pipeline.step}, "
                        f"since {time.monotonic() - pipeline.step_since:.0f} s)")
    pipeline.stop()
    if pipeline.error is not None:
        problems.append(f"pipeline failed: {pipeline.error!r}")
    problems += [f"zombie committed {txn} after a successor fenced it"
                 for txn in pipeline.zombie_commits]
    committed = pipeline.group_offsets()
    values = read_to_end(cluster.live_bootstrap(), pipeline.sink, pipeline.partitions,
                         committed=True, timeout=120)
    return problems + judge(values, dict(pipeline.outcomes), dict(pipeline.sizes), committed,
                            source.acked, pipeline.partitions)


def judge(values: list[bytes], outcomes: dict[str, str], sizes: dict[str, int],
          committed: dict[int, int], acked: list[tuple[int, int, int]], partitions: int
          ) -> list[str]:
    """What read_committed saw of the output (`values`), against each transaction's outcome
    and size as the client saw them, the group's committed offsets of the input and the
    input producer's acknowledgements (partition, offset, seq)."""
    problems: list[str] = []
    seen: dict[tuple[int, int], bytes] = {}
    inputs: set[tuple[int, bytes]] = set()  # (input partition, input value) transformed
    by_txn: dict[str, int] = {}
    for v in values:
        p, offset, value, txn = v.split(b":")
        key = (int(p), int(offset))
        inputs.add((key[0], value))
        if key in seen:
            problems.append(f"input p{key[0]}@{key[1]} transformed twice (transactions "
                            f"{seen[key].decode()} and {txn.decode()})")
        seen[key] = txn
        by_txn[txn.decode()] = by_txn.get(txn.decode(), 0) + 1
    for txn, outcome in outcomes.items():
        visible = by_txn.get(txn, 0)
        if outcome == "aborted" and visible:
            problems.append(f"{visible} records of aborted transaction {txn} visible")
        elif outcome == "committed" and visible != sizes[txn]:
            problems.append(f"committed transaction {txn}: {visible} of {sizes[txn]} "
                            f"records visible")
        elif visible not in (0, sizes.get(txn)):
            problems.append(f"transaction {txn} ({outcome}) half visible: {visible}")
    for txn in by_txn.keys() - outcomes.keys():
        problems.append(f"records of transaction {txn} that was never begun")
    for p in range(partitions):
        done = {o for q, o in seen if q == p}
        upto = committed.get(p, 0)
        if done != set(range(upto)):
            missing = sorted(set(range(upto)) - done)
            beyond = sorted(o for o in done if o >= upto)
            problems.append(f"p{p}: group committed {upto} but the output covers "
                            f"{len(done)} inputs (missing {missing[:5]}, beyond {beyond[:5]})")
    # an acknowledgement without an offset (librdkafka's for a retried idempotent batch
    # the broker answered DUPLICATE_SEQUENCE_NUMBER) is matched by the input's value
    by_offset = {(p, o): seq for p, o, seq in acked if o is not None}
    never = [f"p{p}@{o}" for p, o, seq in acked
             if ((p, o) not in seen if o is not None else (p, b"%d" % seq) not in inputs)]
    if never:
        problems.append(f"{len(never)} acknowledged inputs never transformed: {never[:5]}")
    for v in values:
        p, offset, value, _ = v.split(b":")
        expected = by_offset.get((int(p), int(offset)))
        if expected is not None and int(value) != expected:
            problems.append(f"input p{int(p)}@{int(offset)} transformed from {value!r}, "
                            f"acknowledged {expected}")
    return problems
