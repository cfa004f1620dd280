/* Sample C target for Periscope's tests: structs, pointers, char arrays, threads, and a call
 * into a shared library (libscore.so). Relations checked by tests on every hit:
 *   cost == j->id * 3 + round,  j->weight == j->id / 2.0,  name is "job-<id>". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "score.h"

static long sleep_us = 2000;
long processed = 0;

static int process_job(struct job *j, int round)
{
    int cost = j->id * 3 + round; /* PROBE: process-cost */
    j->done = cost % 2; /* PROBE: process-done (cost is computed here) */
    processed++;
    return cost + score_job(j);
}

static void *worker(void *arg)
{
    int base = (int)(long)arg;
    struct job jobs[2];
    for (int round = 0;; round++) {
        for (int k = 0; k < 2; k++) {
            struct job *j = &jobs[k];
            j->id = base + round * 2 + k;
            snprintf(j->name, sizeof j->name, "job-%d", j->id);
            j->owner = (k == 0) ? "alice" : "bob";
            j->weight = j->id / 2.0;
            j->next = (k == 0) ? &jobs[1] : NULL;
            j->kind = (enum kind)(j->id % 3);
            process_job(j, round);
        }
        usleep(sleep_us);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        sleep_us = atol(argv[1]);
    printf("jobs ready pid=%d\n", getpid());
    fflush(stdout);
    pthread_t t[2];
    for (long i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, worker, (void *)(i * 1000000));
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    return 0;
}
