/* Sample target for replay's deadline: each job waits, spinning without a system call, for a
 * flag that another thread raises. A copy of the process made inside a job has only the job's
 * thread, so nobody raises the flag there and the copy never gets to the end of the job. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

static atomic_int ready;
static long total;

__attribute__((noinline)) long job(long n) {
    long doubled = n * 2; /* PROBE: job-start */
    while (!atomic_load(&ready)) {
    }
    atomic_store(&ready, 0);
    total += doubled; /* PROBE: job-done */
    return doubled; /* PROBE: job-return */
}

static void *raiser(void *arg) {
    (void)arg;
    for (;;) {
        atomic_store(&ready, 1);
        usleep(3000);
    }
    return NULL;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, raiser, NULL);
    printf("spinwait ready pid=%d\n", (int)getpid());
    fflush(stdout);
    for (long n = 1;; n++) {
        job(n);
        usleep(1000);
    }
}
