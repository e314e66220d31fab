package dev.cachecert.example;

import com.google.gson.JsonNull;
import com.google.gson.JsonObject;
import java.net.URI;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.time.OffsetDateTime;
import java.time.format.DateTimeFormatter;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import org.postgresql.util.PSQLException;

/**
 * The system of record of {@code APP_MODE=users}: the {@code users} table cachecert's schema-migration
 * workload creates ({@code id, name, email, version}) and alters mid-run (adding {@code phone, address,
 * updated_at}). The code of schema {@code s} selects the columns it knows ({@link #FIELDS}), so a v1
 * build keeps reading {@code {id, name, email}} after the ALTER, as deployed code does.
 *
 * <p>The same tiny connection pool as {@link KvStore}: one connection per call, dropped on any error.
 */
final class UserStore implements AutoCloseable {
    /** The fields the code of schema 1 and schema 2 reads (strategies/schema.py FIELDS). */
    static final List<List<String>> FIELDS = List.of(
            List.of(),
            List.of("id", "name", "email"),
            List.of("id", "name", "email", "phone", "address", "updated_at"));

    /** The user as the code of one schema reads it, and the row's commit version. */
    record Row(JsonObject user, long version) {}

    /** Like Python's {@code datetime.isoformat()} on a timestamptz: 2025-01-02T03:04:05.678901+00:00. */
    private static final DateTimeFormatter ISO = DateTimeFormatter.ofPattern("uuuu-MM-dd'T'HH:mm:ss.SSSSSSxxx");

    private final String url;
    private final Properties props = new Properties();
    private final int timeoutMs;
    private final BlockingQueue<Connection> idle = new LinkedBlockingQueue<>();

    UserStore(URI databaseUrl, int timeoutMs, String applicationName) {
        this.url = "jdbc:postgresql://" + databaseUrl.getHost() + ":" + databaseUrl.getPort() + databaseUrl.getPath()
                + (databaseUrl.getQuery() == null ? "" : "?" + databaseUrl.getQuery());
        String userInfo = databaseUrl.getUserInfo();
        if (userInfo != null) {
            String[] parts = userInfo.split(":", 2);
            props.setProperty("user", parts[0]);
            if (parts.length == 2) {
                props.setProperty("password", parts[1]);
            }
        }
        int seconds = Math.max(1, timeoutMs / 1000);
        props.setProperty("connectTimeout", String.valueOf(seconds));
        props.setProperty("loginTimeout", String.valueOf(seconds));
        props.setProperty("socketTimeout", String.valueOf(seconds));
        props.setProperty("ApplicationName", applicationName);
        this.timeoutMs = timeoutMs;
    }

    /** User {@code id} as the schema-{@code schema} code reads it, or null if there is none. */
    Row load(String id, int schema) throws SQLException, KvStore.NotApplied {
        List<String> cols = FIELDS.get(schema);
        String sql = "select " + String.join(", ", cols) + ", version from users where id = ?";
        Connection c = borrow();
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            ps.setString(1, id);
            Row row = null;
            try (ResultSet rs = ps.executeQuery()) {
                if (rs.next()) {
                    JsonObject user = new JsonObject();
                    for (int i = 0; i < cols.size(); i++) {
                        String col = cols.get(i);
                        if (col.equals("updated_at")) {
                            OffsetDateTime t = rs.getObject(i + 1, OffsetDateTime.class);
                            if (t == null) {
                                user.add(col, JsonNull.INSTANCE);
                            } else {
                                user.addProperty(col, ISO.format(t));
                            }
                        } else {
                            String v = rs.getString(i + 1);
                            if (v == null) {
                                user.add(col, JsonNull.INSTANCE);
                            } else {
                                user.addProperty(col, v);
                            }
                        }
                    }
                    row = new Row(user, rs.getLong(cols.size() + 1));
                }
            }
            idle.offer(c);
            return row;
        } catch (SQLException e) {
            discard(c);
            throw e;
        }
    }

    /**
     * {@code update users set name, email, version + 1 [, updated_at = now()] where id = ? returning version}
     * (the schema-2 code also stamps {@code updated_at}). The new version, or -1 if there is no such user.
     */
    long update(String id, String name, String email, int schema) throws SQLException, KvStore.NotApplied {
        String sql = "update users set name = ?, email = ?, version = version + 1"
                + (schema >= 2 ? ", updated_at = now()" : "") + " where id = ? returning version";
        Connection c = borrow();
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            ps.setString(1, name);
            ps.setString(2, email);
            ps.setString(3, id);
            long version;
            try (ResultSet rs = ps.executeQuery()) {
                version = rs.next() ? rs.getLong(1) : -1;
            }
            idle.offer(c);
            return version;
        } catch (SQLException e) {
            discard(c);
            // the server answered with an error: it rejected the statement (autocommit: rolled back), unless
            // it was shutting the session down (57, XX: it may have committed first); anything else may have
            if (e instanceof PSQLException p && p.getServerErrorMessage() != null && p.getSQLState() != null
                    && !p.getSQLState().startsWith("57") && !p.getSQLState().startsWith("XX")) {
                throw new KvStore.NotApplied("db rejected the write: " + e.getMessage(), e);
            }
            throw e;
        }
    }

    private Connection borrow() throws KvStore.NotApplied {
        Connection c = idle.poll();
        if (c != null) {
            return c;
        }
        try {
            c = DriverManager.getConnection(url, props);
            c.setNetworkTimeout(Runnable::run, timeoutMs);
            return c;
        } catch (SQLException e) {
            throw new KvStore.NotApplied("cannot connect to the db: " + e.getMessage(), e);
        }
    }

    private static void discard(Connection c) {
        try {
            c.close();
        } catch (SQLException ignored) {
            // it is broken already
        }
    }

    @Override
    public void close() {
        for (Connection c; (c = idle.poll()) != null; ) {
            discard(c);
        }
    }
}
