// Thread count of the CPU backend: OpenMP's, so OMP_NUM_THREADS controls it.
#include <omp.h>

#include "cpu/cpu_backend.h"

namespace flashmla::cpu {

int num_threads() { return omp_get_max_threads(); }

}  // namespace flashmla::cpu
