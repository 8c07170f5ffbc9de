/* Chimera agent ABI v1 for freestanding wasm32 (no imports, no libc).
 *
 * An agent file defines GENOME_LEN, OBS_LEN and
 *     static float policy(const float *genome, const float *obs);
 * then includes this header, which exports:
 *   memory                         linear memory (exported by wasm-ld)
 *   chimera_abi_version() -> i32   1
 *   chimera_genome_len()  -> i32   GENOME_LEN
 *   chimera_obs_len()     -> i32   OBS_LEN
 *   chimera_reset()                frees every buffer chimera_alloc gave out
 *   chimera_alloc(size)   -> ptr   16-byte aligned buffer, 0 when memory is exhausted
 *   chimera_act(genomes, n_agents, obs, n_obs, shared, out) -> i32
 *       batched: out[a*n_obs + j] = policy(genomes + a*GENOME_LEN, obs_j) for every agent a
 *       and observation j; obs_j = obs + j*OBS_LEN when shared, else obs + (a*n_obs+j)*OBS_LEN.
 *       Returns 0, or a negative error code.
 *   chimera_predict(json, len) -> i64  one job: {"genome":[...],"observation":[...]} in,
 *       {"output":x} out; returns (ptr << 32) | len of the answer, or a negative error code.
 */
#ifndef CHIMERA_ABI_H
#define CHIMERA_ABI_H

#define EXPORT(name) __attribute__((export_name(name)))

extern unsigned char __heap_base;
static unsigned long heap_top;

EXPORT("chimera_abi_version") int chimera_abi_version(void) { return 1; }
EXPORT("chimera_genome_len") int chimera_genome_len(void) { return GENOME_LEN; }
EXPORT("chimera_obs_len") int chimera_obs_len(void) { return OBS_LEN; }
EXPORT("chimera_reset") void chimera_reset(void) { heap_top = (unsigned long)&__heap_base; }

EXPORT("chimera_alloc") void *chimera_alloc(int size) {
    if (size < 0) return 0;
    if (!heap_top) heap_top = (unsigned long)&__heap_base;
    unsigned long p = (heap_top + 15) & ~15UL;
    unsigned long end = p + (unsigned long)size;
    unsigned long have = __builtin_wasm_memory_size(0) * 65536UL;
    if (end > have) {
        unsigned long pages = (end - have + 65535UL) / 65536UL;
        if (__builtin_wasm_memory_grow(0, pages) == (unsigned long)-1) return 0;
    }
    heap_top = end;
    return (void *)p;
}

EXPORT("chimera_act")
int chimera_act(const float *genomes, int n_agents, const float *obs, int n_obs, int shared,
                float *out) {
    if (n_agents < 0 || n_obs < 0) return -1;
    for (int a = 0; a < n_agents; a++) {
        const float *g = genomes + a * GENOME_LEN;
        for (int j = 0; j < n_obs; j++) {
            const float *o = shared ? obs + j * OBS_LEN : obs + (a * n_obs + j) * OBS_LEN;
            out[a * n_obs + j] = policy(g, o);
        }
    }
    return 0;
}

/* ---- a very small JSON reader/writer for chimera_predict ---- */
static const char *find_key(const char *s, const char *end, const char *key) {
    for (; s < end; s++) {
        if (*s != '"') continue;
        const char *p = s + 1, *k = key;
        while (p < end && *k && *p == *k) p++, k++;
        if (!*k && p < end && *p == '"') {
            p++;
            while (p < end && (*p == ' ' || *p == ':' || *p == '\n' || *p == '\t')) p++;
            return p;
        }
    }
    return 0;
}

static const char *parse_number(const char *s, const char *end, double *out) {
    double sign = 1, v = 0, scale = 1;
    int any = 0;
    if (s < end && (*s == '-' || *s == '+')) sign = *s++ == '-' ? -1 : 1;
    while (s < end && *s >= '0' && *s <= '9') v = v * 10 + (*s++ - '0'), any = 1;
    if (s < end && *s == '.') {
        s++;
        while (s < end && *s >= '0' && *s <= '9') v += (*s++ - '0') * (scale /= 10), any = 1;
    }
    if (any && s < end && (*s == 'e' || *s == 'E')) {
        int esign = 1, e = 0;
        s++;
        if (s < end && (*s == '-' || *s == '+')) esign = *s++ == '-' ? -1 : 1;
        while (s < end && *s >= '0' && *s <= '9') e = e * 10 + (*s++ - '0');
        while (e-- > 0) v = esign > 0 ? v * 10 : v / 10;
    }
    *out = sign * v;
    return any ? s : 0;
}

/* Parses "[n, n, ...]" with exactly `want` numbers into dst; returns 0 on success. */
static int parse_array(const char *s, const char *end, float *dst, int want) {
    if (!s || s >= end || *s != '[') return -1;
    s++;
    for (int i = 0; i < want; i++) {
        while (s < end && (*s == ' ' || *s == ',' || *s == '\n')) s++;
        double v;
        s = parse_number(s, end, &v);
        if (!s) return -1;
        dst[i] = (float)v;
    }
    while (s < end && (*s == ' ' || *s == '\n')) s++;
    return (s < end && *s == ']') ? 0 : -1;
}

static char *write_str(char *p, const char *s) { while (*s) *p++ = *s++; return p; }

static char *write_fixed(char *p, double v) {
    if (v != v || v > 1e15 || v < -1e15) return write_str(p, "null");
    if (v < 0) *p++ = '-', v = -v;
    unsigned long long whole = (unsigned long long)v;
    unsigned long long frac = (unsigned long long)((v - (double)whole) * 1e6 + 0.5);
    if (frac >= 1000000ULL) whole++, frac -= 1000000ULL;
    char buf[24];
    int n = 0;
    do buf[n++] = (char)('0' + whole % 10), whole /= 10; while (whole);
    while (n) *p++ = buf[--n];
    *p++ = '.';
    for (unsigned long long d = 100000ULL; d; d /= 10) *p++ = (char)('0' + (frac / d) % 10);
    return p;
}

EXPORT("chimera_predict") long long chimera_predict(const char *json, int len) {
    const char *end = json + len;
    float genome[GENOME_LEN], obs[OBS_LEN];
    if (parse_array(find_key(json, end, "genome"), end, genome, GENOME_LEN)) return -2;
    if (parse_array(find_key(json, end, "observation"), end, obs, OBS_LEN)) return -3;
    char *out = chimera_alloc(64);
    if (!out) return -4;
    char *p = write_str(out, "{\"output\":");
    p = write_fixed(p, policy(genome, obs));
    p = write_str(p, "}");
    return ((long long)(unsigned long)out << 32) | (long long)(p - out);
}

#endif
