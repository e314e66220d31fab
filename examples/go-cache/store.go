package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// store is what every mode shares: the Redis cache (keys prefix+key) and the kv table.
type store struct {
	rdb    *redis.Client
	pg     *pgxpool.Pool
	prefix string
	ttl    time.Duration // 0: cache entries never expire
}

const (
	selectSQL = "select value, version from kv where key = $1"
	upsertSQL = "insert into kv (key, value, version) values ($1, $2, 1) " +
		"on conflict (key) do update set value = excluded.value, version = kv.version + 1 returning version"
)

// entry is a cached value as JSON text, the same encoding as strategies/base.py's encode:
// {"value":...,"version":n} (plus "pending":true for an uncommitted versioned-cas write).
type entry struct {
	Value   json.RawMessage `json:"value"`
	Version int64           `json:"version"`
	Pending bool            `json:"pending,omitempty"`
}

func encode(value json.RawMessage, version int64, pending bool) string {
	b, _ := json.Marshal(entry{Value: value, Version: version, Pending: pending}) // cannot fail: value is valid JSON
	return string(b)
}

// cached returns the cache entry for key, or nil on a miss.
func (s *store) cached(ctx context.Context, key string) (*entry, error) {
	raw, err := s.rdb.Get(ctx, s.prefix+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cache get: %w", err)
	}
	var e entry
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("cache entry %q: %w", s.prefix+key, err)
	}
	return &e, nil
}

func (s *store) set(ctx context.Context, key string, value json.RawMessage, version int64) error {
	return s.rdb.Set(ctx, s.prefix+key, encode(value, version, false), s.ttl).Err()
}

// load reads a row: a missing row is value null, version 0.
func (s *store) load(ctx context.Context, key string) (json.RawMessage, int64, error) {
	var value []byte
	var version int64
	err := s.pg.QueryRow(ctx, selectSQL, key).Scan(&value, &version)
	if errors.Is(err, pgx.ErrNoRows) {
		return json.RawMessage("null"), 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("db read: %w", err)
	}
	if value == nil { // SQL NULL
		value = []byte("null")
	}
	return value, version, nil
}

// upsert commits value (the version is bumped in the same statement) and returns the new version.
func (s *store) upsert(ctx context.Context, key string, value json.RawMessage) (int64, error) {
	conn, err := s.pg.Acquire(ctx)
	if err != nil {
		return 0, failf("no DB connection, the write was not sent: %v", err)
	}
	defer conn.Release()
	var version int64
	if err := conn.QueryRow(ctx, upsertSQL, key, value).Scan(&version); err != nil {
		return 0, dbWriteError(err)
	}
	return version, nil
}

func (s *store) readDB(ctx context.Context, key string) (answer, error) {
	value, version, err := s.load(ctx, key)
	if err != nil {
		return nil, err
	}
	return answer{"value": value, "version": version, "source": "db", "hit": false}, nil
}

func hit(e *entry) answer {
	return answer{"value": e.Value, "version": e.Version, "source": "cache", "hit": true}
}

func loaded(value json.RawMessage, version int64) answer {
	return answer{"value": value, "version": version, "source": "db", "hit": false, "db_load": true}
}

// opError carries the protocol's verdict on a failed operation: "fail" (certainly had no
// effect) or "info" (may have taken effect).
type opError struct {
	typ string
	msg string
}

func (e *opError) Error() string { return e.msg }

func failf(format string, a ...any) error { return &opError{"fail", fmt.Sprintf(format, a...)} }
func infof(format string, a ...any) error { return &opError{"info", fmt.Sprintf(format, a...)} }

// dbWriteError classifies an error from a statement that may have changed the DB. It is a fail
// only if the statement never reached the server (pgconn.SafeToRetry: e.g. the connection was
// refused, or the deadline passed before sending) or the server rejected it (a PgError: the
// implicit transaction rolled back). A timeout or broken connection after sending is unknown.
func dbWriteError(err error) error {
	var pgErr *pgconn.PgError
	switch {
	case pgconn.SafeToRetry(err):
		return failf("db write not sent: %v", err)
	case errors.As(err, &pgErr):
		return failf("db rejected the write: %v", err)
	default:
		return infof("db write sent, outcome unknown: %v", err)
	}
}

// classify turns an error into the answer's type. A read has no effect, so a failed read is a
// fail; a write is whatever its opError says, and an unclassified error is info (unknown).
func classify(f string, err error) string {
	if f == "read" || f == "read-db" {
		return "fail"
	}
	var oe *opError
	if errors.As(err, &oe) {
		return oe.typ
	}
	return "info"
}
