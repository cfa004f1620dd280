/* Sample target that crashes on request: reads a line, then dereferences a null pointer inside
 * `deref_job` (SIGSEGV), or calls abort() for "abort". Used by `periscope watch` tests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct job {
    int id;
    const char *name;
    struct job *next;
};

__attribute__((noinline)) int deref_job(struct job *j, int depth)
{
    int sum = j->id + depth;
    return sum + j->next->id; /* PROBE: crash (j->next is NULL) */
}

int main(void)
{
    printf("crasher ready pid=%d\n", getpid());
    fflush(stdout);
    char line[32] = {0};
    if (!fgets(line, sizeof line, stdin))
        return 2;
    if (strncmp(line, "abort", 5) == 0)
        abort();
    struct job j = {.id = 42, .name = "answer", .next = NULL};
    printf("%d\n", deref_job(&j, 7));
    return 0;
}
