/* progress.h — a progress bar with rate and ETA on stderr for long work (loading, converting,
 * sampling, training). On a terminal it redraws one line; otherwise it prints nothing until the end
 * line, so logs stay clean. */
#ifndef ZL_PROGRESS_H
#define ZL_PROGRESS_H
#include <stdint.h>

typedef struct {
    char label[64];
    double total, t0, last_draw;
    const char *unit; /* e.g. "MB", "steps" */
    int tty;
} zl_progress;

void zl_progress_start(zl_progress *p, const char *label, double total, const char *unit);
void zl_progress_update(zl_progress *p, double done);
void zl_progress_end(zl_progress *p, double done);

#endif
