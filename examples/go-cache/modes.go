package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
)

// newMode builds the caching design CACHE_MODE names. Defaults mirror the Python strategies:
// cache-aside (strategies/cache_aside.py), versioned-cas (strategies/write_through.py), lock and
// single-flight (herd-lock and herd-single-flight in strategies/herd.py).
func newMode(name string, st *store, node string, opTimeout time.Duration) (mode, error) {
	defaults := map[string]struct {
		ttl    float64
		prefix string
	}{
		"cache-aside":   {5, "ca:"},
		"versioned-cas": {30, "vcas:"},
		"lock":          {1, "herd:"},
		"single-flight": {1, "herd:"},
	}
	d, ok := defaults[name]
	if !ok {
		return nil, fmt.Errorf("unknown CACHE_MODE %q (cache-aside, versioned-cas, lock, single-flight)", name)
	}
	st.ttl = seconds(param("TTL", d.ttl)) // 0: entries never expire
	st.prefix = env("CACHECERT_PARAM_PREFIX", d.prefix)
	invalidate := strings.ToLower(os.Getenv("CACHECERT_PARAM_INVALIDATE"))
	herd := herdWrites{store: st, invalidates: invalidate == "1" || invalidate == "true" || invalidate == "yes" || invalidate == "on"}
	switch name {
	case "cache-aside":
		return cacheAside{st}, nil
	case "versioned-cas":
		return versionedCAS{store: st, retries: int(param("RETRIES", 3))}, nil
	case "lock":
		return &lockMode{herdWrites: herd, node: node, lockTTL: seconds(param("LOCK_TTL", 3)),
			poll: seconds(param("POLL", 0.02)), maxWait: seconds(param("MAX_WAIT", opTimeout.Seconds()/2))}, nil
	default:
		return &singleFlight{herdWrites: herd}, nil
	}
}

// fill stores a loaded row in the cache. A failed fill does not fail the read (it has the DB's
// value); the answer says so.
func (s *store) fill(ctx context.Context, key string, res answer) answer {
	if err := s.set(ctx, key, res["value"].(json.RawMessage), res["version"].(int64)); err != nil {
		res["fill_error"] = err.Error()
	}
	return res
}

// loadAndFill is the cache-aside miss path: read the DB, put the row in the cache.
func (s *store) loadAndFill(ctx context.Context, key string) (answer, error) {
	value, version, err := s.load(ctx, key)
	if err != nil {
		return nil, err
	}
	return s.fill(ctx, key, loaded(value, version)), nil
}

// invalidate deletes the cache entry after a committed write. The write happened whatever this
// returns, so a failure is reported in the answer (and leaves a stale entry until its TTL).
func (s *store) invalidate(ctx context.Context, key string, res answer) answer {
	if err := s.rdb.Del(ctx, s.prefix+key).Err(); err != nil {
		slog.Warn("invalidation failed: the cache keeps the old value until its TTL", "key", key, "err", err)
		res["invalidate_error"] = err.Error()
	}
	return res
}

// --- cache-aside: read the cache, fill it from the DB on a miss; a write commits and deletes. ---
// This is the classic design, and it fails under faults: a lost DEL, or a reader that read the
// old row and fills after the writer's DEL, leaves a stale entry until the TTL.

type cacheAside struct{ *store }

func (m cacheAside) read(ctx context.Context, key string) (answer, error) {
	e, err := m.cached(ctx, key)
	if err != nil {
		return nil, err
	}
	if e != nil {
		return hit(e), nil
	}
	return m.loadAndFill(ctx, key)
}

func (m cacheAside) write(ctx context.Context, key string, value json.RawMessage) (answer, error) {
	version, err := m.upsert(ctx, key, value)
	if err != nil {
		return nil, err
	}
	return m.invalidate(ctx, key, answer{"version": version}), nil
}

// --- versioned-cas: the cache only ever serves committed versions, and never goes backwards. ---
// write: E = the DB's version; cache {value, E+1, pending} unless the cache holds something
// newer; DB compare-and-set "where version = E"; on success mark the entry committed, on a lost
// race remove our pending entry and retry. read: a committed entry is served; a pending one (or
// a miss) is resolved against the DB and filled with the same version guard.

var (
	setPending = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
local v = tonumber(ARGV[2])
if cur then
  local c = cjson.decode(cur)
  if tonumber(c.version) >= v then return 0 end
end
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
else redis.call('SET', KEYS[1], ARGV[1]) end
return 1`)
	// replace if missing, older, or a pending entry at the same version
	setCommitted = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
local v = tonumber(ARGV[2])
if cur then
  local c = cjson.decode(cur)
  local cv = tonumber(c.version)
  if cv > v or (cv == v and not c.pending) then return 0 end
end
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
else redis.call('SET', KEYS[1], ARGV[1]) end
return 1`)
	delIfSame = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)
)

type versionedCAS struct {
	*store
	retries int
}

func (m versionedCAS) commit(ctx context.Context, key string, value json.RawMessage, version int64) error {
	return setCommitted.Run(ctx, m.rdb, []string{m.prefix + key}, encode(value, version, false), version, m.ttl.Milliseconds()).Err()
}

func (m versionedCAS) read(ctx context.Context, key string) (answer, error) {
	e, err := m.cached(ctx, key)
	if err != nil {
		return nil, err
	}
	if e != nil && !e.Pending {
		return hit(e), nil
	}
	value, version, err := m.load(ctx, key)
	if err != nil {
		return nil, err
	}
	res := loaded(value, version)
	res["resolved_pending"] = e != nil
	if version > 0 {
		if err := m.commit(ctx, key, value, version); err != nil {
			res["fill_error"] = err.Error()
		}
	}
	return res, nil
}

func (m versionedCAS) write(ctx context.Context, key string, value json.RawMessage) (answer, error) {
	conn, err := m.pg.Acquire(ctx)
	if err != nil {
		return nil, failf("no DB connection, the write was not sent: %v", err)
	}
	defer conn.Release()
	ck := m.prefix + key
	for range m.retries + 1 {
		var expected int64
		err := conn.QueryRow(ctx, "select version from kv where key = $1", key).Scan(&expected)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, failf("reading the DB version failed, nothing written: %v", err)
		}
		v := expected + 1
		pending := encode(value, v, true)
		if err := setPending.Run(ctx, m.rdb, []string{ck}, pending, v, m.ttl.Milliseconds()).Err(); err != nil {
			// the DB was not touched, and readers never serve a pending entry
			return nil, failf("cache pending set failed, nothing written to the DB: %v", err)
		}
		var sql string
		args := []any{key, value}
		if expected == 0 {
			sql = "insert into kv (key, value, version) values ($1, $2, 1) on conflict (key) do nothing returning version"
		} else {
			sql = "update kv set value = $2, version = $3 where key = $1 and version = $4 returning version"
			args = append(args, v, expected)
		}
		var got int64
		err = conn.QueryRow(ctx, sql, args...).Scan(&got)
		switch {
		case err == nil:
			res := answer{"version": v}
			if err := m.commit(ctx, key, value, v); err != nil { // the entry stays pending; readers resolve it
				slog.Warn("commit mark failed", "key", key, "version", v, "err", err)
				res["commit_mark_error"] = err.Error()
			}
			return res, nil
		case errors.Is(err, pgx.ErrNoRows): // lost the race: retry on the new version
			_ = delIfSame.Run(ctx, m.rdb, []string{ck}, pending).Err()
		default:
			return nil, dbWriteError(err)
		}
	}
	return nil, failf("compare-and-set on %s lost %d times to concurrent writers", key, m.retries+1)
}

// --- lock and single-flight: thundering-herd protection for hot keys with a short TTL. ---
// Writes commit to the DB and leave the cache alone (hot soft data refreshed by its TTL), unless
// -p invalidate=true, as in strategies/herd.py.

type herdWrites struct {
	*store
	invalidates bool // also delete the cache entry (-p invalidate=true)
}

func (m herdWrites) write(ctx context.Context, key string, value json.RawMessage) (answer, error) {
	version, err := m.upsert(ctx, key, value)
	if err != nil {
		return nil, err
	}
	res := answer{"version": version}
	if m.invalidates {
		res = m.invalidate(ctx, key, res)
	}
	return res, nil
}

// lockMode coalesces misses across all nodes: the first misser takes SET lock NX PX and loads;
// the others poll the cache, and after maxWait load from the DB themselves (a bounded wait).
type lockMode struct {
	herdWrites
	node                   string
	lockTTL, poll, maxWait time.Duration
	seq                    atomic.Uint64
}

func (m *lockMode) read(ctx context.Context, key string) (answer, error) {
	start := time.Now()
	e, err := m.cached(ctx, key)
	if err != nil || e != nil {
		return hitOrErr(e, err)
	}
	lock, token := m.prefix+key+":lock", fmt.Sprintf("%s:%d", m.node, m.seq.Add(1))
	for {
		got, err := m.rdb.SetNX(ctx, lock, token, m.lockTTL).Result()
		if err != nil {
			return nil, fmt.Errorf("lock: %w", err)
		}
		if got {
			return m.hold(ctx, key, lock, token)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(m.poll):
		}
		if e, err = m.cached(ctx, key); err != nil {
			return nil, err
		}
		waited := time.Since(start).Milliseconds()
		if e != nil {
			res := hit(e)
			res["hit"], res["coalesced"], res["waited_ms"] = false, true, waited
			return res, nil
		}
		if time.Since(start) > m.maxWait {
			res, err := m.loadAndFill(ctx, key)
			if err == nil {
				res["fallback"], res["waited_ms"] = true, waited
			}
			return res, err
		}
	}
}

var releaseLock = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// hold runs the load as the lock holder, then releases the lock if it is still ours.
func (m *lockMode) hold(ctx context.Context, key, lock, token string) (answer, error) {
	defer func() {
		// release even when the op's deadline passed; if this fails too, the lock's TTL frees it
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 250*time.Millisecond)
		defer cancel()
		_ = releaseLock.Run(rctx, m.rdb, []string{lock}, token).Err()
	}()
	e, err := m.cached(ctx, key) // filled between our miss and our lock?
	if err != nil || e != nil {
		res, err := hitOrErr(e, err)
		if err == nil {
			res["hit"] = false
		}
		return res, err
	}
	return m.loadAndFill(ctx, key)
}

func hitOrErr(e *entry, err error) (answer, error) {
	if err != nil {
		return nil, err
	}
	return hit(e), nil
}

// singleFlight coalesces concurrent misses of one key within this process only: with N nodes an
// expiry costs up to N DB loads.
type singleFlight struct {
	herdWrites
	group singleflight.Group
}

func (m *singleFlight) read(ctx context.Context, key string) (answer, error) {
	e, err := m.cached(ctx, key)
	if err != nil || e != nil {
		return hitOrErr(e, err)
	}
	leader := false // set only by the goroutine whose function runs (received below: no race)
	ch := m.group.DoChan(key, func() (any, error) {
		leader = true
		if e, err := m.cached(ctx, key); err != nil || e != nil {
			res, err := hitOrErr(e, err)
			if err == nil {
				res["hit"] = false
			}
			return res, err
		}
		return m.loadAndFill(ctx, key)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		res := maps.Clone(r.Val.(answer)) // shared by every waiter: each gets its own copy
		if !leader {
			res["coalesced"] = true
			delete(res, "db_load") // the leader's load, not ours
		}
		return res, nil
	}
}
