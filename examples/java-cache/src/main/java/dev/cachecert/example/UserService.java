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
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ThreadLocalRandom;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import redis.clients.jedis.ConnectionPoolConfig;
import redis.clients.jedis.DefaultJedisClientConfig;
import redis.clients.jedis.HostAndPort;
import redis.clients.jedis.JedisClientConfig;
import redis.clients.jedis.RedisClient;
import redis.clients.jedis.RedisProtocol;
import redis.clients.jedis.exceptions.JedisException;
import redis.clients.jedis.params.SetParams;

/**
 * {@code APP_MODE=users}: a user-profile service read through a Redis cache, for cachecert's
 * schema-migration workload. {@code SCHEMA_BUILD=1|2} says which build this is: the v1 code reads and
 * caches {@code {id, name, email}}, the v2 code needs {@code {id, name, email, phone, address, updated_at}}.
 * A rolling deploy replaces v1 nodes with v2 nodes while both share the cache, and {@code CACHE_KEYS}
 * is how the cache copes (the same two designs as strategies/schema.py):
 *
 * <ul>
 * <li>{@code plain}: key {@code user:ID}, the cache logic unchanged by the migration. An entry the v1
 *     code cached stays until its TTL; a v2 request path that needs the new fields (a share
 *     {@code REJECT_SHARE} of them, default 0.6) counts it as a miss and reads the DB without refilling,
 *     the others serve it as valid: an <em>old-schema read</em>.
 * <li>{@code versioned}: key {@code user:v<schema>:ID}: the v2 code reads v2 entries only, the v1
 *     entries age out. A write deletes both generations.
 * </ul>
 *
 * <pre>
 * GET /users/{id}   200 {"schema": s, "value": {...}, "version": n, "source": "cache"|"db", "hit": b,
 *                        "db_load": b[, "rejected_old": true]}; 404 no such user
 * PUT /users/{id}   body {"value": N} -> name "user-N", email "uN@example.com";
 *                   200 {"schema": s, "version": n[, "invalidate_error": ...]}; 409 no such user / never applied
 * GET /health       200 {"protocol": 1, "ready": true, "schema": s, "cache_keys": ...}
 * </pre>
 */
final class UserService {
    private static final Logger log = LoggerFactory.getLogger(UserService.class);
    /** Must never be served missing (null) under schema 2: payment verification (strategies/schema.py). */
    private static final List<String> CRITICAL = List.of("phone");

    record Config(int port, int node, int schema, boolean versionedKeys, double rejectShare, URI redisUrl,
                  URI databaseUrl, long ttlMs, int timeoutMs) {
        static Config fromEnv(Map<String, String> env, int port, int node, URI redisUrl, URI databaseUrl, int timeoutMs) {
            String build = env.getOrDefault("SCHEMA_BUILD", "");
            if (!build.equals("1") && !build.equals("2")) {
                throw new IllegalArgumentException("APP_MODE=users needs SCHEMA_BUILD=1 or 2 (the schema this build's "
                        + "code reads), got '" + build + "'");
            }
            String keys = env.getOrDefault("CACHE_KEYS", env.getOrDefault("CACHECERT_PARAM_CACHE_KEYS", "plain"));
            if (!keys.equals("plain") && !keys.equals("versioned")) {
                throw new IllegalArgumentException("CACHE_KEYS must be plain or versioned, got " + keys);
            }
            double ttl = Double.parseDouble(env.getOrDefault("CACHECERT_PARAM_TTL", "3"));
            long ttlMs = (long) (ttl * 1000);
            if (ttlMs < 1) {
                throw new IllegalArgumentException("ttl must be at least 1 ms, got " + ttl);
            }
            double share = Double.parseDouble(env.getOrDefault("REJECT_SHARE",
                    env.getOrDefault("CACHECERT_PARAM_REJECT_SHARE", "0.6")));
            if (!(share >= 0 && share <= 1)) {
                throw new IllegalArgumentException("REJECT_SHARE must be in [0, 1], got " + share);
            }
            return new Config(port, node, Integer.parseInt(build), keys.equals("versioned"), share, redisUrl,
                    databaseUrl, ttlMs, timeoutMs);
        }
    }

    private record Reply(int status, JsonObject body) {}

    private final Config cfg;
    private final RedisClient redis;
    private final UserStore db;
    private final String nodeId;

    UserService(Config cfg, RedisClient redis, UserStore db, String nodeId) {
        this.cfg = cfg;
        this.redis = redis;
        this.db = db;
        this.nodeId = nodeId;
    }

    // -- the cache -------------------------------------------------------------------------------
    /** This build's cache key: {@code user:ID}, or {@code user:v<schema>:ID} with versioned keys. */
    private String ckey(String id) {
        return cfg.versionedKeys() ? "user:v" + cfg.schema() + ":" + id : "user:" + id;
    }

    /** The fields the schema-{@code schema} code needs that {@code user} lacks (critical ones must be non-null). */
    static List<String> missingFields(JsonElement user, int schema) {
        List<String> fields = UserStore.FIELDS.get(schema);
        if (user == null || !user.isJsonObject()) {
            return fields;
        }
        JsonObject o = user.getAsJsonObject();
        List<String> missing = new ArrayList<>();
        for (String f : fields) {
            if (!o.has(f) || (CRITICAL.contains(f) && o.get(f).isJsonNull())) {
                missing.add(f);
            }
        }
        return missing;
    }

    /** GET: the cache, else the DB (then cached for the TTL). */
    Reply read(String id) throws SQLException, KvStore.NotApplied {
        int schema = cfg.schema(); // one code version for the whole request: key and fields agree
        String key = ckey(id);
        String raw;
        try {
            raw = redis.get(key);
        } catch (JedisException e) { // the cache is a copy: serve from the DB without it
            log.debug("cache unreachable, reading {} from the db: {}", id, e.toString());
            return fromDb(id, key, schema, false, false);
        }
        if (raw == null) {
            return fromDb(id, key, schema, true, false);
        }
        JsonObject cached = JsonParser.parseString(raw).getAsJsonObject();
        JsonElement user = cached.get("value");
        if (!cfg.versionedKeys() && !missingFields(user, schema).isEmpty()
                && ThreadLocalRandom.current().nextDouble() < cfg.rejectShare()) {
            // this request path needs the new fields: "cache miss reported", served from the DB, no refill
            // (the cache logic only fills on a real miss)
            return fromDb(id, key, schema, false, true);
        }
        return answer(schema, user, cached.get("version").getAsLong(), "cache", false);
    }

    private Reply fromDb(String id, String key, int schema, boolean fill, boolean rejectedOld)
            throws SQLException, KvStore.NotApplied {
        UserStore.Row row = db.load(id, schema);
        JsonElement user = row == null ? JsonNull.INSTANCE : row.user();
        long version = row == null ? 0 : row.version(); // 0: no such user (cached too, as a miss)
        if (fill) {
            JsonObject entry = new JsonObject();
            entry.add("value", user);
            entry.addProperty("version", version);
            try {
                redis.set(key, entry.toString(), SetParams.setParams().px(cfg.ttlMs()));
            } catch (JedisException e) {
                log.debug("fill of {} failed: {}", key, e.toString());
            }
        }
        Reply r = answer(schema, user, version, "db", true);
        if (rejectedOld) {
            r.body().addProperty("rejected_old", true);
        }
        return r;
    }

    private static Reply answer(int schema, JsonElement user, long version, String source, boolean dbLoad) {
        JsonObject body = new JsonObject();
        body.addProperty("schema", schema);
        if (version == 0 || user == null || user.isJsonNull()) {
            body.addProperty("error", "no such user");
            body.addProperty("source", source);
            return new Reply(404, body);
        }
        body.add("value", user);
        body.addProperty("version", version);
        body.addProperty("source", source);
        body.addProperty("hit", source.equals("cache"));
        body.addProperty("db_load", dbLoad);
        return new Reply(200, body);
    }

    /** PUT: commit to the DB, then delete the cached entry (with versioned keys: both generations). */
    Reply write(String id, String requestBody) throws SQLException, KvStore.NotApplied {
        JsonElement value;
        try {
            value = JsonParser.parseString(requestBody).getAsJsonObject().get("value");
        } catch (JsonParseException | IllegalStateException e) {
            value = null;
        }
        if (value == null) {
            return error(422, "the body must be a JSON object {\"value\": ...}");
        }
        String v = value.isJsonPrimitive() ? value.getAsString() : value.toString();
        int schema = cfg.schema();
        long version = db.update(id, "user-" + v, "u" + v + "@example.com", schema);
        if (version < 0) {
            return error(409, "no user " + id);
        }
        JsonObject body = new JsonObject();
        body.addProperty("schema", schema);
        body.addProperty("version", version);
        try { // neither generation may serve the old value
            if (cfg.versionedKeys()) {
                redis.del("user:v1:" + id, "user:v2:" + id);
            } else {
                redis.del(ckey(id));
            }
        } catch (JedisException e) { // the write happened; the cached entry may serve the old value until its TTL
            log.warn("{} committed as version {} but its cache delete failed: {}", id, version, e.toString());
            body.addProperty("invalidate_error", e.toString());
        }
        return new Reply(200, body);
    }

    // -- HTTP ------------------------------------------------------------------------------------
    private void users(HttpExchange ex) throws IOException {
        Reply reply;
        try {
            String id = ex.getRequestURI().getPath().substring("/users/".length());
            if (id.isEmpty()) {
                reply = error(404, "no id in the path");
            } else {
                reply = switch (ex.getRequestMethod()) {
                    case "GET" -> read(id);
                    case "PUT" -> write(id, new String(ex.getRequestBody().readAllBytes(), StandardCharsets.UTF_8));
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
        body.addProperty("ready", true);
        body.addProperty("node", nodeId);
        body.addProperty("schema", cfg.schema());
        body.addProperty("cache_keys", cfg.versionedKeys() ? "versioned" : "plain");
        send(ex, new Reply(200, body));
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
    static void serve(Config cfg, String nodeId) throws IOException {
        HostAndPort redisAddress = new HostAndPort(cfg.redisUrl().getHost(), cfg.redisUrl().getPort());
        String dbIndex = cfg.redisUrl().getPath() == null ? "" : cfg.redisUrl().getPath().replace("/", "");
        JedisClientConfig redisConfig = DefaultJedisClientConfig.builder()
                .connectionTimeoutMillis(cfg.timeoutMs()).socketTimeoutMillis(cfg.timeoutMs())
                .database(dbIndex.isEmpty() ? 0 : Integer.parseInt(dbIndex)).clientName("java-users-" + nodeId)
                .protocol(RedisProtocol.RESP2).build();
        ConnectionPoolConfig pool = new ConnectionPoolConfig();
        pool.setMaxTotal(32);
        pool.setMaxWait(Duration.ofMillis(cfg.timeoutMs()));
        RedisClient redis = RedisClient.builder().hostAndPort(redisAddress).clientConfig(redisConfig).poolConfig(pool).build();
        UserStore store = new UserStore(cfg.databaseUrl(), cfg.timeoutMs(), "java-users-" + nodeId);
        UserService service = new UserService(cfg, redis, store, nodeId);

        System.setProperty("sun.net.httpserver.nodelay", "true");
        HttpServer server = HttpServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), cfg.port()), 128);
        server.createContext("/health", service::health);
        server.createContext("/users/", service::users);
        ExecutorService workers = Executors.newFixedThreadPool(16);
        server.setExecutor(workers);
        server.start();
        log.info("{} listening on 127.0.0.1:{}, users mode: schema-{} build, {} cache keys, ttl {} ms", nodeId,
                cfg.port(), cfg.schema(), cfg.versionedKeys() ? "versioned" : "plain", cfg.ttlMs());

        Runtime.getRuntime().addShutdownHook(new Thread(() -> { // SIGTERM: a graceful stop (a rolling deploy)
            server.stop(0);
            workers.shutdownNow();
            store.close();
            redis.close();
        }, "shutdown"));
    }
}
