/* progress.c — see progress.h. */
#include "progress.h"
#include "base.h"
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* "steps" per second, but seconds per "step": the unit without a plural s */
static int singular_len(const char *unit) {
    int n = (int)strlen(unit);
    return n > 1 && unit[n - 1] == 's' ? n - 1 : n;
}

void zl_progress_start(zl_progress *p, const char *label, double total, const char *unit) {
    memset(p, 0, sizeof *p);
    snprintf(p->label, sizeof p->label, "%s", label);
    p->total = total > 0 ? total : 1;
    p->unit = unit ? unit : "";
    p->t0 = zl_now();
    p->tty = isatty(2) && zl_log_level > 0;
}

static void fmt_time(char *b, size_t n, double s) {
    if (s < 0 || s > 1e7) snprintf(b, n, "--:--");
    else if (s >= 3600) snprintf(b, n, "%d:%02d:%02d", (int)s / 3600, ((int)s / 60) % 60, (int)s % 60);
    else snprintf(b, n, "%02d:%02d", (int)s / 60, (int)s % 60);
}

void zl_progress_update(zl_progress *p, double done) {
    if (!p->tty) return;
    double now = zl_now();
    if (now - p->last_draw < 0.1 && done < p->total) return;
    p->last_draw = now;
    double f = done / p->total, el = now - p->t0;
    if (f > 1) f = 1;
    char bar[31];
    int w = (int)(f * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < w ? '#' : '.';
    bar[30] = 0;
    char eta[16], ela[16];
    fmt_time(ela, sizeof ela, el);
    fmt_time(eta, sizeof eta, f > 0 ? el / f - el : -1);
    char rate[32] = "";
    double r = el > 0 ? done / el : 0;
    if (r >= 1) snprintf(rate, sizeof rate, "%.2f %s/s", r, p->unit);
    else if (r > 0) snprintf(rate, sizeof rate, "%.2f s/%.*s", 1 / r, singular_len(p->unit), p->unit);
    fprintf(stderr, "\r%-20s [%s] %5.1f%% %.0f/%.0f %s  %s  %s elapsed, ETA %s ", p->label, bar, 100 * f, done, p->total, p->unit, rate,
            ela, eta);
    fflush(stderr);
}

void zl_progress_end(zl_progress *p, double done) {
    double el = zl_now() - p->t0;
    if (p->tty) fputc('\n', stderr);
    if (zl_log_level > 0) {
        double r = el > 0 ? done / el : 0;
        if (r >= 1) fprintf(stderr, "%s: %.0f %s in %.1f s (%.3g %s/s)\n", p->label, done, p->unit, el, r, p->unit);
        else if (r > 0) fprintf(stderr, "%s: %.0f %s in %.1f s (%.3g s/%.*s)\n", p->label, done, p->unit, el, 1 / r, singular_len(p->unit), p->unit);
        else fprintf(stderr, "%s: %.0f %s in %.1f s\n", p->label, done, p->unit, el);
    }
}
