/* A release-shaped C service for separate debug info and symbols-only probing: each round calls
 * forward(id, size) and writes one record to /dev/null with write(2).
 * Usage: relay [ROUNDS] [SLEEP_US]  → prints "relay ready pid=N fd=F" first. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

long forwarded;

__attribute__((noinline)) long forward(long id, long size)
{
    forwarded += size; /* PROBE: forward-body */
    return id * 2 + size;
}

int main(int argc, char **argv)
{
    long rounds = argc > 1 ? atol(argv[1]) : 1000000;
    long sleep_us = argc > 2 ? atol(argv[2]) : 1000;
    int fd = open("/dev/null", O_WRONLY);
    if (fd < 0)
        return 1;
    printf("relay ready pid=%d fd=%d\n", getpid(), fd);
    fflush(stdout);
    static const char record[] = "relay record 0042\n";
    for (long i = 0; i < rounds; i++) {
        forward(i, 100 + i % 7);
        if (write(fd, record, sizeof record - 1) < 0)
            return 1;
        usleep(sleep_us);
    }
    printf("forwarded=%ld\n", forwarded);
    return 0;
}
