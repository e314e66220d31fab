package dev.cachecert.example;

import com.google.gson.JsonElement;
import com.google.gson.JsonParser;
import java.net.URI;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.Properties;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import org.postgresql.util.PSQLException;

/**
 * The system of record: the {@code kv} table in PostgreSQL. Every write stores the value and bumps
 * the row's version in one statement, so the version order is the commit order.
 *
 * <p>Connections come from a tiny pool: one is taken per call and dropped on any error, so a cut
 * link costs one failed call per pooled connection, never a hung thread (every socket read gives
 * up after the call timeout).
 */
final class KvStore implements AutoCloseable {
    /** The operation certainly did not take effect (no connection, or the server refused it). */
    static final class NotApplied extends Exception {
        NotApplied(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /** A row of {@code kv}: its JSON value and its commit version. */
    record Row(JsonElement value, long version) {}

    private static final String READ = "select value::text, version from kv where key = ?";
    private static final String WRITE = "insert into kv (key, value, version) values (?, ?::jsonb, 1) "
            + "on conflict (key) do update set value = excluded.value, version = kv.version + 1 returning version";

    private final String url;
    private final Properties props = new Properties();
    private final int timeoutMs;
    private final BlockingQueue<Connection> idle = new LinkedBlockingQueue<>();

    /** {@code databaseUrl} is libpq style: {@code postgresql://user[:password]@host:port/db?sslmode=disable}. */
    KvStore(URI databaseUrl, int timeoutMs, String applicationName) {
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
        int seconds = Math.max(1, timeoutMs / 1000); // the driver counts these in whole seconds
        props.setProperty("connectTimeout", String.valueOf(seconds));
        props.setProperty("loginTimeout", String.valueOf(seconds));
        props.setProperty("socketTimeout", String.valueOf(seconds));
        props.setProperty("ApplicationName", applicationName);
        this.timeoutMs = timeoutMs;
    }

    /** The row for {@code key}, or null if there is none. */
    Row read(String key) throws SQLException, NotApplied {
        Connection c = borrow();
        try (PreparedStatement ps = c.prepareStatement(READ)) {
            ps.setString(1, key);
            try (ResultSet rs = ps.executeQuery()) {
                Row row = rs.next() ? new Row(JsonParser.parseString(rs.getString(1)), rs.getLong(2)) : null;
                idle.offer(c);
                return row;
            }
        } catch (SQLException e) {
            discard(c);
            throw e;
        }
    }

    /** Stores {@code valueJson} under {@code key}; returns the version the DB assigned. */
    long write(String key, String valueJson) throws SQLException, NotApplied {
        Connection c = borrow();
        try (PreparedStatement ps = c.prepareStatement(WRITE)) {
            ps.setString(1, key);
            ps.setString(2, valueJson);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                long version = rs.getLong(1);
                idle.offer(c);
                return version;
            }
        } catch (SQLException e) {
            discard(c);
            // An error the server sent back means it rejected the statement (autocommit: rolled back),
            // unless the server was shutting the session down (57: it may have committed first).
            // Anything else (a timeout, a broken socket) may have happened after the commit.
            if (e instanceof PSQLException p && p.getServerErrorMessage() != null && p.getSQLState() != null
                    && !p.getSQLState().startsWith("57") && !p.getSQLState().startsWith("XX")) {
                throw new NotApplied("db rejected the write: " + e.getMessage(), e);
            }
            throw e;
        }
    }

    private Connection borrow() throws NotApplied {
        Connection c = idle.poll();
        if (c != null) {
            return c;
        }
        try {
            c = DriverManager.getConnection(url, props);
            c.setNetworkTimeout(Runnable::run, timeoutMs); // finer than the driver's whole seconds
            return c;
        } catch (SQLException e) {
            throw new NotApplied("cannot connect to the db: " + e.getMessage(), e);
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
