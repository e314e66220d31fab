package dev.cachecert.example;

import com.google.gson.JsonElement;
import com.google.gson.JsonNull;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.sql.SQLException;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import redis.clients.jedis.ConnectionPoolConfig;
import redis.clients.jedis.DefaultJedisClientConfig;
import redis.clients.jedis.HostAndPort;
import redis.clients.jedis.JedisClientConfig;
import redis.clients.jedis.RedisClient;
import redis.clients.jedis.RedisProtocol;
import redis.clients.jedis.exceptions.JedisException;

/**
 * A small item cache with a REST API, built the way many services are: PostgreSQL is the system of
 * record, each node keeps a cache that outlives its process (a per-node namespace in Redis), and
 * writes invalidate the other nodes' caches over a bus ({@code INVALIDATION=pubsub|kafka-group}).
 *
 * <pre>
 * GET /items/{key}   200 {"value": ..., "version": n, "source": "cache"|"db"}; 404 no such item
 * PUT /items/{key}   body {"value": ...}; 200 {"version": n}
 * GET /health        200 once the node is subscribed to its invalidation bus, 503 before
 * </pre>
 *
 * 409 and 422 mean the write certainly did not happen; 503 means it may have. A write that
 * committed but whose invalidation failed did happen: 200, with {@code "invalidate_error"}.
 *
 * <p>{@code APP_MODE=users} starts the other service in this jar instead: {@link UserService}, a user
 * profile cache for a rolling v1 -> v2 deploy across a schema migration ({@code SCHEMA_BUILD=1|2}).
 */
public final class CacheService {
    private static final Logger log = LoggerFactory.getLogger(CacheService.class);

    /** What a node is told by its environment (docs/node-protocol.md). */
    record Config(int port, int node, String invalidation, URI redisUrl, URI databaseUrl, String kafka,
                  long ttlMs, int timeoutMs) {
        static Config fromEnv(Map<String, String> env) {
            String invalidation = env.getOrDefault("INVALIDATION", env.getOrDefault("CACHECERT_PARAM_INVALIDATION", "pubsub"));
            if (!invalidation.equals("pubsub") && !invalidation.equals("kafka-group")) {
                throw new IllegalArgumentException("INVALIDATION must be pubsub or kafka-group, got " + invalidation);
            }
            String kafka = env.get("KAFKA_BOOTSTRAP_SERVERS");
            if (invalidation.equals("kafka-group") && kafka == null) {
                throw new IllegalArgumentException("INVALIDATION=kafka-group needs KAFKA_BOOTSTRAP_SERVERS");
            }
            double ttlSeconds = Double.parseDouble(env.getOrDefault("CACHECERT_PARAM_TTL", "0"));
            return new Config(Integer.parseInt(required(env, "PORT")),
                    Integer.parseInt(env.getOrDefault("CACHECERT_NODE", "0")), invalidation,
                    URI.create(required(env, "REDIS_URL")), URI.create(required(env, "DATABASE_URL")), kafka,
                    Math.round(ttlSeconds * 1000), callTimeoutMs(env));
        }

        /** Each Redis/PG/Kafka call gives up after this: CALL_TIMEOUT_MS, else cachecert's
         *  CACHECERT_OP_TIMEOUT (seconds; its own op timeout x 0.8), else 1.5 s. */
        static int callTimeoutMs(Map<String, String> env) {
            if (env.containsKey("CALL_TIMEOUT_MS")) {
                return Integer.parseInt(env.get("CALL_TIMEOUT_MS"));
            }
            String op = env.get("CACHECERT_OP_TIMEOUT");
            return op == null ? 1500 : (int) Math.round(Double.parseDouble(op) * 1000);
        }

        static String required(Map<String, String> env, String name) {
            String v = env.get(name);
            if (v == null || v.isBlank()) {
                throw new IllegalArgumentException(name + " is not set");
            }
            return v;
        }
    }

    /** An HTTP answer. */
    private record Reply(int status, JsonObject body) {}

    private final NodeCache cache;
    private final KvStore db;
    private final InvalidationBus bus;
    private final String nodeId;

    CacheService(NodeCache cache, KvStore db, InvalidationBus bus, String nodeId) {
        this.cache = cache;
        this.db = db;
        this.bus = bus;
        this.nodeId = nodeId;
    }

    /** GET: this node's cache, else the DB (then cached, unless the cache knows a newer version). */
    Reply get(String key) throws SQLException, KvStore.NotApplied {
        boolean cacheUp = true;
        try {
            NodeCache.Entry hit = cache.get(key);
            if (hit != null) {
                return found(hit.value(), hit.version(), "cache");
            }
        } catch (JedisException e) { // the cache is a copy: serve from the DB without it
            cacheUp = false;
            log.debug("cache unreachable, reading {} from the db: {}", key, e.toString());
        }
        KvStore.Row row = db.read(key);
        JsonElement value = row == null ? JsonNull.INSTANCE : row.value();
        long version = row == null ? 0 : row.version(); // 0: no such item (cached too, as a miss)
        if (cacheUp) {
            try {
                cache.fill(key, value, version);
            } catch (JedisException e) {
                log.debug("fill of {} failed: {}", key, e.toString());
            }
        }
        return found(value, version, "db");
    }

    private Reply found(JsonElement value, long version, String source) {
        JsonObject body = new JsonObject();
        if (version == 0) {
            body.addProperty("error", "no such item");
        } else {
            body.add("value", value);
            body.addProperty("version", version);
        }
        body.addProperty("source", source);
        if (bus.replaying()) {
            body.addProperty("replaying", true);
        }
        return new Reply(version == 0 ? 404 : 200, body);
    }

    /** PUT: commit to the DB, drop this node's own entry, then tell the other nodes. */
    Reply put(String key, String requestBody) throws SQLException, KvStore.NotApplied {
        JsonElement value;
        try {
            value = JsonParser.parseString(requestBody).getAsJsonObject().get("value");
        } catch (JsonParseException | IllegalStateException e) {
            value = null;
        }
        if (value == null) {
            return error(422, "the body must be a JSON object {\"value\": ...}");
        }
        long version = db.write(key, value.toString());
        Exception failed = null;
        try {
            cache.invalidate(key, version);
        } catch (RuntimeException e) { // announce it all the same: our own subscriber applies it later
            failed = e;
        }
        try {
            bus.publish(key, version);
        } catch (Exception e) { // nobody hears of this version (a dual write: only an outbox would fix it)
            failed = e;
        }
        JsonObject body = new JsonObject();
        body.addProperty("version", version);
        if (failed != null) { // the write happened; some node may keep serving the old value
            log.warn("{} committed as version {} but its invalidation failed: {}", key, version, failed.toString());
            body.addProperty("invalidate_error", failed.toString());
        }
        return new Reply(200, body);
    }

    // -- HTTP ------------------------------------------------------------------------------------
    private void items(HttpExchange ex) throws IOException {
        Reply reply;
        try {
            String key = ex.getRequestURI().getPath().substring("/items/".length());
            if (key.isEmpty()) {
                reply = error(404, "no key in the path");
            } else if (!bus.ready()) {
                reply = error(503, "not ready: not subscribed to invalidations yet");
            } else {
                reply = switch (ex.getRequestMethod()) {
                    case "GET" -> get(key);
                    case "PUT" -> put(key, new String(ex.getRequestBody().readAllBytes(), StandardCharsets.UTF_8));
                    default -> error(405, "GET or PUT");
                };
            }
        } catch (KvStore.NotApplied e) {
            reply = error(409, e.getMessage());
        } catch (Exception e) { // a timeout or a broken link: it may or may not have happened
            log.warn("{} {}: {}", ex.getRequestMethod(), ex.getRequestURI(), e.toString());
            reply = error(503, e.toString());
        }
        send(ex, reply);
    }

    private void health(HttpExchange ex) throws IOException {
        JsonObject body = new JsonObject();
        body.addProperty("protocol", 1);
        body.addProperty("ready", bus.ready());
        body.addProperty("node", nodeId);
        send(ex, new Reply(bus.ready() ? 200 : 503, body));
    }

    private static Reply error(int status, String message) {
        JsonObject body = new JsonObject();
        body.addProperty("error", message);
        return new Reply(status, body);
    }

    private static void send(HttpExchange ex, Reply reply) throws IOException {
        byte[] bytes = reply.body().toString().getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "application/json");
        ex.sendResponseHeaders(reply.status(), bytes.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(bytes);
        }
    }

    // -- wiring ----------------------------------------------------------------------------------
    public static void main(String[] args) throws IOException {
        Map<String, String> env = System.getenv();
        String mode = env.getOrDefault("APP_MODE", "items");
        Config cfg;
        UserService.Config users = null;
        try {
            if (mode.equals("users")) { // schema-migration: UserService
                users = UserService.Config.fromEnv(env, Integer.parseInt(Config.required(env, "PORT")),
                        Integer.parseInt(env.getOrDefault("CACHECERT_NODE", "0")),
                        URI.create(Config.required(env, "REDIS_URL")), URI.create(Config.required(env, "DATABASE_URL")),
                        Config.callTimeoutMs(env));
                cfg = null;
            } else if (mode.equals("items")) {
                cfg = Config.fromEnv(env);
            } else {
                throw new IllegalArgumentException("APP_MODE must be items or users, got " + mode);
            }
        } catch (IllegalArgumentException e) { // NumberFormatException too
            System.err.println("java-cache: " + e.getMessage());
            System.exit(2);
            return;
        }
        if (users != null) {
            UserService.serve(users, env.getOrDefault("CACHECERT_NODE_ID", "node" + users.node()));
            return;
        }
        String nodeId = env.getOrDefault("CACHECERT_NODE_ID", "node" + cfg.node());

        HostAndPort redisAddress = new HostAndPort(cfg.redisUrl().getHost(), cfg.redisUrl().getPort());
        String db = cfg.redisUrl().getPath() == null ? "" : cfg.redisUrl().getPath().replace("/", "");
        JedisClientConfig redisConfig = DefaultJedisClientConfig.builder()
                .connectionTimeoutMillis(cfg.timeoutMs()).socketTimeoutMillis(cfg.timeoutMs())
                .database(db.isEmpty() ? 0 : Integer.parseInt(db)).clientName("java-cache-" + nodeId)
                .protocol(RedisProtocol.RESP2).build();
        ConnectionPoolConfig pool = new ConnectionPoolConfig();
        pool.setMaxTotal(32);
        pool.setMaxWait(Duration.ofMillis(cfg.timeoutMs()));
        RedisClient redis = RedisClient.builder().hostAndPort(redisAddress).clientConfig(redisConfig).poolConfig(pool).build();

        NodeCache cache = new NodeCache(redis, cfg.node(), cfg.ttlMs());
        KvStore store = new KvStore(cfg.databaseUrl(), cfg.timeoutMs(), "java-cache-" + nodeId);
        InvalidationBus bus = cfg.invalidation().equals("kafka-group")
                ? new KafkaBus(cfg.kafka(), redis, cache, cfg.node(), cfg.timeoutMs())
                : new RedisPubSubBus(redis, redisAddress, redisConfig, cache);
        CacheService service = new CacheService(cache, store, bus, nodeId);

        System.setProperty("sun.net.httpserver.nodelay", "true"); // no Nagle delay on small answers
        HttpServer server = HttpServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), cfg.port()), 128);
        server.createContext("/health", service::health);
        server.createContext("/items/", service::items);
        ExecutorService workers = Executors.newFixedThreadPool(16);
        server.setExecutor(workers);
        bus.start();
        server.start();
        log.info("{} listening on 127.0.0.1:{}, invalidation {}, ttl {} ms", nodeId, cfg.port(), cfg.invalidation(), cfg.ttlMs());

        Runtime.getRuntime().addShutdownHook(new Thread(() -> { // SIGTERM: a graceful restart
            server.stop(0);
            workers.shutdownNow();
            bus.close();
            store.close();
            redis.close();
        }, "shutdown"));
    }
}
