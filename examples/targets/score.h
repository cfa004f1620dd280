#ifndef SCORE_H
#define SCORE_H

enum kind { KIND_SMALL, KIND_LARGE, KIND_URGENT };

struct job {
    int id;
    char name[16];
    const char *owner;
    double weight;
    struct job *next;
    enum kind kind;
    unsigned done : 1;
    unsigned flags : 3;
};

int score_job(const struct job *j);

#endif
