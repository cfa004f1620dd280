/* Optimized C the way gcc 12 -O2 -g shapes it: IPA clones (.isra, .constprop, .part, .cold),
 * parameters known only at the call site (DW_OP_entry_value, DW_OP_GNU_parameter_ref) and
 * pointers to optimized-away variables (DW_OP_implicit_pointer).
 * Usage: tasks [SLEEP_US] */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct task {
    int id;
    int weight;
    const char *name;
};

volatile int sink;

/* Only t->id is used: IPA-SRA passes the field instead of the pointer (rank.isra.0). */
static __attribute__((noinline)) int rank(const struct task *t, int pass)
{
    int r = t->id * 3 + pass; /* PROBE: rank-body */
    sink = r;
    return r;
}

/* Always called with scale == 10: a .constprop clone without that parameter. */
static __attribute__((noinline)) int scaled(int v, int scale)
{
    int s = v * scale + 1; /* PROBE: scaled-body */
    sink = s;
    return s;
}

__attribute__((cold, noinline)) void report(int v)
{
    sink = v;
}

/* The rare branch calls a cold function: gcc moves it into `check.cold`, a separate range. */
static __attribute__((noinline)) int check(int v)
{
    if (v % 50 == 49) {
        int w = v * 3; /* PROBE: cold-path */
        report(w);
        return w;
    }
    return v + 1;
}

struct pair {
    int a;
    int b;
};

/* Inlined with a pointer to a local that lives in registers: `p` becomes
 * DW_OP_implicit_pointer (the pointer is gone, what it points to is known). */
static inline int total(const struct pair *p)
{
    int t = p->a + p->b; /* PROBE: implicit */
    sink = t;
    return t;
}

static __attribute__((noinline)) int work(int x)
{
    struct pair q = {x, x * 2};
    return total(&q) + 1;
}

int main(int argc, char **argv)
{
    long sleep_us = argc > 1 ? atol(argv[1]) : 1000;
    struct task tasks[4] = {{157, 2, "alpha"}, {158, 3, "beta"}, {159, 5, "gamma"}, {160, 7, "delta"}};
    printf("tasks ready pid=%d\n", getpid());
    fflush(stdout);
    for (int pass = 0;; pass++) {
        for (int i = 0; i < 4; i++) {
            sink += rank(&tasks[i], pass);
            sink += scaled(tasks[i].weight + pass, 10);
        }
        sink += work(pass);
        sink += check(pass);
        if (sleep_us)
            usleep(sleep_us);
    }
    return 0;
}
