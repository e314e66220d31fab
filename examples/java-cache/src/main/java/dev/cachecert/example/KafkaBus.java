package dev.cachecert.example;

import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import redis.clients.jedis.RedisClient;
import redis.clients.jedis.params.SetParams;

/**
 * Kafka with one stable consumer group per node (every node needs every message): auto-commit off,
 * offsets committed only after a batch is applied, {@code auto.offset.reset=earliest}. A node that
 * was down resumes from its last committed offset and replays what it missed.
 *
 * <p>The topic and group ids carry the run's bus token (Redis key {@code cc:bus-token}), so a run
 * never replays another run's messages. Static membership ({@code group.instance.id}) lets a
 * restarted node take its old place in the group at once instead of waiting for the dead
 * member's session to expire.
 */
final class KafkaBus implements InvalidationBus {
    static final String TOKEN_KEY = "cc:bus-token";
    private static final Logger log = LoggerFactory.getLogger(KafkaBus.class);

    private final String bootstrap;
    private final RedisClient redis;
    private final NodeCache cache;
    private final int node;
    private final int timeoutMs;
    private volatile boolean running = true;
    private volatile boolean assigned;
    private volatile boolean replaying;
    private volatile String topic;
    private volatile KafkaProducer<String, String> producer;
    private volatile KafkaConsumer<String, String> consumer;
    private Map<TopicPartition, Long> replayEnd = Map.of(); // touched by the consumer thread only

    KafkaBus(String bootstrap, RedisClient redis, NodeCache cache, int node, int timeoutMs) {
        this.bootstrap = bootstrap;
        this.redis = redis;
        this.cache = cache;
        this.node = node;
        this.timeoutMs = timeoutMs;
    }

    @Override
    public void start() {
        Thread t = new Thread(this::run, "kafka");
        t.setDaemon(true);
        t.start();
    }

    @Override
    public boolean ready() {
        return assigned && producer != null;
    }

    @Override
    public boolean replaying() {
        return replaying;
    }

    @Override
    public void publish(String key, long version) throws Exception {
        producer.send(new ProducerRecord<>(topic, key, key + " " + version)).get(timeoutMs, TimeUnit.MILLISECONDS);
    }

    private void run() {
        String token = null;
        while (running && token == null) {
            try {
                token = busToken();
                createTopic("cc-inv-" + token);
            } catch (Exception e) {
                log.warn("cannot set up the invalidation topic yet: {}", e.toString());
                token = null;
                sleep(500);
            }
        }
        if (!running) {
            return;
        }
        topic = "cc-inv-" + token;
        String group = "cc-" + token + "-n" + node;
        producer = new KafkaProducer<>(producerConfig());
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(consumerConfig(group))) {
            consumer = c;
            c.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                    onAssigned(c, group, partitions);
                }

                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> partitions) {}
            });
            while (running) {
                try {
                    consumeOnce(c);
                } catch (WakeupException e) {
                    throw e;
                } catch (RuntimeException e) { // keep consuming: this node is useless without it
                    log.warn("consumer error: {}", e.toString());
                    sleep(200);
                }
            }
        } catch (WakeupException e) {
            // close() asked us to stop
        }
    }

    private void onAssigned(KafkaConsumer<String, String> c, String group, Collection<TopicPartition> partitions) {
        try { // how far behind the restarted node is: replay is done once its position reaches these ends
            replayEnd = c.endOffsets(partitions, Duration.ofMillis(5 * timeoutMs));
            long behind = 0;
            for (TopicPartition tp : partitions) {
                behind += replayEnd.get(tp) - c.position(tp, Duration.ofMillis(5 * timeoutMs));
            }
            replaying = behind > 0;
            log.info("assigned {} in group {}: {} message(s) to replay", partitions, group, behind);
        } catch (RuntimeException e) {
            log.warn("assigned {} in group {}, offsets unknown: {}", partitions, group, e.toString());
            replayEnd = Map.of();
        }
        assigned = true;
    }

    private void consumeOnce(KafkaConsumer<String, String> c) {
        ConsumerRecords<String, String> records = c.poll(Duration.ofMillis(100));
        if (!records.isEmpty()) {
            try {
                for (ConsumerRecord<String, String> r : records) {
                    InvalidationBus.apply(cache, r.value());
                }
                c.commitSync(Duration.ofMillis(5 * timeoutMs)); // only what was applied
            } catch (WakeupException e) {
                throw e;
            } catch (RuntimeException e) { // not (all) applied or not committed: go back and apply again
                log.warn("invalidations not applied, retrying: {}", e.toString());
                rewind(c, records);
                sleep(200);
                return;
            }
        }
        if (replaying && caughtUp(c)) {
            replaying = false;
            log.info("replay done");
        }
    }

    private boolean caughtUp(KafkaConsumer<String, String> c) {
        try {
            return replayEnd.entrySet().stream().allMatch(e -> c.position(e.getKey()) >= e.getValue());
        } catch (RuntimeException e) { // partition no longer ours
            return true;
        }
    }

    private static void rewind(KafkaConsumer<String, String> c, ConsumerRecords<String, String> records) {
        for (TopicPartition tp : records.partitions()) {
            try {
                c.seek(tp, records.records(tp).get(0).offset());
            } catch (RuntimeException e) { // revoked meanwhile: the next owner starts at the last commit
                log.debug("cannot rewind {}: {}", tp, e.toString());
            }
        }
    }

    /** The run's token: cachecert sets one per run; a node started alone picks one for everybody. */
    private String busToken() {
        String token = redis.get(TOKEN_KEY);
        if (token == null) {
            redis.set(TOKEN_KEY, UUID.randomUUID().toString().replace("-", "").substring(0, 12), SetParams.setParams().nx());
            token = redis.get(TOKEN_KEY);
        }
        return token;
    }

    private void createTopic(String name) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("request.timeout.ms", 5 * timeoutMs);
        p.put("default.api.timeout.ms", 10 * timeoutMs);
        try (Admin admin = Admin.create(p)) {
            admin.createTopics(List.of(new NewTopic(name, 1, (short) 1))).all().get(10L * timeoutMs, TimeUnit.MILLISECONDS);
            log.info("created topic {}", name);
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof TopicExistsException)) {
                throw e;
            }
        }
    }

    private Properties producerConfig() {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("acks", "all");
        p.put("linger.ms", 0);
        p.put("max.block.ms", timeoutMs);
        p.put("request.timeout.ms", timeoutMs);
        p.put("delivery.timeout.ms", 2 * timeoutMs);
        return p;
    }

    private Properties consumerConfig(String group) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        p.put("group.id", group);
        p.put("group.instance.id", "node" + node);
        p.put("enable.auto.commit", false);
        p.put("auto.offset.reset", "earliest");
        p.put("session.timeout.ms", 6000);
        p.put("heartbeat.interval.ms", 500);
        p.put("fetch.max.wait.ms", 50);
        p.put("default.api.timeout.ms", 5 * timeoutMs);
        return p;
    }

    @Override
    public void close() {
        running = false;
        KafkaConsumer<String, String> c = consumer;
        if (c != null) {
            c.wakeup();
        }
        KafkaProducer<String, String> p = producer;
        if (p != null) {
            p.close(Duration.ofMillis(timeoutMs));
        }
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
