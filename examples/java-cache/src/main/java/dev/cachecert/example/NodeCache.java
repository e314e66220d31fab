package dev.cachecert.example;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.List;
import redis.clients.jedis.RedisClient;
import redis.clients.jedis.exceptions.JedisNoScriptException;

/**
 * This node's cache: a namespace {@code n<I>:} in Redis, standing for the sidecar cache that runs
 * next to an app process and outlives it. A crashed and restarted node finds its old entries here,
 * which is why what its invalidation bus lost while it was down matters.
 *
 * <p>Entries are {@code {"value": ..., "version": n}}. Fills and invalidations are version-guarded
 * Lua scripts: an invalidation leaves a tombstone with the new version, and a fill older than the
 * entry or tombstone is refused, so a slow fill cannot resurrect a value an invalidation removed.
 */
final class NodeCache {
    /** A cached value and the DB version it was read at. */
    record Entry(JsonElement value, long version) {}

    /** Fill unless the key already holds this version or newer (entry or tombstone). */
    private static final String FILL = """
            local cur = redis.call('GET', KEYS[1])
            if cur then
              local c = cjson.decode(cur)
              if c.tomb and tonumber(c.tomb) > tonumber(ARGV[2]) then return 0 end
              if c.version and tonumber(c.version) >= tonumber(ARGV[2]) then return 0 end
            end
            if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
            else redis.call('SET', KEYS[1], ARGV[1]) end
            return 1
            """;
    /** "The key changed to version V": replace anything older with a tombstone carrying V. */
    private static final String INVALIDATE = """
            local cur = redis.call('GET', KEYS[1])
            if cur then
              local c = cjson.decode(cur)
              if c.version and tonumber(c.version) >= tonumber(ARGV[1]) then return 0 end
              if c.tomb and tonumber(c.tomb) >= tonumber(ARGV[1]) then return 0 end
            end
            redis.call('SET', KEYS[1], cjson.encode({tomb = tonumber(ARGV[1])}), 'PX', ARGV[2])
            return 1
            """;
    private static final long TOMBSTONE_MS = 600_000;
    private static final String FILL_SHA = sha1(FILL);
    private static final String INVALIDATE_SHA = sha1(INVALIDATE);

    private final RedisClient redis;
    private final String prefix;
    private final long ttlMs;

    /** {@code ttlMs} 0: entries live until invalidated. */
    NodeCache(RedisClient redis, int node, long ttlMs) {
        this.redis = redis;
        this.prefix = "n" + node + ":";
        this.ttlMs = ttlMs;
    }

    /** The live entry for {@code key}, or null (none, or a tombstone). */
    Entry get(String key) {
        String raw = redis.get(prefix + key);
        if (raw == null) {
            return null;
        }
        JsonObject o = JsonParser.parseString(raw).getAsJsonObject();
        return o.has("version") ? new Entry(o.get("value"), o.get("version").getAsLong()) : null;
    }

    /** Caches {@code value} at {@code version} unless the cache knows a newer one. */
    void fill(String key, JsonElement value, long version) {
        JsonObject entry = new JsonObject();
        entry.add("value", value);
        entry.addProperty("version", version);
        run(FILL_SHA, FILL, key, entry.toString(), String.valueOf(version), String.valueOf(ttlMs));
    }

    /** Applies "{@code key} is now at {@code version}" (idempotent, so a replay is harmless). */
    void invalidate(String key, long version) {
        run(INVALIDATE_SHA, INVALIDATE, key, String.valueOf(version), String.valueOf(Math.max(ttlMs, TOMBSTONE_MS)));
    }

    private void run(String sha, String script, String key, String... args) {
        List<String> keys = List.of(prefix + key);
        try {
            redis.evalsha(sha, keys, List.of(args));
        } catch (JedisNoScriptException e) { // first use, or Redis restarted: send the script itself
            redis.eval(script, keys, List.of(args));
        }
    }

    private static String sha1(String script) {
        try {
            MessageDigest md = MessageDigest.getInstance("SHA-1");
            return HexFormat.of().formatHex(md.digest(script.getBytes(StandardCharsets.UTF_8)));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
