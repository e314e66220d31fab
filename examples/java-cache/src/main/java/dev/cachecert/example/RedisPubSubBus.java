package dev.cachecert.example;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import redis.clients.jedis.HostAndPort;
import redis.clients.jedis.Jedis;
import redis.clients.jedis.JedisClientConfig;
import redis.clients.jedis.JedisPubSub;
import redis.clients.jedis.RedisClient;

/**
 * Redis pub/sub: fire and forget. A message published while this node is down (or its subscriber
 * link is cut) is gone, so after a crash the node keeps serving the entries it missed invalidations
 * for, until something writes those keys again. That is the flaw crashed-subscriber exposes.
 */
final class RedisPubSubBus implements InvalidationBus {
    static final String CHANNEL = "cc:inv";
    private static final Logger log = LoggerFactory.getLogger(RedisPubSubBus.class);

    private final RedisClient redis;
    private final HostAndPort address;
    private final JedisClientConfig config;
    private final NodeCache cache;
    private volatile boolean subscribed;
    private volatile boolean running = true;
    private volatile Jedis connection;
    private int lost; // failed (re)subscribe attempts in a row; the listener thread's own

    RedisPubSubBus(RedisClient redis, HostAndPort address, JedisClientConfig config, NodeCache cache) {
        this.redis = redis;
        this.address = address;
        this.config = config;
        this.cache = cache;
    }

    @Override
    public void start() {
        Thread t = new Thread(this::listen, "pubsub");
        t.setDaemon(true);
        t.start();
    }

    private void listen() {
        while (running) {
            try (Jedis jedis = new Jedis(address, config)) {
                connection = jedis;
                jedis.subscribe(new JedisPubSub() {
                    @Override
                    public void onSubscribe(String channel, int count) {
                        subscribed = true;
                        log.info("subscribed to {}{}", channel, lost == 0 ? "" : " after " + lost + " failed attempt(s)");
                        lost = 0;
                    }

                    @Override
                    public void onMessage(String channel, String message) {
                        try {
                            InvalidationBus.apply(cache, message);
                        } catch (RuntimeException e) { // pub/sub does not redeliver: this one is lost
                            log.warn("invalidation {} not applied: {}", message, e.toString());
                        }
                    }
                }, CHANNEL);
            } catch (RuntimeException e) {
                if (running) { // resubscribe; what was published meanwhile is lost
                    if (lost == 0) {
                        log.warn("subscription to {} lost, resubscribing: {}", CHANNEL, e.toString());
                    }
                    lost++;
                    sleep(200);
                }
            }
        }
    }

    @Override
    public boolean ready() {
        return subscribed;
    }

    @Override
    public void publish(String key, long version) {
        redis.publish(CHANNEL, key + " " + version);
    }

    @Override
    public void close() {
        running = false;
        Jedis c = connection;
        if (c != null) {
            c.close();
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
