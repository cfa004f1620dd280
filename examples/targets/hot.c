/* Benchmark target: calls a probed function in a tight loop and reports its rate.
 * Usage: hot ITERATIONS  → prints "ns_per_iter=N" at the end. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

volatile long sink;

__attribute__((noinline)) long step(long i)
{
    long v = i * 7 + 3; /* PROBE: hot-step */
    sink += v;
    return v;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    printf("hot ready\n");
    fflush(stdout);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        step(i);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("ns_per_iter=%.1f\n", ns / n);
    return 0;
}
