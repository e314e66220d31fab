/* The linearizability search's inner loop in C (issue 17): the same steps, in the same order, as the
 * pure-Python loop in checkers/linearizable.py (_search), for partitions whose ops are all register
 * reads, writes and compare-and-sets (the inlined steps). Built by `make` (scripts/bootstrap.sh) into
 * checkers/_wgl.so and loaded with ctypes (checkers/wgl.py); without it, the Python loop runs and
 * gives the same results (tests/checkers/test_search_equivalence.py compares them, result for result).
 *
 * Why it is a plain shared library and not a CPython extension: ctypes needs no Python headers and no
 * ABI tag, and the search takes only flat int arrays: model states are numbered by the caller, so
 * comparing two states is comparing two ints.
 *
 * The loop (see _search in linearizable.py for the algorithm in words): a doubly linked list of call
 * and return events; from the head, a call that can take effect in the current state and leads to an
 * unexplored (linearized set, state) is linearized and lifted out with its return; a return reached
 * first means backtrack. The explored configurations are a hash set of (state, bitset of linearized
 * ops); the bitset's hash is kept incrementally (Zobrist: one random word per op, xor-ed in and out).
 * One step is one visit of a list node, counted exactly as the Python loop counts them, so a search
 * cut into slices (wgl_run) yields, and ends, at the same step numbers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { RET = 0, SET = 3, READ = 5, CAS = 6, BLOCKED = 8 };
enum { RUNNING = 0, VALID = 1, INVALID = 2, NOMEM = 3 };
#define MAX_BEST 16

typedef struct {
    uint64_t hash;
    uint32_t rec; /* 1 + the record's index in the arena; 0: an empty slot */
} slot_t;

typedef struct {
    int32_t size, tail, n, nwords;
    int32_t *code, *bit, *cmp, *aft, *match, *blk, *nxt, *prv;
    uint8_t *done;
    uint64_t *lin, *zob, linhash;
    int32_t *stack, sp; /* pairs: call node, state before it */
    int64_t remaining, taken;
    int32_t state, entry;
    int32_t best_node, nbest, best_states[MAX_BEST], *best_path, best_len;
    /* the explored set: an open-addressing table of slots over an arena of records, each record one
     * state (as a word) followed by nwords words of bitset */
    slot_t *table;
    uint64_t cap, count, *arena, arena_cap;
    uint64_t max_bytes; /* the explored set's limit (table + arena): past it, NOMEM (unknown) */
} wgl_t;

static uint64_t mix(uint64_t x) { /* splitmix64's finaliser */
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t key_hash(int32_t state, uint64_t linhash) {
    return mix(linhash ^ ((uint64_t)(uint32_t)state * 0x9e3779b97f4a7c15ULL));
}

static int grow_table(wgl_t *w) {
    uint64_t ncap = w->cap ? w->cap * 2 : 1024;
    if (w->cap && ncap * sizeof(slot_t) + w->arena_cap * 8 > w->max_bytes) return 0;
    slot_t *t = calloc(ncap, sizeof(slot_t));
    if (!t) return 0;
    for (uint64_t i = 0; i < w->cap; i++) {
        if (!w->table[i].rec) continue;
        uint64_t j = w->table[i].hash & (ncap - 1);
        while (t[j].rec) j = (j + 1) & (ncap - 1);
        t[j] = w->table[i];
    }
    free(w->table);
    w->table = t;
    w->cap = ncap;
    return 1;
}

/* Is (state, w->lin) explored? If not, add it. Returns 1 if it was there, 0 if added, -1 out of memory. */
static int seen_or_add(wgl_t *w, int32_t state, uint64_t linhash) {
    uint64_t h = key_hash(state, linhash);
    uint64_t rw = 1 + (uint64_t)w->nwords;
    uint64_t j = h & (w->cap - 1);
    for (; w->table[j].rec; j = (j + 1) & (w->cap - 1)) {
        if (w->table[j].hash != h) continue;
        const uint64_t *r = w->arena + (uint64_t)(w->table[j].rec - 1) * rw;
        if (r[0] == (uint64_t)(uint32_t)state && !memcmp(r + 1, w->lin, 8 * (size_t)w->nwords)) return 1;
    }
    if ((w->count + 1) * rw > w->arena_cap) {
        uint64_t ncap = w->arena_cap ? w->arena_cap * 2 : rw * 1024;
        if (w->cap * sizeof(slot_t) + ncap * 8 > w->max_bytes) return -1;
        uint64_t *a = realloc(w->arena, ncap * 8);
        if (!a) return -1;
        w->arena = a;
        w->arena_cap = ncap;
    }
    uint64_t *r = w->arena + w->count * rw;
    r[0] = (uint64_t)(uint32_t)state;
    memcpy(r + 1, w->lin, 8 * (size_t)w->nwords);
    w->table[j].hash = h;
    w->table[j].rec = (uint32_t)(++w->count);
    if (w->count * 2 > w->cap && !grow_table(w)) return -1;
    return 0;
}

static int32_t *copy32(const int32_t *src, int32_t len) {
    int32_t *d = malloc(sizeof(int32_t) * (size_t)(len > 0 ? len : 1));
    if (d && len > 0) memcpy(d, src, sizeof(int32_t) * (size_t)len);
    return d;
}

void wgl_free(wgl_t *w) {
    if (!w) return;
    free(w->code); free(w->bit); free(w->cmp); free(w->aft); free(w->match); free(w->blk);
    free(w->nxt); free(w->prv); free(w->done); free(w->lin); free(w->zob); free(w->stack);
    free(w->best_path); free(w->table); free(w->arena);
    free(w);
}

/* size: list nodes (node 0 the head, size - 1 the tail); per node: code (the generic code list of
 * linearizable.py: RET, SET for a write, READ, CAS, + BLOCKED), bit (the op's index, -1 for a return or
 * an end), cmp (the state a read or cas needs, -1: none can match), aft (the state a write or cas
 * leaves), match (a call's return node, 0: none), blk (a blocked op's predecessor's call node);
 * n ops; init_state; remaining: the ok ops; seed: for the Zobrist words; max_bytes: the explored
 * set's memory limit. */
wgl_t *wgl_new(int32_t size, const int32_t *code, const int32_t *bit, const int32_t *cmp,
               const int32_t *aft, const int32_t *match, const int32_t *blk, int32_t n,
               int32_t init_state, int64_t remaining, uint64_t seed, uint64_t max_bytes) {
    wgl_t *w = calloc(1, sizeof(wgl_t));
    if (!w) return NULL;
    w->max_bytes = max_bytes;
    w->size = size; w->tail = size - 1; w->n = n; w->nwords = (n + 63) / 64;
    if (w->nwords == 0) w->nwords = 1;
    w->code = copy32(code, size); w->bit = copy32(bit, size); w->cmp = copy32(cmp, size);
    w->aft = copy32(aft, size); w->match = copy32(match, size); w->blk = copy32(blk, size);
    w->nxt = malloc(sizeof(int32_t) * (size_t)size); w->prv = malloc(sizeof(int32_t) * (size_t)size);
    w->done = calloc((size_t)size, 1);
    w->lin = calloc((size_t)w->nwords, 8);
    w->zob = malloc(8 * (size_t)(n > 0 ? n : 1));
    w->stack = malloc(sizeof(int32_t) * 2 * (size_t)(n + 1));
    w->best_path = malloc(sizeof(int32_t) * (size_t)(n + 1));
    if (!w->code || !w->bit || !w->cmp || !w->aft || !w->match || !w->blk || !w->nxt || !w->prv
        || !w->done || !w->lin || !w->zob || !w->stack || !w->best_path || !grow_table(w)) {
        wgl_free(w);
        return NULL;
    }
    for (int32_t i = 0; i < size; i++) {
        w->nxt[i] = i + 1 < size ? i + 1 : 0;
        w->prv[i] = i > 0 ? i - 1 : 0;
    }
    uint64_t s = seed;
    for (int32_t i = 0; i < n; i++) w->zob[i] = mix(s += 0x9e3779b97f4a7c15ULL);
    w->done[0] = 1;
    w->state = init_state;
    w->remaining = remaining;
    w->entry = w->nxt[0];
    w->best_node = -1;
    return w;
}

static inline void flip(wgl_t *w, int32_t b) {
    w->lin[b >> 6] ^= 1ULL << (b & 63);
    w->linhash ^= w->zob[b];
}

/* Take steps up to step number `until` (the Python loop's chunk end). Returns RUNNING when it got
 * there undecided, else VALID, INVALID (or NOMEM); wgl_taken() is then the last step's number. */
int wgl_run(wgl_t *w, int64_t until) {
    int32_t *code = w->code, *bit = w->bit, *cmp = w->cmp, *aft = w->aft, *match = w->match;
    int32_t *blk = w->blk, *nxt = w->nxt, *prv = w->prv, *stack = w->stack;
    uint8_t *done = w->done;
    int32_t entry = w->entry, state = w->state, sp = w->sp;
    int64_t taken = w->taken;
    int status = RUNNING;
    while (taken < until) {
        taken++;
        int32_t k = code[entry];
        if (k >= BLOCKED) {
            if (!done[blk[entry]]) { entry = nxt[entry]; continue; }
            k -= BLOCKED;
        }
        int32_t to;
        if (k == RET) {
            if (entry != w->tail) { /* the furthest any linearization got, and the states it left */
                if (entry > w->best_node) {
                    w->best_node = entry;
                    w->nbest = 1;
                    w->best_states[0] = state;
                    for (int32_t i = 0; i < sp; i += 2) w->best_path[i / 2] = stack[i];
                    w->best_len = sp / 2;
                } else if (entry == w->best_node && w->nbest < MAX_BEST) {
                    int found = 0;
                    for (int32_t i = 0; i < w->nbest; i++) found |= w->best_states[i] == state;
                    if (!found) w->best_states[w->nbest++] = state;
                }
            }
            if (sp == 0) { status = INVALID; break; }
            state = stack[--sp];
            entry = stack[--sp];
            done[entry] = 0;
            flip(w, bit[entry]);
            int32_t r = match[entry];
            if (r) {
                w->remaining++;
                nxt[prv[r]] = r;
                prv[nxt[r]] = r;
            }
            nxt[prv[entry]] = entry;
            prv[nxt[entry]] = entry;
            entry = nxt[entry];
            continue;
        } else if (k == SET) {
            to = aft[entry];
        } else if (k == READ) {
            if (state != cmp[entry]) { entry = nxt[entry]; continue; }
            to = state;
        } else { /* CAS */
            if (state != cmp[entry]) { entry = nxt[entry]; continue; }
            to = aft[entry];
        }
        flip(w, bit[entry]);
        int seen = seen_or_add(w, to, w->linhash);
        if (seen != 0) {
            flip(w, bit[entry]);
            if (seen < 0) { status = NOMEM; break; }
            entry = nxt[entry];
            continue;
        }
        stack[sp++] = entry;
        stack[sp++] = state;
        state = to;
        done[entry] = 1;
        int32_t pe = prv[entry], ne = nxt[entry];
        nxt[pe] = ne;
        prv[ne] = pe;
        int32_t r = match[entry];
        if (r) {
            pe = prv[r]; ne = nxt[r];
            nxt[pe] = ne;
            prv[ne] = pe;
            if (--w->remaining == 0) { status = VALID; break; }
        }
        entry = nxt[0];
    }
    w->entry = entry; w->state = state; w->sp = sp; w->taken = taken;
    return status;
}

int64_t wgl_taken(const wgl_t *w) { return w->taken; }
int64_t wgl_cache_size(const wgl_t *w) { return (int64_t)w->count; }
int32_t wgl_best_node(const wgl_t *w) { return w->best_node; }
/* the best states (up to 16) into out; returns how many */
int32_t wgl_best_states(const wgl_t *w, int32_t *out) {
    memcpy(out, w->best_states, sizeof(int32_t) * (size_t)w->nbest);
    return w->nbest;
}
/* the call nodes on the stack when the best node was first reached, into out (n + 1 ints); returns how many */
int32_t wgl_best_path(const wgl_t *w, int32_t *out) {
    memcpy(out, w->best_path, sizeof(int32_t) * (size_t)w->best_len);
    return w->best_len;
}
