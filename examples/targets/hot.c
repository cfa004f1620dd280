/* Benchmark and lifecycle target: calls a probed function in a loop and reports its rate.
 * Usage: hot ITERATIONS [SLEEP_US] [WAIT]  → prints "ns_per_iter=N" at the end.
 * With WAIT set, it waits for a line on stdin before looping (so a tracer can attach first). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

volatile long sink;
long touched;

__attribute__((noinline)) static void touch(void)
{
    touched++; /* PROBE: rip-relative (starts with a RIP-relative load) */
}

__attribute__((noinline)) long step(long i)
{
    long v = i * 7 + 3; /* PROBE: hot-step */
    sink += v;
    touch(); /* PROBE: call-first (starts with a call) */
    return v;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    long sleep_us = argc > 2 ? atol(argv[2]) : 0;
    printf("hot ready pid=%d\n", getpid());
    fflush(stdout);
    if (argc > 3) {
        char line[16];
        if (!fgets(line, sizeof line, stdin))
            return 2;
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) { /* PROBE: loop-head */
        step(i);
        if (sleep_us)
            usleep(sleep_us);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("ns_per_iter=%.1f\n", ns / n);
    printf("sink=%ld touched=%ld\n", (long)sink, touched);
    return 0;
}
