/* Sample C target for the capture bounds: a chain of ten pointers to an int (p10 → p9 → … →
 * p1 → x, x == 7), more than Periscope follows in a row, and a ring of two nodes (a → b → a,
 * ids 1 and 2), which only the depth limit ends.
 * Usage: chain   (prints "chain ready pid=N", then calls walk every 2 ms) */
#include <stdio.h>
#include <unistd.h>

struct node {
    int id;
    struct node *next;
};

__attribute__((noinline)) int walk(int **********p10, struct node *ring, int round)
{
    int v = **********p10 + ring->next->id + round; /* PROBE: chain-walk */
    return v;
}

int main(void)
{
    printf("chain ready pid=%d\n", getpid());
    fflush(stdout);
    int x = 7;
    int *p1 = &x;
    int **p2 = &p1;
    int ***p3 = &p2;
    int ****p4 = &p3;
    int *****p5 = &p4;
    int ******p6 = &p5;
    int *******p7 = &p6;
    int ********p8 = &p7;
    int *********p9 = &p8;
    int **********p10 = &p9;
    struct node a = {1, 0}, b = {2, &a};
    a.next = &b;
    for (int round = 0;; round++) {
        walk(p10, &a, round);
        usleep(2000);
    }
}
