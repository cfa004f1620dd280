/* Target of the in-kernel engine's tests: many C types at one line, calls of a controlled
 * duration, and a fresh thread for every batch (so threads start after a tracer attaches).
 * Every value obeys relations a test checks on each hit, `n` being the order's number:
 *   o->id == n, o->qty == n % 7, o->price == n * 0.5, o->code == "C<n % 10>",
 *   o->note == "note-<n % 3>", o->state == n % 3 (NEW, PAID, SHIPPED), o->flag == n % 2,
 *   o->delta == -(n % 100), worker == the batch's number;
 *   timed(ms) returns after `ms` milliseconds (busy-waiting on the monotonic clock): 1 for
 *   even n, 3 for odd n.
 * Usage: orders [SLEEP_US]   (default 2000 µs between orders) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

enum state { NEW, PAID, SHIPPED };

struct order {
    long id;
    int qty;
    double price;
    char code[8];
    const char *note;
    enum state state;
    unsigned char flag;
    short delta;
};

static const char *NOTES[3] = {"note-0", "note-1", "note-2"};
static long next_n;
static long sleep_us = 2000;
volatile long sink;

__attribute__((noinline)) long handle(struct order *o, int worker)
{
    long total = o->qty * 100 + o->id; /* PROBE: orders-handle */
    sink += total + worker;
    return total;
}

static long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

__attribute__((noinline)) void timed(int ms)
{
    long start = now_ns(); /* PROBE: orders-timed */
    while (now_ns() - start < ms * 1000000L)
        sink++;
}

static void *batch(void *arg)
{
    int worker = (int)(long)arg;
    for (int i = 0; i < 20; i++) {
        long n = __atomic_fetch_add(&next_n, 1, __ATOMIC_RELAXED);
        struct order o = {
            .id = n,
            .qty = (int)(n % 7),
            .price = n * 0.5,
            .note = NOTES[n % 3],
            .state = (enum state)(n % 3),
            .flag = (unsigned char)(n % 2),
            .delta = (short)-(n % 100),
        };
        snprintf(o.code, sizeof o.code, "C%ld", n % 10);
        handle(&o, worker);
        timed(n % 2 ? 3 : 1);
        usleep(sleep_us);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        sleep_us = atol(argv[1]);
    printf("orders ready pid=%d\n", getpid());
    fflush(stdout);
    for (long w = 0;; w++) {
        pthread_t t;
        if (pthread_create(&t, NULL, batch, (void *)w) != 0)
            return 1;
        pthread_join(t, NULL);
    }
}
