package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestEncodeMatchesPythonStrategies(t *testing.T) {
	// strategies/base.py: json.dumps({"value": v, "version": n, **extra}, separators=(",", ":"))
	cases := []struct {
		value   string
		version int64
		pending bool
		want    string
	}{
		{`1234`, 7, false, `{"value":1234,"version":7}`},
		{`{"a": [1, "x"]}`, 1, false, `{"value":{"a":[1,"x"]},"version":1}`},
		{`null`, 0, false, `{"value":null,"version":0}`},
		{`"v"`, 3, true, `{"value":"v","version":3,"pending":true}`},
	}
	for _, c := range cases {
		if got := encode(json.RawMessage(c.value), c.version, c.pending); got != c.want {
			t.Errorf("encode(%s, %d, %v) = %s, want %s", c.value, c.version, c.pending, got, c.want)
		}
	}
	var e entry
	if err := json.Unmarshal([]byte(`{"value":[1],"version":2,"pending":true}`), &e); err != nil ||
		string(e.Value) != "[1]" || e.Version != 2 || !e.Pending {
		t.Errorf("decode: %+v, %v", e, err)
	}
}

// notSent is an error pgconn reports for a statement that never left the client.
type notSent struct{}

func (notSent) Error() string     { return "dial tcp: connection refused" }
func (notSent) SafeToRetry() bool { return true }

func TestDBWriteErrorClassification(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"not sent", fmt.Errorf("wrapped: %w", notSent{}), "fail"},
		{"server rejected", &pgconn.PgError{Code: "23505", Message: "duplicate key"}, "fail"},
		{"timeout after send", errors.New("timeout: context deadline exceeded"), "info"},
	}
	for _, c := range cases {
		if got := classify("write", dbWriteError(c.err)); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestClassify(t *testing.T) {
	unknown := errors.New("connection reset")
	for _, c := range []struct {
		f    string
		err  error
		want string
	}{
		{"read", unknown, "fail"}, // a read has no effect
		{"read-db", infof("x"), "fail"},
		{"write", unknown, "info"}, // unclassified: may have happened
		{"write", failf("cas lost"), "fail"},
		{"write", fmt.Errorf("ctx: %w", infof("sent")), "info"},
	} {
		if got := classify(c.f, c.err); got != c.want {
			t.Errorf("classify(%s, %v) = %s, want %s", c.f, c.err, got, c.want)
		}
	}
}
