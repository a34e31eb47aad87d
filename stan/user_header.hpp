// C++ for stan/gmm.stan, given to CmdStan as its user header (stanc --allow-undefined).
//
// log1p_exp_glm(x, alpha, beta) = sum_n log1p_exp(alpha + x[n] * beta) and its gradient,
// i.e. -bernoulli_logit_glm_lpmf(0 | x, alpha, beta). Stan Math evaluates that with one scalar
// log1p per observation. Here, with t = alpha + x[n] * beta,
//   log1p_exp(t) = max(t, 0) + log1p(e),  inv_logit(t) = (t > 0 ? 1 : e) / (1 + e),
//   e = exp(-|t|) in (0, 1],
// are computed W observations at a time with vector types: exp by range reduction
// (|r| <= log(2) / 2) and its Taylor polynomial of degree 13, log1p(e) = 2 atanh(s) with
// s = e / (2 + e) <= 1/3 and the atanh series to s^33; both within 1e-15 relative error.
// The widest lanes the CPU has are chosen at run time (2 with SSE2, 4 with AVX2 and FMA, 8 with
// AVX-512 on x86-64), so a CmdStan built for generic x86-64 still gets them. Widths 4 and 8 run
// the same operations, fused multiply-adds included, and give the same bits; width 2 has no
// fused multiply-add and can differ from them in the last bit.
//
// lse_excess_glm(x, a, beta) = sum_n (log_sum_exp_k eta[n, k] - eta[n, 1]) and its gradient,
// eta[n, k] = a[k] + x[n] * beta[k]', i.e. -categorical_logit_glm_lpmf(1 | x, a, beta'), for
// K >= 3. The double arithmetic sits in one non-template function, so that its matrix products
// are compiled once, not once per scalar type as Stan Math's categorical_logit_glm is: that
// saves about a tenth of the model's compile (docs/performance.md, "Compile").
#ifndef GMMPIPE_USER_HEADER_HPP
#define GMMPIPE_USER_HEADER_HPP

#include <stan/model/model_header.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <ostream>

namespace gmmpipe {
namespace internal {

// lterm[i] = log1p_exp(eta[i]) and g[i] = inv_logit(eta[i]) for i < n, n a multiple of W.
template <int W>
inline __attribute__((always_inline)) void log1p_exp_lanes(const double* eta, double* lterm,
                                                           double* g, std::ptrdiff_t n) {
  typedef double vd __attribute__((vector_size(8 * W)));
  typedef std::int64_t vi __attribute__((vector_size(8 * W)));
  constexpr double log2_e = 1.4426950408889634;
  constexpr double ln2_hi = 6.93147180369123816490e-01;  // log(2) = ln2_hi + ln2_lo
  constexpr double ln2_lo = 1.90821492927058770002e-10;
  constexpr double round_shift = 0x1.8p52;  // x + round_shift rounds x to an integer
  constexpr double inv_factorial[] = {1.0,
                                      1.0,
                                      1.0 / 2,
                                      1.0 / 6,
                                      1.0 / 24,
                                      1.0 / 120,
                                      1.0 / 720,
                                      1.0 / 5040,
                                      1.0 / 40320,
                                      1.0 / 362880,
                                      1.0 / 3628800,
                                      1.0 / 39916800,
                                      1.0 / 479001600,
                                      1.0 / 6227020800};
  const vd zero = {};
  for (std::ptrdiff_t i = 0; i < n; i += W) {
    vd t;
    __builtin_memcpy(&t, eta + i, sizeof t);
    const vd abs_t = t < zero ? -t : t;
    const vd u = -(abs_t > 708.0 ? zero + 708.0 : abs_t);  // exp(-708) ~ 3e-308
    // e = exp(u) = 2^k exp(r), k = round(u / log(2)), r = u - k log(2)
    vd k = u * log2_e + round_shift;
    const vi k_bits = (vi)k;  // k in the low mantissa bits
    k -= round_shift;
    const vd r = (u - k * ln2_hi) - k * ln2_lo;
    vd exp_r = zero + inv_factorial[13];
    for (int j = 12; j >= 0; --j) {
      exp_r = exp_r * r + inv_factorial[j];
    }
    const vd e = exp_r * (vd)((k_bits + 1023) << 52);
    const vd s = e / (2.0 + e);
    const vd s2 = s * s;
    vd atanh_s = zero + 1.0 / 33;
    for (int j = 31; j > 0; j -= 2) {
      atanh_s = atanh_s * s2 + 1.0 / j;
    }
    const vd inv_1pe = 1.0 / (1.0 + e);
    const vd l = (t > zero ? t : zero) + 2.0 * s * atanh_s;
    const vd p = t > zero ? inv_1pe : e * inv_1pe;
    __builtin_memcpy(lterm + i, &l, sizeof l);
    __builtin_memcpy(g + i, &p, sizeof p);
  }
}

inline void log1p_exp_w2(const double* eta, double* lterm, double* g, std::ptrdiff_t n) {
  log1p_exp_lanes<2>(eta, lterm, g, n);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GMMPIPE_X86_DISPATCH 1
__attribute__((target("avx2,fma"))) inline void log1p_exp_w4(const double* eta, double* lterm,
                                                             double* g, std::ptrdiff_t n) {
  log1p_exp_lanes<4>(eta, lterm, g, n);
}

__attribute__((target("avx512f"))) inline void log1p_exp_w8(const double* eta, double* lterm,
                                                            double* g, std::ptrdiff_t n) {
  log1p_exp_lanes<8>(eta, lterm, g, n);
}
#endif

// The widest log1p_exp_w* this CPU runs.
inline void log1p_exp(const double* eta, double* lterm, double* g, std::ptrdiff_t n) {
#ifdef GMMPIPE_X86_DISPATCH
  if (__builtin_cpu_supports("avx512f")) {
    return log1p_exp_w8(eta, lterm, g, n);
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return log1p_exp_w4(eta, lterm, g, n);
  }
#endif
  log1p_exp_w2(eta, lterm, g, n);
}

// sum_n (log_sum_exp_k eta[n, k] - eta[n, 1]) with eta[n, k] = a[k] + x[n] * beta[k]';
// with `d_a` and `d_beta` given, also its gradient, from
// d/d eta[n, k] = softmax(eta[n])[k] - [k = 1]. Not a template: one instance (and one of each
// matrix product) serves every scalar type of lse_excess_glm.
inline double lse_excess(const Eigen::Ref<const Eigen::MatrixXd>& x, const Eigen::VectorXd& a,
                         const Eigen::MatrixXd& beta, Eigen::VectorXd* d_a,
                         Eigen::MatrixXd* d_beta) {
  Eigen::MatrixXd eta = x * beta.transpose();
  eta.rowwise() += a.transpose();
  eta.colwise() -= eta.col(0).eval();
  const Eigen::ArrayXd eta_max = eta.rowwise().maxCoeff().array();
  Eigen::ArrayXXd p = (eta.array().colwise() - eta_max).exp();
  const Eigen::ArrayXd total = p.rowwise().sum();
  const double lp = (eta_max + total.log()).sum();
  if (!std::isfinite(lp)) {
    stan::math::check_finite("lse_excess_glm", "Linear predictor", eta);
  }
  if (d_a != nullptr) {
    p.colwise() /= total;
    p.col(0) -= 1.0;
    *d_a = p.colwise().sum().transpose().matrix();
    *d_beta = p.matrix().transpose() * x;
  }
  return lp;
}

constexpr std::ptrdiff_t max_lanes = 8;

}  // namespace internal
}  // namespace gmmpipe

template <typename T_x, typename T_alpha, typename T_beta,
          stan::require_eigen_vt<std::is_arithmetic, T_x>* = nullptr,
          stan::require_stan_scalar_t<T_alpha>* = nullptr,
          stan::require_eigen_vector_t<T_beta>* = nullptr>
stan::return_type_t<T_alpha, T_beta> log1p_exp_glm(const T_x& x, const T_alpha& alpha,
                                                   const T_beta& beta,
                                                   std::ostream* pstream__) {
  using stan::math::value_of;
  constexpr auto lanes = gmmpipe::internal::max_lanes;
  const auto& x_ref = stan::math::to_ref(x);
  const auto& beta_ref = stan::math::to_ref(beta);
  const Eigen::Index n = x_ref.rows();
  const Eigen::Index n_padded = (n + lanes - 1) / lanes * lanes;
  Eigen::ArrayXd eta(n_padded), lterm(n_padded), inv_logit_eta(n_padded);
  eta.head(n) = (x_ref * value_of(beta_ref)).array() + value_of(alpha);
  eta.tail(n_padded - n).setZero();
  gmmpipe::internal::log1p_exp(eta.data(), lterm.data(), inv_logit_eta.data(), n_padded);
  const double lp = lterm.head(n).sum();
  if (!std::isfinite(lp)) {
    stan::math::check_finite("log1p_exp_glm", "Linear predictor", eta.head(n));
  }
  if constexpr (stan::is_constant_all<T_alpha, T_beta>::value) {
    return lp;
  } else {
    auto ops = stan::math::make_partials_propagator(alpha, beta_ref);
    if constexpr (!stan::is_constant<T_alpha>::value) {
      stan::math::partials<0>(ops) = inv_logit_eta.head(n).sum();
    }
    if constexpr (!stan::is_constant<T_beta>::value) {
      stan::math::partials<1>(ops) = x_ref.transpose() * inv_logit_eta.head(n).matrix();
    }
    return ops.build(lp);
  }
}

// lse_excess_glm: see the top of this file.
template <typename T_x, typename T_a, typename T_beta,
          stan::require_eigen_vt<std::is_arithmetic, T_x>* = nullptr,
          stan::require_eigen_vector_t<T_a>* = nullptr,
          stan::require_eigen_matrix_dynamic_t<T_beta>* = nullptr>
stan::return_type_t<T_a, T_beta> lse_excess_glm(const T_x& x, const T_a& a, const T_beta& beta,
                                                std::ostream* pstream__) {
  using stan::math::value_of;
  const auto& x_ref = stan::math::to_ref(x);
  const auto& a_ref = stan::math::to_ref(a);
  const auto& beta_ref = stan::math::to_ref(beta);
  if constexpr (stan::is_constant_all<T_a, T_beta>::value) {
    return gmmpipe::internal::lse_excess(x_ref, value_of(a_ref), value_of(beta_ref), nullptr,
                                         nullptr);
  } else {
    Eigen::VectorXd d_a;
    Eigen::MatrixXd d_beta;
    const double lp = gmmpipe::internal::lse_excess(x_ref, value_of(a_ref), value_of(beta_ref),
                                                    &d_a, &d_beta);
    auto ops = stan::math::make_partials_propagator(a_ref, beta_ref);
    if constexpr (!stan::is_constant<T_a>::value) {
      stan::math::partials<0>(ops) = d_a;
    }
    if constexpr (!stan::is_constant<T_beta>::value) {
      stan::math::partials<1>(ops) = d_beta;
    }
    return ops.build(lp);
  }
}

#endif
