// go-cache is the reference app node for cachecert's node protocol (docs/node-protocol.md): a
// small caching service over Redis and PostgreSQL that cachecert starts N times and drives over
// HTTP (GET /health, POST /op) while it injects faults.
//
// The caching design is picked with CACHE_MODE: cache-aside (the default), versioned-cas, lock
// or single-flight; see modes.go. Everything else comes from the environment cachecert sets.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

const protocol = 1

// mode is one caching design. read-db is the same for all of them (store.readDB).
type mode interface {
	read(ctx context.Context, key string) (answer, error)
	write(ctx context.Context, key string, value json.RawMessage) (answer, error)
}

// answer is the body of an /op reply; the handler adds "type".
type answer map[string]any

type request struct {
	Protocol int             `json:"protocol"`
	F        string          `json:"f"`
	Key      string          `json:"key"`
	Value    json.RawMessage `json:"value"`
}

type server struct {
	node      string
	modeName  string
	mode      mode
	store     *store
	opTimeout time.Duration
}

func (s *server) health(w http.ResponseWriter, _ *http.Request) {
	// Ready as soon as the pools exist: they connect lazily, so a slow or faulted DB at start-up
	// shows up as failed operations, not as a node that never becomes ready.
	reply(w, http.StatusOK, answer{"protocol": protocol, "ready": true, "node": s.node, "mode": s.modeName})
}

func (s *server) op(w http.ResponseWriter, r *http.Request) {
	var req request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		reply(w, http.StatusBadRequest, answer{"type": "fail", "error": "bad request: " + err.Error()})
		return
	}
	if req.Protocol != protocol {
		reply(w, http.StatusOK, answer{"type": "fail", "error": fmt.Sprintf("protocol %d not spoken (%d is)", req.Protocol, protocol)})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opTimeout)
	defer cancel()

	var res answer
	var err error
	switch req.F {
	case "read":
		res, err = s.mode.read(ctx, req.Key)
	case "read-db":
		res, err = s.store.readDB(ctx, req.Key)
	case "write":
		if len(req.Value) == 0 {
			req.Value = json.RawMessage("null")
		}
		res, err = s.mode.write(ctx, req.Key, req.Value)
	default:
		err = failf("unknown op %q", req.F)
	}
	if err != nil {
		res = answer{"type": classify(req.F, err), "error": err.Error()}
	} else {
		res["type"] = "ok"
	}
	reply(w, http.StatusOK, res)
}

func reply(w http.ResponseWriter, status int, body answer) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// param reads CACHECERT_PARAM_<NAME> (cachecert's -p name=value) as seconds or a count.
func param(name string, def float64) float64 {
	raw, ok := os.LookupEnv("CACHECERT_PARAM_" + name)
	if !ok || raw == "" {
		return def
	}
	v, err := strconv.ParseFloat(raw, 64)
	if err != nil || v < 0 {
		slog.Error("bad parameter, using the default", "param", name, "value", raw, "default", def)
		return def
	}
	return v
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	if err := run(); err != nil {
		slog.Error("go-cache stopped", "err", err)
		os.Exit(1)
	}
}

func run() error {
	modeName := env("CACHE_MODE", "cache-aside")
	port := env("PORT", "8080")
	// Give up before cachecert does (CACHECERT_OP_TIMEOUT is its op timeout x 0.8), so the node's
	// own answer (often a definite fail) arrives in time; -p op_timeout=S overrides.
	opTimeout := seconds(param("OP_TIMEOUT", 1.5))
	if _, set := os.LookupEnv("CACHECERT_PARAM_OP_TIMEOUT"); !set {
		if v, err := strconv.ParseFloat(os.Getenv("CACHECERT_OP_TIMEOUT"), 64); err == nil && v > 0 {
			opTimeout = seconds(v)
		}
	}

	ropt, err := redis.ParseURL(env("REDIS_URL", "redis://127.0.0.1:6379/0"))
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}
	// One attempt per command, bounded by the op's deadline: a faulted link fails fast.
	ropt.MaxRetries, ropt.DialerRetries = -1, 1
	ropt.ContextTimeoutEnabled = true
	ropt.DialTimeout, ropt.ReadTimeout, ropt.WriteTimeout, ropt.PoolTimeout = opTimeout, opTimeout, opTimeout, opTimeout
	ropt.DisableIdentity = true
	rdb := redis.NewClient(ropt)
	defer rdb.Close()

	// An empty DATABASE_URL falls back to PGHOST, PGPORT, PGUSER, PGDATABASE.
	pcfg, err := pgxpool.ParseConfig(os.Getenv("DATABASE_URL"))
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	pcfg.MaxConns = 16
	pcfg.ConnConfig.ConnectTimeout = opTimeout
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg) // connects lazily
	if err != nil {
		return fmt.Errorf("postgres pool: %w", err)
	}
	defer pool.Close()

	node := env("CACHECERT_NODE_ID", "node0")
	st := &store{rdb: rdb, pg: pool}
	m, err := newMode(modeName, st, node, opTimeout)
	if err != nil {
		return err
	}
	s := &server{node: node, modeName: modeName, mode: m, store: st, opTimeout: opTimeout}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("POST /op", s.op)
	srv := &http.Server{Addr: "127.0.0.1:" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	slog.Info("go-cache listening", "addr", srv.Addr, "node", s.node, "mode", modeName,
		"ttl", st.ttl, "prefix", st.prefix, "op_timeout", opTimeout)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done(): // SIGTERM: a graceful restart; finish in-flight ops, then exit
		shutdown, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		slog.Info("go-cache stopped", "node", s.node)
		return nil
	}
}
