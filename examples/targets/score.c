/* Shared library part of the C sample target. score == id % 7 + (int)weight. */
#include "score.h"

int score_job(const struct job *j)
{
    int score = j->id % 7 + (int)j->weight; /* PROBE: lib-score */
    return score;
}
