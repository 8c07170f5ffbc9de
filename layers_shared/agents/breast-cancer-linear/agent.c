/* Breast-cancer classifier: a linear model over the 30 standardized features.
 * Output: the logit w . x + b (positive means benign, class 1 in scikit-learn's labels). */
#define GENOME_LEN 31
#define OBS_LEN 30

static float policy(const float *g, const float *o) {
    float v = g[OBS_LEN];
    for (int i = 0; i < OBS_LEN; i++) v += g[i] * o[i];
    return v;
}

#include "chimera_abi.h"
