/* CartPole policy: push right when w . obs + b > 0. Genome: 4 weights and a bias. */
#define GENOME_LEN 5
#define OBS_LEN 4

static float policy(const float *g, const float *o) {
    float v = g[4];
    for (int i = 0; i < OBS_LEN; i++) v += g[i] * o[i];
    return v > 0.0f ? 1.0f : 0.0f;
}

#include "chimera_abi.h"
