// Runs every log1p_exp lane width of stan/user_header.hpp that this CPU supports on the numbers
// read from standard input (one per line, as C hex floats). Prints one line per width:
// "<width> <log1p_exp(eta_1)> <inv_logit(eta_1)> ..." in hex floats. Used by tests/test_cmdstan.py.
#include "user_header.hpp"

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

using kernel = void (*)(const double*, double*, double*, std::ptrdiff_t);

void run(int width, kernel f, const std::vector<double>& eta) {
  std::vector<double> lterm(eta.size()), g(eta.size());
  f(eta.data(), lterm.data(), g.data(), static_cast<std::ptrdiff_t>(eta.size()));
  std::printf("%d", width);
  for (std::size_t i = 0; i < eta.size(); ++i) {
    std::printf(" %a %a", lterm[i], g[i]);
  }
  std::printf("\n");
}

}  // namespace

int main() {
  std::vector<double> eta;
  char line[64];
  while (std::fgets(line, sizeof line, stdin) != nullptr) {
    eta.push_back(std::strtod(line, nullptr));
  }
  eta.resize((eta.size() + 7) / 8 * 8, 0.0);
  run(2, gmmpipe::internal::log1p_exp_w2, eta);
#ifdef GMMPIPE_X86_DISPATCH
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    run(4, gmmpipe::internal::log1p_exp_w4, eta);
  }
  if (__builtin_cpu_supports("avx512f")) {
    run(8, gmmpipe::internal::log1p_exp_w8, eta);
  }
#endif
  return 0;
}
