/* sample.c — sigma schedule, torch-compatible noise, guidance and sampler steps (see sample.h). */
#include "gen/sample.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "nn/ops.h"

void zl_sigmas(int steps, double shift, float *sig) {
    for (int i = 0; i < steps; i++) {
        /* linspace(1, 1/N, N) as numpy computes it: start + i·step */
        double s = steps > 1 ? 1.0 + (double)i * ((1.0 / steps - 1.0) / (double)(steps - 1)) : 1.0;
        sig[i] = (float)(shift * s / (1.0 + (shift - 1.0) * s));
    }
    sig[steps] = 0.0f;
}

/* ---- torch.randn on the CPU ----------------------------------------------------------------------- */

typedef struct { uint32_t s[624]; int i; } mt19937;

static void mt_seed(mt19937 *m, uint32_t seed) {
    m->s[0] = seed;
    for (int j = 1; j < 624; j++) m->s[j] = 1812433253u * (m->s[j - 1] ^ (m->s[j - 1] >> 30)) + (uint32_t)j;
    m->i = 624;
}

static uint32_t mt_next(mt19937 *m) {
    if (m->i >= 624) {
        for (int j = 0; j < 624; j++) {
            uint32_t y = (m->s[j] & 0x80000000u) | (m->s[(j + 1) % 624] & 0x7fffffffu);
            m->s[j] = m->s[(j + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        m->i = 0;
    }
    uint32_t y = m->s[m->i++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* uniform_real_distribution<float>(0, 1): 24 random bits */
static float mt_uniform_f(mt19937 *m) { return (float)(mt_next(m) & ((1u << 24) - 1)) * (1.0f / (float)(1u << 24)); }
/* uniform_real_distribution<double>(0, 1): 53 bits of a 64-bit draw (first draw in the high word) */
static double mt_uniform_d(mt19937 *m) {
    uint64_t hi = mt_next(m), lo = mt_next(m);
    uint64_t v = (hi << 32) | lo;
    return (double)(v & ((1ull << 53) - 1)) * (1.0 / (double)(1ull << 53));
}

/* torch's scalar kernel (ATEN_CPU_CAPABILITY=default): libm log/cos/sin in float, θ computed in double */
static void normal_fill_16_scalar(float *d) {
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j], u2 = d[j + 8];
        float radius = sqrtf(-2.0f * logf(u1));
        float theta = (float)(2.0 * 3.14159265358979323846 * (double)u2);
        d[j] = radius * cosf(theta);
        d[j + 8] = radius * sinf(theta);
    }
}

/* torch's AVX2 kernel, which x86-64 PyTorch builds dispatch to: the Cephes-style log and sincos of
 * avx_mathfun, compiled with FMA contraction. Reproduced lane by lane; every fmaf below stands where the
 * compiled kernel fuses a multiply and an add (found by matching torch bit for bit, see
 * tests/test_generate.c). */
static float bits_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t f_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static float mathfun_log(float x) { /* x in (0, 1] here */
    uint32_t b = f_bits(x);
    int32_t ex = (int32_t)(b >> 23) - 0x7f;
    x = bits_f((b & ~0x7f800000u) | f_bits(0.5f));
    float e = (float)ex + 1.0f;
    int small = x < 0.707106781186547524f;
    float tmp = small ? x : 0.0f;
    x = x - 1.0f;
    e = e - (small ? 1.0f : 0.0f);
    x = x + tmp;
    float z = x * x;
    static const float p[9] = {7.0376836292E-2f,  -1.1514610310E-1f, 1.1676998740E-1f,
                               -1.2420140846E-1f, 1.4249322787E-1f,  -1.6668057665E-1f,
                               2.0000714765E-1f,  -2.4999993993E-1f, 3.3333331174E-1f};
    float y = p[0];
    for (int k = 1; k < 9; k++) y = fmaf(y, x, p[k]);
    y = y * x;
    y = fmaf(y, z, e * -2.12194440e-4f);
    y = fmaf(z, -0.5f, y);
    x = x + y;
    return fmaf(e, 0.693359375f, x);
}

static void mathfun_sincos(float x, float *s, float *c) { /* x ≥ 0 here */
    float y = x * 1.27323954473516f;
    int32_t j = ((int32_t)y + 1) & ~1;
    y = (float)j;
    uint32_t sign_sin = ((uint32_t)j & 4u) << 29;
    int poly = (j & 2) == 0;
    uint32_t sign_cos = ((uint32_t)~(j - 2) & 4u) << 29;
    x = fmaf(y, -0.78515625f, x);
    x = fmaf(y, -2.4187564849853515625e-4f, x);
    x = fmaf(y, -3.77489497744594108e-8f, x);
    float z = x * x;
    float yc = 2.443315711809948E-005f;
    yc = fmaf(yc, z, -1.388731625493765E-003f);
    yc = fmaf(yc, z, 4.166664568298827E-002f);
    yc = yc * z;
    yc = fmaf(yc, z, -(z * 0.5f));
    yc = yc + 1.0f;
    float ys = -1.9515295891E-4f;
    ys = fmaf(ys, z, 8.3321608736E-3f);
    ys = fmaf(ys, z, -1.6666654611E-1f);
    ys = ys * z;
    ys = fmaf(ys, x, x);
    *s = bits_f(f_bits(poly ? ys : yc) ^ sign_sin);
    *c = bits_f(f_bits(poly ? yc : ys) ^ sign_cos);
}

static void normal_fill_16_avx2(float *d) {
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j], u2 = d[j + 8];
        float radius = sqrtf(-2.0f * mathfun_log(u1));
        float s, c;
        mathfun_sincos(two_pi * u2, &s, &c);
        d[j] = radius * c;
        d[j + 8] = radius * s;
    }
}

void zl_torch_randn_ex(uint64_t seed, float *out, size_t n, zl_noise_kind kind) {
    mt19937 m;
    mt_seed(&m, (uint32_t)(seed & 0xffffffffu));
    if (n < 16) { /* torch's per-element path: normal_distribution<double>, with its cached second value */
        for (size_t i = 0; i < n; i += 2) {
            double u1 = mt_uniform_d(&m), u2 = mt_uniform_d(&m);
            double r = sqrt(-2.0 * log(1.0 - u2)), th = 2.0 * 3.14159265358979323846 * u1;
            out[i] = (float)(r * cos(th));
            if (i + 1 < n) out[i + 1] = (float)(r * sin(th));
        }
        return;
    }
    void (*fill)(float *) = kind == ZL_NOISE_TORCH_SCALAR ? normal_fill_16_scalar : normal_fill_16_avx2;
    for (size_t i = 0; i < n; i++) out[i] = mt_uniform_f(&m);
    for (size_t i = 0; i + 16 <= n; i += 16) fill(out + i);
    if (n % 16) {
        float *d = out + n - 16;
        for (int i = 0; i < 16; i++) d[i] = mt_uniform_f(&m);
        fill(d);
    }
}

void zl_torch_randn(uint64_t seed, float *out, size_t n) { zl_torch_randn_ex(seed, out, n, ZL_NOISE_TORCH); }

/* ---- guidance ------------------------------------------------------------------------------------- */

void zl_cfg_combine(float *pred, const float *pos, const float *neg, size_t n, float g, float norm) {
    double pn = 0, qn = 0;
    for (size_t i = 0; i < n; i++) {
        float p = pos[i], q = p + g * (p - neg[i]);
        pn += (double)p * p;
        qn += (double)q * q;
        pred[i] = q;
    }
    if (norm > 0) {
        double maxn = (double)norm * sqrt(pn), cur = sqrt(qn);
        if (cur > maxn && cur > 0) {
            float s = (float)(maxn / cur);
            for (size_t i = 0; i < n; i++) pred[i] *= s;
        }
    }
}

int zl_cfg_active(float g, float trunc, float sigma) {
    if (g == 0.0f) return 0;
    if (trunc <= 1.0f && 1.0f - sigma > trunc) return 0;
    return 1;
}

/* ---- samplers ------------------------------------------------------------------------------------- */

static const char *names[ZL_SAMPLER_COUNT] = {"euler", "res_multistep"};
static const char *displays[ZL_SAMPLER_COUNT] = {"Euler", "res_multistep"};

const char *zl_sampler_name(zl_sampler_kind k) { return k < ZL_SAMPLER_COUNT ? names[k] : "?"; }
const char *zl_sampler_display(zl_sampler_kind k) { return k < ZL_SAMPLER_COUNT ? displays[k] : "?"; }

int zl_sampler_parse(const char *s, zl_sampler_kind *k) {
    for (int i = 0; i < ZL_SAMPLER_COUNT; i++)
        if (!strcmp(s, names[i]) || !strcmp(s, displays[i])) { *k = (zl_sampler_kind)i; return 0; }
    return zl_err("unknown sampler '%s' (choices: euler, res_multistep)", s);
}

int zl_sampler_init(zl_sampler *s, zl_sampler_kind kind, size_t n) {
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->n = n;
    if (kind == ZL_SAMPLER_RES_MULTISTEP) {
        s->old_denoised = zl_try_malloc(sizeof(float) * n);
        if (!s->old_denoised) return -1;
    }
    return 0;
}

void zl_sampler_free(zl_sampler *s) {
    free(s->old_denoised);
    memset(s, 0, sizeof *s);
}

void zl_sampler_step(zl_sampler *s, float *x, float *v, const float *sig, int i) {
    float sc = sig[i], sn = sig[i + 1];
    if (s->kind == ZL_SAMPLER_EULER) { /* x ← x + (σ_{i+1} − σ_i)·v */
        zl_op_axpy(x, sn - sc, v, s->n);
        return;
    }
    /* res_multistep (ComfyUI, eta 0): the denoised estimate D = x − σ·v; the first step and the step to
     * σ = 0 are Euler; the others are the second-order exponential multistep update of
     * arXiv:2308.02157 in t = −log σ, using D of the previous step. */
    float *d = v; /* D overwrites v */
    for (size_t k = 0; k < s->n; k++) d[k] = x[k] - sc * v[k];
    if (sn == 0.0f || !s->have_old) {
        double r = (double)sn / sc; /* x + (x − D)/σ·(σ' − σ) = (σ'/σ)·x + (1 − σ'/σ)·D */
        for (size_t k = 0; k < s->n; k++) x[k] = (float)(r * x[k] + (1.0 - r) * d[k]);
    } else {
        double t = -log((double)sc), t_old = -log((double)s->old_sigma_down), t_next = -log((double)sn);
        double t_prev = -log((double)sig[i - 1]);
        double h = t_next - t, c2 = (t_prev - t_old) / h;
        double phi1 = expm1(-h) / -h, phi2 = (phi1 - 1.0) / -h;
        double b1 = phi1 - phi2 / c2, b2 = phi2 / c2;
        if (!isfinite(b1)) b1 = 0;
        if (!isfinite(b2)) b2 = 0;
        double a = exp(-h), c1 = h * b1, cc2 = h * b2;
        const float *od = s->old_denoised;
        for (size_t k = 0; k < s->n; k++) x[k] = (float)(a * x[k] + c1 * d[k] + cc2 * od[k]);
    }
    memcpy(s->old_denoised, d, sizeof(float) * s->n);
    s->have_old = 1;
    s->old_sigma_down = sn;
}
