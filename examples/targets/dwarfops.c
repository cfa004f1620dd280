/* Target of the DWARF location sweep: functions whose locals optimizing compilers do not keep
 * as such, so their debug info describes them with the DWARF expression language (squares as
 * `dup; mul`, sums, shifted and masked values, struct pieces, values through inlined calls,
 * parameters after a call as entry values). Built at -O1, -O2 and -O3; every probed value
 * obeys a relation a test checks on each hit, `x` being the function's argument:
 *   squares:  sq == x * x, twice == x + x
 *   mixes:    b == 5 * a + 3, sum == a + b, diff == a - b, shifted == a << 3,
 *             masked == (b & 0xff) ^ 0x5a, high == b >> 4, neg == -a, inv == ~b
 *   pieces:   p.lo == x, p.hi == 2 * x + 1, total == p.lo + p.hi
 *   inlined:  scaled == v * 3 + 7
 *   ratio:    q == x / 7, r == x % 7
 * Each function is called with the iteration number n (1, 2, …), x being n % 40000; each
 * has a probe line before a call and one after it (where the arguments' registers are gone).
 * Usage: dwarfops [SLEEP_US]   (default 2000 µs between iterations) */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct pair {
    int lo;
    int hi;
};

volatile long sink;

__attribute__((noinline)) void consume(long v)
{
    sink += v;
}

/* The probed locals are dead (never used again): the compiler computes none of them, and
 * its debug info says how to compute each from what is still in registers; after a call,
 * from the arguments' entry values. */
__attribute__((noinline)) int squares(int x)
{
    int sq = x * x;
    int twice = x + x;
    consume(x); /* PROBE: dwarfops-squares */
    consume(3); /* PROBE: dwarfops-squares-after */
    return 0;
}

__attribute__((noinline)) long mixes(long a, long b)
{
    long sum = a + b;
    long diff = a - b;
    long shifted = a << 3;
    long masked = (b & 0xff) ^ 0x5a;
    long high = b >> 4;
    long neg = -a;
    long inv = ~b;
    consume(a); /* PROBE: dwarfops-mixes */
    consume(5); /* PROBE: dwarfops-mixes-after */
    return 0;
}

__attribute__((noinline)) int pieces(int x)
{
    struct pair p = {x, 2 * x + 1};
    int total = p.lo + p.hi;
    consume(p.lo); /* PROBE: dwarfops-pieces */
    consume(6); /* PROBE: dwarfops-pieces-after */
    return 0;
}

static inline int scale(int v)
{
    int scaled = v * 3 + 7;
    consume(v); /* PROBE: dwarfops-inlined */
    return v;
}

__attribute__((noinline)) int inlined(int x)
{
    return scale(x) + 1;
}

__attribute__((noinline)) int ratio(int x)
{
    int q = x / 7;
    int r = x % 7;
    consume(x); /* PROBE: dwarfops-ratio */
    consume(2); /* PROBE: dwarfops-ratio-after */
    return 0;
}

int main(int argc, char **argv)
{
    long sleep_us = argc > 1 ? atol(argv[1]) : 2000;
    printf("dwarfops ready pid=%d\n", getpid());
    fflush(stdout);
    for (long n = 1;; n++) {
        int x = (int)(n % 40000);
        sink += squares(x);
        sink += mixes(n, n * 5 + 3);
        sink += pieces(x);
        sink += inlined(x);
        sink += ratio(x);
        usleep(sleep_us);
    }
}
