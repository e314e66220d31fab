package dev.cachecert.example;

/**
 * How a write tells every node "key K is now at version V". A node's consumer applies each message
 * with {@link NodeCache#invalidate}. Messages are the text {@code "K V"}.
 */
interface InvalidationBus extends AutoCloseable {
    /** Connects and subscribes in the background; {@link #ready} says when that is done. */
    void start();

    /** Subscribed (at least once since start): the node may serve from its cache. */
    boolean ready();

    /** A durable bus is replaying what it missed while this node was down. */
    default boolean replaying() {
        return false;
    }

    /** Announces a committed write; throws if the bus did not take the message. */
    void publish(String key, long version) throws Exception;

    @Override
    void close();

    /** Applies one {@code "K V"} message to {@code cache}. */
    static void apply(NodeCache cache, String message) {
        int space = message.indexOf(' ');
        cache.invalidate(message.substring(0, space), Long.parseLong(message.substring(space + 1)));
    }
}
