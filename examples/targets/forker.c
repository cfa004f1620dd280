/* Sample target that forks a child for every item: probes must never kill the children, which
 * are copies of the probed process, breakpoints included. A child exits with i*3 % 256; the
 * parent checks that status and stops with "child failed" if a child died or lied. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) int work(int i)
{
    int r = i * 3 % 256; /* PROBE: fork-work */
    return r;
}

int main(int argc, char **argv)
{
    long sleep_us = argc > 1 ? atol(argv[1]) : 2000;
    printf("forker ready pid=%d\n", getpid());
    fflush(stdout);
    for (int i = 0;; i++) {
        work(i);
        pid_t c = fork();
        if (c == 0)
            _exit(work(i));
        int st = 0;
        waitpid(c, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != i * 3 % 256) {
            printf("child %d failed: status %d\n", i, st);
            fflush(stdout);
            return 1;
        }
        usleep(sleep_us);
    }
}
